//! Rebuilding read models from the event log.

use switchyard_command::Database;

use crate::{
    Projection, ProjectionError,
    runner::{Step, apply_next_batch},
};

/// Empties every read model and applies the whole log again, projection by projection.
/// `progress(projection, position)` is called after each batch.
pub async fn rebuild_all(
    db: &Database,
    mut progress: impl FnMut(&str, i64),
) -> Result<(), ProjectionError> {
    for projection in crate::all() {
        reset(db, projection.as_ref()).await?;
        while let Step::Advanced(position) = apply_next_batch(db, projection.as_ref()).await? {
            progress(projection.name(), position);
        }
    }
    Ok(())
}

async fn reset(db: &Database, projection: &dyn Projection) -> Result<(), sqlx::Error> {
    let mut tx = db.pool.begin().await?;
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
    tx.commit().await
}
