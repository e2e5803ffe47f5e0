//! The API section: an account's Stripe and PayPal gateways through `/v1/gateways`, their
//! validation, their secrets (never answered, never in the audit log), and "Verify" against
//! fakes of Stripe and PayPal that speak their wire formats.

mod common;

use common::{
    Backend, TestApp,
    counting_listener::CountingListener,
    expect_invalid_fields, expect_problem, finished, loopback_options,
    paypal_fake::{ACCESS_TOKEN, PaypalFake},
    stripe_fake::StripeFake,
    test_keyring, wait_for_job,
};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use switchyard::service::ServiceOptions;
use switchyard_command::domain::AllowList;
use switchyard_workers::gateways::ProviderApis;

on_both_backends!(
    gateways_are_added_listed_changed_and_deleted,
    invalid_gateways_are_refused_naming_each_field,
    one_gateway_per_provider_and_mode,
    another_accounts_gateway_is_not_found,
    secrets_are_never_answered_nor_audited,
    stripe_verification_checks_the_key_and_its_mode,
    paypal_verification_fetches_a_token_at_the_modes_host,
    a_provider_at_a_refused_address_is_never_contacted,
);

const SECRET_KEY: &str = "sk_test_51NfakeSecretKey0001wxyz";
const NEW_SECRET_KEY: &str = "sk_test_51NfakeSecretKey0002abcd";
const WEBHOOK_SECRET: &str = "whsec_fakeWebhookSecret42";
const CLIENT_ID: &str = "AbCdEfPayPalClientId";
const CLIENT_SECRET: &str = "EFakePayPalClientSecret77";

fn stripe_test() -> Value {
    json!({
        "provider": "stripe",
        "mode": "test",
        "publishable_key": "pk_test_51NfakePublishable",
        "secret_key": SECRET_KEY,
        "webhook_secret": WEBHOOK_SECRET,
        "currencies": ["USD", "eur"],
        "surcharge": {"amount": "0.30", "currency": "USD"},
        "surcharge_percent": "2.9",
    })
}

fn paypal_test() -> Value {
    json!({
        "provider": "paypal",
        "mode": "test",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "email": "payments@acme.example.com",
        "webhook_id": "8PT597110X687430LKGECATA",
        "currencies": ["GBP"],
    })
}

