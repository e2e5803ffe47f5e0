//! The authorization matrix: every endpoint of the OpenAPI document × every kind of caller,
//! each answer checked against the rule the endpoint is under.
//!
//! Requests are built to stop right after the permission check without changing anything
//! (a stale `If-Match`, an invalid body), so one account serves every row.

mod common;

use std::collections::BTreeSet;

use common::{Backend, TestApp, USER_PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(every_endpoint_answers_each_caller_as_its_rule_says);

/// Who may use an endpoint.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// No session needed.
    Public,
    /// Any logged-in user: their own session and profile.
    AnyUser,
    /// Users whose groups allow the resource (and administrators).
    Section,
    /// Administrators only, inside a section.
    Administrators,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    ForgedToken,
    Administrator,
    Allowed,
    Denied,
    InNoGroup,
    OtherAccountAdministrator,
}

const CALLERS: [Caller; 7] = [
    Caller::Anonymous,
    Caller::ForgedToken,
    Caller::Administrator,
    Caller::Allowed,
    Caller::Denied,
    Caller::InNoGroup,
    Caller::OtherAccountAdministrator,
];

struct Endpoint {
    method: Method,
    /// As the OpenAPI document names it.
    template: &'static str,
    path: String,
    body: Option<Value>,
    rule: Rule,
    /// Whether the path names an object of the first account (the other account gets 404).
    names_an_object: bool,
}

fn endpoint(method: Method, template: &'static str, rule: Rule) -> Endpoint {
    Endpoint {
        method,
        template,
        path: template.to_owned(),
        body: None,
        rule,
        names_an_object: false,
    }
}

