//! Group commit: one writer task per process takes every append waiting in its queue and
//! stores them in one transaction, checking each append's expected versions on its own, so
//! one conflicting append fails alone while the others commit.
//!
//! Ordering invariant (why readers never skip): positions must become visible in the order
//! they were assigned.
//! - SQLite: `BEGIN IMMEDIATE` takes the database's single write lock before anything is read
//!   or assigned, so transactions assign positions and commit one after another.
//! - PostgreSQL: identity values are handed out outside transactions, so two concurrent
//!   writers could commit positions out of order and a reader following `global_position`
//!   would skip the late one. Every writer therefore holds a transaction-level advisory lock
//!   from before its first position until its commit is visible (PostgreSQL releases locks
//!   after it marks the transaction committed). Group commit keeps the lock cheap: one
//!   acquisition per batch, not per append. Proven by the concurrent test in
//!   `tests/event_log.rs`.

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use sqlx::Row;

use crate::db::WriteTransaction;
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    AppendError, Appended, Metadata, StreamWrite,
    reader::{StreamHead, find_event_ids, stream_heads},
};
use crate::{
    Backend, Database,
    db::MAX_PARAMETERS,
    idempotency::{self, Completion},
    timestamp,
};

pub(super) const QUEUE_CAPACITY: usize = 8192;
/// Appends committed together at most; bounds a batch's transaction time.
const MAX_BATCH: usize = 512;
/// Rows per INSERT statement (9 parameters each).
const ROWS_PER_INSERT: usize = MAX_PARAMETERS / 9;
/// Advisory lock key that serialises event-log writers on PostgreSQL ("SWITCHYD").
pub const POSTGRES_APPEND_LOCK: i64 = 0x5357_4954_4348_5944;

pub(super) struct Pending {
    pub writes: Vec<StreamWrite>,
    pub metadata: Metadata,
    /// The answer to store under the idempotency key of the request the append carries out.
    pub completion: Option<Completion>,
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

type Outcome = Result<Appended, AppendError>;

pub(super) async fn run(
    db: Database,
    mut queue: mpsc::Receiver<Pending>,
    head: watch::Sender<i64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let pending = std::mem::take(&mut batch);
        let outcomes = match commit(&db, &pending).await {
            Ok(outcomes) => outcomes,
            Err(error) if pending.len() == 1 => vec![Err(AppendError::Database(error))],
            // A lock or statement timeout, a lost connection: every append would meet it again.
            Err(error) if !one_append_may_cause(&error) => {
                tracing::warn!(%error, appends = pending.len(), "batch append failed");
                let error = Arc::new(error);
                let failed = || Err(AppendError::BatchFailed(error.clone()));
                (0..pending.len()).map(|_| failed()).collect()
            }
            Err(error) => {
                // One bad append must not fail its neighbours: try each alone.
                tracing::warn!(%error, appends = pending.len(), "batch append failed, retrying one by one");
                let mut outcomes = Vec::with_capacity(pending.len());
                for one in &pending {
                    let outcome = commit(&db, std::slice::from_ref(one)).await;
                    outcomes.push(outcome.map_or_else(|e| Err(e.into()), |mut o| o.remove(0)));
                }
                outcomes
            }
        };
        let highest = outcomes
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok().map(|a| a.last_position))
            .max();
        if let Some(highest) = highest {
            head.send_if_modified(|current| {
                let advanced = highest > *current;
                *current = (*current).max(highest);
                advanced
            });
        }
        for (one, outcome) in pending.into_iter().zip(outcomes) {
            // The caller may have gone away (request cancelled); its events are stored anyway.
            let _ = one.reply.send(outcome);
        }
    }
}

/// Whether `error` may come from one append's content (a constraint it breaks, a value the
/// database refuses), so that the batch's other appends may still go in alone.
fn one_append_may_cause(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| {
        !matches!(e.kind(), sqlx::error::ErrorKind::Other)
            || e.code().is_some_and(|code| code.starts_with("22"))
    })
}