async fn add(app: &TestApp, body: &Value) -> Value {
    let (status, gateway) = app.admin(Method::POST, "/v1/gateways", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{gateway}");
    gateway
}

async fn send_if_match(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    etag: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("if-match", etag);
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.unwrap()
}

async fn gateways_are_added_listed_changed_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .client
        .post(app.url("/v1/gateways"))
        .bearer_auth(&app.token)
        .json(&stripe_test())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let stripe: Value = response.json().await.unwrap();
    let id = stripe["id"].as_str().unwrap().to_owned();
    assert_eq!(
        stripe,
        json!({
            "id": id,
            "provider": "stripe",
            "mode": "test",
            "publishable_key": "pk_test_51NfakePublishable",
            "secret_key_last4": "wxyz",
            "webhook_secret_set": true,
            "client_id": null,
            "client_secret_set": null,
            "email": null,
            "webhook_id": null,
            "currencies": ["USD", "EUR"],
            "surcharge": {"amount": "0.30", "currency": "USD"},
            "surcharge_percent": "2.9",
            "webhook_url": format!("/v1/webhooks/stripe/{id}"),
        })
    );
    let paypal = add(&app, &paypal_test()).await;
    assert_eq!(paypal["client_secret_set"], true, "{paypal}");
    assert_eq!(paypal["email"], "payments@acme.example.com");
    assert_eq!(paypal["secret_key_last4"], Value::Null);

    // Read your writes: the list and the gateway show them.
    let (status, list) = app.admin(Method::GET, "/v1/gateways", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], json!([stripe, paypal]), "{list}");
    let response = app.get(&format!("/v1/gateways/{id}")).await;
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(response.json::<Value>().await.unwrap(), stripe);

    // A change keeps what it leaves out, secrets included; `null` clears.
    let path = format!("/v1/gateways/{id}");
    let change = json!({"currencies": ["JPY"], "surcharge": null, "webhook_secret": null});
    let stale = send_if_match(
        &app,
        &app.token,
        Method::PATCH,
        &path,
        "\"99\"",
        Some(&change),
    );
    expect_problem(stale.await, StatusCode::PRECONDITION_FAILED).await;
    let response =
        send_if_match(&app, &app.token, Method::PATCH, &path, &etag, Some(&change)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let new_etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let changed: Value = response.json().await.unwrap();
    assert_eq!(changed["currencies"], json!(["JPY"]));
    assert_eq!(changed["surcharge"], Value::Null);
    assert_eq!(changed["surcharge_percent"], "2.9");
    assert_eq!(changed["webhook_secret_set"], false);
    assert_eq!(changed["secret_key_last4"], "wxyz");
    let (_, shown) = app.admin(Method::GET, &path, None).await;
    assert_eq!(shown, changed);

    // A new secret key shows by its last four characters.
    let rekey = json!({"secret_key": NEW_SECRET_KEY});
    let (status, rekeyed) = app.admin(Method::PATCH, &path, Some(&rekey)).await;
    assert_eq!(status, StatusCode::OK, "{rekeyed}");
    assert_eq!(rekeyed["secret_key_last4"], "abcd");

    // Deleting: a stale If-Match changes nothing, then it is gone.
    let stale = send_if_match(&app, &app.token, Method::DELETE, &path, &new_etag, None).await;
    expect_problem(stale, StatusCode::PRECONDITION_FAILED).await;
    let (status, _) = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.admin(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.admin(Method::GET, "/v1/gateways", None).await;
    assert_eq!(list["items"], json!([paypal]));
}

async fn invalid(app: &TestApp, method: Method, path: &str, body: Value) -> Vec<String> {
    let response = app.send(method, path, &app.token, Some(&body)).await;
    expect_invalid_fields(response).await
}

async fn invalid_gateways_are_refused_naming_each_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let with = |changes: Value| {
        let mut body = stripe_test();
        for (field, value) in changes.as_object().unwrap() {
            body[field] = value.clone();
        }
        body
    };
    for (body, fields) in [
        // Keys of the other mode, or of the other kind.
        (
            with(json!({"mode": "live"})),
            vec!["publishable_key", "secret_key"],
        ),
        (
            with(json!({"publishable_key": "pk_live_x", "secret_key": "rk_live_x"})),
            vec!["publishable_key", "secret_key"],
        ),
        (
            with(json!({"secret_key": "pk_test_abc"})),
            vec!["secret_key"],
        ),
        (
            with(json!({"webhook_secret": "not-a-whsec"})),
            vec!["webhook_secret"],
        ),
        (
            with(json!({"currencies": ["USD", "XYZ", "XAU"]})),
            vec!["currencies[1]", "currencies[2]"],
        ),
        (with(json!({"currencies": []})), vec!["currencies"]),
        (
            with(json!({"surcharge": {"amount": "0.305", "currency": "USD"}})),
            vec!["surcharge.amount"],
        ),
        (
            with(json!({"surcharge": {"amount": "1", "currency": "GBP"}})),
            vec!["surcharge"],
        ),
        (
            with(json!({"surcharge_percent": "2.12345"})),
            vec!["surcharge_percent"],
        ),
        (
            with(json!({"client_secret": "x", "mode": "sandbox"})),
            vec!["mode"],
        ),
        (
            with(json!({"provider": "stripe", "client_id": "x"})),
            vec!["client_id"],
        ),
        (
            json!({"provider": "paypal", "mode": "test", "currencies": ["USD"],
                   "secret_key": SECRET_KEY}),
            vec!["client_id", "client_secret", "secret_key"],
        ),
        (
            json!({"provider": "bitcoin", "mode": "test", "currencies": ["USD"]}),
            vec!["provider"],
        ),
    ] {
        let mut fields: Vec<String> = fields.into_iter().map(String::from).collect();
        fields.sort();
        let mut refused = invalid(&app, Method::POST, "/v1/gateways", body.clone()).await;
        refused.sort();
        assert_eq!(refused, fields, "{body}");
    }
    // A gateway's provider and mode stay as created.
    let id = add(&app, &stripe_test()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/gateways/{id}");
    for (change, field) in [
        (json!({"mode": "live"}), "mode"),
        (json!({"provider": "paypal"}), "provider"),
        (json!({"publishable_key": "pk_live_abc"}), "publishable_key"),
        (json!({"secret_key": null}), "secret_key"),
    ] {
        let refused = invalid(&app, Method::PATCH, &path, change.clone()).await;
        assert_eq!(refused, [field], "{change}");
    }
    // Nothing above was saved.
    let (_, list) = app.admin(Method::GET, "/v1/gateways", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["mode"], "test");
}

async fn one_gateway_per_provider_and_mode(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    add(&app, &stripe_test()).await;
    let mut again = stripe_test();
    again["secret_key"] = json!(NEW_SECRET_KEY);
    let response = app
        .send(Method::POST, "/v1/gateways", &app.token, Some(&again))
        .await;
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Stripe gateway in test mode"),
        "{problem}"
    );
    // Live is another slot, and so is PayPal's test mode.
    let live = json!({"provider": "stripe", "mode": "live", "publishable_key": "pk_live_abc",
                      "secret_key": "rk_live_abc", "currencies": ["USD"]});
    assert_eq!(add(&app, &live).await["webhook_secret_set"], false);
    add(&app, &paypal_test()).await;
}

