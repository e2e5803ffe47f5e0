//! SMTP and SMS settings over HTTP: validation naming each field, write-only secrets that
//! are sealed, never answered, never in the read models or the audit log.

mod common;

use common::{Backend, TestApp, expect_invalid_fields, expect_problem, problem_fields};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;

on_both_backends!(
    smtp_settings_keep_the_password_write_only,
    invalid_smtp_settings_are_refused_naming_each_field,
    sms_settings_for_each_provider,
);

const SMTP_PASSWORD: &str = "smtp-secret-Zq7";
const SMS_KEY: &str = "sk_live_sms_key_42";

fn smtp() -> Value {
    json!({"from_address": "noc@acme.example.com", "host": "smtp.example.com", "port": 587,
           "security": "starttls", "username": "noc", "password": SMTP_PASSWORD})
}

/// Every stored text that could hold a secret: events, read models, audit log.
async fn stored_text(app: &TestApp) -> String {
    let db = app.database.open().await;
    let mut text = String::new();
    for sql in [
        "SELECT CAST(data AS TEXT) FROM events",
        "SELECT CAST(data AS TEXT) FROM account_config",
        "SELECT CAST(changes AS TEXT) FROM audit_log",
        "SELECT CAST(data AS TEXT) FROM audit_sections",
    ] {
        for row in sqlx::query(sql).fetch_all(&db.pool).await.unwrap() {
            text.push_str(&row.try_get::<String, _>(0).unwrap());
        }
    }
    text
}

async fn smtp_settings_keep_the_password_write_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, _) = app.admin(Method::GET, "/v1/account/smtp", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not configured yet");

    let response = app.put_if_match("/v1/account/smtp", "\"0\"", &smtp()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let saved: Value = response.json().await.unwrap();
    assert_eq!(saved["password_set"], true);
    assert!(saved.get("password").is_none());
    let (_, shown) = app.admin(Method::GET, "/v1/account/smtp", None).await;
    assert_eq!(shown, saved, "GET answers what PUT answered");

    // Left out: kept. The same settings again change nothing.
    let mut without_password = smtp();
    without_password.as_object_mut().unwrap().remove("password");
    let response = app
        .put_if_match("/v1/account/smtp", &etag, &without_password)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(
        response.json::<Value>().await.unwrap()["password_set"],
        true
    );

    // A stale If-Match is refused; null clears.
    let mut cleared = smtp();
    cleared["password"] = Value::Null;
    let response = app
        .put_if_match("/v1/account/smtp", "\"0\"", &cleared)
        .await;
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    let response = app.put_if_match("/v1/account/smtp", &etag, &cleared).await;
    assert_eq!(
        response.json::<Value>().await.unwrap()["password_set"],
        false
    );

    let audit = app.audit().await;
    let changes: Vec<&Value> = audit
        .iter()
        .filter(|e| e["event_type"] == "SmtpSettingsChanged")
        .map(|e| &e["changes"])
        .collect();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["password"], json!({"from": "***", "to": null}));
    assert_eq!(changes[1]["password"], json!({"from": null, "to": "***"}));
    assert!(
        !stored_text(&app).await.contains(SMTP_PASSWORD),
        "the password is sealed wherever it is stored"
    );
}

async fn invalid_smtp_settings_are_refused_naming_each_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bad = json!({"from_address": "not an address", "host": "smtp.example.com:587",
                     "port": 0, "security": "ssl", "username": "", "password": "x".repeat(501)});
    let problem = expect_problem(
        app.put("/v1/account/smtp", &bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let mut fields = problem_fields(&problem);
    fields.sort();
    assert_eq!(
        fields,
        ["from_address", "host", "password", "port", "security"]
    );
    let host_error = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["field"] == "host")
        .unwrap();
    assert!(host_error["message"].as_str().unwrap().contains("`port`"));
    let mut no_port = smtp();
    no_port.as_object_mut().unwrap().remove("port");
    let fields = expect_invalid_fields(app.put("/v1/account/smtp", &no_port).await).await;
    assert_eq!(fields, ["port"], "no silent default port");
    let mut too_big = smtp();
    too_big["port"] = json!(70000);
    let fields = expect_invalid_fields(app.put("/v1/account/smtp", &too_big).await).await;
    assert_eq!(fields, ["port"]);
    let (status, _) = app.admin(Method::GET, "/v1/account/smtp", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was saved");
}

async fn sms_settings_for_each_provider(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let twilio = json!({"provider": "twilio", "from_number": "+1 415 555 0100",
                        "base_url": "https://api.twilio.com/", "account_sid": "AC123",
                        "api_key": SMS_KEY});
    let response = app.put("/v1/account/sms", &twilio).await;
    assert_eq!(response.status(), StatusCode::OK);
    let saved: Value = response.json().await.unwrap();
    assert_eq!(
        saved,
        json!({"provider": "twilio", "from_number": "+14155550100",
               "base_url": "https://api.twilio.com", "account_sid": "AC123",
               "username": null, "api_key_set": true})
    );
    let (_, shown) = app.admin(Method::GET, "/v1/account/sms", None).await;
    assert_eq!(shown, saved);

    let missing_sid = json!({"provider": "twilio", "from_number": "+14155550100",
                             "base_url": "ftp://example.com"});
    let fields = expect_invalid_fields(app.put("/v1/account/sms", &missing_sid).await).await;
    assert_eq!(fields, ["account_sid", "base_url"]);

    let http = json!({"provider": "http", "from_number": "+14155550100",
                      "base_url": "https://sms.example.com/send", "username": "acme"});
    let response = app.put("/v1/account/sms", &http).await;
    assert_eq!(response.status(), StatusCode::OK);
    let saved: Value = response.json().await.unwrap();
    assert_eq!(saved["provider"], "http");
    assert_eq!(saved["account_sid"], Value::Null);
    assert_eq!(saved["api_key_set"], true, "the key was kept");
    assert!(!stored_text(&app).await.contains(SMS_KEY));
}
