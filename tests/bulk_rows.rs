//! Projections' multi-row writes on both backends: every value comes back as written, and
//! upserts replace what they conflict with, across statements.

mod common;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::{Backend, TestDatabase};
use sqlx::Row;
use switchyard_command::{Database, timestamp};
use switchyard_projections::bulk::{Param, Rows, write_all};

on_both_backends!(
    every_value_comes_back_as_written,
    upserts_replace_rows_across_statements,
);

const AUDIT_INSERT: &str = "INSERT INTO audit_log (position, account_id, recorded_at, \
     actor_id, client_ip, user_agent, request_id, event_type, stream_id, summary, changes)";

/// Text that a careless encoding would mangle, and text that only looks special.
const AWKWARD_TEXTS: &[&str] = &[
    r#"say "hi", {now}"#,
    r"C:\dir\",
    "NULL",
    "",
    " padded ",
    "line one\nline two\ttabbed",
    "ünïcödé ✓ 🚀",
    r#"{"from":"a \"quoted\" \\ value","to":null}"#,
];

async fn every_value_comes_back_as_written(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let db = database.open().await;
    let rows = AWKWARD_TEXTS
        .iter()
        .enumerate()
        .map(|(n, text)| {
            let mut row: Vec<Param> = vec![(n as i64 + 1).into()];
            row.extend((0..10).map(|column| match column {
                1 => recorded_at(n).into(),
                // client_ip, user_agent and request_id may be NULL
                3..=5 if n % 2 == 0 => None::<String>.into(),
                _ => (*text).into(),
            }));
            row
        })
        .collect();
    write(&db, AUDIT_INSERT, "", rows).await;

    let stored = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT position, account_id, {}, actor_id, client_ip, user_agent, \
         request_id, event_type, stream_id, summary, changes FROM audit_log ORDER BY position",
        timestamp::read(db.backend, "recorded_at")
    )))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), AWKWARD_TEXTS.len());
    for (n, (row, text)) in stored.iter().zip(AWKWARD_TEXTS).enumerate() {
        assert_eq!(row.get::<i64, _>(0), n as i64 + 1);
        for column in 1..11 {
            let time = timestamp::format(recorded_at(n));
            let expected = match column {
                2 => Some(time.as_str()),
                4..=6 if n % 2 == 0 => None,
                _ => Some(*text),
            };
            assert_eq!(
                row.get::<Option<String>, _>(column).as_deref(),
                expected,
                "row {n}, column {column}"
            );
        }
    }
}

/// Times a microsecond apart, as a time column keeps them.
fn recorded_at(n: usize) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + TimeDelta::microseconds(n as i64)
}

/// More rows than one statement binds, written twice: the second write must update every
/// row, not add to them.
async fn upserts_replace_rows_across_statements(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let db = database.open().await;
    let sections = |data: &str| {
        (0..12_001)
            .map(|n| vec![format!("stream-{n}").into(), "company".into(), data.into()])
            .collect()
    };
    let insert = "INSERT INTO audit_sections (stream_id, section, data)";
    let upsert = "ON CONFLICT (stream_id, section) DO UPDATE SET data = excluded.data";
    write(&db, insert, upsert, sections("first")).await;
    write(&db, insert, upsert, sections(r#"{"name":"second"}"#)).await;

    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT data, COUNT(*) FROM audit_sections GROUP BY data")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(counts, vec![(r#"{"name":"second"}"#.to_owned(), 12_001)]);
}

async fn write(
    db: &Database,
    insert: &'static str,
    on_conflict: &'static str,
    rows: Vec<Vec<Param>>,
) {
    let mut conn = db.pool.acquire().await.unwrap();
    let rows = Rows {
        insert,
        on_conflict,
        rows,
    };
    write_all(&mut conn, vec![rows]).await.unwrap();
}
