//! The contract as a fuzzer reads it: every status an operation answers is in the OpenAPI
//! document, bodies are objects only, every list validates its cursor, bad query strings and
//! wrong methods answer problem+json, text is visible and group names are unique per account.

mod common;

use std::collections::BTreeSet;

use common::{
    Backend, TestApp, company, expect_invalid_fields, expect_problem,
    operations::{self, Caller, Endpoint},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_command::{
    domain::{AccountId, GroupId, Text},
    event_log::{ExpectedVersion, Metadata, StreamWrite, encode},
    group::{GroupEvent, GroupSettings},
    permissions::Permissions,
};
use switchyard_projections::replay;

on_both_backends!(
    every_operation_declares_every_status_it_answers,
    an_array_never_stands_in_for_an_object,
    every_list_refuses_a_cursor_it_did_not_give_out,
    bad_query_strings_and_wrong_methods_answer_problem_json,
    text_fields_refuse_invisible_and_bidirectional_control_text,
    group_names_are_unique_per_account,
    of_two_concurrent_creates_of_one_group_name_exactly_one_wins,
    logs_with_duplicate_group_names_still_replay_and_rename,
    channels_never_set_say_they_are_not_configured_yet,
);

/// Words of serde's that name Rust types rather than JSON ones.
const RUST_WORDS: [&str; 6] = ["struct", "enum ", "sequence", "u16", "i64", "Option"];

async fn an_array_never_stands_in_for_an_object(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = app.add_group("Support", json!({"cdr": "allow"})).await;
    let fields = company("ArrayCo");
    let as_array: Vec<Value> = fields.as_object().unwrap().values().cloned().collect();
    let attempts = [
        (
            Method::PUT,
            "/v1/account/company".to_owned(),
            json!(as_array),
        ),
        (
            Method::PATCH,
            format!("/v1/groups/{group}"),
            json!(["Renamed", {"cdr": "deny"}]),
        ),
        (
            Method::POST,
            "/v1/groups".to_owned(),
            json!(["Arrayed", {"cdr": "deny"}]),
        ),
        (
            Method::PATCH,
            format!("/v1/groups/{group}"),
            json!({"permissions": [["cdr", "deny"]]}),
        ),
    ];
    for (method, path, body) in attempts {
        let response = app
            .send(method.clone(), &path, &app.token, Some(&body))
            .await;
        let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        let text = problem.to_string();
        assert!(
            text.contains("must be an object"),
            "{method} {path}: {text}"
        );
        for word in RUST_WORDS {
            assert!(!text.contains(word), "{method} {path}: {text}");
        }
    }

    let (_, current) = app.admin(Method::GET, "/v1/account/company", None).await;
    assert_eq!(current["name"], "Acme", "the company was not changed");
    let (_, current) = app
        .admin(Method::GET, &format!("/v1/groups/{group}"), None)
        .await;
    assert_eq!(
        (&current["name"], &current["permissions"]),
        (&json!("Support"), &json!({"cdr": "allow"})),
        "the group was not changed"
    );
    let (_, groups) = app.admin(Method::GET, "/v1/groups", None).await;
    assert_eq!(groups["items"].as_array().unwrap().len(), 1, "{groups}");
}

async fn every_list_refuses_a_cursor_it_did_not_give_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for name in ["One", "Two", "Three"] {
        app.add_group(name, json!({})).await;
        app.add_user(&format!("{name}@acme.example.com"), "user", &[])
            .await;
    }
    for path in [
        "/v1/users",
        "/v1/groups",
        "/v1/audit",
        "/v1/jobs",
        "/v1/gateways",
    ] {
        for bogus in ["bogus", "' OR 1=1 --", "-", "1.5", ""] {
            let response = list(&app, path, &[("cursor", bogus)]).await;
            assert_eq!(
                expect_invalid_fields(response).await,
                ["cursor"],
                "{path}?cursor={bogus}"
            );
        }
    }
    // The cursors the lists give out still page through them.
    for path in ["/v1/users", "/v1/groups", "/v1/audit"] {
        let first: Value = list(&app, path, &[("limit", "2")])
            .await
            .json()
            .await
            .unwrap();
        let cursor = first["next_cursor"].as_str().expect("a second page");
        let response = list(&app, path, &[("limit", "2"), ("cursor", cursor)]).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let second: Value = response.json().await.unwrap();
        assert_ne!(first["items"][0], second["items"][0], "{path}");
    }
}