/// A row to insert and the append it belongs to.
struct EventRow {
    append: usize,
    stream_id: String,
    stream_type: String,
    version: i64,
    event_id: String,
    event_type: String,
    schema_version: i32,
    data: String,
}

async fn commit(db: &Database, batch: &[Pending]) -> Result<Vec<Outcome>, sqlx::Error> {
    let mut tx = begin(db).await?;
    let stream_ids: Vec<&str> = {
        let mut ids: Vec<&str> = batch
            .iter()
            .flat_map(|p| p.writes.iter().map(|w| w.stream_id.as_str()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let mut heads: HashMap<String, StreamHead> = HashMap::new();
    for chunk in stream_ids.chunks(ROWS_PER_INSERT) {
        heads.extend(stream_heads(&mut *tx, db.backend, chunk).await?);
    }

    let mut outcomes: Vec<Outcome> = Vec::with_capacity(batch.len());
    let mut rows = Vec::new();
    for (index, pending) in batch.iter().enumerate() {
        let outcome = match plan(index, pending, &heads) {
            Ok(planned) if completes(&mut tx, pending).await? => {
                heads.extend(planned.heads);
                rows.extend(planned.rows);
                Ok(Appended {
                    last_position: 0,
                    stream_versions: planned.stream_versions,
                })
            }
            Ok(_) => Err(AppendError::KeyTakenOver),
            Err(refused) => Err(refused),
        };
        outcomes.push(outcome);
    }

    answer_retries(&mut tx, db.backend, batch, &mut outcomes).await?;
    let metadata: Vec<String> = batch
        .iter()
        .map(|p| serde_json::to_string(&p.metadata).expect("metadata serializes"))
        .collect();
    let recorded_at = timestamp::format(Utc::now());
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let append_of: HashMap<&str, usize> = chunk
            .iter()
            .map(|r| (r.event_id.as_str(), r.append))
            .collect();
        for (event_id, position) in
            insert(&mut tx, db.backend, chunk, &metadata, &recorded_at).await?
        {
            if let Ok(appended) = &mut outcomes[append_of[event_id.as_str()]] {
                appended.last_position = appended.last_position.max(position);
            }
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn begin(db: &Database) -> Result<WriteTransaction, sqlx::Error> {
    let mut tx = db.begin_write().await?;
    if db.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(POSTGRES_APPEND_LOCK)
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// What an append would write, if it may.
struct Planned {
    rows: Vec<EventRow>,
    /// The version it leaves each of its streams at, in the order of its writes.
    stream_versions: Vec<i64>,
    /// The heads it leaves its streams at, for the appends after it in the batch.
    heads: HashMap<String, StreamHead>,
}

/// Checks the `append`-th append of the batch against the stream heads as the appends
/// before it in this batch left them: its rows and the versions it leaves each stream at,
/// or why it is refused.
fn plan(
    append: usize,
    pending: &Pending,
    heads: &HashMap<String, StreamHead>,
) -> Result<Planned, AppendError> {
    let writes = &pending.writes;
    if writes.is_empty() || writes.iter().any(|w| w.events.is_empty()) {
        return Err(AppendError::Empty);
    }
    let mut planned: HashMap<String, StreamHead> = HashMap::new();
    let mut rows = Vec::new();
    let mut stream_versions = Vec::with_capacity(writes.len());
    for write in writes {
        let current = planned
            .get(&write.stream_id)
            .or_else(|| heads.get(&write.stream_id))
            .copied()
            .unwrap_or_default();
        if !write.expected.holds(current.version, current.last_event_id) {
            return Err(AppendError::Conflict {
                stream_id: write.stream_id.clone(),
                expected: write.expected.as_version(),
                actual: current.version,
            });
        }
        let mut version = current.version;
        for event in &write.events {
            version += 1;
            rows.push(EventRow {
                append,
                stream_id: write.stream_id.clone(),
                stream_type: write.stream_type.clone(),
                version,
                event_id: event.event_id.to_string(),
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                data: event.data.to_string(),
            });
        }
        let head = StreamHead {
            version,
            last_event_id: write.events.last().map(|event| event.event_id),
        };
        planned.insert(write.stream_id.clone(), head);
        stream_versions.push(version);
    }
    Ok(Planned {
        rows,
        stream_versions,
        heads: planned,
    })
}

/// Stores the answer the append completes, if it completes one; false when its request no
/// longer holds the key, and the append must write nothing.
async fn completes(tx: &mut WriteTransaction, pending: &Pending) -> Result<bool, sqlx::Error> {
    match &pending.completion {
        Some(completion) => idempotency::complete(tx, completion).await,
        None => Ok(true),
    }
}

/// A retried append's events are stored, so its expected versions no longer hold. Only a
/// conflicting append can be one: look its events up, and answer a retry as the first time.
async fn answer_retries(
    tx: &mut WriteTransaction,
    backend: Backend,
    batch: &[Pending],
    outcomes: &mut [Outcome],
) -> Result<(), sqlx::Error> {
    let conflicting: Vec<usize> = (0..batch.len())
        .filter(|&i| matches!(outcomes[i], Err(AppendError::Conflict { .. })))
        .collect();
    if conflicting.is_empty() {
        return Ok(());
    }
    let event_ids: Vec<String> = conflicting
        .iter()
        .flat_map(|&i| batch[i].writes.iter().flat_map(|w| &w.events))
        .map(|e| e.event_id.to_string())
        .collect();
    let stored: HashMap<String, (i64, i64)> = find_event_ids(&mut **tx, backend, &event_ids)
        .await?
        .into_iter()
        .map(|(id, position, version)| (id, (position, version)))
        .collect();
    for i in conflicting {
        let writes = &batch[i].writes;
        if stored.contains_key(&writes[0].events[0].event_id.to_string()) {
            outcomes[i] = Ok(retried(writes, &stored));
        }
    }
    Ok(())
}

fn retried(writes: &[StreamWrite], stored: &HashMap<String, (i64, i64)>) -> Appended {
    let found = |write: &StreamWrite| {
        write
            .events
            .last()
            .and_then(|e| stored.get(&e.event_id.to_string()))
            .copied()
            .unwrap_or_default()
    };
    Appended {
        last_position: writes.iter().map(|w| found(w).0).max().unwrap_or_default(),
        stream_versions: writes.iter().map(|w| found(w).1).collect(),
    }
}

async fn insert(
    tx: &mut WriteTransaction,
    backend: Backend,
    rows: &[EventRow],
    metadata: &[String],
    recorded_at: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    // PostgreSQL's native column types need casts from the text parameters.
    let casts = match backend {
        Backend::Sqlite => ["", "", "", "", "", "", "", "", ""],
        Backend::Postgres => [
            "",
            "",
            "",
            "::uuid",
            "",
            "",
            "::json",
            "::json",
            timestamp::cast(backend),
        ],
    };
    let returning = match backend {
        Backend::Sqlite => "event_id",
        Backend::Postgres => "event_id::text",
    };
    let sql = format!(
        "INSERT INTO events (stream_id, stream_type, version, event_id, event_type, \
         schema_version, data, metadata, recorded_at) VALUES {} RETURNING {returning}, global_position",
        backend.values_clause(rows.len(), &casts)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in rows {
        query = query
            .bind(row.stream_id.as_str())
            .bind(row.stream_type.as_str())
            .bind(row.version)
            .bind(row.event_id.as_str())
            .bind(row.event_type.as_str())
            .bind(row.schema_version)
            .bind(row.data.as_str())
            .bind(metadata[row.append].as_str())
            .bind(recorded_at);
    }
    let returned = query.fetch_all(&mut **tx).await?;
    returned
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}
