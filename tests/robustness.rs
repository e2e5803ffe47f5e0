//! What stops must not stop quietly, and what waits must not wait without end: a projection
//! that cannot apply the log, a projection task that panics, a job worker whose database
//! fails, a session that holds the append lock, a database that cannot be reached.

mod common;

use std::{
    future::Future,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    ADMIN_PASSWORD, Backend, TestApp, TestDatabase, USER_PASSWORD, company, expect_problem, login,
};
use futures::{FutureExt, future::BoxFuture};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard::service::open_database;
use switchyard_command::{
    account::{Account, AccountEvent, CompanyInformation},
    db::SessionLimits,
    domain::{AccountId, EmailAddress, Text},
    event_log::{
        EventLog, ExpectedVersion, Metadata, NewEvent, POSTGRES_APPEND_LOCK, RecordedEvent,
        StreamWrite, encode,
    },
    handler::{CommandError, CommandHandler, FoldError},
};
use switchyard_projections::{Projection, ProjectionError, Projections};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

on_both_backends!(
    a_poison_event_stops_a_projection_loudly,
    a_projection_whose_task_panics_is_restarted,
    an_event_that_cannot_follow_its_stream_is_an_error_not_a_panic,
    a_job_worker_whose_database_fails_restarts_with_growing_delays,
);

/// Polls `check` until it answers `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/readyz` as the holder of `token` (none: without a session).
async fn readyz(app: &TestApp, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = app.client.get(app.url("/readyz"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// An event of a type this version does not know, as a newer version's writer would append
/// during a rolling deploy: the users projection cannot apply it.
async fn append_unknown_user_event(app: &TestApp, user_id: &str) -> i64 {
    let log = &app.service.state.log;
    let stream = format!("user-{user_id}");
    let version = log.read_stream(&stream).await.unwrap().len() as i64;
    let write = StreamWrite {
        stream_id: stream,
        stream_type: "user".into(),
        expected: ExpectedVersion::Exact(version),
        events: vec![NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "UserTeleported".into(),
            schema_version: 1,
            data: json!({"to": "the moon"}),
        }],
    };
    log.append(vec![write], Metadata::system(AccountId::new()))
        .await
        .unwrap()
        .last_position
}

async fn a_poison_event_stops_a_projection_loudly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bob = app.add_user("bob@acme.example.com", "user", &[]).await;
    let bob_token = login(
        &app.client,
        &app.base,
        "bob@acme.example.com",
        USER_PASSWORD,
    )
    .await;
    let poison = append_unknown_user_event(&app, &bob).await;

    // Within seconds /readyz fails, and tells an administrator which projection, where, why.
    let users = eventually(
        Duration::from_secs(10),
        "/readyz names the stuck projection",
        || async {
            let (status, body) = readyz(&app, Some(&app.token)).await;
            let projections = body["details"]["projections"].as_array()?.clone();
            let users = projections.into_iter().find(|p| p["name"] == "users")?;
            (status == StatusCode::SERVICE_UNAVAILABLE && users["failing"]["stuck_at"] == poison)
                .then_some(users)
        },
    )
    .await;
    let error = users["failing"]["error"].as_str().unwrap();
    assert!(error.contains("UserTeleported"), "{error}");
    assert!(users["position"].as_i64().unwrap() < poison);
    // Without a session, or to a user who is not an administrator: whether, not why.
    for token in [None, Some(bob_token.as_str())] {
        let (status, body) = readyz(&app, token).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"status": "not_ready"}));
    }

    // A write after it is stored, and says that the read models do not show it yet.
    let response = app.put("/v1/account/company", &company("Acme Two")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["switchyard-read-models"], "behind");
    let openapi: Value = app.get("/v1/openapi.json").await.json().await.unwrap();
    let put_company = &openapi["paths"]["/v1/account/company"]["put"]["responses"];
    assert!(put_company["200"]["headers"]["switchyard-read-models"].is_object());
    assert!(put_company["503"]["description"].is_string());

    // Another process sees where each projection is and why it is failing.
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("projections")
        .env("SWITCHYARD_DATABASE_URL", &app.database.url)
        .env("SWITCHYARD_DATA_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    let line = printed
        .lines()
        .find(|line| line.starts_with("users "))
        .unwrap_or_else(|| panic!("no line for users in:\n{printed}"));
    assert!(
        line.contains(&format!("stuck at event {poison}")) && line.contains("UserTeleported"),
        "{line}"
    );
    let account_config = printed
        .lines()
        .find(|line| line.starts_with("account_config "))
        .unwrap();
    assert!(account_config.ends_with(" ok"), "{account_config}");

    // A change whose security effect the stuck projection carries out (ending the other
    // sessions) is not reported done: it is recorded, not yet in force.
    let change =
        json!({"current_password": ADMIN_PASSWORD, "new_password": "another long password"});
    let response = app
        .send(Method::POST, "/v1/me/password", &app.token, Some(&change))
        .await;
    let problem = expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(problem["title"], "not_yet_in_force");
}

