//! Behind a reverse proxy: the client is who the trusted proxy says (the right-most address
//! it did not append itself), for the login throttle and the audit log alike; and the CSRF
//! check compares the browser's origin with the public URL, or with the host the proxy
//! forwarded, not with the `Host` the proxy rewrote.

mod common;

use common::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, USER_PASSWORD,
    proxy::{self, PROXY_ADDRESS, PUBLIC_HOST, client_from},
    test_keyring,
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use switchyard::service::ServiceOptions;
use switchyard_web::WebOptions;

on_both_backends!(
    behind_a_proxy_each_client_is_throttled_and_audited_as_itself,
    cookie_requests_through_a_proxy_are_checked_against_the_public_origin,
    without_a_public_url_the_forwarded_host_counts_from_trusted_proxies_only,
);

const BOB: &str = "bob@acme.example.com";

/// The service behind the loopback proxy; answers the app and the proxy's base URL.
async fn behind_proxy(backend: Backend, public_url: Option<&str>) -> (TestApp, String) {
    let options = ServiceOptions {
        web: WebOptions {
            trusted_proxies: vec![PROXY_ADDRESS.into()],
            public_url: public_url.map(|url| url.parse().unwrap()),
            ..WebOptions::default()
        },
        ..ServiceOptions::default()
    };
    let app = TestApp::spawn_with(backend, options, test_keyring()).await;
    let proxy = proxy::start(&app.base).await;
    (app, proxy)
}

async fn login(client: &Client, base: &str, email: &str, password: &str) -> reqwest::Response {
    client
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn behind_a_proxy_each_client_is_throttled_and_audited_as_itself(backend: Backend) {
    let (app, proxy) = behind_proxy(backend, None).await;
    app.add_user(BOB, "user", &[]).await;
    let (attacker, bob) = (client_from("127.0.0.3"), client_from("127.0.0.4"));
    for _ in 0..5 {
        let wrong = login(&attacker, &proxy, BOB, "not bob's password").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let locked = login(&attacker, &proxy, BOB, USER_PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    // Forging an earlier hop changes nothing: the proxy appends the real address after it.
    let forged = attacker
        .post(format!("{proxy}/v1/sessions"))
        .header("x-forwarded-for", "127.0.0.4")
        .json(&json!({"email": BOB, "password": USER_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::TOO_MANY_REQUESTS);
    // The real user, behind the same proxy, is another client.
    let response = login(&bob, &proxy, BOB, USER_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let audit = app.audit().await;
    let logged_in = audit
        .iter()
        .find(|e| e["event_type"] == "LoggedIn")
        .unwrap();
    assert_eq!(logged_in["ip"], "127.0.0.4", "{logged_in}");
    let locked_out = audit
        .iter()
        .find(|e| e["event_type"] == "LoginLockedOut")
        .unwrap();
    assert_eq!(locked_out["ip"], "127.0.0.3", "{locked_out}");
    // A client that is not a trusted proxy cannot say who it is.
    let direct = client_from("127.0.0.4")
        .post(app.url("/v1/sessions"))
        .header("x-forwarded-for", "127.0.0.9")
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::CREATED);
    let audit = app.audit().await;
    let admin_login = audit
        .iter()
        .find(|e| e["event_type"] == "LoggedIn")
        .unwrap();
    assert_eq!(admin_login["ip"], "127.0.0.4", "{admin_login}");
}

/// Logs the administrator in through `base` from `client`; answers the session token, to
/// send as the cookie a browser would.
async fn cookie(client: &Client, base: &str) -> String {
    let response = login(client, base, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    format!("switchyard_session={}", body["token"].as_str().unwrap())
}

/// A cookie POST from a page of `origin`: answers its status.
async fn post_from(client: &Client, base: &str, cookie: &str, origin: &str) -> StatusCode {
    client
        .post(format!("{base}/v1/groups"))
        .header("cookie", cookie)
        .header("origin", origin)
        .json(&json!({"name": format!("From {origin}"), "permissions": {}}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn cookie_requests_through_a_proxy_are_checked_against_the_public_origin(backend: Backend) {
    let (app, proxy) = behind_proxy(backend, Some("https://console.example.com")).await;
    let browser = client_from("127.0.0.3");
    let cookie = cookie(&browser, &proxy).await;
    let ours = format!("https://{PUBLIC_HOST}");
    assert_eq!(
        post_from(&browser, &proxy, &cookie, &ours).await,
        StatusCode::CREATED
    );
    for foreign in ["https://evil.example", "http://console.example.com", "null"] {
        assert_eq!(
            post_from(&browser, &proxy, &cookie, foreign).await,
            StatusCode::FORBIDDEN,
            "{foreign}"
        );
    }
    // The public origin is the only one, even for a browser that reaches the service directly.
    let direct_origin = app.base.clone();
    assert_eq!(
        post_from(&browser, &app.base, &cookie, &direct_origin).await,
        StatusCode::FORBIDDEN
    );
}

async fn without_a_public_url_the_forwarded_host_counts_from_trusted_proxies_only(
    backend: Backend,
) {
    let (app, proxy) = behind_proxy(backend, None).await;
    let browser = client_from("127.0.0.3");
    let cookie = cookie(&browser, &proxy).await;
    let ours = format!("https://{PUBLIC_HOST}");
    assert_eq!(
        post_from(&browser, &proxy, &cookie, &ours).await,
        StatusCode::CREATED
    );
    // The scheme the proxy forwarded counts too.
    let plain = format!("http://{PUBLIC_HOST}");
    assert_eq!(
        post_from(&browser, &proxy, &cookie, &plain).await,
        StatusCode::FORBIDDEN
    );
    // Straight to the service, the same claim is not believed.
    let forged = browser
        .post(app.url("/v1/groups"))
        .header("cookie", &cookie)
        .header("origin", &ours)
        .header("x-forwarded-host", PUBLIC_HOST)
        .json(&json!({"name": "Forged", "permissions": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // A page of the service's own address still works directly, as it always did.
    assert_eq!(
        post_from(&browser, &app.base, &cookie, &app.base).await,
        StatusCode::CREATED
    );
}