impl Endpoint {
    fn at(mut self, path: String) -> Self {
        self.path = path;
        self.names_an_object = true;
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// Whether `status` is what the rule gives `caller`.
fn as_expected(endpoint: &Endpoint, caller: Caller, status: StatusCode) -> bool {
    let passes = status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN;
    match (endpoint.rule, caller) {
        (Rule::Public, _) => status != StatusCode::FORBIDDEN,
        (_, Caller::Anonymous | Caller::ForgedToken) => status == StatusCode::UNAUTHORIZED,
        (Rule::AnyUser, _) => passes,
        (_, Caller::OtherAccountAdministrator) if endpoint.names_an_object => {
            status == StatusCode::NOT_FOUND
        }
        (_, Caller::Administrator | Caller::OtherAccountAdministrator) => passes,
        (Rule::Section, Caller::Allowed) => passes,
        (Rule::Section | Rule::Administrators, _) => status == StatusCode::FORBIDDEN,
    }
}

async fn every_endpoint_answers_each_caller_as_its_rule_says(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let sections = json!({"config": "allow", "users": "allow", "audit": "allow"});
    let allowing = app.add_group("Allowing", sections.clone()).await;
    let denying = app
        .add_group(
            "Denying",
            json!({"config": "deny", "users": "deny", "audit": "deny"}),
        )
        .await;
    // Objects the matrix acts on: the allowed caller's rights cover them, and they are
    // not the caller's own (a `user` may not change their own groups).
    let target_group = app.add_group("Target", json!({"audit": "allow"})).await;
    let target = app.add_user("target@acme.example.com", "user", &[]).await;
    app.add_user("allowed@acme.example.com", "user", &[&allowing])
        .await;
    app.add_user("denied@acme.example.com", "user", &[&allowing, &denying])
        .await;
    app.add_user("nogroup@acme.example.com", "user", &[]).await;
    // Its administrator logs in below, as `OtherAccountAdministrator`.
    app.open_other_account().await;

    let mut tokens = Vec::new();
    for caller in CALLERS {
        let email = match caller {
            Caller::Anonymous | Caller::ForgedToken => None,
            Caller::Administrator => Some(common::ADMIN_EMAIL),
            Caller::Allowed => Some("allowed@acme.example.com"),
            Caller::Denied => Some("denied@acme.example.com"),
            Caller::InNoGroup => Some("nogroup@acme.example.com"),
            Caller::OtherAccountAdministrator => Some("root@globex.example.com"),
        };
        let password = match caller {
            Caller::Administrator => common::ADMIN_PASSWORD,
            _ => USER_PASSWORD,
        };
        let token = match email {
            Some(email) => common::login(&app.client, &app.base, email, password).await,
            None => "not-a-session-token".to_owned(),
        };
        tokens.push((caller, token));
    }

    // A job of the first account: a Test Email to a server that is not there.
    let smtp = json!({"from_address": "noc@acme.example.com", "host": "127.0.0.1", "port": 9,
                      "security": "none"});
    assert_eq!(
        app.put("/v1/account/smtp", &smtp).await.status(),
        StatusCode::OK
    );
    let (status, accepted) = app.admin(Method::POST, "/v1/account/smtp/test", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let job = accepted["job_id"].as_str().unwrap().to_owned();

    let invalid = json!({"name": ""});
    let invalid_to = json!({"to": "nobody"});
    let endpoints = [
        endpoint(Method::GET, "/healthz", Rule::Public),
        endpoint(Method::GET, "/readyz", Rule::Public),
        endpoint(Method::GET, "/v1/openapi.json", Rule::Public),
        endpoint(Method::POST, "/v1/sessions", Rule::Public).body(json!({})),
        // Logging out last would end the callers' sessions: checked separately below.
        endpoint(Method::GET, "/v1/me", Rule::AnyUser),
        endpoint(Method::PUT, "/v1/me", Rule::AnyUser).body(invalid.clone()),
        endpoint(Method::POST, "/v1/me/password", Rule::AnyUser).body(json!({})),
        endpoint(Method::POST, "/v1/me/totp", Rule::AnyUser),
        endpoint(Method::DELETE, "/v1/me/totp", Rule::AnyUser).body(json!({})),
        endpoint(Method::POST, "/v1/me/totp/enable", Rule::AnyUser).body(json!({})),
        endpoint(Method::GET, "/v1/me/permissions", Rule::AnyUser),
        endpoint(Method::GET, "/v1/account/company", Rule::Section),
        endpoint(Method::PUT, "/v1/account/company", Rule::Section).body(invalid.clone()),
        endpoint(Method::GET, "/v1/account/general", Rule::Section),
        endpoint(Method::PUT, "/v1/account/general", Rule::Section).body(invalid.clone()),
        endpoint(Method::GET, "/v1/account/smtp", Rule::Section),
        endpoint(Method::PUT, "/v1/account/smtp", Rule::Section).body(invalid.clone()),
        endpoint(Method::GET, "/v1/account/sms", Rule::Section),
        endpoint(Method::PUT, "/v1/account/sms", Rule::Section).body(invalid.clone()),
        endpoint(Method::POST, "/v1/account/smtp/test", Rule::Section).body(invalid_to.clone()),
        endpoint(Method::POST, "/v1/account/sms/test", Rule::Section).body(invalid_to.clone()),
        endpoint(Method::GET, "/v1/jobs", Rule::Section),
        endpoint(Method::GET, "/v1/jobs/{id}", Rule::Section).at(format!("/v1/jobs/{job}")),
        endpoint(Method::GET, "/v1/audit", Rule::Section),
        endpoint(Method::GET, "/v1/users", Rule::Section),
        endpoint(Method::POST, "/v1/users", Rule::Section).body(invalid.clone()),
        endpoint(Method::GET, "/v1/users/{id}", Rule::Section).at(format!("/v1/users/{target}")),
        endpoint(Method::PATCH, "/v1/users/{id}", Rule::Section)
            .at(format!("/v1/users/{target}"))
            .body(invalid.clone()),
        endpoint(Method::DELETE, "/v1/users/{id}", Rule::Section).at(format!("/v1/users/{target}")),
        endpoint(Method::GET, "/v1/users/{id}/permissions", Rule::Section)
            .at(format!("/v1/users/{target}/permissions")),
        endpoint(Method::DELETE, "/v1/users/{id}/totp", Rule::Administrators)
            .at(format!("/v1/users/{target}/totp")),
        endpoint(Method::GET, "/v1/groups", Rule::Section),
        endpoint(Method::POST, "/v1/groups", Rule::Section).body(invalid.clone()),
        endpoint(Method::GET, "/v1/groups/{id}", Rule::Section)
            .at(format!("/v1/groups/{target_group}")),
        endpoint(Method::PATCH, "/v1/groups/{id}", Rule::Section)
            .at(format!("/v1/groups/{target_group}"))
            .body(invalid.clone()),
        endpoint(Method::DELETE, "/v1/groups/{id}", Rule::Section)
            .at(format!("/v1/groups/{target_group}")),
    ];

    let mut wrong = Vec::new();
    for endpoint in &endpoints {
        for (caller, token) in &tokens {
            let mut request = app
                .client
                .request(endpoint.method.clone(), app.url(&endpoint.path))
                // Anything that passes the check stops at the precondition: nothing changes.
                .header("if-match", "\"999999\"");
            if *caller != Caller::Anonymous {
                request = request.bearer_auth(token);
            }
            if let Some(body) = &endpoint.body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                assert_eq!(response.headers()["www-authenticate"], "Bearer");
            }
            if !as_expected(endpoint, *caller, status) {
                wrong.push(format!(
                    "{} {} as {caller:?}: {status}",
                    endpoint.method, endpoint.path
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "answers against the rules:\n{}",
        wrong.join("\n")
    );

    // Nothing above changed anything: the target user and the group are as they were.
    let (status, user) = app
        .admin(Method::GET, &format!("/v1/users/{target}"), None)
        .await;
    assert_eq!(
        (status, user["name"].as_str()),
        (StatusCode::OK, Some("target@acme.example.com"))
    );
    let (status, group) = app
        .admin(Method::GET, &format!("/v1/groups/{target_group}"), None)
        .await;
    assert_eq!((status, &group["name"]), (StatusCode::OK, &json!("Target")));

    // Logout: anonymous refused, every session may end itself.
    let mut checked = vec![Endpoint {
        method: Method::DELETE,
        template: "/v1/sessions/current",
        path: String::new(),
        body: None,
        rule: Rule::AnyUser,
        names_an_object: false,
    }];
    for (caller, token) in &tokens {
        let response = app
            .send(Method::DELETE, "/v1/sessions/current", token, None)
            .await;
        assert!(
            as_expected(&checked[0], *caller, response.status()),
            "logout as {caller:?}"
        );
    }

    // Every operation the service documents is in the matrix.
    checked.extend(endpoints);
    let documented = documented_operations(&app).await;
    let covered: BTreeSet<(String, String)> = checked
        .iter()
        .map(|e| (e.method.as_str().to_owned(), e.template.to_owned()))
        .collect();
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "operations missing from the matrix: {missing:?}"
    );
    println!(
        "authorization matrix: {} of {} documented operations × {} callers",
        covered.intersection(&documented).count(),
        documented.len(),
        CALLERS.len()
    );
}

async fn documented_operations(app: &TestApp) -> BTreeSet<(String, String)> {
    let document: Value = app.get("/v1/openapi.json").await.json().await.unwrap();
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    operations
}
