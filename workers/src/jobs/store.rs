//! The job tables: apalis' queue (`Jobs` on SQLite, `apalis.jobs` on PostgreSQL), our
//! `job_reports` (what a user reads, through `switchyard_projections::queries::jobs`) and
//! `job_effects` (side effects that completed).
//!
//! Jobs are queued with our own INSERT, in the dispatcher's transaction: apalis' push API
//! needs a typed connection, and its PostgreSQL insert has no `ON CONFLICT`, so a duplicate
//! key would abort the transaction and the checkpoint with it.

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;
use switchyard_command::{
    Backend, Database,
    db::PerBackend,
    timestamp::{self, format as timestamp},
};
use ulid::Ulid;

use super::job::Job;

/// What one stage of an attempt did: the shape `GET /v1/jobs/{id}` reads back.
pub use switchyard_projections::queries::StageReport;

/// The statements on our tables that write, compare or read times, per backend.
struct Statements {
    report_queued: String,
    begin_attempt: String,
    record_attempt: String,
    record_effect: String,
    effect_completed_at: String,
    /// Finished reports, then completed effects.
    prune: [String; 2],
}

static SQL: PerBackend<Statements> = PerBackend::new(|backend| {
    let time = |n| timestamp::param(backend, n);
    Statements {
        report_queued: format!(
            "INSERT INTO job_reports (job_id, account_id, kind, status, created_at) \
             VALUES ($1, $2, $3, 'queued', {}) ON CONFLICT (job_id) DO NOTHING",
            time(4)
        ),
        begin_attempt: format!(
            "UPDATE job_reports SET status = 'running', attempts = attempts + 1, \
             started_at = COALESCE(started_at, {}) WHERE job_id = $1 RETURNING attempts",
            time(2)
        ),
        record_attempt: format!(
            "UPDATE job_reports SET status = $1, stages = $2, error = $3, retry_at = {}, \
             finished_at = {} WHERE job_id = $6",
            time(4),
            time(5)
        ),
        record_effect: format!(
            "INSERT INTO job_effects (effect_key, job_id, completed_at) VALUES ($1, $2, {}) \
             ON CONFLICT (effect_key) DO NOTHING",
            time(3)
        ),
        effect_completed_at: format!(
            "SELECT {} FROM job_effects WHERE effect_key = $1",
            timestamp::read(backend, "completed_at")
        ),
        prune: [
            format!("DELETE FROM job_reports WHERE finished_at < {}", time(1)),
            format!("DELETE FROM job_effects WHERE completed_at < {}", time(1)),
        ],
    }
});

/// Queues `job` under `id` unless a job with the same key is already queued (the dispatcher
/// applying an event again after a crash), with its report.
pub async fn enqueue(
    conn: &mut AnyConnection,
    backend: Backend,
    id: Ulid,
    key: &str,
    job: &Job,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let insert = match backend {
        Backend::Sqlite => {
            "INSERT INTO Jobs (job, id, job_type, status, attempts, max_attempts, run_at, \
             priority, metadata, idempotency_key) \
             VALUES ($1, $2, $3, 'Pending', 0, $4, $5, 0, '{}', $6) \
             ON CONFLICT (job_type, idempotency_key) DO NOTHING"
        }
        Backend::Postgres => {
            "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, run_at, \
             priority, idempotency_key) \
             VALUES ($1, $2, $3, 'Pending', 0, $4, to_timestamp($5), 0, $6) \
             ON CONFLICT (job_type, idempotency_key) DO NOTHING"
        }
    };
    let persistence = job.persistence();
    // One attempt more than ours: an attempt cut short by a crash counts in apalis' tally
    // too, and the worker, not apalis, decides when a job has run out of attempts.
    let queue_attempts = i32::try_from(persistence.max_attempts + 1).expect("a few attempts");
    let inserted = sqlx::query(insert)
        .bind(serde_json::to_vec(job).expect("jobs serialize"))
        .bind(id.to_string())
        .bind(job.queue().name())
        .bind(queue_attempts)
        .bind(now.timestamp())
        .bind(key)
        .execute(&mut *conn)
        .await?;
    if inserted.rows_affected() == 1 {
        sqlx::query(SQL.get(backend).report_queued.as_str())
            .bind(id.to_string())
            .bind(job.account_id().to_string())
            .bind(job.kind())
            .bind(timestamp(now))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// How an attempt ended, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Done; `effect` is the key of the side effect it completed, if it had one.
    Succeeded { effect: Option<String> },
    /// Failed; tried again at `retry_at`.
    WillRetry {
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// Failed for good.
    Failed { error: String },
}

/// Marks the job running and counts the attempt, before it does anything: an attempt cut
/// short by a crash is counted too. Answers the attempt's number (1 for the first).
pub async fn begin_attempt(
    db: &Database,
    id: Ulid,
    now: DateTime<Utc>,
) -> Result<u32, sqlx::Error> {
    let attempts: Option<i64> = sqlx::query_scalar(SQL.get(db.backend).begin_attempt.as_str())
        .bind(id.to_string())
        .bind(timestamp(now))
        .fetch_optional(&db.pool)
        .await?;
    Ok(attempts.map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)))
}

