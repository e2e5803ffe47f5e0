//! Test support: a fresh database per test on either backend, and the service spawned on
//! port 0 with a logged-in administrator.
#![allow(dead_code)] // each test binary uses a different part of this module
pub mod sms_fake;
pub mod smtp_server;

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use switchyard::service::{AdminCredentials, Service, ServiceOptions, open_database};
use switchyard_command::{Database, secrets::SecretKeyring};
use tokio::net::TcpListener;

pub const POSTGRES_URL_VAR: &str = "SWITCHYARD_TEST_POSTGRES_URL";
pub const ADMIN_EMAIL: &str = "admin@acme.example.com";
pub const ADMIN_PASSWORD: &str = "a long enough password";
/// The password of users the tests add.
pub const USER_PASSWORD: &str = "correct horse battery staple";
/// Opening an account appends the account, the administrator, their email claim and the
/// account's roster.
pub const OPENING_EVENTS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` twice: `name::sqlite` and `name::postgres`. Without
/// `SWITCHYARD_TEST_POSTGRES_URL` at build time the PostgreSQL variant is reported ignored.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(pg_tests),
                ignore = "PostgreSQL not tested: set SWITCHYARD_TEST_POSTGRES_URL to run it"
            )]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )*};
}

/// A database that exists only for one test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
                    panic!("{POSTGRES_URL_VAR} must be set to run PostgreSQL tests")
                });
                let name = format!("sy_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .expect("connect to PostgreSQL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin.pool)
                    .await
                    .expect("create test database");
                admin.pool.close().await;
                let (base, _) = admin_url.rsplit_once('/').expect("URL names a database");
                Self {
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
        }
    }

    pub async fn open(&self) -> Database {
        open_database(&self.url).await.expect("open test database")
    }
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub token: String,
    pub database: TestDatabase,
    pub service: Service,
}

/// A fresh keyring, as the first start of a service generates it.
pub fn test_keyring() -> SecretKeyring {
    let dir = tempfile::tempdir().unwrap();
    SecretKeyring::load_or_generate(&dir.path().join("secrets.key")).unwrap()
}

impl TestApp {
    /// A fresh database, the service on port 0 with its job workers, the first account
    /// opened and its administrator logged in.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, ServiceOptions::default(), test_keyring()).await
    }

    /// As [`TestApp::spawn`], with the given service options (e.g. no workers, when a
    /// `switchyard worker` process runs them) and secrets keyring.
    pub async fn spawn_with(
        backend: Backend,
        options: ServiceOptions,
        keyring: SecretKeyring,
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("error")
            .try_init();
        let database = TestDatabase::new(backend).await;
        let mut service = Service::start_with(database.open().await, keyring, options)
            .await
            .unwrap();
        service
            .bootstrap(
                "Acme",
                AdminCredentials {
                    email: ADMIN_EMAIL.into(),
                    password: Some(ADMIN_PASSWORD.into()),
                },
            )
            .await
            .unwrap()
            .expect("a new database gets its first account");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", service.serve(listener).unwrap());
        let client = Client::new();
        let token = login(&client, &base, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        Self {
            base,
            client,
            token,
            database,
            service,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.client
            .put(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn put_if_match(&self, path: &str, etag: &str, body: &Value) -> Response {
        self.client
            .put(self.url(path))
            .bearer_auth(&self.token)
            .header("if-match", etag)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A request as the holder of `token`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    /// As the administrator: answers the status and the JSON body (`Null` if none).
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let response = self.send(method, path, &self.token, body).await;
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Adds a user through the API; answers their id.
    pub async fn add_user(&self, email: &str, role: &str, groups: &[&str]) -> String {
        let body = json!({"name": email, "email": email, "password": USER_PASSWORD,
                          "role": role, "groups": groups});
        let (status, user) = self.admin(Method::POST, "/v1/users", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "adding {email}: {user}");
        user["id"].as_str().unwrap().to_owned()
    }

    /// Adds a group through the API; answers its id.
    pub async fn add_group(&self, name: &str, permissions: Value) -> String {
        let body = json!({"name": name, "permissions": permissions});
        let (status, group) = self.admin(Method::POST, "/v1/groups", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "adding group {name}: {group}");
        group["id"].as_str().unwrap().to_owned()
    }

    /// Opens a second account, "Globex", and answers its administrator's token.
    pub async fn open_other_account(&self) -> String {
        let state = &self.service.state;
        let email = "root@globex.example.com";
        let other = switchyard::service::create_account(
            &state.commands,
            &state.passwords,
            "Globex",
            AdminCredentials {
                email: email.into(),
                password: Some(USER_PASSWORD.into()),
            },
        )
        .await
        .unwrap();
        assert!(
            state
                .projections
                .wait_for(other.opened.position, std::time::Duration::from_secs(5))
                .await
        );
        login(&self.client, &self.base, email, USER_PASSWORD).await
    }

    pub async fn audit(&self) -> Vec<Value> {
        let page: Value = self.get("/v1/audit?limit=500").await.json().await.unwrap();
        page["items"].as_array().unwrap().clone()
    }
}

pub async fn login(client: &Client, base: &str, email: &str, password: &str) -> String {
    let response = client
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "login of {email}");
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

/// Asserts a problem+json answer with `status`, returning its body.
pub async fn expect_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    response.json().await.unwrap()
}

/// Asserts a 422 validation problem; answers the fields it names, sorted.
pub async fn expect_invalid_fields(response: Response) -> Vec<String> {
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let mut fields = problem_fields(&problem);
    fields.sort();
    fields
}

/// The fields a validation problem names.
pub fn problem_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn company(name: &str) -> Value {
    json!({
        "name": name,
        "email": "billing@acme.example.com",
        "company": "Acme Telecom Ltd",
        "address_line1": "1 Exchange Square",
        "address_line2": "",
        "country": "GB",
        "city": "Leeds",
        "post_code": "LS1 4AP"
    })
}