async fn bad_query_strings_and_wrong_methods_answer_problem_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (path, field) in [
        ("/v1/users?limit=abc", "limit"),
        ("/v1/groups?limit=", "limit"),
        ("/v1/audit?limit=1&limit=2", "limit"),
        ("/v1/jobs?colour=red", "colour"),
        ("/v1/users?limit=99999999999999999999", "limit"),
    ] {
        assert_eq!(
            expect_invalid_fields(app.get(path).await).await,
            [field],
            "{path}"
        );
    }

    for (method, path, allowed) in [
        (Method::DELETE, "/v1/account/company", "GET,HEAD,PUT"),
        (Method::POST, "/v1/me/permissions", "GET,HEAD"),
        (Method::PUT, "/v1/groups", "GET,HEAD,POST"),
    ] {
        let response = app.send(method.clone(), path, &app.token, None).await;
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        let problem = expect_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_eq!(problem["status"], 405, "{method} {path}");
        let mut allow: Vec<&str> = allow.split(',').collect();
        allow.sort();
        assert_eq!(allow.join(","), allowed, "{method} {path}");
    }
}

/// `GET list?query` as the administrator, the query encoded by reqwest.
async fn list(app: &TestApp, list: &str, query: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .get(app.url(list))
        .query(query)
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap()
}

async fn text_fields_refuse_invisible_and_bidirectional_control_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let invisible = "\u{200B}";
    let reversed = "Sales\u{202E}txt.exe";
    for name in [invisible, " \u{200D}\u{3164} ", reversed, "x\u{2066}y"] {
        let body = json!({"name": name});
        let response = app
            .send(Method::POST, "/v1/groups", &app.token, Some(&body))
            .await;
        assert_eq!(expect_invalid_fields(response).await, ["name"], "{name:?}");
    }
    let mut company_body = company("Acme");
    company_body["name"] = json!(invisible);
    company_body["city"] = json!(reversed);
    company_body["address_line2"] = json!(invisible);
    let response = app.put("/v1/account/company", &company_body).await;
    assert_eq!(
        expect_invalid_fields(response).await,
        ["address_line2", "city", "name"]
    );
    let body = json!({"name": reversed, "email": common::ADMIN_EMAIL});
    let response = app
        .send(Method::PUT, "/v1/me", &app.token, Some(&body))
        .await;
    assert_eq!(expect_invalid_fields(response).await, ["name"]);
    let (_, groups) = app.admin(Method::GET, "/v1/groups", None).await;
    assert_eq!(groups["items"], json!([]), "nothing was created");
}

async fn create_group(app: &TestApp, token: &str, name: &str) -> (StatusCode, Value) {
    let body = json!({"name": name});
    let response = app
        .send(Method::POST, "/v1/groups", token, Some(&body))
        .await;
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn rename_group(app: &TestApp, id: &str, name: &str) -> StatusCode {
    let body = json!({"name": name});
    let path = format!("/v1/groups/{id}");
    app.send(Method::PATCH, &path, &app.token, Some(&body))
        .await
        .status()
}

async fn group_names_are_unique_per_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let support = app.add_group("Support", json!({})).await;
    for same in ["Support", "support", " SUPPORT ", "Sup\u{200B}port"] {
        let (status, problem) = create_group(&app, &app.token, same).await;
        assert_eq!(status, StatusCode::CONFLICT, "{same:?}: {problem}");
        assert_eq!(problem["title"], "conflict");
    }
    let other_account = app.open_other_account().await;
    let (status, _) = create_group(&app, &other_account, "Support").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another account has its own names"
    );

    let billing = app.add_group("Billing", json!({})).await;
    assert_eq!(
        rename_group(&app, &billing, "SUPPORT").await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        rename_group(&app, &support, "SUPPORT").await,
        StatusCode::OK,
        "its own name"
    );
    assert_eq!(
        rename_group(&app, &support, "Helpdesk").await,
        StatusCode::OK
    );
    assert_eq!(
        rename_group(&app, &billing, "Support").await,
        StatusCode::OK,
        "a rename frees the old name"
    );
    let path = format!("/v1/groups/{support}");
    let (status, _) = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = create_group(&app, &app.token, "helpdesk").await;
    assert_eq!(status, StatusCode::CREATED, "deleting frees the name");
}

async fn of_two_concurrent_creates_of_one_group_name_exactly_one_wins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for round in 0..5 {
        let name = format!("Racing {round}");
        let shouted = name.to_uppercase();
        let (first, second) = tokio::join!(
            create_group(&app, &app.token, &name),
            create_group(&app, &app.token, &shouted)
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "{name}"
        );
    }
    let (_, groups) = app.admin(Method::GET, "/v1/groups", None).await;
    assert_eq!(groups["items"].as_array().unwrap().len(), 5, "{groups}");
}

