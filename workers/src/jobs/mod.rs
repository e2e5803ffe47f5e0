//! Jobs: the side effects events ask for, run at least once by apalis workers, with each
//! completed effect recorded so that running a job again does not repeat it.
//!
//! - [`dispatcher`]: events → jobs, queued in the transaction that moves its checkpoint;
//! - [`runner`]: the apalis workers, one per queue, restarted with a growing delay;
//! - [`health`]: how they are doing, for `/readyz`;
//! - [`perform`]: one attempt at one job, through the one send path for each channel;
//! - [`store`]: the queue insert, the reports of each attempt, the effects record.

mod backoff;
pub mod dispatcher;
mod job;
mod notices;
mod perform;
pub mod runner;
pub mod store;

use switchyard_command::{Backend, Database};

pub use dispatcher::Dispatcher;
pub use job::{Job, NoticeContext, Queue, SecurityChange};
pub use perform::JobContext;
pub use runner::{WorkerOptions, run_workers};
pub use switchyard_projections::queries::job_id;
pub use switchyard_projections::worker_health::{QueueHealth, WorkerFailure, WorkerHealth};

/// The apalis tables, in their own migration history (apalis and we both use sqlx's
/// migrator; sharing its default table would mix the two histories).
pub async fn migrate(db: &Database) -> Result<(), sqlx::Error> {
    let mut migrator = match db.backend {
        Backend::Sqlite => apalis_sqlite::SqliteStorage::migrations(),
        Backend::Postgres => apalis_postgres::PostgresStorage::<()>::migrations(),
    };
    migrator.dangerous_set_table_name("apalis_migrations");
    migrator.run(&db.pool).await.map_err(Into::into)
}
