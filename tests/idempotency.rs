//! `Idempotency-Key` on POSTs that create or send: a retried request answers the first
//! response and creates nothing more, at any moment; the same key with another request is
//! refused; a failure frees it.

mod common;

use std::time::Duration;

use common::{
    ADMIN_EMAIL, Backend, Stall, TestApp, USER_PASSWORD, count_events, expect_invalid_fields,
    test_keyring, wait_for_event,
};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use switchyard::service::ServiceOptions;
use switchyard_command::{
    domain::{AccountId, GroupId, Text},
    event_log::{AppendError, Metadata},
    group::{Group, GroupCommand, GroupSettings},
    handler::{CommandError, Loaded},
    idempotency::{Answering, Claim, IdempotencyKeys, StoredAnswer},
};
use switchyard_web::WebOptions;

on_both_backends!(
    a_retried_create_answers_the_first_response_and_creates_once,
    of_concurrent_requests_with_one_key_only_one_creates,
    a_retry_after_the_takeover_delay_answers_what_the_first_request_did,
    a_request_that_lost_its_key_appends_nothing,
    a_test_send_with_one_key_is_queued_once,
);

async fn post(app: &TestApp, path: &str, key: &str, body: &Value) -> Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&app.token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn count(app: &TestApp, path: &str) -> usize {
    let (_, page) = app.admin(Method::GET, path, None).await;
    page["items"].as_array().unwrap().len()
}

async fn a_retried_create_answers_the_first_response_and_creates_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let support = json!({"name": "Support", "permissions": {"cdr": "allow"}});
    let first = post(&app, "/v1/groups", "group-1", &support).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let etag = first.headers()["etag"].clone();
    let created: Value = first.json().await.unwrap();
    let again = post(&app, "/v1/groups", "group-1", &support).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["etag"], etag);
    assert_eq!(again.json::<Value>().await.unwrap(), created);
    assert_eq!(count(&app, "/v1/groups").await, 1);

    let other = json!({"name": "Billing", "permissions": {}});
    let fields = expect_invalid_fields(post(&app, "/v1/groups", "group-1", &other).await).await;
    assert_eq!(fields, ["Idempotency-Key"]);
    assert_eq!(count(&app, "/v1/groups").await, 1);

    // A refused request frees its key: corrected, it runs.
    let invalid = json!({"name": "Bob", "email": "bob@acme.example.com", "password": "short"});
    let fields = expect_invalid_fields(post(&app, "/v1/users", "user-1", &invalid).await).await;
    assert_eq!(fields, ["password"]);
    let valid = json!({"name": "Bob", "email": "bob@acme.example.com", "password": USER_PASSWORD});
    let response = post(&app, "/v1/users", "user-1", &valid).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let bob: Value = response.json().await.unwrap();
    let replayed: Value = post(&app, "/v1/users", "user-1", &valid)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(replayed["id"], bob["id"]);
    assert_eq!(
        count(&app, "/v1/users").await,
        2,
        "the administrator and bob"
    );
    let registrations = app
        .audit()
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "UserRegistered")
        .count();
    assert_eq!(registrations, 2, "bob was registered once");
}

async fn of_concurrent_requests_with_one_key_only_one_creates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body =
        json!({"name": "Carol", "email": "carol@acme.example.com", "password": USER_PASSWORD});
    let (first, second) = tokio::join!(
        post(&app, "/v1/users", "carol", &body),
        post(&app, "/v1/users", "carol", &body)
    );
    for response in [&first, &second] {
        if response.status() == StatusCode::CONFLICT {
            assert!(response.headers().contains_key("retry-after"));
        }
    }
    let mut statuses = [first.status(), second.status()];
    statuses.sort();
    // The second either waits out nothing and finds the first still running (409), or
    // comes after it and gets its answer again (201).
    assert!(
        statuses == [StatusCode::CREATED, StatusCode::CREATED]
            || statuses == [StatusCode::CREATED, StatusCode::CONFLICT],
        "{statuses:?}"
    );
    assert_eq!(count(&app, "/v1/users").await, 2, "carol was created once");
}

/// The first request's group is created, but its answer is held back: the read models it
/// waits for are held still (its client may as well have given up). A retry past the
/// takeover delay must not create the group again: the append that created it kept the
/// answer, and the retry gets it, as does any later retry.
async fn a_retry_after_the_takeover_delay_answers_what_the_first_request_did(backend: Backend) {
    let options = ServiceOptions {
        web: WebOptions {
            abandoned_key_after: Duration::from_millis(200),
            ..WebOptions::default()
        },
        ..ServiceOptions::default()
    };
    let app = TestApp::spawn_with(backend, options, test_keyring()).await;
    let db = app.database.open().await;
    let stall = Stall::on(&db, "groups", "INSERT").await;
    let support = json!({"name": "Support", "permissions": {"cdr": "allow"}});
    let first = tokio::spawn(
        app.client
            .post(app.url("/v1/groups"))
            .bearer_auth(&app.token)
            .header("idempotency-key", "support")
            .json(&support)
            .send(),
    );
    wait_for_event(&db, "group-", "GroupCreated").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let retry = post(&app, "/v1/groups", "support", &support).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    let retried: Value = retry.json().await.unwrap();
    // The first request's own answer: its change is recorded but not yet in force, since
    // the read model that serves permissions is held still.
    let first = first.await.unwrap().unwrap();
    let problem: Value = first.json().await.unwrap();
    assert_eq!(problem["title"], "not_yet_in_force", "{problem}");
    stall.release().await;
    assert_eq!(count_events(&db, "GroupCreated").await, 1, "created once");
    let again = post(&app, "/v1/groups", "support", &support).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.json::<Value>().await.unwrap(), retried);
}

