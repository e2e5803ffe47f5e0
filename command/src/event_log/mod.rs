//! The event log: one append-only table for every stream, with optimistic concurrency per
//! stream, idempotent appends (by `event_id`), ordered catch-up reads, and group commit.
//!
//! Architecture invariant: positions become visible in increasing order on both backends,
//! so a reader that follows `global_position` never skips an event (see [`writer`]).

mod codec;
mod reader;
mod types;
mod upcast;
mod writer;

pub use codec::{EventCodec, decode, encode};
pub use reader::{LogScan, read_after, read_stream_until};
pub use types::{
    Actor, AppendError, Appended, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamWrite,
};
pub use upcast::current_schema_version;
pub use writer::POSTGRES_APPEND_LOCK;

use tokio::sync::{mpsc, oneshot, watch};

use crate::{Database, idempotency::Completion};

/// An append the writer has queued; its outcome comes when its batch commits.
pub struct QueuedAppend(oneshot::Receiver<Result<Appended, AppendError>>);

impl QueuedAppend {
    pub async fn outcome(self) -> Result<Appended, AppendError> {
        self.0.await.map_err(|_| AppendError::Closed)?
    }
}

/// Handle to the event log; cheap to clone. Appends go through one group-commit writer task
/// per process; reads go straight to the pool.
#[derive(Clone)]
pub struct EventLog {
    db: Database,
    writer: mpsc::Sender<writer::Pending>,
    head: watch::Receiver<i64>,
}

impl EventLog {
    /// Starts the writer task. It stops when the last handle is dropped, after committing
    /// every append it has already received.
    pub async fn start(db: Database) -> Result<Self, sqlx::Error> {
        let head = reader::head_position(&db).await?;
        let (head_tx, head_rx) = watch::channel(head);
        let (writer_tx, writer_rx) = mpsc::channel(writer::QUEUE_CAPACITY);
        tokio::spawn(writer::run(db.clone(), writer_rx, head_tx));
        Ok(Self {
            db,
            writer: writer_tx,
            head: head_rx,
        })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Appends events to one or more streams atomically: either every write's expected
    /// version holds and all events are stored, or nothing is. Appending events whose ids are
    /// already stored (a retry) answers the original positions and stores nothing.
    pub async fn append(
        &self,
        writes: Vec<StreamWrite>,
        metadata: Metadata,
    ) -> Result<Appended, AppendError> {
        self.enqueue(writes, metadata).await?.outcome().await
    }

    /// [`Self::append`], storing `completion`'s answer under its idempotency key in the same
    /// transaction; if the key is no longer its request's, nothing is written
    /// ([`AppendError::KeyTakenOver`]).
    pub(crate) async fn append_completing(
        &self,
        writes: Vec<StreamWrite>,
        metadata: Metadata,
        completion: Option<Completion>,
    ) -> Result<Appended, AppendError> {
        self.enqueue_completing(writes, metadata, completion)
            .await?
            .outcome()
            .await
    }

    /// Hands an append to the writer and answers once it is queued, before it is stored.
    /// Appends are stored (or refused) in the order they are queued, so one queued after
    /// another may expect the versions that one leaves ([`ExpectedVersion::After`]).
    pub async fn enqueue(
        &self,
        writes: Vec<StreamWrite>,
        metadata: Metadata,
    ) -> Result<QueuedAppend, AppendError> {
        self.enqueue_completing(writes, metadata, None).await
    }

    /// [`Self::enqueue`], with `completion` stored in the append's transaction.
    pub(crate) async fn enqueue_completing(
        &self,
        writes: Vec<StreamWrite>,
        metadata: Metadata,
        completion: Option<Completion>,
    ) -> Result<QueuedAppend, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(writer::Pending {
                writes,
                metadata,
                completion,
                reply,
            })
            .await
            .map_err(|_| AppendError::Closed)?;
        Ok(QueuedAppend(answer))
    }

    /// Every event of one stream, in version order, upcast to the current schema.
    pub async fn read_stream(&self, stream_id: &str) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        self.read_stream_after(stream_id, 0).await
    }

    /// The events of one stream after `version`, in version order.
    pub async fn read_stream_after(
        &self,
        stream_id: &str,
        version: i64,
    ) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        reader::read_stream_after(&self.db, stream_id, version).await
    }

    /// Up to `limit` events after `position`, in position order.
    pub async fn read_after(
        &self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, sqlx::Error> {
        reader::read_after(&self.db.pool, self.db.backend, position, limit).await
    }

    /// The highest position this process has appended or seen at start; changes wake
    /// readers without polling. Appends by other processes are found by polling.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    /// The highest committed position in the database, whoever wrote it.
    pub async fn head_position(&self) -> Result<i64, sqlx::Error> {
        reader::head_position(&self.db).await
    }
}
