//! The SMS send path against fake Twilio and generic gateways: what each receives, and how
//! every kind of failure is reported and classified for retries.

mod common;

use std::time::{Duration, Instant};

use common::dns_server::DnsServer;
use common::sms_fake::{ReceivedSms, SmsFake, twilio_error_body};
use reqwest::StatusCode;
use serde_json::json;
use switchyard_workers::sms::{self, SmsDelivery, SmsError, SmsFailure, SmsSettings};
use tokio::net::TcpListener;

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const API_KEY: &str = "key-3f9c2a7be41d";
const WRONG_API_KEY: &str = "key-wrong-5e8d1c";
const FROM: &str = "+15005550006";
const TO: &str = "+447700900123";
/// Needs encoding in both a form and JSON.
const TEXT: &str = "Your Switchyard code: 123 456 & more — ✓";
const TIMEOUT: Duration = Duration::from_secs(5);

fn twilio(base_url: &str, account_sid: &str, api_key: &str) -> SmsSettings {
    SmsSettings::Twilio {
        base_url: base_url.into(),
        account_sid: account_sid.into(),
        from_number: FROM.into(),
        api_key: api_key.into(),
    }
}

fn http(base_url: &str, username: Option<&str>, api_key: &str) -> SmsSettings {
    SmsSettings::Http {
        base_url: base_url.into(),
        from_number: FROM.into(),
        username: username.map(str::to_owned),
        api_key: api_key.into(),
    }
}

/// Sends `TEXT` and checks that no key made it into what would be recorded.
async fn send(settings: &SmsSettings, to: &str, timeout: Duration) -> SmsDelivery {
    let outbound = common::loopback_outbound(&DnsServer::start().await);
    let delivery = sms::send(outbound.http(), settings, to, TEXT, timeout).await;
    let recorded = serde_json::to_string(&delivery).unwrap();
    assert!(
        !recorded.contains(API_KEY) && !recorded.contains(WRONG_API_KEY),
        "{recorded}"
    );
    delivery
}

fn expect_error(delivery: &SmsDelivery) -> &SmsError {
    match &delivery.outcome {
        Ok(id) => panic!("expected a failure, got message {id:?}: {delivery:?}"),
        Err(error) => error,
    }
}

fn sent(to: &str) -> Vec<ReceivedSms> {
    vec![ReceivedSms {
        from: FROM.into(),
        to: to.into(),
        text: TEXT.into(),
    }]
}

#[tokio::test]
async fn twilio_delivers_and_answers_the_message_sid() {
    let fake = SmsFake::twilio(ACCOUNT_SID, API_KEY).await;

    let delivery = send(&twilio(&fake.base_url, ACCOUNT_SID, API_KEY), TO, TIMEOUT).await;

    assert_eq!(delivery.status, Some(201));
    assert_eq!(
        delivery.outcome,
        Ok(Some("SM0123456789abcdef0123456789abcdef".into()))
    );
    assert!(delivery.excerpt.unwrap().contains(ACCOUNT_SID));
    assert_eq!(fake.received(), sent(TO));
}

#[tokio::test]
async fn twilio_base_url_may_end_with_a_slash() {
    let fake = SmsFake::twilio(ACCOUNT_SID, API_KEY).await;
    let base_url = format!("{}/", fake.base_url);

    let delivery = send(&twilio(&base_url, ACCOUNT_SID, API_KEY), TO, TIMEOUT).await;

    assert_eq!(delivery.status, Some(201), "{delivery:?}");
    assert_eq!(fake.received(), sent(TO));
}

#[tokio::test]
async fn twilio_account_sid_stays_one_path_segment() {
    let odd_sid = "AC/../Accounts?x=1#";
    let fake = SmsFake::twilio(odd_sid, API_KEY).await;

    let delivery = send(&twilio(&fake.base_url, odd_sid, API_KEY), TO, TIMEOUT).await;

    assert_eq!(delivery.status, Some(201), "{delivery:?}");
}

