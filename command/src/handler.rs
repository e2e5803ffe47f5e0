//! The command path: load a stream, fold it into state, decide, append with the version that
//! was loaded. A concurrent writer makes the append conflict; the command is then decided
//! again on the fresh state, so guards such as "unchanged since version N" are always
//! checked against what is really stored.
//!
//! Within one process, commands on one stream queue: each takes the stream's turn, decides
//! on the state the command before it left, hands its append to the writer and passes the
//! turn on before the append commits. The writer stores appends in the order they are
//! queued, and an append decided on a state whose own append is still in flight expects
//! that append's last event ([`ExpectedVersion::After`]): if that one fails, the ones queued
//! on top of it fail too, and are decided again on the state read from the log. So a hot
//! stream costs no retries within a process; the version check arbitrates between processes.
//!
//! States are cached per stream (bounded, least recently used first out). A cached state
//! is only a starting point: an append decided on a stale one conflicts, and an answer that
//! appends nothing is only given once the state has been caught up with the log. Aggregates
//! whose streams grow long keep snapshots ([`crate::snapshot`]), so a cold load reads the
//! newest snapshot and the events after it.

use std::{
    any::Any,
    num::NonZeroUsize,
    pin::Pin,
    sync::{Arc, Mutex},
};

use lru::LruCache;
use sqlx::AnyConnection;
use tokio::sync::{MutexGuard, oneshot, watch};
use uuid::Uuid;

use crate::{
    Backend,
    event_log::{
        AppendError, Appended, EventCodec, EventLog, ExpectedVersion, Metadata, QueuedAppend,
        RecordedEvent, StreamWrite, decode, encode, read_stream_until,
    },
    idempotency::Answering,
    snapshot::{self, SNAPSHOT_EVERY, SnapshotCodec},
};

/// Pure domain logic: no I/O, no clocks, no randomness.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    type Command: Clone;
    type Event: EventCodec + Clone;
    type Error;

    /// For aggregates whose streams grow long: how their state is kept in snapshots.
    const SNAPSHOTS: Option<SnapshotCodec<Self>> = None;

    /// What happens if `command` is applied now: the events to record, or why not.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
    /// Folds one recorded event (at stream `version`) into the state. An event the state
    /// cannot take (which `decide` never produces) is refused, not guessed at.
    fn evolve(&mut self, event: Self::Event, version: i64) -> Result<(), Inconsistent>;
}

/// An event that cannot follow the state before it, such as a change to an account before
/// it was opened. `decide` never produces one; a stream edited by hand could hold one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Inconsistent(pub &'static str);

/// A stored event that cannot be folded into its stream's state.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error("stream {stream_id}: the event at version {version} does not decode: {source}")]
    Decode {
        stream_id: String,
        version: i64,
        source: serde_json::Error,
    },
    #[error(
        "stream {stream_id}: the event at version {version} cannot follow the state before it: {source}"
    )]
    Inconsistent {
        stream_id: String,
        version: i64,
        source: Inconsistent,
    },
}

/// State of a stream at a version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded<A> {
    pub state: A,
    pub version: i64,
}

/// The outcome of a command that the domain accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed<A> {
    pub state: A,
    pub version: i64,
    /// Position of the last appended event; `None` when the command changed nothing.
    pub position: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    #[error(transparent)]
    Domain(E),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("reading the event log failed: {0}")]
    Read(#[from] sqlx::Error),
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("gave up after {0} concurrent changes to the same stream")]
    TooMuchContention(usize),
}