async fn another_accounts_gateway_is_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let gateway = add(&app, &stripe_test()).await;
    let path = format!("/v1/gateways/{}", gateway["id"].as_str().unwrap());
    let other = app.open_other_account().await;
    for (method, path, body) in [
        (Method::GET, path.clone(), None),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"currencies": ["USD"]})),
        ),
        (Method::DELETE, path.clone(), None),
        (Method::POST, format!("{path}/verify"), None),
    ] {
        let response = app.send(method.clone(), &path, &other, body.as_ref()).await;
        expect_problem(response, StatusCode::NOT_FOUND).await;
    }
    let response = app.send(Method::GET, "/v1/gateways", &other, None).await;
    let list: Value = response.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
    // And the first account's gateway is as it was.
    let (status, shown) = app.admin(Method::GET, &path, None).await;
    assert_eq!((status, shown), (StatusCode::OK, gateway));
}

async fn secrets_are_never_answered_nor_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut answers = Vec::new();
    let stripe = add(&app, &stripe_test()).await;
    let paypal = add(&app, &paypal_test()).await;
    let path = format!("/v1/gateways/{}", stripe["id"].as_str().unwrap());
    let rekey = json!({"secret_key": NEW_SECRET_KEY, "webhook_secret": "whsec_another"});
    answers.push(app.admin(Method::PATCH, &path, Some(&rekey)).await.1);
    answers.push(app.admin(Method::GET, "/v1/gateways", None).await.1);
    answers.extend([stripe, paypal]);
    let audit = app.audit().await;
    let everything = format!("{answers:?}{audit:?}");
    for secret in [
        SECRET_KEY,
        NEW_SECRET_KEY,
        WEBHOOK_SECRET,
        "whsec_another",
        CLIENT_SECRET,
    ] {
        assert!(!everything.contains(secret), "{secret} shown: {everything}");
    }
    // The audit log tells that the secrets changed, without them.
    let changed = audit
        .iter()
        .find(|entry| entry["summary"] == "Stripe gateway (test mode) changed")
        .expect("the change is audited");
    assert_eq!(changed["changes"]["secret_key"]["to"], "***", "{changed}");
    assert_eq!(changed["changes"]["secret_key_last4"]["to"], "abcd");
    assert_eq!(changed["changes"]["webhook_secret"]["from"], "***");
    let added = audit
        .iter()
        .find(|entry| entry["summary"] == "PayPal gateway (test mode) added")
        .expect("the addition is audited");
    assert_eq!(added["changes"]["client_secret"]["to"], "***", "{added}");
    assert_eq!(added["changes"]["client_id"]["to"], CLIENT_ID);
}

/// The service with the providers' APIs at the fakes.
async fn spawn_with_providers(backend: Backend, providers: ProviderApis) -> TestApp {
    let options = ServiceOptions {
        providers,
        ..loopback_options()
    };
    TestApp::spawn_with(backend, options, test_keyring()).await
}

fn apis(stripe: &str, paypal: Option<&str>) -> ProviderApis {
    ProviderApis {
        stripe: Url::parse(stripe).unwrap(),
        paypal: paypal.map(|base| Url::parse(base).unwrap()),
    }
}

