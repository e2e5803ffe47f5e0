//! Rebuilding read models from the event log: one pass over the log, each batch applied to
//! every projection in one transaction that also moves every checkpoint.

use switchyard_command::{Database, event_log::read_after};

use crate::{Projection, ProjectionError, runner::save_checkpoint};

/// Events read and applied per transaction during a rebuild: larger than the live runner's
/// batches, since nobody waits for a rebuild's first events.
const REBUILD_BATCH: i64 = 5_000;

/// Empties every read model and applies the whole log again. `progress(position)` is called
/// after each batch.
///
/// The next batch is read on another connection while the current one is applied: events
/// are immutable, and reading is a third of a batch's time.
pub async fn rebuild_all(
    db: &Database,
    mut progress: impl FnMut(i64),
) -> Result<(), ProjectionError> {
    let projections = crate::rebuilding();
    reset(db, &projections).await?;
    let read_batch = |after: i64| {
        let db = db.clone();
        tokio::spawn(async move { read_after(&db.pool, db.backend, after, REBUILD_BATCH).await })
    };
    let mut next = read_batch(0);
    loop {
        let events = next.await.expect("reading a batch does not panic")?;
        let Some(last) = events.last().map(|e| e.global_position) else {
            return Ok(());
        };
        next = read_batch(last);
        let mut tx = db.begin_write().await?;
        for projection in &projections {
            projection.apply(&mut tx, &events).await?;
            save_checkpoint(&mut tx, projection.name(), last).await?;
        }
        tx.commit().await?;
        progress(last);
    }
}

async fn reset(
    db: &Database,
    projections: &[std::sync::Arc<dyn Projection>],
) -> Result<(), sqlx::Error> {
    let mut tx = db.pool.begin().await?;
    for projection in projections {
        for table in projection.tables() {
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}")))
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
