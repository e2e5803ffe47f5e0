//! Reads of the read models. Every query that returns tenant data takes the account id:
//! there is no unscoped read.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, Row};
use switchyard_command::{Database, db::PerBackend, domain::AccountId, timestamp};

mod gateways;
mod jobs;
mod ledger;
mod users;

pub use gateways::*;
pub use jobs::*;
pub use ledger::*;
pub use users::*;

/// A configuration section and the version that last changed it.
pub struct Section {
    pub version: i64,
    pub data: Value,
}

pub async fn config_section(
    db: &Database,
    account: AccountId,
    section: &str,
) -> Result<Option<Section>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT version, data FROM account_config WHERE account_id = $1 AND section = $2",
    )
    .bind(account.to_string())
    .bind(section)
    .fetch_optional(&db.pool)
    .await?;
    row.map(|row| {
        Ok(Section {
            version: row.try_get(0)?,
            data: serde_json::from_str(&row.try_get::<String, _>(1)?)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        })
    })
    .transpose()
}

/// The account that runs the platform (the installation's first), once it is opened. Not
/// scoped by account: which account is the operator is the installation's to know.
pub async fn operator_account(db: &Database) -> Result<Option<AccountId>, sqlx::Error> {
    let account: Option<String> =
        sqlx::query_scalar("SELECT account_id FROM account_config WHERE section = $1")
            .bind(crate::OPERATOR_SECTION)
            .fetch_optional(&db.pool)
            .await?;
    Ok(account.as_deref().and_then(AccountId::parse))
}

/// Narrows the audit log; every filter is optional.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub event_type: Option<String>,
    pub stream: Option<String>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
    /// Only entries older than this position (the page cursor).
    pub before: Option<i64>,
}

#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    pub position: i64,
    pub recorded_at: String,
    pub actor_id: String,
    pub actor_email: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub event_type: String,
    pub stream_id: String,
    pub summary: String,
    pub changes: String,
}

/// Newest first, at most `limit` entries.
pub async fn audit(
    db: &Database,
    account: AccountId,
    filter: &AuditFilter,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    // Absent filters bind NULL and match everything, so one statement serves every query.
    // Actors join by id alone: the operator's administrators act on other accounts (balance
    // adjustments), and those accounts' logs name them.
    static AUDIT: PerBackend<String> = PerBackend::new(|backend| {
        let time = |n| timestamp::param(backend, n);
        format!(
            "SELECT a.position, {} AS recorded_at, a.actor_id, u.email AS actor_email, \
                    a.client_ip, a.user_agent, a.request_id, a.event_type, a.stream_id, \
                    a.summary, a.changes \
             FROM audit_log a LEFT JOIN users u ON u.id = a.actor_id \
             WHERE a.account_id = $1 \
               AND ($2 IS NULL OR a.actor_id = $2) \
               AND ($3 IS NULL OR a.event_type = $3) \
               AND ($4 IS NULL OR a.stream_id = $4) \
               AND ({from} IS NULL OR a.recorded_at >= {from}) \
               AND ({to} IS NULL OR a.recorded_at < {to}) \
               AND a.position < COALESCE($7, 9223372036854775807) \
             ORDER BY a.position DESC LIMIT $8",
            timestamp::read(backend, "a.recorded_at"),
            from = time(5),
            to = time(6),
        )
    });
    sqlx::query_as(AUDIT.get(db.backend).as_str())
        .bind(account.to_string())
        .bind(filter.actor.as_deref())
        .bind(filter.event_type.as_deref())
        .bind(filter.stream.as_deref())
        .bind(filter.from.map(timestamp::format))
        .bind(filter.to.map(timestamp::format))
        .bind(filter.before)
        .bind(limit)
        .fetch_all(&db.pool)
        .await
}
