//! Reads of the ledger read model, scoped by account.

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use switchyard_command::{Database, db::PerBackend, domain::AccountId, timestamp};

/// An account's balances in minor units of `currency`.
#[derive(Debug, Clone, FromRow)]
pub struct BalanceRow {
    pub currency: String,
    pub balance_minor: i64,
    pub debit_limit_minor: i64,
    pub threshold_minor: Option<i64>,
}

/// The account's balances; `None` until its ledger has an entry or a limit.
pub async fn balance(db: &Database, account: AccountId) -> Result<Option<BalanceRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT currency, balance_minor, debit_limit_minor, threshold_minor \
         FROM account_balances WHERE account_id = $1",
    )
    .bind(account.to_string())
    .fetch_optional(&db.pool)
    .await
}

#[derive(Debug, Clone, FromRow)]
pub struct EntryRow {
    pub entry: i64,
    pub at: String,
    pub kind: String,
    pub amount_minor: i64,
    pub balance_after_minor: i64,
    pub currency: String,
    pub description: String,
    pub payment_id: Option<String>,
    pub package_id: Option<String>,
    pub period: Option<String>,
}

/// Narrows the ledger; every filter is optional.
#[derive(Debug, Default, Clone)]
pub struct LedgerFilter {
    pub kind: Option<String>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
    /// Only entries before this one (the page cursor).
    pub before: Option<i64>,
}

/// The account's entries, newest first, at most `limit`.
pub async fn ledger_page(
    db: &Database,
    account: AccountId,
    filter: &LedgerFilter,
    limit: i64,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    static LEDGER_PAGE: PerBackend<String> = PerBackend::new(|backend| {
        let time = |n| timestamp::param(backend, n);
        format!(
            "SELECT entry, {} AS at, kind, amount_minor, balance_after_minor, currency, \
             description, payment_id, package_id, period FROM ledger_entries \
             WHERE account_id = $1 AND ($2 IS NULL OR kind = $2) \
             AND ({from} IS NULL OR at >= {from}) AND ({to} IS NULL OR at < {to}) \
             AND ($5 IS NULL OR entry < $5) \
             ORDER BY entry DESC LIMIT $6",
            timestamp::read(backend, "at"),
            from = time(3),
            to = time(4),
        )
    });
    sqlx::query_as(LEDGER_PAGE.get(db.backend).as_str())
        .bind(account.to_string())
        .bind(filter.kind.as_deref())
        .bind(filter.from.map(timestamp::format))
        .bind(filter.to.map(timestamp::format))
        .bind(filter.before)
        .bind(limit)
        .fetch_all(&db.pool)
        .await
}