/// Reading a stream as it stood at a position failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading the event log failed: {0}")]
    Read(#[from] sqlx::Error),
    #[error(transparent)]
    Fold(#[from] FoldError),
}

/// Conflicts a command survives before it gives up: each one is another process's append.
const MAX_ATTEMPTS: usize = 5;

/// Streams whose state stays cached.
const CACHED_STREAMS: usize = 10_000;

/// One stream's place in this process.
#[derive(Default)]
struct Slot {
    /// Held while a command decides and queues its append.
    turn: tokio::sync::Mutex<Turn>,
    /// How many of the stream's queued appends have their outcome. The writer answers them
    /// in the order they were queued, so this is a count.
    settled: watch::Sender<u64>,
}

#[derive(Default)]
struct Turn {
    /// A `Tip<A>`: the state after the last append queued; `None` when it must be read
    /// from the log.
    tip: Option<Box<dyn Any + Send + Sync>>,
    /// Appends queued so far.
    queued: u64,
    /// Moves on whenever the tip is thrown away, so that a failed append throws away only
    /// the tip it was part of, not one read from the log since.
    epoch: u64,
}

/// The state the last command on a stream left.
struct Tip<A> {
    loaded: Loaded<A>,
    /// The id of the event at `loaded.version`, when known: an append decided on this
    /// state must find it there.
    last_event_id: Option<Uuid>,
    /// The version of the stream's newest snapshot, written or read.
    snapshot_version: i64,
}

impl<A: Aggregate> Tip<A> {
    fn empty() -> Self {
        Self {
            loaded: Loaded::default(),
            last_event_id: None,
            snapshot_version: 0,
        }
    }

    /// The write that appends `events` on top of this state.
    fn write(&self, stream_id: &str, events: &[A::Event]) -> StreamWrite {
        let mut write = self.loaded.write(stream_id, events);
        if let Some(event_id) = self.last_event_id {
            write.expected = ExpectedVersion::After {
                version: self.loaded.version,
                event_id,
            };
        }
        write
    }

    /// The snapshot to store once the state at this version is committed, if one is due.
    fn due_snapshot(&mut self, stream_id: &str) -> Option<PendingSnapshot> {
        let codec = A::SNAPSHOTS.as_ref()?;
        if self.loaded.version - self.snapshot_version < SNAPSHOT_EVERY {
            return None;
        }
        self.snapshot_version = self.loaded.version;
        match codec.encode(&self.loaded.state) {
            Ok(data) => Some(PendingSnapshot {
                stream_id: stream_id.to_owned(),
                version: self.loaded.version,
                state_version: codec.state_version,
                data,
            }),
            Err(error) => {
                tracing::warn!(stream_id, %error, "a state does not serialize; no snapshot");
                None
            }
        }
    }
}

/// A snapshot to store when the state it holds is committed.
struct PendingSnapshot {
    stream_id: String,
    version: i64,
    state_version: i32,
    data: String,
}

impl PendingSnapshot {
    /// Stores it in the background: a missing snapshot only makes the next cold load longer.
    fn save_later(self, log: &EventLog, position: i64) {
        let db = log.database().clone();
        tokio::spawn(async move {
            let saved = snapshot::save(
                &db,
                &self.stream_id,
                self.version,
                position,
                self.state_version,
                &self.data,
            )
            .await;
            if let Err(error) = saved {
                tracing::warn!(stream_id = self.stream_id, %error, "storing a snapshot failed");
            }
        });
    }
}

fn take_tip<A: Aggregate>(turn: &mut Turn) -> Option<Tip<A>> {
    let tip = turn.tip.take()?.downcast::<Tip<A>>().ok()?;
    Some(*tip)
}

/// The stream's turn once every append queued for it has its outcome, so that its tip
/// holds only committed events (or is gone).
async fn quiet_turn(slot: &Slot) -> MutexGuard<'_, Turn> {
    loop {
        let turn = slot.turn.lock().await;
        let queued = turn.queued;
        if *slot.settled.borrow() >= queued {
            return turn;
        }
        drop(turn);
        // The sender lives in `slot`, so this waits until the count gets there.
        let _ = slot.settled.subscribe().wait_for(|&n| n >= queued).await;
    }
}

#[derive(Clone)]
pub struct CommandHandler {
    log: EventLog,
    streams: Arc<Mutex<LruCache<String, Arc<Slot>>>>,
}