/// Logs written before names were claimed may hold groups of one name: they still replay,
/// and each can still be renamed or deleted.
async fn logs_with_duplicate_group_names_still_replay_and_rename(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let account: String = sqlx::query_scalar("SELECT account_id FROM users WHERE email = $1")
        .bind(common::ADMIN_EMAIL)
        .fetch_one(&app.service.state.db.pool)
        .await
        .unwrap();
    let account = AccountId::parse(&account).unwrap();
    let legacy = [GroupId::new(), GroupId::new()];
    for id in legacy {
        let created = GroupEvent::GroupCreated {
            account_id: account,
            settings: GroupSettings {
                name: Text::parse("Legacy", 1, 100).unwrap(),
                permissions: Permissions::new(),
            },
        };
        let write = StreamWrite {
            stream_id: id.stream_id(),
            stream_type: "group".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![encode(&created)],
        };
        let state = &app.service.state;
        let appended = state
            .log
            .append(vec![write], Metadata::system(account))
            .await
            .unwrap();
        let shown = std::time::Duration::from_secs(5);
        assert!(
            state
                .projections
                .wait_for(appended.last_position, shown)
                .await
        );
    }
    let (_, groups) = app.admin(Method::GET, "/v1/groups", None).await;
    assert_eq!(groups["items"].as_array().unwrap().len(), 2, "{groups}");

    let [first, second] = legacy.map(|id| id.to_string());
    assert_eq!(rename_group(&app, &first, "Legacy 1").await, StatusCode::OK);
    assert_eq!(
        rename_group(&app, &first, "Legacy").await,
        StatusCode::OK,
        "the other legacy group holds no claim on the name"
    );
    assert_eq!(
        rename_group(&app, &second, "Legacy 2").await,
        StatusCode::OK
    );
    let (status, _) = create_group(&app, &app.token, "legacy").await;
    assert_eq!(status, StatusCode::CONFLICT, "claimed by its last rename");
    let path = format!("/v1/groups/{second}");
    let (status, _) = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let TestApp {
        service, database, ..
    } = app;
    service.shutdown().await.unwrap();
    let db = database.open().await;
    replay::rebuild_all(&db, |_| {}).await.unwrap();
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM groups WHERE account_id = $1 ORDER BY name")
            .bind(account.to_string())
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(names, ["Legacy"]);
}

async fn channels_never_set_say_they_are_not_configured_yet(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (path, what) in [("/v1/account/smtp", "SMTP"), ("/v1/account/sms", "SMS")] {
        let problem = expect_problem(app.get(path).await, StatusCode::NOT_FOUND).await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.starts_with(what), "{detail}");
        assert!(detail.contains("not configured yet"), "{detail}");
        assert_eq!(problem["title"], "not_configured");
    }
}

