//! Times are kept one way per backend (`switchyard_command::timestamp`): `timestamptz` on
//! PostgreSQL, fixed-width microsecond text on SQLite. So every time column is of that type
//! and holds that text, and times that older versions wrote in other widths compare as
//! times once migrated.

mod common;

use std::collections::BTreeSet;

use chrono::{TimeDelta, TimeZone, Utc};
use common::{
    ADMIN_EMAIL, Backend, TestApp, TestDatabase, finished, request_test,
    smtp_server::{ServerOptions, SmtpServer},
    wait_for_job,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use switchyard_command::{Backend as DbBackend, Database, domain::AccountId, timestamp};
use switchyard_projections::{queries, stored_checkpoints};
use switchyard_workers::jobs::store;

on_both_backends!(
    every_time_column_keeps_the_one_representation,
    times_written_before_the_change_compare_as_times,
);

/// Named like a time, but a log position.
const NOT_TIMES: &[&str] = &["projection_checkpoints.stuck_at"];

/// `table.column` and declared type of every column of our tables named like a time: `at`,
/// `*_at`, `*_until`, `*_since`. apalis' queue tables (`Jobs`, `Workers` on SQLite; their
/// own schema on PostgreSQL) are not ours.
async fn time_columns(db: &Database) -> Vec<(String, String)> {
    let sql = match db.backend {
        DbBackend::Sqlite => {
            r"SELECT m.name || '.' || p.name, p.type
              FROM sqlite_master m JOIN pragma_table_info(m.name) p
              WHERE m.type = 'table' AND m.name NOT IN ('Jobs', 'Workers')
                AND m.name NOT LIKE 'sqlite\_%' ESCAPE '\'
                AND (p.name = 'at' OR p.name LIKE '%\_at' ESCAPE '\'
                     OR p.name LIKE '%\_until' ESCAPE '\' OR p.name LIKE '%\_since' ESCAPE '\')"
        }
        DbBackend::Postgres => {
            r"SELECT (table_name || '.' || column_name)::text, data_type::text
              FROM information_schema.columns
              WHERE table_schema = 'public'
                AND (column_name = 'at' OR column_name LIKE '%\_at' ESCAPE '\'
                     OR column_name LIKE '%\_until' ESCAPE '\'
                     OR column_name LIKE '%\_since' ESCAPE '\')"
        }
    };
    let columns: Vec<(String, String)> = sqlx::query_as(sql).fetch_all(&db.pool).await.unwrap();
    columns
        .into_iter()
        .filter(|(column, _)| !NOT_TIMES.contains(&column.as_str()))
        .collect()
}

/// Every non-null value of `table.column`, read back as times are.
async fn values(db: &Database, column: &str) -> Vec<String> {
    let (table, name) = column.split_once('.').unwrap();
    let sql = format!(
        "SELECT {} FROM {table} WHERE {name} IS NOT NULL",
        timestamp::read(db.backend, name)
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// Writes a time into every kind of table: sessions, a failed login, an idempotent
/// request, a group, users disabled and deleted, a ledger entry, a job with its effect.
async fn a_realistic_run(app: &TestApp) {
    let failed = app
        .client
        .post(app.url("/v1/sessions"))
        .json(&json!({"email": ADMIN_EMAIL, "password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);

    let created = app
        .client
        .post(app.url("/v1/groups"))
        .bearer_auth(&app.token)
        .header("idempotency-key", "group-1")
        .json(&json!({"name": "Support", "permissions": {"cdr": "allow"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    let bob = app.add_user("bob@acme.example.com", "user", &[]).await;
    let (status, _) = app
        .admin(
            Method::PATCH,
            &format!("/v1/users/{bob}"),
            Some(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let carol = app.add_user("carol@acme.example.com", "user", &[]).await;
    let (status, _) = app
        .admin(Method::DELETE, &format!("/v1/users/{carol}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    app.open_other_account().await;
    let globex: String = sqlx::query_scalar("SELECT account_id FROM users WHERE email = $1")
        .bind("root@globex.example.com")
        .fetch_one(&app.service.state.db.pool)
        .await
        .unwrap();
    let adjustment = json!({"account_id": globex, "reason": "Welcome credit",
                            "amount": {"amount": "25.00", "currency": "USD"}});
    let (status, entry) = app
        .admin(
            Method::POST,
            "/v1/account/balance/adjustments",
            Some(&adjustment),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");

    let server = SmtpServer::start(ServerOptions {
        credentials: Some(("noc".into(), "smtp-secret-Zq7".into())),
        ..ServerOptions::default()
    })
    .await;
    let smtp = json!({"from_address": "noc@acme.example.com", "host": "127.0.0.1",
                      "port": server.port(), "security": "none", "username": "noc",
                      "password": "smtp-secret-Zq7"});
    assert_eq!(
        app.put("/v1/account/smtp", &smtp).await.status(),
        StatusCode::OK
    );
    let job = request_test(app, "/v1/account/smtp/test", None).await;
    let job = wait_for_job(app, &job, finished).await;
    assert_eq!(job["status"], "succeeded", "{job}");
}

async fn every_time_column_keeps_the_one_representation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    a_realistic_run(&app).await;
    let db = &app.service.state.db;

    let columns = time_columns(db).await;
    let mut written = BTreeSet::new();
    for (column, declared) in &columns {
        if db.backend == DbBackend::Postgres {
            assert_eq!(declared, "timestamp with time zone", "{column}");
        }
        for value in values(db, column).await {
            let parsed = timestamp::parse(&value);
            assert!(
                value.len() == timestamp::WIDTH
                    && parsed.is_ok_and(|at| timestamp::format(at) == value),
                "{column} holds {value:?}"
            );
            written.insert(column.as_str());
        }
    }
    // The run wrote these, so the checks above saw their values.
    let expected = [
        "events.recorded_at",
        "users.created_at",
        "users.last_login_at",
        "users.disabled_at",
        "users.deleted_at",
        "groups.created_at",
        "audit_log.recorded_at",
        "ledger_entries.at",
        "sessions.created_at",
        "sessions.expires_at",
        "sessions.last_used_at",
        "login_throttle_clients.last_failure_at",
        "login_throttle_accounts.last_failure_at",
        "login_known_clients.last_success_at",
        "idempotency_keys.created_at",
        "job_reports.created_at",
        "job_reports.started_at",
        "job_reports.finished_at",
        "job_effects.completed_at",
    ];
    let missing: Vec<_> = expected.iter().filter(|c| !written.contains(*c)).collect();
    assert!(
        missing.is_empty(),
        "no values in {missing:?} of {columns:?}"
    );
}

/// The first migrations' versions: those before the times became one representation.
const BEFORE_TIMES: i64 = 17;

/// Before migration 17, job reports kept milliseconds and projection failures whole seconds, while
/// the cutoffs and other times had microseconds. As text, `…00.123Z` sorts after
/// `…00.123500Z`; migrated, the report that finished at .123 is older than a cutoff at
/// .1235, and one that finished at .124 is not.
async fn times_written_before_the_change_compare_as_times(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let db = Database::connect(&database.url).await.unwrap();
    let mut migrator = match backend {
        Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("migrations/postgres"),
    };
    let earlier = migrator
        .iter()
        .filter(|migration| migration.version < BEFORE_TIMES)
        .cloned()
        .collect::<Vec<_>>();
    migrator = sqlx::migrate::Migrator::with_migrations(earlier);
    migrator.dangerous_set_table_name("switchyard_migrations");
    migrator.run(&db.pool).await.unwrap();

    let account = "00000000-0000-7000-8000-000000000001";
    for (job, finished_at) in [
        ("01JNKZ00000000000000000001", "2025-03-01T12:00:00.123Z"),
        ("01JNKZ00000000000000000002", "2025-03-01T12:00:00.124Z"),
    ] {
        sqlx::query(
            "INSERT INTO job_reports (job_id, account_id, kind, status, attempts, created_at, \
             started_at, finished_at) VALUES ($1, $2, 'smtp_test', 'succeeded', 1, \
             '2025-03-01T11:59:59.999Z', '2025-03-01T12:00:00.001Z', $3)",
        )
        .bind(job)
        .bind(account)
        .bind(finished_at)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, position, last_error, failing_since) \
         VALUES ('users', 0, 'stuck', '2025-03-01T12:00:00Z')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    db.migrate().await.unwrap();
    switchyard_workers::jobs::migrate(&db).await.unwrap();
    let cutoff =
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + TimeDelta::microseconds(123_500);
    store::prune(&db, cutoff + store::RETENTION).await.unwrap();

    let account: AccountId = account.parse().unwrap();
    let old = queries::job(&db, account, "01JNKZ00000000000000000001").await;
    assert!(old.unwrap().is_none(), "finished before the cutoff");
    let kept = queries::job(&db, account, "01JNKZ00000000000000000002")
        .await
        .unwrap()
        .expect("finished after the cutoff");
    assert_eq!(
        (
            kept.created_at.as_str(),
            kept.started_at.as_deref(),
            kept.finished_at.as_deref()
        ),
        (
            "2025-03-01T11:59:59.999000Z",
            Some("2025-03-01T12:00:00.001000Z"),
            Some("2025-03-01T12:00:00.124000Z")
        )
    );
    let failing_since = stored_checkpoints(&db)
        .await
        .unwrap()
        .into_iter()
        .find(|checkpoint| checkpoint.projection == "users")
        .and_then(|checkpoint| checkpoint.failing_since);
    assert_eq!(
        failing_since.as_deref(),
        Some("2025-03-01T12:00:00.000000Z")
    );
}
