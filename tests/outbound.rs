//! Tenant settings cannot make the service connect where it should not (SSRF): a literal
//! private, loopback or link-local address is refused when saved; a name that resolves to one
//! is never connected to; a gateway's redirect is not followed; and what answers shows no more
//! than a short excerpt of itself on the job. Every connection these tests could provoke is to
//! loopback: the policy under test allows only part of it, and listeners on the rest count
//! what reaches them.

mod common;

use common::{
    Backend, TestApp,
    counting_listener::CountingListener,
    expect_invalid_fields, finished, request_test,
    sms_fake::SmsFake,
    smtp_server::{ServerOptions, SmtpServer},
    test_keyring, wait_for_job,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard::service::ServiceOptions;
use switchyard_command::domain::AllowList;

on_both_backends!(
    literal_addresses_the_policy_refuses_are_invalid_settings,
    a_name_resolving_to_a_refused_address_is_never_connected_to,
    a_gateway_redirect_is_not_followed,
    a_gateway_answer_shows_only_a_clean_excerpt,
);

const API_KEY: &str = "sms-key-7Hq2";

/// The service with tenants' servers allowed only at `allowed`.
async fn spawn_allowing(backend: Backend, allowed: &str) -> TestApp {
    let options = ServiceOptions {
        outbound_allow: AllowList::parse(allowed).unwrap(),
        ..ServiceOptions::default()
    };
    TestApp::spawn_with(backend, options, test_keyring()).await
}

fn smtp(host: &str, port: u16) -> Value {
    json!({"from_address": "noc@acme.example.com", "host": host, "port": port,
           "security": "none"})
}

fn sms(base_url: &str) -> Value {
    json!({"provider": "http", "from_number": "+14155550100", "base_url": base_url,
           "api_key": API_KEY})
}

/// Saves the account's mobile number, for Test Mobile to send to.
async fn save_mobile(app: &TestApp) {
    let me = json!({"name": "Admin", "email": common::ADMIN_EMAIL, "mobile": "+14155550199"});
    assert_eq!(app.put("/v1/me", &me).await.status(), StatusCode::OK);
}

async fn put_ok(app: &TestApp, path: &str, body: &Value) {
    let response = app.put(path, body).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
}

/// Runs a test through the saved settings and answers its finished job.
async fn run_test(app: &TestApp, path: &str) -> Value {
    let id = request_test(app, path, None).await;
    wait_for_job(app, &id, finished).await
}

async fn literal_addresses_the_policy_refuses_are_invalid_settings(backend: Backend) {
    // Nothing private allowed: the installation's default.
    let app = spawn_allowing(backend, "").await;
    for host in [
        "127.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
        "10.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "[fd00::1]",
        "[64:ff9b::a9fe:a9fe]",
    ] {
        let response = app.put("/v1/account/smtp", &smtp(host, 25)).await;
        let problem = common::expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(
            common::problem_fields(&problem),
            ["host"],
            "{host}: {problem}"
        );
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(", RFC "), "{host}: {message}");
    }
    for base_url in [
        "http://127.0.0.1:8080/sms",
        "http://2130706433/sms",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data",
        "https://192.168.1.1/",
    ] {
        let response = app.put("/v1/account/sms", &sms(base_url)).await;
        assert_eq!(
            expect_invalid_fields(response).await,
            ["base_url"],
            "{base_url}"
        );
    }
    assert_eq!(
        app.get("/v1/account/smtp").await.status(),
        StatusCode::NOT_FOUND,
        "nothing was saved"
    );

    // Public addresses and names are saved; a name is checked when it is resolved.
    put_ok(&app, "/v1/account/smtp", &smtp("93.184.215.14", 587)).await;
    put_ok(&app, "/v1/account/smtp", &smtp("smtp.example.com", 587)).await;
    put_ok(
        &app,
        "/v1/account/sms",
        &sms("https://[2606:4700::1111]/sms"),
    )
    .await;

    // The operator's allow list opens a range, and only that one.
    let app = spawn_allowing(backend, "10.1.0.0/16").await;
    put_ok(&app, "/v1/account/smtp", &smtp("10.1.2.3", 25)).await;
    let response = app.put("/v1/account/smtp", &smtp("10.2.0.1", 25)).await;
    assert_eq!(expect_invalid_fields(response).await, ["host"]);
}

