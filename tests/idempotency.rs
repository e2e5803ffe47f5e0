//! `Idempotency-Key` on creating POSTs: a retried request answers the first response and
//! creates nothing more; the same key with another request is refused; a failure frees it.

mod common;

use common::{Backend, TestApp, USER_PASSWORD, expect_invalid_fields};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

on_both_backends!(
    a_retried_create_answers_the_first_response_and_creates_once,
    of_concurrent_requests_with_one_key_only_one_creates,
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
