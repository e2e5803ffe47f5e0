//! Runs each projection as its own task: wake on local appends (or poll for other processes'
//! appends), then apply the next batch and move the checkpoint in one transaction.
//!
//! Several processes may run the same projection: the checkpoint row is locked for the
//! batch (`BEGIN IMMEDIATE` on SQLite, `FOR UPDATE` on PostgreSQL), so they take turns and
//! never apply an event twice.

use std::{sync::Arc, time::Duration};

use sqlx::{Any, Transaction};
use switchyard_command::{
    Backend, Database,
    event_log::{EventLog, read_after},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Projection, ProjectionError};

/// Events applied per transaction.
pub const BATCH_SIZE: i64 = 1000;
/// How often an idle runner looks for events appended by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What one batch did.
enum Step {
    /// Applied events up to this position.
    Advanced(i64),
    /// Nothing new after this position.
    CaughtUp(i64),
}

/// Applies the events after the projection's checkpoint, up to `BATCH_SIZE` of them.
async fn apply_next_batch(
    db: &Database,
    projection: &dyn Projection,
) -> Result<Step, ProjectionError> {
    let mut tx = db.begin_write().await?;
    let checkpoint = read_checkpoint(&mut tx, db.backend, projection.name()).await?;
    let events = read_after(&mut *tx, db.backend, checkpoint, BATCH_SIZE).await?;
    let Some(last) = events.last().map(|e| e.global_position) else {
        return Ok(Step::CaughtUp(checkpoint));
    };
    projection.apply(&mut tx, &events).await?;
    save_checkpoint(&mut tx, projection.name(), last).await?;
    tx.commit().await?;
    Ok(Step::Advanced(last))
}

pub(crate) async fn save_checkpoint(
    tx: &mut Transaction<'static, Any>,
    projection: &str,
    position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE projection_checkpoints SET position = $1 WHERE projection = $2")
        .bind(position)
        .bind(projection)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Creates the projection's checkpoint row if it has none yet: at the start of the log, or
/// at its head for a projection that [`Projection::starts_at_head`].
async fn ensure_checkpoint(db: &Database, projection: &dyn Projection) -> Result<(), sqlx::Error> {
    let sql = match projection.starts_at_head() {
        false => {
            "INSERT INTO projection_checkpoints (projection, position) VALUES ($1, 0) \
             ON CONFLICT (projection) DO NOTHING"
        }
        true => {
            // `WHERE true`: SQLite would read `ON CONFLICT` after `FROM events` as a join.
            "INSERT INTO projection_checkpoints (projection, position) \
             SELECT $1, COALESCE(MAX(global_position), 0) FROM events WHERE true \
             ON CONFLICT (projection) DO NOTHING"
        }
    };
    sqlx::query(sql)
        .bind(projection.name())
        .execute(&db.pool)
        .await?;
    Ok(())
}

async fn read_checkpoint(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    name: &str,
) -> Result<i64, sqlx::Error> {
    let sql = match backend {
        Backend::Sqlite => "SELECT position FROM projection_checkpoints WHERE projection = $1",
        Backend::Postgres => {
            "SELECT position FROM projection_checkpoints WHERE projection = $1 FOR UPDATE"
        }
    };
    sqlx::query_scalar(sql)
        .bind(name)
        .fetch_one(&mut **tx)
        .await
}

/// A running projection's progress.
#[derive(Clone)]
pub struct ProjectionHandle {
    pub name: &'static str,
    checkpoint: watch::Receiver<i64>,
}

impl ProjectionHandle {
    pub fn checkpoint(&self) -> i64 {
        *self.checkpoint.borrow()
    }
}

/// Every projection of the service, running.
#[derive(Clone)]
pub struct Projections {
    handles: Vec<ProjectionHandle>,
}

impl Projections {
    /// Starts one task for each read model and each of `actors` (projections that act on
    /// events rather than fold them, such as the job dispatcher); they stop when `shutdown`
    /// is cancelled.
    pub fn start(
        log: &EventLog,
        actors: Vec<Arc<dyn Projection>>,
        shutdown: CancellationToken,
    ) -> Self {
        let handles = crate::all()
            .into_iter()
            .chain(actors)
            .map(|projection| {
                let (checkpoint_tx, checkpoint) = watch::channel(0);
                let name = projection.name();
                tokio::spawn(run(
                    log.clone(),
                    projection,
                    checkpoint_tx,
                    shutdown.clone(),
                ));
                ProjectionHandle { name, checkpoint }
            })
            .collect();
        Self { handles }
    }

    pub fn handles(&self) -> &[ProjectionHandle] {
        &self.handles
    }

    /// The checkpoint of the projection named `name`, as it moves: wakes whoever acts on
    /// what it commits (the job workers on the dispatcher's).
    pub fn checkpoint_of(&self, name: &str) -> Option<watch::Receiver<i64>> {
        self.handles
            .iter()
            .find(|handle| handle.name == name)
            .map(|handle| handle.checkpoint.clone())
    }

    /// Waits until every projection has applied `position` (read-your-writes for a command's
    /// response). False if `timeout` passed first.
    pub async fn wait_for(&self, position: i64, timeout: Duration) -> bool {
        let all = futures::future::join_all(self.handles.iter().map(|handle| {
            let mut checkpoint = handle.checkpoint.clone();
            async move { checkpoint.wait_for(|&at| at >= position).await.is_ok() }
        }));
        matches!(tokio::time::timeout(timeout, all).await, Ok(done) if done.iter().all(|ok| *ok))
    }
}

async fn run(
    log: EventLog,
    projection: Arc<dyn Projection>,
    checkpoint: watch::Sender<i64>,
    shutdown: CancellationToken,
) {
    let db = log.database().clone();
    let mut appended = log.subscribe();
    while let Err(error) = ensure_checkpoint(&db, projection.as_ref()).await {
        tracing::error!(projection = projection.name(), %error, "cannot create the checkpoint; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY_DELAY) => {}
        }
    }
    loop {
        match apply_next_batch(&db, projection.as_ref()).await {
            Ok(Step::Advanced(position)) => {
                checkpoint.send_replace(position);
                continue;
            }
            Ok(Step::CaughtUp(position)) => {
                checkpoint.send_replace(position);
                let local_head = *appended.borrow_and_update();
                if local_head > position {
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = appended.changed() => {}
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                }
            }
            Err(error) => {
                tracing::error!(projection = projection.name(), %error, "projection batch failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}