/// Applies everything, but its first batch panics (a bug).
#[derive(Default)]
struct PanicsOnce {
    panicked: AtomicBool,
}

impl Projection for PanicsOnce {
    fn name(&self) -> &'static str {
        "panics_once"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn apply<'c>(
        &'c self,
        _conn: &'c mut sqlx::AnyConnection,
        _events: &'c [RecordedEvent],
    ) -> BoxFuture<'c, Result<(), ProjectionError>> {
        async move {
            if !self.panicked.swap(true, Ordering::SeqCst) {
                panic!("a bug in a projection");
            }
            Ok(())
        }
        .boxed()
    }
}

async fn a_projection_whose_task_panics_is_restarted(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let log = EventLog::start(database.open().await).await.unwrap();
    let shutdown = CancellationToken::new();
    let projections = Projections::start(
        &log,
        vec![Arc::new(PanicsOnce::default())],
        shutdown.clone(),
    );
    let write = StreamWrite {
        stream_id: "s".into(),
        stream_type: "test".into(),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            event_id: Uuid::now_v7(),
            event_type: "TestHappened".into(),
            schema_version: 1,
            data: json!({}),
        }],
    };
    let position = log
        .append(vec![write], Metadata::system(AccountId::new()))
        .await
        .unwrap()
        .last_position;
    let handle = projections
        .handles()
        .iter()
        .find(|h| h.name == "panics_once")
        .unwrap()
        .clone();
    let failure = eventually(Duration::from_secs(10), "the panic is reported", || async {
        handle.failure()
    })
    .await;
    assert!(
        failure.error.contains("a bug in a projection"),
        "{failure:?}"
    );
    // Started again, it applies the log, and is no longer failing.
    assert!(
        projections
            .wait_for(position, Duration::from_secs(10))
            .await
    );
    assert_eq!(handle.failure(), None);
    shutdown.cancel();
}

async fn an_event_that_cannot_follow_its_stream_is_an_error_not_a_panic(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let handler = CommandHandler::new(EventLog::start(database.open().await).await.unwrap());
    let account = AccountId::new();
    let change = AccountEvent::CompanyInformationChanged(CompanyInformation::initial(
        Text::parse("Acme", 1, 100).unwrap(),
        EmailAddress::parse("ops@acme.example.com").unwrap(),
    ));
    // A change to an account that was never opened, as a hand edit of the log could leave.
    let write = StreamWrite {
        stream_id: account.stream_id(),
        stream_type: "account".into(),
        expected: ExpectedVersion::NoStream,
        events: vec![encode(&change)],
    };
    handler
        .log()
        .append(vec![write], Metadata::system(account))
        .await
        .unwrap();
    let loaded = handler.load::<Account, ()>(&account.stream_id()).await;
    assert!(
        matches!(
            loaded,
            Err(CommandError::Fold(FoldError::Inconsistent {
                version: 1,
                ..
            }))
        ),
        "{loaded:?}"
    );
}