async fn a_name_resolving_to_a_refused_address_is_never_connected_to(backend: Backend) {
    let app = spawn_allowing(backend, "127.0.0.1/32").await;
    // Listening where the names point, outside the allowed range.
    let refused = CountingListener::bind("127.0.0.2:0").await;
    let port = refused.address.port();
    app.dns.resolve("relay.acme.test", &["127.0.0.2"]);
    app.dns.resolve("gateway.acme.test", &["127.0.0.2"]);

    put_ok(&app, "/v1/account/smtp", &smtp("relay.acme.test", port)).await;
    let job = run_test(&app, "/v1/account/smtp/test").await;
    assert_eq!(
        refused.connections(),
        0,
        "a refused address was connected to: {job}"
    );
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "not retried: it cannot succeed: {job}");
    let connect = &job["stages"][0];
    assert_eq!(
        (&connect["stage"], &connect["ok"]),
        (&json!("connect"), &json!(false))
    );
    let detail = connect["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("address not allowed: relay.acme.test resolves to 127.0.0.2"),
        "{detail}"
    );
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("address not allowed"),
        "{job}"
    );

    save_mobile(&app).await;
    put_ok(
        &app,
        "/v1/account/sms",
        &sms(&format!("http://gateway.acme.test:{port}/sms")),
    )
    .await;
    let job = run_test(&app, "/v1/account/sms/test").await;
    assert_eq!(
        refused.connections(),
        0,
        "a refused address was connected to: {job}"
    );
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let detail = job["stages"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("address not allowed: gateway.acme.test resolves to 127.0.0.2"),
        "{detail}"
    );

    // A name with an allowed address besides the refused one reaches the allowed one only.
    let server = SmtpServer::start(ServerOptions::default()).await;
    let beside = CountingListener::bind(&format!("127.0.0.2:{}", server.port())).await;
    app.dns
        .resolve("mail.acme.test", &["127.0.0.2", "127.0.0.1"]);
    put_ok(
        &app,
        "/v1/account/smtp",
        &smtp("mail.acme.test", server.port()),
    )
    .await;
    let job = run_test(&app, "/v1/account/smtp/test").await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["stages"][0]["detail"],
        "220 localhost ESMTP Switchyard test server"
    );
    assert_eq!(server.received().len(), 1);
    assert_eq!(
        beside.connections(),
        0,
        "the refused address was tried first"
    );
}

async fn a_gateway_redirect_is_not_followed(backend: Backend) {
    // Loopback allowed: the redirect's target could be reached, and still must not be.
    let app = TestApp::spawn(backend).await;
    let gateway = SmsFake::http(None, API_KEY).await;
    let target = CountingListener::bind("127.0.0.1:0").await;
    gateway.redirect(&format!("http://{}/sms", target.address));
    save_mobile(&app).await;
    put_ok(&app, "/v1/account/sms", &sms(&gateway.base_url)).await;

    let job = run_test(&app, "/v1/account/sms/test").await;

    assert_eq!(target.connections(), 0, "the redirect was followed: {job}");
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(
        job["attempts"], 1,
        "a redirect is answered again the same: {job}"
    );
    assert_eq!(job["stages"][0]["detail"], "HTTP 302 Found");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("redirect, which is not followed"), "{error}");
    assert!(gateway.received().is_empty());
}

async fn a_gateway_answer_shows_only_a_clean_excerpt(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let gateway = SmsFake::http(None, API_KEY).await;
    // What an internal service might answer: long, multi-line, with terminal escapes.
    let answer = format!(
        "\u{1b}[2J\u{1b}[31mInternal inventory\r\nhost db-1 password=hunter2\r\n{}",
        "row of internal data; ".repeat(200)
    );
    gateway.answer_text(StatusCode::BAD_REQUEST, &answer);
    save_mobile(&app).await;
    put_ok(&app, "/v1/account/sms", &sms(&gateway.base_url)).await;

    let job = run_test(&app, "/v1/account/sms/test").await;

    assert_eq!(job["status"], "failed", "{job}");
    let detail = job["stages"][0]["detail"].as_str().unwrap();
    let status_line = "HTTP 400 Bad Request: ";
    assert!(detail.starts_with(status_line), "{detail}");
    let excerpt = &detail[status_line.len()..];
    assert!(
        excerpt.starts_with("[2J [31mInternal inventory host db-1"),
        "{excerpt}"
    );
    assert!(excerpt.ends_with('…'), "{excerpt}");
    assert!(
        excerpt.chars().count() <= 201,
        "{} characters",
        excerpt.chars().count()
    );
    let error = job["error"].as_str().unwrap();
    for shown in [detail, error] {
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }
    assert!(error.len() < 600, "{error}");
}
