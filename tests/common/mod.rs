//! Test support: a fresh database per test on either backend, and the service spawned on
//! port 0 with a logged-in administrator.
#![allow(dead_code)] // each test binary uses a different part of this module
pub mod counting_listener;
pub mod dns_server;
pub mod operations;
pub mod paypal_fake;
pub mod proxy;
pub mod sms_fake;
pub mod smtp_server;
pub mod stripe_fake;

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use switchyard::service::{
    AdminCredentials, Service, ServiceOptions, open_database, open_database_with,
};
use switchyard_command::{
    Database,
    db::SessionLimits,
    domain::{AllowList, OutboundPolicy},
    secrets::SecretKeyring,
};
use switchyard_workers::outbound::Outbound;
use tokio::net::TcpListener;

use dns_server::DnsServer;

pub const POSTGRES_URL_VAR: &str = "SWITCHYARD_TEST_POSTGRES_URL";
pub const ADMIN_EMAIL: &str = "admin@acme.example.com";
pub const ADMIN_PASSWORD: &str = "a long enough password";
/// The password of users the tests add.
pub const USER_PASSWORD: &str = "correct horse battery staple";
/// Opening the installation's first account appends the account, the administrator, their
/// email claim, the account's roster and the account's designation as the operator.
pub const OPENING_EVENTS: usize = 5;

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

    /// Opened with PostgreSQL sessions bounded by `limits`.
    pub async fn open_with(&self, limits: SessionLimits) -> Database {
        open_database_with(&self.url, limits)
            .await
            .expect("open test database")
    }
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub token: String,
    pub database: TestDatabase,
    pub service: Service,
    /// The service's name server, unless the options named another.
    pub dns: DnsServer,
}

/// Where the fakes (SMTP server, SMS gateway, …) listen, which tenants' servers may not be at
/// unless the operator allows it.
pub const LOOPBACK: &str = "127.0.0.0/8,::1";

/// The default service options, but with tenants' servers allowed on loopback, where the
/// tests run theirs.
pub fn loopback_options() -> ServiceOptions {
    ServiceOptions {
        outbound_allow: AllowList::parse(LOOPBACK).unwrap(),
        ..ServiceOptions::default()
    }
}

/// The workers' way out as the service sets it up with [`loopback_options`], resolving
/// through `dns`.
pub fn loopback_outbound(dns: &DnsServer) -> Outbound {
    let policy = OutboundPolicy::new(AllowList::parse(LOOPBACK).unwrap());
    Outbound::new(policy, Some(dns.address)).unwrap()
}

/// A fresh keyring, as the first start of a service generates it.
pub fn test_keyring() -> SecretKeyring {
    let dir = tempfile::tempdir().unwrap();
    SecretKeyring::load_or_generate(&dir.path().join("secrets.key")).unwrap()
}

impl TestApp {
    /// A fresh database, the service on port 0 with its job workers and [`loopback_options`],
    /// the first account opened and its administrator logged in.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, loopback_options(), test_keyring()).await
    }

    /// As [`TestApp::spawn`], with the given service options (e.g. no workers, when a
    /// `switchyard worker` process runs them) and secrets keyring. Unless the options name a
    /// name server, the service resolves through [`TestApp::dns`]: no test asks the machine's.
    pub async fn spawn_with(
        backend: Backend,
        options: ServiceOptions,
        keyring: SecretKeyring,
    ) -> Self {
        let database = TestDatabase::new(backend).await;
        let db = database.open().await;
        Self::spawn_on(database, db, options, keyring).await
    }

    /// As [`TestApp::spawn`], with the database's PostgreSQL sessions bounded by `limits`.
    pub async fn spawn_with_limits(backend: Backend, limits: SessionLimits) -> Self {
        let database = TestDatabase::new(backend).await;
        let db = database.open_with(limits).await;
        Self::spawn_on(database, db, loopback_options(), test_keyring()).await
    }

    async fn spawn_on(
        database: TestDatabase,
        db: Database,
        mut options: ServiceOptions,
        keyring: SecretKeyring,
    ) -> Self {
        let dns = DnsServer::start().await;
        options.dns_server = options.dns_server.or(Some(dns.address));
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("error")
            .try_init();
        let mut service = Service::start_with(db, keyring, options).await.unwrap();
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
            dns,
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

/// A read model held still: every `operation` (`INSERT`, `UPDATE`) on `table` fails, so the
/// projection that writes it retries its batch until [`Stall::release`]. A test drives a race
/// with the projection through it, deterministically.
pub struct Stall {
    db: Database,
    table: &'static str,
}

impl Stall {
    pub async fn on(db: &Database, table: &'static str, operation: &str) -> Self {
        let statements = match db.backend {
            switchyard_command::Backend::Sqlite => vec![format!(
                "CREATE TRIGGER test_stall BEFORE {operation} ON {table} \
                 BEGIN SELECT RAISE(ABORT, 'stalled by the test'); END"
            )],
            switchyard_command::Backend::Postgres => vec![
                "CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'stalled by the test'; END $$"
                    .to_owned(),
                format!(
                    "CREATE TRIGGER test_stall BEFORE {operation} ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION test_stall()"
                ),
            ],
        };
        for sql in statements {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&db.pool)
                .await
                .unwrap();
        }
        Self {
            db: db.clone(),
            table,
        }
    }

    pub async fn release(self) {
        let sql = match self.db.backend {
            switchyard_command::Backend::Sqlite => "DROP TRIGGER test_stall".to_owned(),
            switchyard_command::Backend::Postgres => {
                format!("DROP TRIGGER test_stall ON {}", self.table)
            }
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&self.db.pool)
            .await
            .unwrap();
    }
}

/// Waits until the log holds an event of `event_type` on a stream whose id starts with
/// `stream`, polling (bounded).
pub async fn wait_for_event(db: &Database, stream: &str, event_type: &str) {
    for _ in 0..500 {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT global_position FROM events WHERE stream_id LIKE $1 AND event_type = $2",
        )
        .bind(format!("{stream}%"))
        .bind(event_type)
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        if found.is_some() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no {event_type} on {stream}");
}

/// How many events of `event_type` the log holds.
pub async fn count_events(db: &Database, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// The code an authenticator app shows at `unix` seconds for `secret`.
pub fn totp_code(secret: &str, unix: u64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret).unwrap();
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(0)
        .with_secret(secret)
        .build()
        .unwrap();
    totp.generate(unix).to_string()
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Turns two-factor login on for the holder of `token`; answers the app's secret.
pub async fn enable_totp(app: &TestApp, token: &str) -> String {
    let response = app.send(Method::POST, "/v1/me/totp", token, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let setup: Value = response.json().await.unwrap();
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let code = json!({"code": totp_code(&secret, unix_now())});
    let response = app
        .send(Method::POST, "/v1/me/totp/enable", token, Some(&code))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    secret
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

/// Posts a Test Email or Test Mobile as the administrator and answers its job id.
pub async fn request_test(app: &TestApp, path: &str, body: Option<&Value>) -> String {
    let (status, answer) = app.admin(Method::POST, path, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["job_id"].as_str().unwrap().to_owned()
}

/// Polls the job until `done` says so (10 s at most).
pub async fn wait_for_job(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    // Generous: a retried job waits out its backoff (about 5 s for a Test) on a machine
    // that may be busy with other test binaries.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, job) = app
            .admin(Method::GET, &format!("/v1/jobs/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if done(&job) {
            return job;
        }
        if std::time::Instant::now() > deadline {
            panic!("job {id} never got there: {job}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub fn finished(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("succeeded" | "failed"))
}