/// The job queue's table, renamed away (`back`: renamed back).
async fn move_job_table(app: &TestApp, back: bool) {
    let (from, to) = match app.service.state.db.backend {
        switchyard_command::Backend::Sqlite => ("Jobs", "JobsAway"),
        switchyard_command::Backend::Postgres => ("apalis.jobs", "jobs_away"),
    };
    let sql = match (app.service.state.db.backend, back) {
        (_, false) => format!("ALTER TABLE {from} RENAME TO {to}"),
        (switchyard_command::Backend::Sqlite, true) => format!("ALTER TABLE {to} RENAME TO {from}"),
        (switchyard_command::Backend::Postgres, true) => {
            format!("ALTER TABLE apalis.{to} RENAME TO jobs")
        }
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&app.service.state.db.pool)
        .await
        .unwrap();
}

async fn a_job_worker_whose_database_fails_restarts_with_growing_delays(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    move_job_table(&app, false).await;
    // Each restart of the email queue's worker fails again; the waits between them grow.
    let mut delays = Vec::<(u64, u64)>::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while delays.last().is_none_or(|(failures, _)| *failures < 3) {
        assert!(Instant::now() < deadline, "three failed starts: {delays:?}");
        let (status, body) = readyz(&app, Some(&app.token)).await;
        let failing = &body["details"]["workers"]["switchyard.email"]["failing"];
        if let Some(failures) = failing["failures"].as_u64() {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            let delay = failing["restart_in_ms"].as_u64().unwrap();
            if delays.last().is_none_or(|(seen, _)| *seen < failures) {
                delays.push((failures, delay));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waits: Vec<u64> = delays.iter().map(|(_, delay)| *delay).collect();
    assert!(
        waits.windows(2).all(|pair| pair[0] < pair[1]),
        "the waits grow: {delays:?}"
    );
    // Once the database works again, the worker runs, and after a while counts as well.
    move_job_table(&app, true).await;
    eventually(Duration::from_secs(60), "/readyz ready again", || async {
        let (status, _) = readyz(&app, None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
}

/// An unreachable database is reported with its cause and address at once, not as a pool
/// that timed out.
#[tokio::test]
async fn an_unreachable_database_is_named_with_its_cause() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/switchyard");
    let error = open_database(&url).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!("127.0.0.1:{port}"))
            && message.to_lowercase().contains("refused"),
        "{message}"
    );
}

/// A session that takes the event log's append lock and sits in its transaction makes
/// writers fail fast with a clear answer, and they recover when it goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(pg_tests),
    ignore = "PostgreSQL not tested: set SWITCHYARD_TEST_POSTGRES_URL to run it"
)]
async fn a_held_append_lock_makes_writers_fail_fast_and_recover() {
    use sqlx::Connection;
    let limits = SessionLimits {
        lock_timeout: Duration::from_secs(1),
        ..SessionLimits::default()
    };
    let app = TestApp::spawn_with_limits(Backend::Postgres, limits).await;
    let mut holder = sqlx::PgConnection::connect(&app.database.url)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(POSTGRES_APPEND_LOCK)
        .execute(&mut holder)
        .await
        .unwrap();

    let response = tokio::time::timeout(
        Duration::from_secs(20),
        app.put("/v1/account/company", &company("Held")),
    )
    .await
    .expect("the write answers instead of waiting for the lock without end");
    assert!(response.headers().contains_key("retry-after"));
    let problem = expect_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(problem["title"], "database_unavailable");
    assert!(
        problem["detail"].as_str().unwrap().contains("lock"),
        "{problem}"
    );

    holder.close().await.unwrap();
    let response = app.put("/v1/account/company", &company("Released")).await;
    assert_eq!(response.status(), StatusCode::OK);
}
