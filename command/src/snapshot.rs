//! Snapshots: a long stream's state at one of its versions, so that loading it reads the
//! snapshot and the events after it instead of the whole stream. An aggregate opts in with
//! [`crate::handler::Aggregate::SNAPSHOTS`]; snapshots are derived from the log, written
//! by the command handler as a stream grows, and ignored when written with another layout
//! of the state (`state_version`).

use serde::{Serialize, de::DeserializeOwned};
use sqlx::{Row, any::AnyExecutor};

use crate::Database;

/// A stream gets a new snapshot once it has grown this many events past its last one.
pub const SNAPSHOT_EVERY: i64 = 100;
/// Snapshots further than this many versions behind a new one are deleted; the ones kept
/// serve a reader that needs the stream as it stood a little earlier (the job dispatcher).
const KEPT_VERSIONS: i64 = 4 * SNAPSHOT_EVERY;

/// How an aggregate's state is written to and read from snapshots.
pub struct SnapshotCodec<A> {
    /// The layout of the state. Change the state's fields or their meaning and bump it:
    /// snapshots of another layout are then ignored, and the stream is folded from its events.
    pub state_version: i32,
    encode: fn(&A) -> serde_json::Result<String>,
    decode: fn(&str) -> serde_json::Result<A>,
}

impl<A: Serialize + DeserializeOwned> SnapshotCodec<A> {
    /// The state as JSON, through its serde implementation.
    pub const fn serde(state_version: i32) -> Self {
        Self {
            state_version,
            encode: encode_json::<A>,
            decode: decode_json::<A>,
        }
    }
}

impl<A> SnapshotCodec<A> {
    pub(crate) fn encode(&self, state: &A) -> serde_json::Result<String> {
        (self.encode)(state)
    }

    pub(crate) fn decode(&self, data: &str) -> serde_json::Result<A> {
        (self.decode)(data)
    }
}

fn encode_json<A: Serialize>(state: &A) -> serde_json::Result<String> {
    serde_json::to_string(state)
}

fn decode_json<A: DeserializeOwned>(data: &str) -> serde_json::Result<A> {
    serde_json::from_str(data)
}

/// A stored snapshot, not yet decoded.
pub(crate) struct StoredSnapshot {
    pub version: i64,
    pub data: String,
}

/// The newest snapshot of `stream_id` in `state_version` whose version's event is at or
/// before log `position`.
pub(crate) async fn newest<'e>(
    executor: impl AnyExecutor<'e>,
    stream_id: &str,
    state_version: i32,
    position: i64,
) -> Result<Option<StoredSnapshot>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT stream_version, data FROM snapshots \
         WHERE stream_id = $1 AND state_version = $2 AND position <= $3 \
         ORDER BY stream_version DESC LIMIT 1",
    )
    .bind(stream_id)
    .bind(state_version)
    .bind(position)
    .fetch_optional(executor)
    .await?;
    row.map(|row| {
        Ok(StoredSnapshot {
            version: row.try_get(0)?,
            data: row.try_get(1)?,
        })
    })
    .transpose()
}

/// Stores the state of `stream_id` after `version` (whose event is at `position`), and
/// deletes the stream's snapshots that are far behind it.
pub(crate) async fn save(
    db: &Database,
    stream_id: &str,
    version: i64,
    position: i64,
    state_version: i32,
    data: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "INSERT INTO snapshots (stream_id, stream_version, position, state_version, data) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream_id, stream_version) DO NOTHING",
    )
    .bind(stream_id)
    .bind(version)
    .bind(position)
    .bind(state_version)
    .bind(data)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM snapshots WHERE stream_id = $1 AND stream_version < $2")
        .bind(stream_id)
        .bind(version - KEPT_VERSIONS)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
