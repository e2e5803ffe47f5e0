//! Sessions end by versions of their user's stream, not by clocks nor by the order in which
//! rows happen to be written. Races between a login and a password change, driven
//! deterministically by holding the users projection still.

mod common;

use std::{convert::Infallible, time::Duration};

use common::{Backend, Stall, TestApp, USER_PASSWORD, wait_for_event};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_command::{
    domain::UserId,
    event_log::Metadata,
    user::{User, UserCommand},
};

on_both_backends!(
    a_login_checked_against_a_stale_password_is_refused,
    a_session_created_after_its_end_was_projected_does_not_survive,
);

const BOB: &str = "bob@acme.example.com";
const NEW_PASSWORD: &str = "a brand new passphrase";

/// Changes bob's password on his stream, as `POST /v1/me/password` does, without waiting
/// for the read models.
async fn change_password(app: &TestApp, bob: UserId) {
    let state = &app.service.state;
    let stream = bob.stream_id();
    let user = state.commands.load::<User, Infallible>(&stream).await;
    let account_id = user.unwrap().state.member.unwrap().account_id;
    let password_hash = state.passwords.hash(NEW_PASSWORD.into()).await;
    let command = UserCommand::ChangePassword {
        account_id,
        password_hash,
    };
    state
        .commands
        .execute::<User>(&stream, command, &Metadata::system(account_id))
        .await
        .unwrap();
}

/// Waits until the read models show every event in the log, through the retries of a
/// projection that was held still (`wait_for` gives up at once on a failing projection).
async fn caught_up(app: &TestApp) {
    let state = &app.service.state;
    let head = state.log.head_position().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while state
        .projections
        .handles()
        .iter()
        .any(|h| h.checkpoint() < head)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read models caught up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_in(app: &TestApp, password: &str) -> reqwest::RequestBuilder {
    let body = json!({"email": BOB, "password": password});
    app.client.post(app.url("/v1/sessions")).json(&body)
}

async fn add_bob(app: &TestApp) -> UserId {
    UserId::parse(&app.add_user(BOB, "user", &[]).await).unwrap()
}

/// The read model still has the old password when the login checks it: the user stream,
/// which has the new one, refuses the login.
async fn a_login_checked_against_a_stale_password_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = add_bob(&app).await;
    let db = app.database.open().await;
    let stall = Stall::on(&db, "users", "UPDATE").await;
    change_password(&app, bob).await;
    let stale = log_in(&app, USER_PASSWORD).send().await.unwrap();
    assert_eq!(stale.status(), StatusCode::UNAUTHORIZED);
    stall.release().await;
    caught_up(&app).await;
    let fresh = log_in(&app, NEW_PASSWORD).send().await.unwrap();
    assert_eq!(fresh.status(), StatusCode::CREATED);
}

/// A login records itself on bob's stream, then waits for the read models before it creates
/// its session. Meanwhile the password changes and the read models apply both events: the
/// change is projected before the login's session exists, and still ends it.
async fn a_session_created_after_its_end_was_projected_does_not_survive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = add_bob(&app).await;
    let db = app.database.open().await;
    let stall = Stall::on(&db, "users", "UPDATE").await;
    let login = tokio::spawn(log_in(&app, USER_PASSWORD).send());
    wait_for_event(&db, &bob.stream_id(), "LoggedIn").await;
    change_password(&app, bob).await;
    stall.release().await;
    let response = login.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let token = response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    caught_up(&app).await;
    let me = app.send(Method::GET, "/v1/me", &token, None).await;
    assert_eq!(
        me.status(),
        StatusCode::UNAUTHORIZED,
        "the password change ended the session its login began before it"
    );
}