#[tokio::test]
async fn http_gateway_delivers_with_a_bearer_key() {
    let fake = SmsFake::http(None, API_KEY).await;

    let delivery = send(&http(&fake.base_url, None, API_KEY), TO, TIMEOUT).await;

    assert_eq!(delivery.status, Some(200), "{delivery:?}");
    assert_eq!(delivery.outcome, Ok(None));
    assert_eq!(
        delivery.excerpt.as_deref(),
        Some(r#"{"id":"msg-1","status":"accepted"}"#)
    );
    assert_eq!(fake.received(), sent(TO));
}

#[tokio::test]
async fn http_gateway_with_a_username_gets_basic_auth() {
    let fake = SmsFake::http(Some("acme"), API_KEY).await;

    let delivery = send(&http(&fake.base_url, Some("acme"), API_KEY), TO, TIMEOUT).await;

    assert_eq!(delivery.status, Some(200), "{delivery:?}");
    assert_eq!(fake.received(), sent(TO));
}

#[tokio::test]
async fn twilio_invalid_number_is_rejected_for_good_in_twilios_words() {
    let fake = SmsFake::twilio(ACCOUNT_SID, API_KEY).await;

    let delivery = send(
        &twilio(&fake.base_url, ACCOUNT_SID, API_KEY),
        "+1555",
        TIMEOUT,
    )
    .await;

    assert_eq!(delivery.status, Some(400));
    let error = expect_error(&delivery);
    assert_eq!(error.kind, SmsFailure::Rejected { status: 400 });
    assert!(!error.is_transient());
    assert_eq!(
        error.message,
        "Twilio rejected the message (400): check the sender number, the recipient number and \
         the text. Twilio says: The 'To' number +1555 is not a valid phone number. (error \
         21211, https://www.twilio.com/docs/errors/21211)"
    );
    assert!(delivery.excerpt.unwrap().contains("21211"));
    assert!(fake.received().is_empty());
}

#[tokio::test]
async fn wrong_key_is_unauthorized_for_good() {
    let twilio_fake = SmsFake::twilio(ACCOUNT_SID, API_KEY).await;
    let http_fake = SmsFake::http(None, API_KEY).await;

    let from_twilio = send(
        &twilio(&twilio_fake.base_url, ACCOUNT_SID, WRONG_API_KEY),
        TO,
        TIMEOUT,
    )
    .await;
    let from_http = send(&http(&http_fake.base_url, None, WRONG_API_KEY), TO, TIMEOUT).await;

    let error = expect_error(&from_twilio);
    assert_eq!(
        (from_twilio.status, error.kind),
        (Some(401), SmsFailure::Unauthorized)
    );
    assert!(!error.is_transient());
    assert_eq!(
        error.message,
        "Twilio refused the credentials (401): check the account SID and API key. Twilio says: \
         Authenticate (error 20003, https://www.twilio.com/docs/errors/20003)"
    );
    let error = expect_error(&from_http);
    assert_eq!(
        (from_http.status, error.kind),
        (Some(401), SmsFailure::Unauthorized)
    );
    assert!(error.message.starts_with(
        "The SMS gateway refused the credentials (401): check the API key. The SMS gateway says: "
    ));
}

#[tokio::test]
async fn wrong_base_url_path_is_rejected_for_good() {
    let fake = SmsFake::twilio(ACCOUNT_SID, API_KEY).await;
    let base_url = format!("{}/v2", fake.base_url);

    let delivery = send(&twilio(&base_url, ACCOUNT_SID, API_KEY), TO, TIMEOUT).await;

    let error = expect_error(&delivery);
    assert_eq!(error.kind, SmsFailure::Rejected { status: 404 });
    assert!(!error.is_transient());
    assert!(
        error
            .message
            .starts_with("Twilio has no such address (404): check the base URL. "),
        "{error:?}"
    );
}

#[tokio::test]
async fn rate_limits_and_outages_are_transient() {
    let fake = SmsFake::twilio(ACCOUNT_SID, API_KEY).await;
    let settings = twilio(&fake.base_url, ACCOUNT_SID, API_KEY);
    let cases = [
        (
            StatusCode::TOO_MANY_REQUESTS,
            20429,
            SmsFailure::RateLimited,
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            20503,
            SmsFailure::ProviderError { status: 503 },
        ),
    ];

    for (status, code, kind) in cases {
        fake.answer(status, twilio_error_body(status, code, "Try again later"));
        let delivery = send(&settings, TO, TIMEOUT).await;

        assert_eq!(delivery.status, Some(status.as_u16()));
        let error = expect_error(&delivery);
        assert_eq!(error.kind, kind);
        assert!(error.is_transient(), "{error:?}");
        assert!(
            error.message.contains("Try again later (error"),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn silent_gateway_times_out_transiently() {
    let fake = SmsFake::http(None, API_KEY).await;
    fake.hang();
    let started = Instant::now();

    let delivery = send(
        &http(&fake.base_url, None, API_KEY),
        TO,
        Duration::from_secs(1),
    )
    .await;

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((delivery.status, delivery.excerpt.as_deref()), (None, None));
    let error = expect_error(&delivery);
    assert_eq!(error.kind, SmsFailure::Timeout);
    assert!(error.is_transient());
    assert!(
        error.message.contains("did not answer within 1s"),
        "{error:?}"
    );
}

#[tokio::test]
async fn nothing_listening_is_unreachable_transiently() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let delivery = send(&twilio(&base_url, ACCOUNT_SID, API_KEY), TO, TIMEOUT).await;

    assert_eq!(delivery.status, None);
    let error = expect_error(&delivery);
    assert_eq!(error.kind, SmsFailure::Unreachable);
    assert!(error.is_transient());
    assert!(
        error
            .message
            .starts_with(&format!("Could not reach Twilio at {base_url} (")),
        "{error:?}"
    );
}

#[tokio::test]
async fn base_url_that_is_not_http_is_invalid_settings_for_good() {
    for base_url in [
        "api.twilio.com",
        "ftp://api.twilio.com",
        "mailto:sms@example.com",
    ] {
        let delivery = send(&twilio(base_url, ACCOUNT_SID, API_KEY), TO, TIMEOUT).await;

        let error = expect_error(&delivery);
        assert_eq!(error.kind, SmsFailure::InvalidSettings, "{base_url}");
        assert!(!error.is_transient());
    }
}

#[tokio::test]
async fn key_is_never_shown() {
    let settings = [
        twilio("https://api.twilio.com", ACCOUNT_SID, API_KEY),
        http("https://sms.example.com", Some("acme"), API_KEY),
    ];
    for settings in &settings {
        let debug = format!("{settings:?}");
        assert!(!debug.contains(API_KEY), "{debug}");
    }

    // A gateway that echoes the key back: `send` asserts it is not recorded.
    let fake = SmsFake::http(None, API_KEY).await;
    fake.answer(
        StatusCode::BAD_REQUEST,
        json!({"error": format!("unknown key {API_KEY}")}),
    );
    let delivery = send(&http(&fake.base_url, None, API_KEY), TO, TIMEOUT).await;
    assert_eq!(
        delivery.excerpt.as_deref(),
        Some(r#"{"error":"unknown key ***"}"#)
    );
}

#[tokio::test]
async fn delivery_is_stored_as_json() {
    let delivery = SmsDelivery {
        status: Some(400),
        excerpt: Some("{}".into()),
        outcome: Err(SmsError {
            kind: SmsFailure::Rejected { status: 400 },
            message: "Twilio rejected the message (400)".into(),
        }),
    };

    let stored = serde_json::to_value(&delivery).unwrap();

    assert_eq!(
        stored,
        json!({"status": 400, "excerpt": "{}", "outcome": {"Err": {
            "kind": "rejected", "status": 400, "message": "Twilio rejected the message (400)"
        }}})
    );
    assert_eq!(
        serde_json::from_value::<SmsDelivery>(stored).unwrap(),
        delivery
    );
}
