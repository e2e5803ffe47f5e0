//! Identity and access end to end: teams, groups where deny beats allow, the last
//! administrator, password changes, two-factor login, throttling — each rule attacked.

mod common;

use common::{
    ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestApp, USER_PASSWORD, expect_invalid_fields,
    expect_problem, problem_fields, totp_code, unix_now,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_command::timestamp;

on_both_backends!(
    an_administrator_builds_a_team_where_deny_beats_allow,
    the_last_administrator_can_be_neither_demoted_nor_deleted,
    emails_are_unique_and_deleting_a_user_frees_theirs_and_ends_their_sessions,
    another_accounts_ids_answer_not_found,
    a_user_who_manages_users_cannot_exceed_their_own_rights,
    changing_the_password_ends_the_other_sessions,
    two_factor_login_with_an_app_and_recovery_codes,
    repeated_failures_lock_the_login_out_and_are_audited,
    of_two_concurrent_group_edits_with_one_if_match_exactly_one_wins,
    disabling_a_user_ends_their_sessions_and_refuses_their_login,
    an_idle_session_expires,
    malformed_and_oversized_user_bodies_are_refused,
    changing_your_own_email_needs_your_password,
    a_deleted_group_leaves_every_view_of_its_members,
);

async fn log_in(app: &TestApp, email: &str, password: &str) -> String {
    common::login(&app.client, &app.base, email, password).await
}

async fn login_attempt(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn as_user(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> StatusCode {
    app.send(method, path, token, body).await.status()
}

async fn permissions(app: &TestApp, token: &str) -> Value {
    let response = app
        .send(Method::GET, "/v1/me/permissions", token, None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn event_types(audit: &[Value]) -> Vec<&str> {
    audit
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect()
}

async fn an_administrator_builds_a_team_where_deny_beats_allow(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let support = app
        .add_group(
            "Support",
            json!({"users": "allow", "cdr": "allow", "audit": "allow"}),
        )
        .await;
    let no_cdrs = app.add_group("No CDRs", json!({"cdr": "deny"})).await;
    let bob = app
        .add_user("bob@acme.example.com", "user", &[&support])
        .await;
    let token = log_in(&app, "bob@acme.example.com", USER_PASSWORD).await;

    let allowed = permissions(&app, &token).await;
    assert_eq!(allowed["role"], "user");
    assert_eq!(allowed["resources"]["cdr"], "allow");
    assert_eq!(allowed["decided_by"]["cdr"]["reason"], "allowed_by");
    assert_eq!(allowed["decided_by"]["cdr"]["groups"][0]["name"], "Support");
    assert_eq!(allowed["resources"]["config"], "deny");
    assert_eq!(allowed["decided_by"]["config"]["reason"], "not_granted");
    assert_eq!(
        as_user(&app, &token, Method::GET, "/v1/users", None).await,
        StatusCode::OK
    );
    assert_eq!(
        as_user(&app, &token, Method::GET, "/v1/account/company", None).await,
        StatusCode::FORBIDDEN
    );

    let both = json!({"groups": [support, no_cdrs]});
    let (status, user) = app
        .admin(Method::PATCH, &format!("/v1/users/{bob}"), Some(&both))
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let denied = permissions(&app, &token).await;
    assert_eq!(denied["resources"]["cdr"], "deny", "a deny beats the allow");
    assert_eq!(denied["decided_by"]["cdr"]["reason"], "denied_by");
    assert_eq!(denied["decided_by"]["cdr"]["groups"][0]["name"], "No CDRs");
    assert_eq!(denied["resources"]["users"], "allow");
    let (status, seen_by_admin) = app
        .admin(Method::GET, &format!("/v1/users/{bob}/permissions"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen_by_admin, denied);

    let (_, list) = app.admin(Method::GET, "/v1/users?limit=1", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let cursor = list["next_cursor"].as_str().expect("a second page");
    let (_, rest) = app
        .admin(Method::GET, &format!("/v1/users?cursor={cursor}"), None)
        .await;
    assert_eq!(rest["items"][0]["email"], "bob@acme.example.com");
    assert_eq!(rest["next_cursor"], Value::Null);

    let audit = app.audit().await;
    let types = event_types(&audit);
    for expected in [
        "GroupCreated",
        "UserRegistered",
        "GroupsChanged",
        "LoggedIn",
    ] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }
    let groups_changed = audit
        .iter()
        .find(|e| e["event_type"] == "GroupsChanged")
        .unwrap();
    assert_eq!(
        groups_changed["changes"]["groups"]["from"],
        json!([support])
    );
}

async fn the_last_administrator_can_be_neither_demoted_nor_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, me) = app.admin(Method::GET, "/v1/me", None).await;
    let admin = me["id"].as_str().unwrap().to_owned();
    let demote = json!({"role": "user"});
    let path = format!("/v1/users/{admin}");
    let (status, _) = app.admin(Method::PATCH, &path, Some(&demote)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let carol = app
        .add_user("carol@acme.example.com", "administrator", &[])
        .await;
    let (status, user) = app.admin(Method::PATCH, &path, Some(&demote)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "with a second administrator: {user}"
    );
    assert_eq!(user["role"], "user");
    let carol_token = log_in(&app, "carol@acme.example.com", USER_PASSWORD).await;
    let status = as_user(
        &app,
        &carol_token,
        Method::DELETE,
        &format!("/v1/users/{carol}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "carol is now the last one");
}

async fn emails_are_unique_and_deleting_a_user_frees_theirs_and_ends_their_sessions(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let taken =
        json!({"name": "Copy", "email": ADMIN_EMAIL.to_uppercase(), "password": USER_PASSWORD});
    let (status, ours) = app.admin(Method::POST, "/v1/users", Some(&taken)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(ours["title"], "email_unavailable");
    // Another account's administrator gets the very same answer: nothing in it says whether,
    // or where, the address is in use.
    let other = app.open_other_account().await;
    let response = app
        .send(Method::POST, "/v1/users", &other, Some(&taken))
        .await;
    let theirs = expect_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(theirs, ours);
    assert!(
        !ours["detail"].as_str().unwrap().contains("exist"),
        "{ours}"
    );

    let bob = app.add_user("bob@acme.example.com", "user", &[]).await;
    let path = format!("/v1/users/{bob}");
    let (status, _) = app
        .admin(Method::PATCH, &path, Some(&json!({"email": ADMIN_EMAIL})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let token = log_in(&app, "bob@acme.example.com", USER_PASSWORD).await;
    assert_eq!(
        as_user(&app, &token, Method::GET, "/v1/me", None).await,
        StatusCode::OK
    );
    let (status, _) = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        as_user(&app, &token, Method::GET, "/v1/me", None).await,
        StatusCode::UNAUTHORIZED,
        "a deleted user's session ends"
    );
    let (status, _) = app.admin(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let again =
        json!({"name": "Bob again", "email": "bob@acme.example.com", "password": USER_PASSWORD});
    let (status, user) = app.admin(Method::POST, "/v1/users", Some(&again)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the email is free again: {user}"
    );
    assert_ne!(user["id"], bob);
    let audit = app.audit().await;
    let deleted = audit
        .iter()
        .find(|e| e["event_type"] == "UserDeleted")
        .unwrap();
    assert_eq!(deleted["actor"]["email"], ADMIN_EMAIL);
}

async fn another_accounts_ids_answer_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = app.add_group("Support", json!({"cdr": "allow"})).await;
    let bob = app
        .add_user("bob@acme.example.com", "user", &[&group])
        .await;
    let intruder = app.open_other_account().await;
    let body = json!({"name": "Taken over"});
    for (method, path, body) in [
        (Method::GET, format!("/v1/users/{bob}"), None),
        (Method::PATCH, format!("/v1/users/{bob}"), Some(&body)),
        (Method::DELETE, format!("/v1/users/{bob}"), None),
        (Method::GET, format!("/v1/users/{bob}/permissions"), None),
        (Method::DELETE, format!("/v1/users/{bob}/totp"), None),
        (Method::GET, format!("/v1/groups/{group}"), None),
        (Method::PATCH, format!("/v1/groups/{group}"), Some(&body)),
        (Method::DELETE, format!("/v1/groups/{group}"), None),
    ] {
        let status = as_user(&app, &intruder, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let (_, users) = app.admin(Method::GET, "/v1/users", None).await;
    assert_eq!(
        users["items"].as_array().unwrap().len(),
        2,
        "nothing changed"
    );
    let response = app.send(Method::GET, "/v1/users", &intruder, None).await;
    let theirs: Value = response.json().await.unwrap();
    assert_eq!(
        theirs["items"].as_array().unwrap().len(),
        1,
        "only their own user"
    );
    // Adding one of Acme's groups to a Globex user is refused: the group is not theirs.
    let borrow = json!({"name": "Spy", "email": "spy@globex.example.com",
                        "password": USER_PASSWORD, "groups": [group]});
    let response = app
        .send(Method::POST, "/v1/users", &intruder, Some(&borrow))
        .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem_fields(&problem), ["groups"]);
}

async fn a_user_who_manages_users_cannot_exceed_their_own_rights(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let managers = app.add_group("Managers", json!({"users": "allow"})).await;
    let config = app.add_group("Config", json!({"config": "allow"})).await;
    let (_, me) = app.admin(Method::GET, "/v1/me", None).await;
    let admin = me["id"].as_str().unwrap().to_owned();
    let bob = app
        .add_user("bob@acme.example.com", "user", &[&managers])
        .await;
    let token = log_in(&app, "bob@acme.example.com", USER_PASSWORD).await;
    let forbidden = [
        (
            "a group allowing what bob lacks",
            Method::POST,
            "/v1/groups".to_owned(),
            json!({"name": "Escalate", "permissions": {"config": "allow"}}),
        ),
        (
            "bob joining another group",
            Method::PATCH,
            format!("/v1/users/{bob}"),
            json!({"groups": [managers, config]}),
        ),
        (
            "bob making himself an administrator",
            Method::PATCH,
            format!("/v1/users/{bob}"),
            json!({"role": "administrator"}),
        ),
        (
            "bob changing the administrator",
            Method::PATCH,
            format!("/v1/users/{admin}"),
            json!({"name": "Mallory"}),
        ),
        (
            "bob changing a group he is in",
            Method::PATCH,
            format!("/v1/groups/{managers}"),
            json!({"permissions": {"users": "allow", "config": "allow"}}),
        ),
        (
            "bob adding an administrator",
            Method::POST,
            "/v1/users".to_owned(),
            json!({"name": "Eve", "email": "eve@acme.example.com", "password": USER_PASSWORD, "role": "administrator"}),
        ),
        (
            "bob adding a user to a group allowing what he lacks",
            Method::POST,
            "/v1/users".to_owned(),
            json!({"name": "Dave", "email": "dave@acme.example.com", "password": USER_PASSWORD, "groups": [config]}),
        ),
        (
            "bob deleting a group that sets what he lacks",
            Method::DELETE,
            format!("/v1/groups/{config}"),
            Value::Null,
        ),
    ];
    for (what, method, path, body) in forbidden {
        let body = (!body.is_null()).then_some(&body);
        let status = as_user(&app, &token, method, &path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
    }
    // Within his rights he may act.
    let helpers = json!({"name": "Helpers", "permissions": {"users": "allow"}});
    assert_eq!(
        as_user(&app, &token, Method::POST, "/v1/groups", Some(&helpers)).await,
        StatusCode::CREATED
    );
    let dave = json!({"name": "Dave", "email": "dave@acme.example.com", "password": USER_PASSWORD});
    assert_eq!(
        as_user(&app, &token, Method::POST, "/v1/users", Some(&dave)).await,
        StatusCode::CREATED
    );
    assert_eq!(
        permissions(&app, &token).await["resources"]["config"],
        "deny"
    );

    // Setting a user's password or email, or enabling them, is logging in as them: only
    // for users whose rights bob holds himself.
    let carol = app
        .add_user("carol@acme.example.com", "user", &[&config])
        .await;
    let carol_path = format!("/v1/users/{carol}");
    let takeovers = [
        json!({"password": "a new password for carol"}),
        json!({"email": "bob+carol@acme.example.com"}),
        json!({"enabled": false}),
    ];
    for body in &takeovers {
        let status = as_user(&app, &token, Method::PATCH, &carol_path, Some(body)).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "bob sending {body} for carol"
        );
    }
    log_in(&app, "carol@acme.example.com", USER_PASSWORD).await;
    let (_, dave) = app.admin(Method::GET, "/v1/users?limit=500", None).await;
    let dave = dave["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "dave@acme.example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reset = json!({"password": "a new password for dave"});
    let path = format!("/v1/users/{dave}");
    assert_eq!(
        as_user(&app, &token, Method::PATCH, &path, Some(&reset)).await,
        StatusCode::OK,
        "dave may do nothing bob may not"
    );
    log_in(&app, "dave@acme.example.com", "a new password for dave").await;

    // Nobody changes their own password or email here: /v1/me asks for the current one.
    for (caller, path) in [
        (&token, format!("/v1/users/{bob}")),
        (&app.token, format!("/v1/users/{admin}")),
    ] {
        for (field, body) in [
            (
                "password",
                json!({"password": "a password without the old one"}),
            ),
            ("email", json!({"email": "someone.else@acme.example.com"})),
        ] {
            let response = app.send(Method::PATCH, &path, caller, Some(&body)).await;
            assert_eq!(expect_invalid_fields(response).await, [field]);
        }
    }
}

async fn changing_the_password_ends_the_other_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_user("bob@acme.example.com", "user", &[]).await;
    let kept = log_in(&app, "bob@acme.example.com", USER_PASSWORD).await;
    let other = log_in(&app, "bob@acme.example.com", USER_PASSWORD).await;
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    for (body, field) in [
        (
            change("wrong password", "a brand new passphrase"),
            "current_password",
        ),
        (change(USER_PASSWORD, "password123"), "new_password"),
        (change(USER_PASSWORD, "short"), "new_password"),
        (change(USER_PASSWORD, USER_PASSWORD), "new_password"),
    ] {
        let response = app
            .send(Method::POST, "/v1/me/password", &kept, Some(&body))
            .await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem_fields(&problem), [field], "{body}");
    }
    let body = change(USER_PASSWORD, "a brand new passphrase");
    let response = app
        .send(Method::POST, "/v1/me/password", &kept, Some(&body))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        as_user(&app, &kept, Method::GET, "/v1/me", None).await,
        StatusCode::OK
    );
    assert_eq!(
        as_user(&app, &other, Method::GET, "/v1/me", None).await,
        StatusCode::UNAUTHORIZED,
        "the other session ended"
    );
    let old = login_attempt(
        &app,
        json!({"email": "bob@acme.example.com", "password": USER_PASSWORD}),
    )
    .await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    log_in(&app, "bob@acme.example.com", "a brand new passphrase").await;
    let changed = app.audit().await;
    let entry = changed
        .iter()
        .find(|e| e["event_type"] == "PasswordChanged")
        .unwrap();
    assert_eq!(
        entry["changes"]["password_hash"],
        json!({"from": "***", "to": "***"})
    );
}

async fn start_totp(app: &TestApp, token: &str) -> String {
    let response = app.send(Method::POST, "/v1/me/totp", token, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let setup: Value = response.json().await.unwrap();
    let secret = setup["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 32, "160 bits in base32");
    let uri = setup["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Switchyard:bob%40acme.example.com?secret="),
        "{uri}"
    );
    secret
}

async fn two_factor_login_with_an_app_and_recovery_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = app.add_user("bob@acme.example.com", "user", &[]).await;
    let token = log_in(&app, "bob@acme.example.com", USER_PASSWORD).await;
    let login = |extra: Value| {
        let mut body = json!({"email": "bob@acme.example.com", "password": USER_PASSWORD});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        login_attempt(&app, body)
    };

    // A first setup, turned off again with password and a fresh code.
    let secret = start_totp(&app, &token).await;
    let wrong = json!({"code": "12345"});
    let response = app
        .send(Method::POST, "/v1/me/totp/enable", &token, Some(&wrong))
        .await;
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let code = json!({"code": totp_code(&secret, unix_now())});
    let response = app
        .send(Method::POST, "/v1/me/totp/enable", &token, Some(&code))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let replayed = json!({"password": USER_PASSWORD, "code": totp_code(&secret, unix_now())});
    let response = app
        .send(Method::DELETE, "/v1/me/totp", &token, Some(&replayed))
        .await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        problem_fields(&problem),
        ["code"],
        "the enabling code is used up"
    );
    let off = json!({"password": USER_PASSWORD, "code": totp_code(&secret, unix_now() + 30)});
    let response = app
        .send(Method::DELETE, "/v1/me/totp", &token, Some(&off))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // The setup that stays.
    let secret = start_totp(&app, &token).await;
    let code = json!({"code": totp_code(&secret, unix_now())});
    let response = app
        .send(Method::POST, "/v1/me/totp/enable", &token, Some(&code))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let issued: Value = response.json().await.unwrap();
    let recovery: Vec<String> = issued["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    assert_eq!(
        as_user(&app, &token, Method::GET, "/v1/me", None).await,
        StatusCode::OK
    );

    let problem = expect_problem(login(json!({})).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(problem["title"], "totp_required");
    let next_code = totp_code(&secret, unix_now() + 30);
    assert_eq!(
        login(json!({"totp_code": next_code})).await.status(),
        StatusCode::CREATED
    );
    let problem = expect_problem(
        login(json!({"totp_code": next_code})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        problem["title"], "invalid_second_factor",
        "a code works once"
    );

    // The phone is lost: a recovery code gets in, once.
    let typed_loosely = recovery[0].to_uppercase().replace('-', " ");
    assert_eq!(
        login(json!({"recovery_code": typed_loosely}))
            .await
            .status(),
        StatusCode::CREATED
    );
    let problem = expect_problem(
        login(json!({"recovery_code": recovery[0]})).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(problem["title"], "invalid_second_factor");

    // An administrator resets it; bob's sessions end, and he logs in with his password.
    let (status, _) = app
        .admin(Method::DELETE, &format!("/v1/users/{bob}/totp"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        as_user(&app, &token, Method::GET, "/v1/me", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(json!({})).await.status(), StatusCode::CREATED);

    let audit = app.audit().await;
    let summaries: Vec<&str> = audit
        .iter()
        .map(|e| e["summary"].as_str().unwrap())
        .collect();
    for expected in [
        "Two-factor login turned on; recovery codes issued",
        "Two-factor login turned off",
        "Logged in with a password and an authenticator code",
        "Logged in with a password and a recovery code",
        "Two-factor login reset by an administrator",
    ] {
        assert!(
            summaries.contains(&expected),
            "{expected:?} in {summaries:?}"
        );
    }
    let text = serde_json::to_string(&audit).unwrap();
    assert!(
        !text.contains(&secret),
        "the seed never reaches the audit log"
    );
}

async fn repeated_failures_lock_the_login_out_and_are_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = app.add_user("bob@acme.example.com", "user", &[]).await;
    let wrong = json!({"email": "bob@acme.example.com", "password": "not bob's password"});
    for attempt in 1..=5 {
        let response = login_attempt(&app, wrong.clone()).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    let right = json!({"email": "bob@acme.example.com", "password": USER_PASSWORD});
    let response = login_attempt(&app, right).await;
    assert_eq!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "locked out, even with the right password"
    );
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["title"], "too_many_requests");

    // An unknown email is throttled alike, so the answer does not tell which emails exist.
    let unknown = json!({"email": "nobody@acme.example.com", "password": "whatever it is"});
    for _ in 1..=5 {
        login_attempt(&app, unknown.clone()).await;
    }
    assert_eq!(
        login_attempt(&app, unknown).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // Other users are not affected.
    log_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let audit = app.audit().await;
    let lockouts: Vec<&Value> = audit
        .iter()
        .filter(|e| e["event_type"] == "LoginLockedOut")
        .collect();
    assert_eq!(lockouts.len(), 1, "one lockout, of bob's login");
    assert_eq!(lockouts[0]["stream"], format!("user-{bob}"));
    assert_eq!(lockouts[0]["actor"]["id"], "system");
}

async fn of_two_concurrent_group_edits_with_one_if_match_exactly_one_wins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = app.add_group("Support", json!({"cdr": "allow"})).await;
    let path = format!("/v1/groups/{group}");
    let etag = app.get(&path).await.headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let edit = |name: &str| {
        app.client
            .patch(app.url(&path))
            .bearer_auth(&app.token)
            .header("if-match", &etag)
            .json(&json!({"name": name}))
            .send()
    };
    let (first, second) = tokio::join!(edit("Support A"), edit("Support B"));
    let mut statuses = [first.unwrap().status(), second.unwrap().status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::PRECONDITION_FAILED]);
}

async fn disabling_a_user_ends_their_sessions_and_refuses_their_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = app.add_user("bob@acme.example.com", "user", &[]).await;
    let token = log_in(&app, "bob@acme.example.com", USER_PASSWORD).await;
    let path = format!("/v1/users/{bob}");
    let (status, user) = app
        .admin(Method::PATCH, &path, Some(&json!({"enabled": false})))
        .await;
    assert_eq!((status, &user["enabled"]), (StatusCode::OK, &json!(false)));
    assert_eq!(
        as_user(&app, &token, Method::GET, "/v1/me", None).await,
        StatusCode::UNAUTHORIZED
    );
    // The right password of a disabled user gets the very answer of a wrong one.
    let credentials = json!({"email": "bob@acme.example.com", "password": USER_PASSWORD});
    let refused = expect_problem(
        login_attempt(&app, credentials.clone()).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let wrong = json!({"email": "bob@acme.example.com", "password": "not bob's password"});
    let wrong = expect_problem(login_attempt(&app, wrong).await, StatusCode::UNAUTHORIZED).await;
    assert_eq!(refused, wrong);

    let (_, me) = app.admin(Method::GET, "/v1/me", None).await;
    let admin_path = format!("/v1/users/{}", me["id"].as_str().unwrap());
    let (status, _) = app
        .admin(Method::PATCH, &admin_path, Some(&json!({"enabled": false})))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the last administrator stays enabled"
    );

    let (status, user) = app
        .admin(Method::PATCH, &path, Some(&json!({"enabled": true})))
        .await;
    assert_eq!((status, &user["enabled"]), (StatusCode::OK, &json!(true)));
    assert_eq!(
        login_attempt(&app, credentials).await.status(),
        StatusCode::CREATED
    );
}

async fn an_idle_session_expires(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let idle = log_in(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let db = app.database.open().await;
    let ago =
        |minutes: i64| timestamp::format(chrono::Utc::now() - chrono::Duration::minutes(minutes));
    let set_last_used = format!(
        "UPDATE sessions SET last_used_at = {}",
        timestamp::param(db.backend, 1)
    );
    // Every session but the idle one was last used 29 minutes ago, the idle one 31.
    sqlx::query(sqlx::AssertSqlSafe(set_last_used.as_str()))
        .bind(ago(29))
        .execute(&db.pool)
        .await
        .unwrap();
    let idle_hash = hex_sha256(&idle);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "{set_last_used} WHERE token_hash = $2"
    )))
    .bind(ago(31))
    .bind(&idle_hash)
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        as_user(&app, &idle, Method::GET, "/v1/me", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/me").await.status(),
        StatusCode::OK,
        "29 minutes is not idle"
    );
    let used: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM sessions WHERE token_hash <> $1",
        timestamp::read(db.backend, "last_used_at")
    )))
    .bind(&idle_hash)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        used > ago(1),
        "using a session moves its idle timer: {used}"
    );
}

fn hex_sha256(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

async fn malformed_and_oversized_user_bodies_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let post = |body: String| {
        app.client
            .post(app.url("/v1/users"))
            .bearer_auth(&app.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    expect_problem(
        post("{\"name\": ".into()).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    let huge = json!({"name": "x".repeat(70 * 1024), "email": "a@b.example.com", "password": USER_PASSWORD});
    expect_problem(
        post(huge.to_string()).await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    let unknown = json!({"name": "Eve", "email": "eve@acme.example.com", "password": USER_PASSWORD, "admin": true});
    let problem = expect_problem(
        post(unknown.to_string()).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["admin"]);
    let invalid = json!({"name": "", "email": "not an email", "password": "short",
                         "role": "root", "groups": ["nope"], "phone": "12"});
    let fields = expect_invalid_fields(post(invalid.to_string()).await.unwrap()).await;
    assert_eq!(
        fields,
        ["email", "groups[0]", "name", "password", "phone", "role"]
    );
    let (_, users) = app.admin(Method::GET, "/v1/users", None).await;
    assert_eq!(
        users["items"].as_array().unwrap().len(),
        1,
        "nothing was added"
    );
}

async fn changing_your_own_email_needs_your_password(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_user("bob@acme.example.com", "user", &[]).await;
    let token = log_in(&app, "bob@acme.example.com", USER_PASSWORD).await;
    let me = |extra: Value| {
        let mut body = json!({"name": "Bob", "email": "robert@acme.example.com",
                              "mobile": "+44 7700 900123"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, why) in [
        (json!({}), "no current password"),
        (
            json!({"current_password": "not my password"}),
            "a wrong one",
        ),
    ] {
        let response = app
            .send(Method::PUT, "/v1/me", &token, Some(&me(extra)))
            .await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(problem_fields(&problem), ["current_password"], "{why}");
    }
    let response = app
        .send(
            Method::PUT,
            "/v1/me",
            &token,
            Some(&me(json!({"current_password": USER_PASSWORD}))),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["email"], "robert@acme.example.com");
    assert_eq!(updated["mobile"], "+447700900123");
    log_in(&app, "robert@acme.example.com", USER_PASSWORD).await;
    let old = login_attempt(
        &app,
        json!({"email": "bob@acme.example.com", "password": USER_PASSWORD}),
    )
    .await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    // A name change alone needs no password.
    let rename = json!({"name": "Robert", "email": "robert@acme.example.com"});
    let response = app.send(Method::PUT, "/v1/me", &token, Some(&rename)).await;
    assert_eq!(response.status(), StatusCode::OK);
}

async fn a_deleted_group_leaves_every_view_of_its_members(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let gone = app.add_group("Gone", json!({"cdr": "allow"})).await;
    let kept = app.add_group("Kept", json!({"log": "allow"})).await;
    let bob = app
        .add_user("bob@acme.example.com", "user", &[&gone, &kept])
        .await;
    let token = log_in(&app, "bob@acme.example.com", USER_PASSWORD).await;
    let (status, _) = app
        .admin(Method::DELETE, &format!("/v1/groups/{gone}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let me: Value = app
        .send(Method::GET, "/v1/me", &token, None)
        .await
        .json()
        .await
        .unwrap();
    let renamed = json!({"name": "Robert"});
    let (_, patched) = app
        .admin(Method::PATCH, &format!("/v1/users/{bob}"), Some(&renamed))
        .await;
    let (_, read) = app
        .admin(Method::GET, &format!("/v1/users/{bob}"), None)
        .await;
    for (view, user) in [("GET /v1/me", &me), ("PATCH", &patched), ("GET", &read)] {
        assert_eq!(user["groups"], json!([kept]), "{view}: {user}");
    }
}
