//! Rebuilding read models from the event log: one pass over the log, each batch applied to
//! every projection in one transaction that also moves every checkpoint.
//!
//! Three stages overlap, each on its own task: reading batch N+2, planning batch N+1 (the
//! CPU work of projections that have a [`Planner`]) and writing batch N.

use std::sync::Arc;

use switchyard_command::{
    Backend, Database,
    event_log::{RecordedEvent, read_after},
};
use tokio::sync::mpsc;

use crate::{
    Planner, Projection, ProjectionError,
    bulk::{self, Statement},
    runner::save_checkpoint,
};

/// Events read and applied per transaction during a rebuild: larger than the live runner's
/// batches, since nobody waits for a rebuild's first events.
const REBUILD_BATCH: i64 = 5_000;

/// A batch ready to write: its events, and the statements of each projection that has a
/// planner (`None` for the others, which apply the events themselves).
struct Planned {
    events: Vec<RecordedEvent>,
    statements: Vec<Option<Vec<Statement>>>,
}

/// Empties every read model and applies the whole log again. `progress(position)` is called
/// after each batch.
pub async fn rebuild_all(db: &Database, progress: impl FnMut(i64)) -> Result<(), ProjectionError> {
    rebuild_in_batches(db, REBUILD_BATCH, progress).await
}

/// [`rebuild_all`], `batch_size` events per transaction: tests use small batches to cross
/// batch boundaries.
pub async fn rebuild_in_batches(
    db: &Database,
    batch_size: i64,
    mut progress: impl FnMut(i64),
) -> Result<(), ProjectionError> {
    let projections = crate::all();
    reset(db, &projections).await?;
    let planners = projections.iter().map(|p| p.planner()).collect();
    let mut planned = plan(read(db.clone(), batch_size), planners, db.backend);
    while let Some(next) = planned.recv().await {
        let Planned { events, statements } = next?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            return Ok(());
        };
        let mut tx = db.begin_write().await?;
        for (projection, statements) in projections.iter().zip(statements) {
            match statements {
                Some(statements) => bulk::execute_all(&mut tx, statements).await?,
                None => projection.apply(&mut tx, &events).await?,
            }
            save_checkpoint(&mut tx, projection.name(), last).await?;
        }
        tx.commit().await?;
        progress(last);
    }
    // The stages end the stream with an empty batch; a stage that stopped without it
    // panicked, and the rebuild must not pass for complete.
    panic!("a rebuild stage stopped before the end of the log")
}

type Stage<T> = mpsc::Receiver<Result<T, ProjectionError>>;

/// Reads the log batch by batch, one batch ahead of the planner. Events are immutable, so
/// reading needs no transaction shared with the writes.
fn read(db: Database, batch_size: i64) -> Stage<Vec<RecordedEvent>> {
    let (batches, receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut after = 0;
        loop {
            let batch = read_after(&db.pool, db.backend, after, batch_size)
                .await
                .map_err(ProjectionError::from);
            // Ends after sending the empty batch that marks the end, or the first error.
            let last = match &batch {
                Ok(events) => events.last().map(|e| e.global_position),
                Err(_) => None,
            };
            if batches.send(batch).await.is_err() {
                return;
            }
            match last {
                Some(last) => after = last,
                None => return,
            }
        }
    });
    receiver
}

/// Plans each batch on a blocking thread (planning is CPU work), one batch ahead of the
/// writer.
fn plan(
    mut batches: Stage<Vec<RecordedEvent>>,
    mut planners: Vec<Option<Box<dyn Planner>>>,
    backend: Backend,
) -> Stage<Planned> {
    let (planned, receiver) = mpsc::channel(1);
    tokio::task::spawn_blocking(move || {
        while let Some(batch) = batches.blocking_recv() {
            let batch = batch.and_then(|events| plan_batch(&mut planners, events, backend));
            let failed = batch.is_err();
            if planned.blocking_send(batch).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

/// Every planner's rows for `events`, bound into statements.
fn plan_batch(
    planners: &mut [Option<Box<dyn Planner>>],
    events: Vec<RecordedEvent>,
    backend: Backend,
) -> Result<Planned, ProjectionError> {
    let mut statements = Vec::with_capacity(planners.len());
    for planner in planners {
        let planned = match planner {
            Some(planner) => Some(
                planner
                    .plan(&events)?
                    .into_iter()
                    .flat_map(|rows| rows.statements(backend))
                    .collect(),
            ),
            None => None,
        };
        statements.push(planned);
    }
    Ok(Planned { events, statements })
}

async fn reset(db: &Database, projections: &[Arc<dyn Projection>]) -> Result<(), sqlx::Error> {
    // PostgreSQL's DELETE would leave every row behind as a dead tuple, and each row the
    // rebuild inserts again would meet its dead twin in the unique index.
    let empty = match db.backend {
        Backend::Sqlite => "DELETE FROM",
        Backend::Postgres => "TRUNCATE",
    };
    let mut tx = db.pool.begin().await?;
    for projection in projections {
        for table in projection.tables() {
            sqlx::query(sqlx::AssertSqlSafe(format!("{empty} {table}")))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, position) VALUES ($1, 0) \
             ON CONFLICT (projection) DO UPDATE SET position = 0",
        )
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