/// A request whose key was taken over (it was presumed abandoned) can append nothing: the
/// command runs once, for the request that holds the key, and the key keeps its answer.
async fn a_request_that_lost_its_key_appends_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let db = app.database.open().await;
    let state = &app.service.state;
    let account: String = sqlx::query_scalar("SELECT account_id FROM users WHERE email = $1")
        .bind(ADMIN_EMAIL)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let account = AccountId::parse(&account).unwrap();
    let keys = IdempotencyKeys::new(db.clone(), Duration::ZERO);
    let claim = async || loop {
        match keys.claim(account, "taken-over", "digest").await.unwrap() {
            Claim::Fresh(claim) => return claim,
            // Claimed in the same microsecond: not older than the delay yet.
            Claim::Running => tokio::time::sleep(Duration::from_millis(1)).await,
            finished => panic!("{finished:?}"),
        }
    };
    let (abandoned, taking_over) = (claim().await, claim().await);
    let group = GroupId::new();
    let create = || GroupCommand::Create {
        account_id: account,
        settings: GroupSettings {
            name: Text::parse("Support", 1, 100).unwrap(),
            permissions: Default::default(),
        },
    };
    let render = |created: &Loaded<Group>| StoredAnswer {
        status: 201,
        etag: Some(created.version.to_string()),
        body: "{}".into(),
    };
    let (stream, metadata) = (group.stream_id(), Metadata::system(account));
    let run = |claim| {
        let answering = Some(Answering::new(claim, &render));
        state
            .commands
            .execute_answering::<Group>(&stream, create(), &metadata, answering)
    };
    let lost = run(&abandoned).await;
    assert!(
        matches!(lost, Err(CommandError::Append(AppendError::KeyTakenOver))),
        "{lost:?}"
    );
    assert_eq!(count_events(&db, "GroupCreated").await, 0);
    run(&taking_over).await.unwrap();
    assert_eq!(count_events(&db, "GroupCreated").await, 1);
    let kept = keys.claim(account, "taken-over", "digest").await.unwrap();
    let Claim::Finished { answer, .. } = kept else {
        panic!("{kept:?}")
    };
    assert_eq!(answer.etag.as_deref(), Some("1"));
}

/// `POST …/test` sends: the same key answers the same job, which is queued once.
async fn a_test_send_with_one_key_is_queued_once(backend: Backend) {
    let no_workers = ServiceOptions {
        workers: None,
        ..ServiceOptions::default()
    };
    let app = TestApp::spawn_with(backend, no_workers, test_keyring()).await;
    let smtp = json!({"from_address": "noc@acme.example.com", "host": "smtp.example.com",
                      "port": 587, "security": "starttls"});
    assert_eq!(
        app.put("/v1/account/smtp", &smtp).await.status(),
        StatusCode::OK
    );
    let sms = json!({"provider": "http", "from_number": "+447700900123",
                     "base_url": "https://sms.example.com/send"});
    assert_eq!(
        app.put("/v1/account/sms", &sms).await.status(),
        StatusCode::OK
    );
    let job = async |response: Response| {
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json::<Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (path, to) in [
        (
            "/v1/account/smtp/test",
            json!({"to": "ops@acme.example.com"}),
        ),
        ("/v1/account/sms/test", json!({"to": "+447700900456"})),
    ] {
        let first = job(post(&app, path, path, &to).await).await;
        let again = job(post(&app, path, path, &to).await).await;
        assert_eq!(first, again, "{path}");
        let elsewhere = json!({"to": "ops2@acme.example.com"});
        let fields = expect_invalid_fields(post(&app, path, path, &elsewhere).await).await;
        assert_eq!(fields, ["Idempotency-Key"], "{path}");
    }
    // Without a body: the caller's own address, the same job again under the same key.
    let bare = || {
        app.client
            .post(app.url("/v1/account/smtp/test"))
            .bearer_auth(&app.token)
            .header("idempotency-key", "mine")
            .send()
    };
    let first = job(bare().await.unwrap()).await;
    assert_eq!(job(bare().await.unwrap()).await, first);
    for (kind, queued) in [("smtp_test", 2), ("sms_test", 1)] {
        let (_, page) = app
            .admin(Method::GET, &format!("/v1/jobs?kind={kind}"), None)
            .await;
        assert_eq!(page["items"].as_array().unwrap().len(), queued, "{kind}");
    }
}
