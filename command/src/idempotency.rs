//! The store behind `Idempotency-Key`: per account and key, the digest of the request that
//! first came with it and, once it succeeded, the answer it got, kept for a day. The answer
//! is opaque here (a status, an ETag and a body, as the web layer gave them).
//!
//! A request claims its key with a random token. Its command's append stores the answer in
//! the same transaction as the events, and only while the token still holds the key
//! ([`Answering`], through [`crate::handler::CommandHandler::execute_answering`] and
//! [`crate::handler::CommandHandler::execute_across_answering`]): so a retry at any moment
//! finds either the request still running or its answer, never a command that committed
//! without one. A key left running (its process died before appending) is taken over after
//! `abandoned_after`; the request it was taken from can then append nothing.
//!
//! Operational state beside the event log, not events: replay leaves it alone.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{Any, Row};

use crate::db::WriteTransaction;
use uuid::Uuid;

use crate::{Database, db::PerBackend, domain::AccountId, timestamp};

/// The statements that write or compare times, per backend.
struct Statements {
    claim: String,
    take_over: String,
    prune: String,
}

static SQL: PerBackend<Statements> = PerBackend::new(|backend| {
    let time = |n| timestamp::param(backend, n);
    Statements {
        claim: format!(
            "INSERT INTO idempotency_keys (account_id, key, request_digest, claim, created_at) \
             VALUES ($1, $2, $3, $4, {}) ON CONFLICT (account_id, key) DO NOTHING",
            time(5)
        ),
        take_over: format!(
            "UPDATE idempotency_keys SET request_digest = $1, claim = $2, created_at = {} \
             WHERE account_id = $4 AND key = $5 AND status IS NULL AND created_at < {}",
            time(3),
            time(6)
        ),
        prune: format!(
            "DELETE FROM idempotency_keys WHERE created_at < {}",
            time(1)
        ),
    }
});

/// How long a key is remembered.
pub const KEY_LIFETIME: TimeDelta = TimeDelta::hours(24);
/// A running key unfinished after this long was abandoned (its process died): the default.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// The first answer given under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub etag: Option<String>,
    pub body: String,
}

/// A key held by one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClaim {
    account_id: AccountId,
    key: String,
    token: Uuid,
}

/// What a key stands for when a request comes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours now: run the request.
    Fresh(KeyClaim),
    /// A request with the digest `digest` finished with `answer`.
    Finished {
        digest: String,
        answer: StoredAnswer,
    },
    /// Another request with this key is running.
    Running,
}

/// How a command's answer is kept under its request's key: `render` makes it from what the
/// command decided (the state it leaves, or the outcome of a command across streams), and
/// the append stores it with the events.
pub struct Answering<'a, S> {
    claim: &'a KeyClaim,
    render: &'a (dyn Fn(&S) -> StoredAnswer + Send + Sync),
}

impl<S> Clone for Answering<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Answering<'_, S> {}

impl<'a, S> Answering<'a, S> {
    pub fn new(
        claim: &'a KeyClaim,
        render: &'a (dyn Fn(&S) -> StoredAnswer + Send + Sync),
    ) -> Self {
        Self { claim, render }
    }

    /// The answer to store if the command's append of `decided` commits.
    pub(crate) fn completion(&self, decided: &S) -> Completion {
        Completion {
            claim: self.claim.clone(),
            answer: (self.render)(decided),
        }
    }
}

/// An answer for the append to store under its request's key.
#[derive(Debug)]
pub(crate) struct Completion {
    claim: KeyClaim,
    answer: StoredAnswer,
}

/// Stores `completion`'s answer in the append's transaction `tx`. False when the request no
/// longer holds its key (a retry took it over): the append must then write nothing.
pub(crate) async fn complete(
    tx: &mut WriteTransaction,
    completion: &Completion,
) -> Result<bool, sqlx::Error> {
    let Completion { claim, answer } = completion;
    let stored = store_answer(answer, claim).execute(&mut **tx).await?;
    Ok(stored.rows_affected() == 1)
}

