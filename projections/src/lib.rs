//! Read models. Each projection folds the event log into its own tables; the runner keeps one
//! checkpoint per projection and commits it in the same transaction as the read-model
//! change, so a crash never applies an event twice or skips one. Every table here can be
//! dropped and rebuilt from the log ([`replay`]).

mod audit;
pub mod bulk;
mod config;
mod gateways;
mod ledger;
pub mod queries;
pub mod replay;
mod runner;
mod users;
pub mod worker_health;

use futures::future::BoxFuture;
use sqlx::AnyConnection;
use switchyard_command::{
    event_log::RecordedEvent,
    handler::{FoldError, LoadError},
};

pub use audit::AuditProjection;
pub use config::{
    COMPANY_SECTION, ConfigProjection, GENERAL_SECTION, OPERATOR_SECTION, SMS_SECTION,
    SMTP_SECTION, without_secret,
};
pub use gateways::GatewaysProjection;
pub use ledger::LedgerProjection;
pub use runner::{Failure, ProjectionHandle, Projections, StoredCheckpoint, stored_checkpoints};
pub use users::UsersProjection;

/// One read model: how events change its tables.
pub trait Projection: Send + Sync + 'static {
    /// Unique, stable name: the key of its checkpoint.
    fn name(&self) -> &'static str;
    /// The tables it owns, emptied before a rebuild.
    fn tables(&self) -> &'static [&'static str];
    /// Whether a new checkpoint starts at the head of the log rather than its beginning: for
    /// a projection that acts on events (the job dispatcher) instead of folding them all.
    fn starts_at_head(&self) -> bool {
        false
    }
    /// Applies a batch of events, in position order, inside the runner's transaction.
    /// Must be idempotent: applying events already applied changes nothing.
    fn apply<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        events: &'c [RecordedEvent],
    ) -> BoxFuture<'c, Result<(), ProjectionError>>;
    /// For a rebuild from empty tables: a planner that folds the log in memory, if this read
    /// model can. Without one, the rebuild calls [`Projection::apply`].
    fn planner(&self) -> Option<Box<dyn Planner>> {
        None
    }
}

/// Turns batches into the rows they write without reading the database, keeping whatever
/// it needs of earlier batches itself: so a rebuild plans the next batch while the current
/// one is written.
pub trait Planner: Send {
    /// Folds `events` in, after every batch planned before, and returns the rows that
    /// record them one by one (the audit log's entries), which no later event changes. A
    /// rebuild inserts them without their `on_conflict`: each event is planned once, into
    /// emptied tables.
    fn plan(&mut self, events: &[RecordedEvent]) -> Result<Vec<bulk::Rows>, ProjectionError>;
    /// The tables [`Planner::plan`] writes, which no upsert touches during a rebuild: so a
    /// rebuild can drop even their primary keys, and build them once at its end.
    fn event_tables(&self) -> &'static [&'static str];
    /// Upserts of the newest state of everything folded in since the last call. A rebuild
    /// takes them once, at its end, instead of rewriting the same rows batch after batch.
    fn take_latest(&mut self) -> Vec<bulk::Rows>;
    /// Everything one live batch writes.
    fn plan_with_latest(
        &mut self,
        events: &[RecordedEvent],
    ) -> Result<Vec<bulk::Rows>, ProjectionError> {
        let mut rows = self.plan(events)?;
        rows.extend(self.take_latest());
        Ok(rows)
    }
}

/// A live batch of a projection whose planner needs nothing from its tables: planned
/// afresh, latest state included, and written.
fn write_planned<'c>(
    mut planner: impl Planner + 'c,
    conn: &'c mut AnyConnection,
    events: &'c [RecordedEvent],
) -> BoxFuture<'c, Result<(), ProjectionError>> {
    Box::pin(async move {
        let rows = planner.plan_with_latest(events)?;
        Ok(bulk::write_all(conn, rows).await?)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event at position {position} does not decode: {source}")]
    Decode {
        position: i64,
        source: serde_json::Error,
    },
    /// A stream the projection looks up cannot be folded.
    #[error(transparent)]
    Fold(#[from] FoldError),
}

impl From<LoadError> for ProjectionError {
    fn from(error: LoadError) -> Self {
        match error {
            LoadError::Read(error) => Self::Database(error),
            LoadError::Fold(error) => Self::Fold(error),
        }
    }
}

impl ProjectionError {
    /// For `map_err` on decoding `event`.
    pub fn decode(event: &RecordedEvent) -> impl FnOnce(serde_json::Error) -> Self + '_ {
        |source| Self::Decode {
            position: event.global_position,
            source,
        }
    }
}

/// Every projection the service runs, in the order replay rebuilds them.
pub fn all() -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(ConfigProjection),
        std::sync::Arc::new(UsersProjection),
        std::sync::Arc::new(AuditProjection),
        std::sync::Arc::new(LedgerProjection),
        std::sync::Arc::new(GatewaysProjection),
    ]
}