/// Walks every operation of the document with the requests that draw each generic answer
/// (no token, a forged one, every kind of caller, malformed JSON, another content type, an
/// oversized body, an array, an unknown id, a stale or malformed `If-Match`, bad query
/// parameters, a bad `Idempotency-Key`, a cross-site cookie request): every status answered
/// must be declared for the operation, every error must be problem+json, none may be 5xx.
async fn every_operation_declares_every_status_it_answers(backend: Backend) {
    let setup = operations::setup(backend).await;
    let app = &setup.app;
    let document: Value = app.get("/v1/openapi.json").await.json().await.unwrap();
    let mut wrong = Vec::new();
    let mut answers = 0;
    for endpoint in &setup.endpoints {
        let operation =
            &document["paths"][endpoint.template][endpoint.method.as_str().to_lowercase()];
        if operation.is_null() {
            continue; // served, but not an operation of the API (the document itself)
        }
        let declared: BTreeSet<&str> = operation["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for (probe, request) in probes(&setup, endpoint, operation) {
            let response = request.send().await.unwrap();
            answers += 1;
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            let at = format!(
                "{} {} ({probe}): {status}",
                endpoint.method, endpoint.template
            );
            if !declared.contains(status.as_str()) {
                wrong.push(format!("{at} is not declared"));
            }
            if status.is_server_error() {
                wrong.push(format!("{at} is a server error"));
            }
            if status.is_client_error()
                && content_type.as_deref() != Some("application/problem+json")
            {
                wrong.push(format!("{at} answers {content_type:?}"));
            }
        }
    }

    // Logging out, last: it ends the session it is sent with.
    let logout = &document["paths"]["/v1/sessions/current"]["delete"]["responses"];
    for token in [None, Some(setup.token(Caller::Administrator))] {
        let mut request = app.client.delete(app.url("/v1/sessions/current"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let status = request.send().await.unwrap().status();
        answers += 1;
        if logout.get(status.as_str()).is_none() {
            wrong.push(format!(
                "DELETE /v1/sessions/current: {status} is not declared"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let documented = operations::documented_operations(app).await;
    let logout = operations::endpoint(
        Method::DELETE,
        "/v1/sessions/current",
        operations::Rule::AnyUser,
    );
    let mut walked: Vec<Endpoint> = setup.endpoints;
    walked.push(logout);
    let missing = operations::undocumented_in(&documented, &walked);
    assert!(missing.is_empty(), "operations not walked: {missing:?}");
    println!(
        "{answers} answers of {} operations checked",
        documented.len()
    );
}

/// The requests that draw an operation's generic answers, each named for the report.
fn probes(
    setup: &operations::Setup,
    endpoint: &Endpoint,
    operation: &Value,
) -> Vec<(String, reqwest::RequestBuilder)> {
    let app = &setup.app;
    let admin = setup.token(Caller::Administrator);
    // Anything that gets past the checks stops at the precondition: nothing changes.
    let request = |token: Option<&str>, path: &str| {
        let request = app
            .client
            .request(endpoint.method.clone(), app.url(path))
            .header("if-match", "\"999999\"");
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    let with_body = |request: reqwest::RequestBuilder| match &endpoint.body {
        Some(body) => request.json(body),
        None => request,
    };
    let parameter = |place: &str, name: Option<&str>| {
        operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["in"] == place && name.is_none_or(|name| p["name"].as_str() == Some(name)))
    };
    let mut probes = Vec::new();
    for (caller, token) in &setup.tokens {
        let token = (*caller != Caller::Anonymous).then_some(token.as_str());
        probes.push((
            format!("as {caller:?}"),
            with_body(request(token, &endpoint.path)),
        ));
    }
    if operation.get("requestBody").is_some() {
        let json = |body: &str| {
            request(Some(admin), &endpoint.path)
                .header("content-type", "application/json")
                .body(body.to_owned())
        };
        probes.push(("malformed JSON".into(), json("{\"name\": ")));
        probes.push(("an array".into(), json("[]")));
        probes.push(("a string".into(), json("\"x\"")));
        let oversized = json!({"name": "x".repeat(70 * 1024)});
        probes.push(("oversized".into(), json(&oversized.to_string())));
        let text = request(Some(admin), &endpoint.path)
            .header("content-type", "text/plain")
            .body("name=x");
        probes.push(("text/plain".into(), text));
    }
    if endpoint.template.contains("{id}") {
        for unknown in [uuid::Uuid::new_v4().to_string(), "not-an-id".to_owned()] {
            let path = endpoint.template.replace("{id}", &unknown);
            probes.push((
                format!("unknown id {unknown}"),
                with_body(request(Some(admin), &path)),
            ));
        }
    }
    if parameter("header", Some("If-Match")) {
        let valid = valid_body(&endpoint.method, endpoint.template);
        let stale = request(Some(admin), &endpoint.path);
        let malformed = request(Some(admin), &endpoint.path).header("if-match", "W/\"x\"");
        for (probe, mut request) in [("stale If-Match", stale), ("malformed If-Match", malformed)] {
            if let Some(valid) = &valid {
                request = request.json(valid);
            }
            probes.push((probe.into(), request));
        }
    }
    if parameter("query", None) {
        for query in [
            "limit=0",
            "limit=x",
            "cursor=bogus",
            "no_such=1",
            "limit=1&limit=2",
        ] {
            let path = format!("{}?{query}", endpoint.path);
            probes.push((format!("?{query}"), with_body(request(Some(admin), &path))));
        }
    }
    if parameter("header", Some("Idempotency-Key")) {
        let key = "k".repeat(300);
        let request = request(Some(admin), &endpoint.path).header("idempotency-key", key);
        probes.push(("a long Idempotency-Key".into(), with_body(request)));
    }
    if endpoint.method != Method::GET && endpoint.rule != operations::Rule::Public {
        let cross_site = request(None, &endpoint.path)
            .header("cookie", format!("switchyard_session={admin}"))
            .header("origin", "https://elsewhere.example");
        probes.push(("a cross-site cookie request".into(), with_body(cross_site)));
    }
    probes
}

/// A body that passes validation, for the operations that honour `If-Match` (sent with a
/// stale one, it changes nothing).
fn valid_body(method: &Method, template: &str) -> Option<Value> {
    Some(match (method.as_str(), template) {
        ("PUT", "/v1/account/company") => company("Acme"),
        ("PUT", "/v1/account/general") => json!({"currency": "USD", "date_format": "YYYY-MM-DD"}),
        ("PUT", "/v1/account/smtp") => json!({"from_address": "noc@acme.example.com",
            "host": "smtp.example.com", "port": 587, "security": "starttls"}),
        ("PUT", "/v1/account/sms") => json!({"provider": "http", "from_number": "+14155550100",
            "base_url": "https://sms.example.com/send"}),
        ("PUT", "/v1/me") => json!({"name": "Admin", "email": common::ADMIN_EMAIL}),
        ("PATCH", "/v1/gateways/{id}") => json!({"currencies": ["USD"]}),
        ("PATCH", _) => json!({"name": "Renamed"}),
        _ => return None,
    })
}