/// The statement that keeps `answer` under `claim`'s key, if it still holds it unanswered.
fn store_answer<'q>(
    answer: &'q StoredAnswer,
    claim: &'q KeyClaim,
) -> sqlx::query::Query<'q, Any, <Any as sqlx::Database>::Arguments> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $1, etag = $2, body = $3 \
         WHERE account_id = $4 AND key = $5 AND claim = $6 AND status IS NULL",
    )
    .bind(i64::from(answer.status))
    .bind(answer.etag.as_deref())
    .bind(answer.body.as_str())
    .bind(claim.account_id.to_string())
    .bind(claim.key.as_str())
    .bind(claim.token.to_string())
}

/// The `idempotency_keys` table.
#[derive(Clone, Debug)]
pub struct IdempotencyKeys {
    db: Database,
    abandoned_after: TimeDelta,
}

impl IdempotencyKeys {
    /// Keys left running for `abandoned_after` may be taken over ([`ABANDONED_AFTER`] but in
    /// tests).
    pub fn new(db: Database, abandoned_after: Duration) -> Self {
        Self {
            db,
            abandoned_after: TimeDelta::from_std(abandoned_after).unwrap_or(TimeDelta::MAX),
        }
    }

    /// Claims `key` for a request with `digest`, or says who has it.
    pub async fn claim(
        &self,
        account: AccountId,
        key: &str,
        digest: &str,
    ) -> Result<Claim, sqlx::Error> {
        let now = Utc::now();
        let claim = KeyClaim {
            account_id: account,
            key: key.to_owned(),
            token: Uuid::new_v4(),
        };
        let sql = SQL.get(self.db.backend);
        let inserted = sqlx::query(sql.claim.as_str())
            .bind(account.to_string())
            .bind(key)
            .bind(digest)
            .bind(claim.token.to_string())
            .bind(timestamp::format(now))
            .execute(&self.db.pool)
            .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::Fresh(claim));
        }
        let taken_over = sqlx::query(sql.take_over.as_str())
            .bind(digest)
            .bind(claim.token.to_string())
            .bind(timestamp::format(now))
            .bind(account.to_string())
            .bind(key)
            .bind(timestamp::format(now - self.abandoned_after))
            .execute(&self.db.pool)
            .await?;
        if taken_over.rows_affected() == 1 {
            return Ok(Claim::Fresh(claim));
        }
        let row = sqlx::query(
            "SELECT request_digest, status, etag, body FROM idempotency_keys \
             WHERE account_id = $1 AND key = $2",
        )
        .bind(account.to_string())
        .bind(key)
        .fetch_one(&self.db.pool)
        .await?;
        Ok(match row.try_get::<Option<i64>, _>(1)? {
            None => Claim::Running,
            Some(status) => Claim::Finished {
                digest: row.try_get(0)?,
                answer: StoredAnswer {
                    status: u16::try_from(status).unwrap_or(500),
                    etag: row.try_get(2)?,
                    body: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                },
            },
        })
    }

    /// After a request that succeeded without appending (nothing to change): keeps its
    /// answer, unless its append kept one already or the key was taken over.
    pub async fn settle(&self, claim: &KeyClaim, answer: &StoredAnswer) -> Result<(), sqlx::Error> {
        store_answer(answer, claim).execute(&self.db.pool).await?;
        Ok(())
    }

    /// After a request that failed: frees its key, so the client can correct the request and
    /// retry, unless its command appended (and kept an answer) or the key was taken over.
    pub async fn release(&self, claim: &KeyClaim) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE account_id = $1 AND key = $2 AND claim = $3 AND status IS NULL",
        )
        .bind(claim.account_id.to_string())
        .bind(claim.key.as_str())
        .bind(claim.token.to_string())
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Forgets keys older than [`KEY_LIFETIME`]; answers how many.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let deleted = sqlx::query(SQL.get(self.db.backend).prune.as_str())
            .bind(timestamp::format(now - KEY_LIFETIME))
            .execute(&self.db.pool)
            .await?;
        Ok(deleted.rows_affected())
    }
}