impl CommandHandler {
    pub fn new(log: EventLog) -> Self {
        let capacity = NonZeroUsize::new(CACHED_STREAMS).expect("non-zero");
        Self {
            log,
            streams: Arc::new(Mutex::new(LruCache::new(capacity))),
        }
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    fn slot(&self, stream_id: &str) -> Arc<Slot> {
        let mut streams = self.streams.lock().expect("stream table lock");
        if let Some(slot) = streams.get(stream_id) {
            return slot.clone();
        }
        let slot = Arc::new(Slot::default());
        streams.put(stream_id.to_owned(), slot.clone());
        slot
    }

    /// The stream's current state: the cached state brought up to date with the events
    /// appended since, by this process or any other.
    pub async fn load<A: Aggregate, E>(
        &self,
        stream_id: &str,
    ) -> Result<Loaded<A>, CommandError<E>> {
        let slot = self.slot(stream_id);
        let mut turn = quiet_turn(&slot).await;
        let tip = match take_tip::<A>(&mut turn) {
            Some(mut tip) => {
                self.catch_up(stream_id, &mut tip).await?;
                tip
            }
            None => self.read(stream_id).await?,
        };
        let loaded = tip.loaded.clone();
        turn.tip = Some(Box::new(tip));
        Ok(loaded)
    }

    /// The stream read from the log: its newest snapshot, if the aggregate keeps them, and
    /// the events after it.
    async fn read<A: Aggregate, E>(&self, stream_id: &str) -> Result<Tip<A>, CommandError<E>> {
        let mut tip = Tip::<A>::empty();
        if let Some(codec) = &A::SNAPSHOTS {
            let pool = &self.log.database().pool;
            if let Some(stored) =
                snapshot::newest(pool, stream_id, codec.state_version, i64::MAX).await?
            {
                match codec.decode(&stored.data) {
                    Ok(state) => {
                        tip.loaded = Loaded {
                            state,
                            version: stored.version,
                        };
                        tip.snapshot_version = stored.version;
                    }
                    Err(error) => tracing::warn!(
                        stream_id, %error, "a snapshot does not decode; folding the whole stream"
                    ),
                }
            }
        }
        self.catch_up(stream_id, &mut tip).await?;
        Ok(tip)
    }

    /// Applies the events stored after the tip's version; it must hold committed events
    /// only. Stores a snapshot when the stream has grown enough since the last.
    async fn catch_up<A: Aggregate, E>(
        &self,
        stream_id: &str,
        tip: &mut Tip<A>,
    ) -> Result<(), CommandError<E>> {
        let newer = self
            .log
            .read_stream_after(stream_id, tip.loaded.version)
            .await?;
        let Some(last) = newer.last() else {
            return Ok(());
        };
        tip.loaded.fold(&newer)?;
        tip.last_event_id = Some(last.event_id);
        if let Some(snapshot) = tip.due_snapshot(stream_id) {
            snapshot.save_later(&self.log, last.global_position);
        }
        Ok(())
    }

    /// Runs `command` against the stream, after the commands queued before it in this
    /// process, retrying when another process's append gets in first.
    ///
    /// A cached state is decided on without reading the log first: if it is stale, the
    /// append's version check refuses it and the command runs again on the caught-up state.
    /// An answer that appends nothing (no change, or a refusal) cannot rely on that check,
    /// so it is only given once the appends queued before it have their outcome and the
    /// state has been caught up with the log.
    pub async fn execute<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        self.execute_answering(stream_id, command, metadata, None)
            .await
    }

