//! The authorization matrix: every endpoint of the OpenAPI document × every kind of caller,
//! each answer checked against the rule the endpoint is under.
//!
//! Requests are built to stop right after the permission check without changing anything
//! (a stale `If-Match`, an invalid body), so one account serves every row.

mod common;

use common::{
    Backend,
    operations::{self, CALLERS, Caller, Endpoint, Rule},
};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_backends!(every_endpoint_answers_each_caller_as_its_rule_says);

/// Whether `status` is what the rule gives `caller`.
fn as_expected(endpoint: &Endpoint, caller: Caller, status: StatusCode) -> bool {
    if status.is_server_error() {
        return false;
    }
    let passes = status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN;
    match (endpoint.rule, caller) {
        (Rule::Public, _) => status != StatusCode::FORBIDDEN,
        (_, Caller::Anonymous | Caller::ForgedToken) => status == StatusCode::UNAUTHORIZED,
        (Rule::AnyUser, _) => passes,
        (Rule::OperatorAdministrators, Caller::Administrator) => passes,
        (Rule::OperatorAdministrators, _) => status == StatusCode::FORBIDDEN,
        (_, Caller::OtherAccountAdministrator) if endpoint.names_an_object => {
            status == StatusCode::NOT_FOUND
        }
        (_, Caller::Administrator | Caller::OtherAccountAdministrator) => passes,
        (Rule::Section, Caller::Allowed) => passes,
        (Rule::Section | Rule::Administrators, _) => status == StatusCode::FORBIDDEN,
    }
}

async fn every_endpoint_answers_each_caller_as_its_rule_says(backend: Backend) {
    let operations::Setup {
        app,
        tokens,
        target,
        target_group,
        endpoints,
    } = operations::setup(backend).await;
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
    let documented = operations::documented_operations(&app).await;
    let missing = operations::undocumented_in(&documented, &checked);
    assert!(
        missing.is_empty(),
        "operations missing from the matrix: {missing:?}"
    );
    println!(
        "authorization matrix: {} documented operations × {} callers",
        documented.len(),
        CALLERS.len()
    );
}