/// Records how an attempt ended: its stages and ending on the report, the completed effect,
/// and for a retry the queue's `run_at`, all in one transaction.
pub async fn record_attempt(
    db: &Database,
    id: Ulid,
    stages: &[StageReport],
    ending: &Ending,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (status, error, retry_at) = match ending {
        Ending::Succeeded { .. } => ("succeeded", None, None),
        Ending::WillRetry { error, retry_at } => ("queued", Some(error), Some(*retry_at)),
        Ending::Failed { error } => ("failed", Some(error), None),
    };
    let finished_at = (status != "queued").then(|| timestamp(now));
    let mut tx = db.begin_write().await?;
    let sql = SQL.get(db.backend);
    sqlx::query(sql.record_attempt.as_str())
        .bind(status)
        .bind(serde_json::to_string(stages).expect("stages serialize"))
        .bind(error.map(String::as_str))
        .bind(retry_at.map(timestamp))
        .bind(finished_at)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    if let Ending::Succeeded {
        effect: Some(effect),
    } = ending
    {
        sqlx::query(sql.record_effect.as_str())
            .bind(effect)
            .bind(id.to_string())
            .bind(timestamp(now))
            .execute(&mut *tx)
            .await?;
    }
    if let Some(retry_at) = retry_at {
        let postpone = match db.backend {
            Backend::Sqlite => "UPDATE Jobs SET run_at = $1 WHERE id = $2",
            Backend::Postgres => "UPDATE apalis.jobs SET run_at = to_timestamp($1) WHERE id = $2",
        };
        sqlx::query(postpone)
            .bind(retry_at.timestamp())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// When the effect under `key` completed, if it did.
pub async fn effect_completed_at(db: &Database, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(SQL.get(db.backend).effect_completed_at.as_str())
        .bind(key)
        .fetch_optional(&db.pool)
        .await
}

/// Finished jobs are kept this long: their reports, queue rows and effects.
pub const RETENTION: chrono::Duration = chrono::Duration::days(30);

/// Deletes what finished before `now - RETENTION`. An effect goes with its job: a job that
/// is gone from the queue cannot run again.
pub async fn prune(db: &Database, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let cutoff = now - RETENTION;
    let finished_queue_rows = match db.backend {
        Backend::Sqlite => "DELETE FROM Jobs WHERE status IN ('Done', 'Killed') AND done_at < $1",
        Backend::Postgres => {
            "DELETE FROM apalis.jobs WHERE status IN ('Done', 'Killed') \
             AND done_at < to_timestamp($1)"
        }
    };
    let mut tx = db.begin_write().await?;
    sqlx::query(finished_queue_rows)
        .bind(cutoff.timestamp())
        .execute(&mut *tx)
        .await?;
    for sql in &SQL.get(db.backend).prune {
        sqlx::query(sql.as_str())
            .bind(timestamp(cutoff))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}
