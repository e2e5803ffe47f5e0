//! Every operation of the OpenAPI document, on a prepared account: callers of every kind, a
//! user, a group and a job to act on, and for each operation a concrete path and a body that
//! stops the request right after the permission check without changing anything. The
//! authorization matrix and the contract walk both go through it.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Backend, TestApp, USER_PASSWORD};

/// Who may use an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No session needed.
    Public,
    /// Any logged-in user: their own session and profile.
    AnyUser,
    /// Users whose groups allow the resource (and administrators).
    Section,
    /// Administrators only, inside a section (or only for the object this row names).
    Administrators,
    /// Administrators of the operator account (the installation's first account) only.
    OperatorAdministrators,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    ForgedToken,
    Administrator,
    Allowed,
    Denied,
    InNoGroup,
    OtherAccountAdministrator,
}

pub const CALLERS: [Caller; 7] = [
    Caller::Anonymous,
    Caller::ForgedToken,
    Caller::Administrator,
    Caller::Allowed,
    Caller::Denied,
    Caller::InNoGroup,
    Caller::OtherAccountAdministrator,
];

pub struct Endpoint {
    pub method: Method,
    /// As the OpenAPI document names it.
    pub template: &'static str,
    pub path: String,
    /// A body that stops the request right after the permission check (an invalid one).
    pub body: Option<Value>,
    pub rule: Rule,
    /// Whether the path names an object of the first account (the other account gets 404).
    pub names_an_object: bool,
}

pub fn endpoint(method: Method, template: &'static str, rule: Rule) -> Endpoint {
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

/// The prepared account, its callers' tokens and every endpoint.
pub struct Setup {
    pub app: TestApp,
    pub tokens: Vec<(Caller, String)>,
    /// The user and the group the endpoints act on.
    pub target: String,
    pub target_group: String,
    pub endpoints: Vec<Endpoint>,
}

impl Setup {
    pub fn token(&self, caller: Caller) -> &str {
        let (_, token) = self.tokens.iter().find(|(c, _)| *c == caller).unwrap();
        token
    }
}

pub async fn setup(backend: Backend) -> Setup {
    let app = TestApp::spawn(backend).await;
    let sections = json!({"config": "allow", "users": "allow", "audit": "allow", "usage": "allow",
                          "api": "allow"});
    let allowing = app.add_group("Allowing", sections.clone()).await;
    let denying = app
        .add_group(
            "Denying",
            json!({"config": "deny", "users": "deny", "audit": "deny", "usage": "deny",
                   "api": "deny"}),
        )
        .await;
    // Objects the matrix acts on: the allowed caller's rights cover them, and they are
    // not the caller's own (a `user` may not change their own groups).
    let target_group = app.add_group("Target", json!({"audit": "allow"})).await;
    let target = app.add_user("target@acme.example.com", "user", &[]).await;
    // A user who may do what the allowed caller may not: taking over their login is for
    // administrators.
    let beyond = app.add_group("Beyond", json!({"cdr": "allow"})).await;
    let privileged = app
        .add_user("privileged@acme.example.com", "user", &[&beyond])
        .await;
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
            Caller::Administrator => Some(super::ADMIN_EMAIL),
            Caller::Allowed => Some("allowed@acme.example.com"),
            Caller::Denied => Some("denied@acme.example.com"),
            Caller::InNoGroup => Some("nogroup@acme.example.com"),
            Caller::OtherAccountAdministrator => Some("root@globex.example.com"),
        };
        let password = match caller {
            Caller::Administrator => super::ADMIN_PASSWORD,
            _ => USER_PASSWORD,
        };
        let token = match email {
            Some(email) => super::login(&app.client, &app.base, email, password).await,
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

    // A gateway of the first account.
    let gateway = json!({"provider": "stripe", "mode": "test", "publishable_key": "pk_test_a",
                         "secret_key": "sk_test_a", "currencies": ["USD"]});
    let (status, gateway) = app
        .admin(Method::POST, "/v1/gateways", Some(&gateway))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{gateway}");
    let gateway = gateway["id"].as_str().unwrap().to_owned();

    let invalid = json!({"name": ""});
    let invalid_to = json!({"to": "nobody"});
    let invalid_gateway = json!({"currencies": []});
    let invalid_money = json!({"amount": "twelve", "currency": "USD"});
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
        endpoint(Method::PATCH, "/v1/users/{id}", Rule::Administrators)
            .at(format!("/v1/users/{privileged}"))
            .body(json!({"password": "a password to log in with"})),
        endpoint(Method::DELETE, "/v1/users/{id}", Rule::Section).at(format!("/v1/users/{target}")),
        endpoint(Method::GET, "/v1/users/{id}/permissions", Rule::Section)
            .at(format!("/v1/users/{target}/permissions")),
        endpoint(Method::DELETE, "/v1/users/{id}/totp", Rule::Administrators)
            .at(format!("/v1/users/{target}/totp")),
        endpoint(Method::GET, "/v1/account/balance", Rule::Section),
        endpoint(Method::PUT, "/v1/account/alerts", Rule::Section)
            .body(json!({"low_balance_threshold": invalid_money})),
        endpoint(Method::GET, "/v1/ledger", Rule::Section),
        endpoint(
            Method::POST,
            "/v1/account/balance/adjustments",
            Rule::OperatorAdministrators,
        )
        .body(json!({"account_id": "", "amount": invalid_money, "reason": ""})),
        endpoint(Method::GET, "/v1/gateways", Rule::Section),
        endpoint(Method::POST, "/v1/gateways", Rule::Section).body(invalid_gateway.clone()),
        endpoint(Method::GET, "/v1/gateways/{id}", Rule::Section)
            .at(format!("/v1/gateways/{gateway}")),
        endpoint(Method::PATCH, "/v1/gateways/{id}", Rule::Section)
            .at(format!("/v1/gateways/{gateway}"))
            .body(invalid_gateway),
        endpoint(Method::DELETE, "/v1/gateways/{id}", Rule::Section)
            .at(format!("/v1/gateways/{gateway}")),
        endpoint(Method::POST, "/v1/gateways/{id}/verify", Rule::Section)
            .at(format!("/v1/gateways/{gateway}/verify")),
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

    Setup {
        app,
        tokens,
        target,
        target_group,
        endpoints: endpoints.into(),
    }
}

/// Every `(METHOD, path template)` the service documents.
pub async fn documented_operations(app: &TestApp) -> BTreeSet<(String, String)> {
    let document: Value = app.get("/v1/openapi.json").await.json().await.unwrap();
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

/// The documented operations that none of `endpoints` covers.
pub fn undocumented_in(
    documented: &BTreeSet<(String, String)>,
    endpoints: &[Endpoint],
) -> Vec<(String, String)> {
    let covered: BTreeSet<(String, String)> = endpoints
        .iter()
        .map(|e| (e.method.as_str().to_owned(), e.template.to_owned()))
        .collect();
    documented.difference(&covered).cloned().collect()
}
