//! Jobs as their account sees them, from `job_reports` (which the job workers write).

use serde::{Deserialize, Serialize};
use sqlx::{Row, any::AnyRow};
use switchyard_command::{Database, db::PerBackend, domain::AccountId, timestamp};
use ulid::Ulid;
use uuid::Uuid;

/// Every kind of job, as `GET /v1/jobs` shows it and filters by it.
pub const JOB_KINDS: [&str; 7] = [
    "smtp_test",
    "sms_test",
    "gateway_verify",
    "login_alert",
    "security_notice",
    "low_balance_alert",
    "noop",
];

/// The id of the job asked for by a command that named it (a test's id), or by an event.
/// Both are UUIDv7, whose first 48 bits are a millisecond timestamp, as a ULID's are. So
/// whoever asks for a test knows its job's id before the job is queued.
pub fn job_id(uuid: Uuid) -> Ulid {
    Ulid::from(uuid.as_u128())
}

/// What one stage of an attempt did: stored as a JSON array by the worker, read here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: String,
    pub ok: bool,
    pub detail: String,
}

/// A job as its account sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    pub id: String,
    pub kind: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// When a failed attempt will be tried again.
    pub retry_at: Option<String>,
    pub stages: Vec<StageReport>,
    pub error: Option<String>,
}

/// Which of an account's jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub kind: Option<String>,
    pub status: Option<String>,
    /// Only jobs older than this id (the previous page's last).
    pub before: Option<String>,
    pub limit: i64,
}

/// The statements, which read times, per backend.
struct Statements {
    job: String,
    jobs: String,
}

static SQL: PerBackend<Statements> = PerBackend::new(|backend| {
    let read = |column| format!("{} AS {column}", timestamp::read(backend, column));
    let select_views = format!(
        "SELECT job_id, kind, status, attempts, {}, {}, {}, {}, stages, error FROM job_reports",
        read("created_at"),
        read("started_at"),
        read("finished_at"),
        read("retry_at")
    );
    Statements {
        job: format!("{select_views} WHERE account_id = $1 AND job_id = $2"),
        jobs: format!(
            "{select_views} WHERE account_id = $1 AND ($2 IS NULL OR kind = $2) \
             AND ($3 IS NULL OR status = $3) AND job_id < COALESCE($4, '~') \
             ORDER BY job_id DESC LIMIT $5"
        ),
    }
});

/// One of the account's jobs; another account's id finds nothing.
pub async fn job(
    db: &Database,
    account: AccountId,
    id: &str,
) -> Result<Option<JobView>, sqlx::Error> {
    let row = sqlx::query(SQL.get(db.backend).job.as_str())
        .bind(account.to_string())
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(view).transpose()
}

/// The account's jobs, newest first.
pub async fn jobs(
    db: &Database,
    account: AccountId,
    filter: &JobFilter,
) -> Result<Vec<JobView>, sqlx::Error> {
    let rows = sqlx::query(SQL.get(db.backend).jobs.as_str())
        .bind(account.to_string())
        .bind(filter.kind.as_deref())
        .bind(filter.status.as_deref())
        .bind(filter.before.as_deref())
        .bind(filter.limit)
        .fetch_all(&db.pool)
        .await?;
    rows.iter().map(view).collect()
}

fn view(row: &AnyRow) -> Result<JobView, sqlx::Error> {
    let stages: String = row.try_get("stages")?;
    Ok(JobView {
        id: row.try_get("job_id")?,
        kind: row.try_get("kind")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        retry_at: row.try_get("retry_at")?,
        stages: serde_json::from_str(&stages).map_err(|e| sqlx::Error::Decode(e.into()))?,
        error: row.try_get("error")?,
    })
}