/// Verifies the gateway and answers its finished job.
async fn verify(app: &TestApp, id: &str) -> Value {
    let path = format!("/v1/gateways/{id}/verify");
    let (status, accepted) = app.admin(Method::POST, &path, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let job = wait_for_job(app, accepted["job_id"].as_str().unwrap(), finished).await;
    assert_eq!(job["kind"], "gateway_verify");
    job
}

fn stages(job: &Value) -> Vec<(String, bool)> {
    job["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap().to_owned(), s["ok"] == true))
        .collect()
}

fn stage(name: &str, ok: bool) -> (String, bool) {
    (name.to_owned(), ok)
}

async fn stripe_verification_checks_the_key_and_its_mode(backend: Backend) {
    // Test mode, the key Stripe knows.
    let stripe = StripeFake::start(SECRET_KEY, false).await;
    let app = spawn_with_providers(backend, apis(&stripe.base_url, None)).await;
    let id = add(&app, &stripe_test()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = verify(&app, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        stages(&job),
        [stage("credentials", true), stage("mode", true)]
    );

    // A key Stripe does not know: Stripe's 401 and its words, never the key.
    let path = format!("/v1/gateways/{id}");
    let rekey = json!({"secret_key": NEW_SECRET_KEY});
    assert_eq!(
        app.admin(Method::PATCH, &path, Some(&rekey)).await.0,
        StatusCode::OK
    );
    let job = verify(&app, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "a refused key is not retried: {job}");
    assert_eq!(stages(&job), [stage("credentials", false)]);
    let detail = job["stages"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("HTTP 401"), "{detail}");
    assert!(detail.contains("Invalid API Key provided"), "{detail}");
    assert!(!job.to_string().contains(NEW_SECRET_KEY), "{job}");

    // The key is taken, but Stripe says it is a live one: the mode stage fails.
    let live = StripeFake::start(SECRET_KEY, true).await;
    let app = spawn_with_providers(backend, apis(&live.base_url, None)).await;
    let id = add(&app, &stripe_test()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = verify(&app, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(
        stages(&job),
        [stage("credentials", true), stage("mode", false)]
    );
    let detail = job["stages"][1]["detail"].as_str().unwrap();
    assert!(detail.contains("live mode key"), "{detail}");
    assert_eq!(job["error"], detail, "{job}");
    assert_eq!(live.requests(), 1);
}

async fn paypal_verification_fetches_a_token_at_the_modes_host(backend: Backend) {
    let paypal = PaypalFake::start(CLIENT_ID, CLIENT_SECRET).await;
    let providers = apis("https://api.stripe.com", Some(&paypal.base_url));
    let app = spawn_with_providers(backend, providers).await;
    let id = add(&app, &paypal_test()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = verify(&app, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        stages(&job),
        [stage("credentials", true), stage("mode", true)]
    );
    assert!(!job.to_string().contains(ACCESS_TOKEN), "{job}");

    // A wrong secret: PayPal's OAuth error, in its words.
    let path = format!("/v1/gateways/{id}");
    let change = json!({"client_secret": "wrong-secret-123"});
    assert_eq!(
        app.admin(Method::PATCH, &path, Some(&change)).await.0,
        StatusCode::OK
    );
    let job = verify(&app, &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(stages(&job), [stage("credentials", false)]);
    let detail = job["stages"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("Client Authentication failed (invalid_client)"),
        "{detail}"
    );
    assert!(!job.to_string().contains("wrong-secret-123"), "{job}");
}

async fn a_provider_at_a_refused_address_is_never_contacted(backend: Backend) {
    // Only 127.0.0.1 is allowed; Stripe's name points at 127.0.0.2.
    let refused = CountingListener::bind("127.0.0.2:0").await;
    let base = format!("http://stripe.fake.test:{}", refused.address.port());
    let options = ServiceOptions {
        outbound_allow: AllowList::parse("127.0.0.1/32").unwrap(),
        providers: apis(&base, None),
        ..ServiceOptions::default()
    };
    let app = TestApp::spawn_with(backend, options, test_keyring()).await;
    app.dns.resolve("stripe.fake.test", &["127.0.0.2"]);
    let id = add(&app, &stripe_test()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = verify(&app, &id).await;
    assert_eq!(
        refused.connections(),
        0,
        "a refused address was contacted: {job}"
    );
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "a refusal is not retried: {job}");
    let detail = job["stages"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("was not contacted"), "{detail}");
}
