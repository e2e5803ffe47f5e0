//! Read models. Each projection folds the event log into its own tables; the runner keeps one
//! checkpoint per projection and commits it in the same transaction as the read-model
//! change, so a crash never applies an event twice or skips one. Every table here can be
//! dropped and rebuilt from the log ([`replay`]).

mod audit;
mod bulk;
mod config;
pub mod queries;
pub mod replay;
mod runner;
mod users;

use futures::future::BoxFuture;
use sqlx::AnyConnection;
use switchyard_command::event_log::RecordedEvent;

pub use audit::AuditProjection;
pub use config::{
    COMPANY_SECTION, ConfigProjection, GENERAL_SECTION, SMS_SECTION, SMTP_SECTION, without_secret,
};
pub use runner::{ProjectionHandle, Projections};
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
    with_audit(AuditProjection::default())
}

/// Every projection, as a rebuild from empty read models runs them.
pub(crate) fn rebuilding() -> Vec<std::sync::Arc<dyn Projection>> {
    with_audit(AuditProjection::rebuilding())
}

fn with_audit(audit: AuditProjection) -> Vec<std::sync::Arc<dyn Projection>> {
    vec![
        std::sync::Arc::new(ConfigProjection),
        std::sync::Arc::new(UsersProjection),
        std::sync::Arc::new(audit),
    ]
}