    /// [`Self::execute`] for a request under an idempotency key: the append that carries
    /// the command out also stores `answering`'s answer, rendered from the state the command
    /// leaves, or writes nothing if the request lost its key (see [`crate::idempotency`]).
    pub async fn execute_answering<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        metadata: &Metadata,
        answering: Option<Answering<'_, Loaded<A>>>,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let slot = self.slot(stream_id);
        let mut conflicts = 0;
        // Whether the next decision must be on a state caught up with the log.
        let mut confirm = false;
        loop {
            let mut turn = match confirm {
                true => quiet_turn(&slot).await,
                false => slot.turn.lock().await,
            };
            let (mut tip, current) = match take_tip::<A>(&mut turn) {
                Some(mut tip) if confirm => {
                    self.catch_up(stream_id, &mut tip).await?;
                    (tip, true)
                }
                Some(tip) => (tip, false),
                None => (self.read(stream_id).await?, true),
            };
            let events = match tip.loaded.state.decide(command.clone()) {
                Ok(events) if !events.is_empty() => events,
                _ if !current => {
                    turn.tip = Some(Box::new(tip));
                    confirm = true;
                    continue;
                }
                decided => {
                    let answer = decided.map_err(CommandError::Domain).map(|_| Executed {
                        state: tip.loaded.state.clone(),
                        version: tip.loaded.version,
                        position: None,
                    });
                    turn.tip = Some(Box::new(tip));
                    return answer;
                }
            };
            let write = tip.write(stream_id, &events);
            // Folded before the append is queued: an event the state refuses is not stored.
            tip.loaded.apply(stream_id, events)?;
            tip.last_event_id = write.events.last().map(|event| event.event_id);
            let snapshot = tip.due_snapshot(stream_id);
            let completion = answering.map(|answering| answering.completion(&tip.loaded));
            let queued = self
                .log
                .enqueue_completing(vec![write], metadata.clone(), completion)
                .await?;
            turn.queued += 1;
            let (ticket, epoch) = (turn.queued, turn.epoch);
            let executed = Executed {
                state: tip.loaded.state.clone(),
                version: tip.loaded.version,
                position: None,
            };
            turn.tip = Some(Box::new(tip));
            drop(turn);
            match self
                .settle(slot.clone(), ticket, epoch, queued, snapshot)
                .await
            {
                Ok(appended) => {
                    return Ok(Executed {
                        position: Some(appended.last_position),
                        ..executed
                    });
                }
                Err(AppendError::Conflict { .. }) if conflicts + 1 < MAX_ATTEMPTS => {
                    conflicts += 1;
                    confirm = false;
                }
                Err(AppendError::Conflict { .. }) => {
                    return Err(CommandError::TooMuchContention(MAX_ATTEMPTS));
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// Waits for a queued append's outcome and records it for the commands queued behind
    /// it: a failed append throws away the tip it was part of. The recording runs to its
    /// end even if the caller goes away meanwhile (a cancelled request).
    async fn settle(
        &self,
        slot: Arc<Slot>,
        ticket: u64,
        epoch: u64,
        queued: QueuedAppend,
        snapshot: Option<PendingSnapshot>,
    ) -> Result<Appended, AppendError> {
        let (answer, answered) = oneshot::channel();
        let log = self.log.clone();
        tokio::spawn(async move {
            let outcome = queued.outcome().await;
            let count = |settled: &mut u64| {
                let moved = ticket > *settled;
                *settled = (*settled).max(ticket);
                moved
            };
            match &outcome {
                Ok(appended) => {
                    slot.settled.send_if_modified(count);
                    if let Some(snapshot) = snapshot {
                        snapshot.save_later(&log, appended.last_position);
                    }
                }
                Err(_) => {
                    let mut turn = slot.turn.lock().await;
                    if turn.epoch == epoch {
                        turn.tip = None;
                        turn.epoch += 1;
                    }
                    slot.settled.send_if_modified(count);
                }
            }
            let _ = answer.send(outcome);
        });
        answered.await.map_err(|_| AppendError::Closed)?
    }

    /// Forgets the cached states of streams appended to outside their turn.
    async fn forget(&self, stream_ids: &[String]) {
        for stream_id in stream_ids {
            let slot = self
                .streams
                .lock()
                .expect("stream table lock")
                .peek(stream_id)
                .cloned();
            if let Some(slot) = slot {
                let mut turn = slot.turn.lock().await;
                turn.tip = None;
                turn.epoch += 1;
            }
        }
    }

    /// For commands that span streams: `decide` loads what it needs (through [`Self::load`])
    /// and answers the events of each stream; they are appended all at once or not at all.
    /// If any of the streams changed meanwhile, `decide` runs again on the fresh states.
    /// These do not queue behind single-stream commands (they take no turn while they
    /// decide, so cannot deadlock with them); the version check orders them.
    ///
    /// (`decide` answers a boxed future rather than being an async closure: the web layer
    /// needs the future to be `Send`, which the compiler cannot yet prove for async closures.)
    pub async fn execute_across<'a, T, E>(
        &self,
        metadata: &Metadata,
        decide: impl FnMut() -> Decision<'a, T, E>,
    ) -> Result<(T, Option<i64>), CommandError<E>> {
        self.execute_across_answering(metadata, None, decide).await
    }

    /// [`Self::execute_across`] for a request under an idempotency key: the append also
    /// stores `answering`'s answer, rendered from the decided outcome.
    pub async fn execute_across_answering<'a, T, E>(
        &self,
        metadata: &Metadata,
        answering: Option<Answering<'_, T>>,
        mut decide: impl FnMut() -> Decision<'a, T, E>,
    ) -> Result<(T, Option<i64>), CommandError<E>> {
        for _ in 0..MAX_ATTEMPTS {
            let (changes, outcome) = decide().await?;
            if changes.writes.is_empty() {
                return Ok((outcome, None));
            }
            let written: Vec<String> = changes
                .writes
                .iter()
                .map(|write| write.stream_id.clone())
                .collect();
            let completion = answering.map(|answering| answering.completion(&outcome));
            match self
                .log
                .append_completing(changes.writes, metadata.clone(), completion)
                .await
            {
                Ok(appended) => {
                    // Their cached states lack these events: an append decided on them
                    // would only conflict.
                    self.forget(&written).await;
                    return Ok((outcome, Some(appended.last_position)));
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::TooMuchContention(MAX_ATTEMPTS))
    }
}

/// A stream's state as it stood at log `position`, read through `conn`: its newest
/// snapshot at or before that position, if the aggregate keeps them, and its events after
/// the snapshot up to the position.
pub async fn load_at<A: Aggregate>(
    conn: &mut AnyConnection,
    backend: Backend,
    stream_id: &str,
    position: i64,
) -> Result<Loaded<A>, LoadError> {
    let mut loaded = Loaded::<A>::default();
    if let Some(codec) = &A::SNAPSHOTS
        && let Some(stored) =
            snapshot::newest(&mut *conn, stream_id, codec.state_version, position).await?
    {
        match codec.decode(&stored.data) {
            Ok(state) => {
                loaded = Loaded {
                    state,
                    version: stored.version,
                }
            }
            Err(error) => tracing::warn!(
                stream_id, %error, "a snapshot does not decode; folding the whole stream"
            ),
        }
    }
    let events =
        read_stream_until(&mut *conn, backend, stream_id, loaded.version, position).await?;
    loaded.fold(&events)?;
    Ok(loaded)
}

impl<A: Aggregate> Loaded<A> {
    /// The write that appends `events` if the stream is still at this version.
    fn write(&self, stream_id: &str, events: &[A::Event]) -> StreamWrite {
        StreamWrite {
            stream_id: stream_id.to_owned(),
            stream_type: A::Event::STREAM_TYPE.to_owned(),
            expected: match self.version {
                0 => ExpectedVersion::NoStream,
                v => ExpectedVersion::Exact(v),
            },
            events: events.iter().map(encode).collect(),
        }
    }

    /// Folds the stream's recorded events (those after this version, in order) in.
    pub fn fold(&mut self, events: &[RecordedEvent]) -> Result<(), FoldError> {
        for recorded in events {
            let event = decode(recorded).map_err(|source| FoldError::Decode {
                stream_id: recorded.stream_id.clone(),
                version: recorded.version,
                source,
            })?;
            self.state
                .evolve(event, recorded.version)
                .map_err(|source| FoldError::Inconsistent {
                    stream_id: recorded.stream_id.clone(),
                    version: recorded.version,
                    source,
                })?;
            self.version = recorded.version;
        }
        Ok(())
    }

    /// Folds in events just decided for `stream_id`.
    fn apply(&mut self, stream_id: &str, events: Vec<A::Event>) -> Result<(), FoldError> {
        for event in events {
            let version = self.version + 1;
            self.state
                .evolve(event, version)
                .map_err(|source| FoldError::Inconsistent {
                    stream_id: stream_id.to_owned(),
                    version,
                    source,
                })?;
            self.version = version;
        }
        Ok(())
    }

    /// The state once `events` are appended to `stream_id`.
    pub fn after(&self, stream_id: &str, events: &[A::Event]) -> Result<Self, FoldError>
    where
        A::Event: Clone,
    {
        let mut next = self.clone();
        next.apply(stream_id, events.to_vec())?;
        Ok(next)
    }
}

/// What a multi-stream command decided: the events of each stream, and an outcome.
pub type Decision<'a, T, E> =
    Pin<Box<dyn Future<Output = Result<(Changes, T), CommandError<E>>> + Send + 'a>>;

/// The events of a multi-stream command, each stream's guarded by the version it was
/// decided on.
#[derive(Debug, Default)]
pub struct Changes {
    writes: Vec<StreamWrite>,
}

impl Changes {
    /// Adds `events` for the stream `loaded` came from; no events, no write.
    pub fn add<A: Aggregate>(&mut self, stream_id: &str, loaded: &Loaded<A>, events: &[A::Event]) {
        if !events.is_empty() {
            self.writes.push(loaded.write(stream_id, events));
        }
    }
}

/// Given/when/then for aggregates: `given(events).when(command).then(events)`.
#[cfg(test)]
pub(crate) mod testing {
    use std::fmt::Debug;

    use super::Aggregate;

    pub struct Given<A: Aggregate> {
        state: A,
    }

    pub fn given<A: Aggregate>(history: Vec<A::Event>) -> Given<A> {
        let mut state = A::default();
        for (index, event) in history.into_iter().enumerate() {
            state
                .evolve(event, index as i64 + 1)
                .expect("the history folds");
        }
        Given { state }
    }

    pub struct When<A: Aggregate> {
        outcome: Result<Vec<A::Event>, A::Error>,
    }

    impl<A: Aggregate> Given<A> {
        pub fn when(self, command: A::Command) -> When<A> {
            When {
                outcome: self.state.decide(command),
            }
        }
    }

    impl<A: Aggregate> When<A>
    where
        A::Event: Debug + PartialEq,
        A::Error: Debug + PartialEq,
    {
        pub fn then(self, expected: Vec<A::Event>) {
            assert_eq!(self.outcome, Ok(expected));
        }

        pub fn then_error(self, expected: A::Error) {
            assert_eq!(self.outcome, Err(expected));
        }
    }
}
