//! The command path: load a stream, fold it into state, decide, append with the version that
//! was loaded. A concurrent writer makes the append conflict; the command is then decided
//! again on the fresh state, so guards such as "unchanged since version N" are always
//! checked against what is really stored.
//!
//! Loaded states are cached per stream (bounded, least recently used first out). A cached
//! state is only a starting point: every load still reads the events after its version, so
//! appends by other processes are never missed.

use std::{
    any::Any,
    num::NonZeroUsize,
    pin::Pin,
    sync::{Arc, Mutex},
};

use lru::LruCache;

use crate::event_log::{
    AppendError, EventCodec, EventLog, ExpectedVersion, Metadata, RecordedEvent, StreamWrite,
    decode, encode,
};

/// Pure domain logic: no I/O, no clocks, no randomness.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    type Command: Clone;
    type Event: EventCodec;
    type Error;

    /// What happens if `command` is applied now: the events to record, or why not.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
    /// Folds one recorded event (at stream `version`) into the state.
    fn evolve(&mut self, event: Self::Event, version: i64);
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

/// Folds a stream's recorded events into its state.
pub fn fold<A: Aggregate>(events: &[RecordedEvent]) -> Result<Loaded<A>, serde_json::Error> {
    let mut loaded = Loaded::<A>::default();
    for recorded in events {
        loaded.state.evolve(decode(recorded)?, recorded.version);
        loaded.version = recorded.version;
    }
    Ok(loaded)
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    #[error(transparent)]
    Domain(E),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("reading the event log failed: {0}")]
    Read(#[from] sqlx::Error),
    #[error("a stored event does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("gave up after {0} concurrent changes to the same stream")]
    TooMuchContention(usize),
}

/// Attempts before a command that keeps losing races gives up.
const MAX_ATTEMPTS: usize = 5;

/// Streams whose state stays cached.
const CACHED_STREAMS: usize = 10_000;

type StateCache = LruCache<String, Arc<dyn Any + Send + Sync>>;

#[derive(Clone)]
pub struct CommandHandler {
    log: EventLog,
    cache: Arc<Mutex<StateCache>>,
}

impl CommandHandler {
    pub fn new(log: EventLog) -> Self {
        let capacity = NonZeroUsize::new(CACHED_STREAMS).expect("non-zero");
        Self {
            log,
            cache: Arc::new(Mutex::new(LruCache::new(capacity))),
        }
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// The stream's current state: the cached state brought up to date with the events
    /// appended since, by this process or any other.
    pub async fn load<A: Aggregate, E>(
        &self,
        stream_id: &str,
    ) -> Result<Loaded<A>, CommandError<E>> {
        let cached = self.cached(stream_id).unwrap_or_default();
        self.catch_up(stream_id, cached).await
    }

    fn cached<A: Aggregate>(&self, stream_id: &str) -> Option<Loaded<A>> {
        let entry = self
            .cache
            .lock()
            .expect("cache lock")
            .get(stream_id)
            .cloned()?;
        entry.downcast_ref::<Loaded<A>>().cloned()
    }

    /// Applies the events stored after `loaded.version`.
    async fn catch_up<A: Aggregate, E>(
        &self,
        stream_id: &str,
        mut loaded: Loaded<A>,
    ) -> Result<Loaded<A>, CommandError<E>> {
        let newer = self
            .log
            .read_stream_after(stream_id, loaded.version)
            .await?;
        if newer.is_empty() {
            return Ok(loaded);
        }
        for recorded in newer {
            loaded.state.evolve(decode(&recorded)?, recorded.version);
            loaded.version = recorded.version;
        }
        self.remember(stream_id, &loaded);
        Ok(loaded)
    }

    fn remember<A: Aggregate>(&self, stream_id: &str, loaded: &Loaded<A>) {
        self.cache
            .lock()
            .expect("cache lock")
            .put(stream_id.to_owned(), Arc::new(loaded.clone()));
    }

    /// Runs `command` against the stream, retrying on concurrent appends.
    ///
    /// A cached state is decided on without reading the log first: if it is stale, the
    /// append's version check refuses it and the command runs again on the caught-up state.
    /// An answer that appends nothing (no change, or a refusal) cannot rely on that check,
    /// so it is only given once the state has been caught up with the log.
    pub async fn execute<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let (mut loaded, mut current) = match self.cached::<A>(stream_id) {
            Some(cached) => (cached, false),
            None => (self.load(stream_id).await?, true),
        };
        for _ in 0..MAX_ATTEMPTS {
            let decided = loaded.state.decide(command.clone());
            let events = match decided {
                Ok(events) if !events.is_empty() => events,
                _ if !current => {
                    loaded = self.catch_up(stream_id, loaded).await?;
                    current = true;
                    continue;
                }
                Ok(_) => {
                    return Ok(Executed {
                        state: loaded.state,
                        version: loaded.version,
                        position: None,
                    });
                }
                Err(error) => return Err(CommandError::Domain(error)),
            };
            let write = loaded.write(stream_id, &events);
            match self.log.append(vec![write], metadata.clone()).await {
                Ok(appended) => {
                    for event in events {
                        loaded.version += 1;
                        loaded.state.evolve(event, loaded.version);
                    }
                    self.remember(stream_id, &loaded);
                    return Ok(Executed {
                        state: loaded.state,
                        version: loaded.version,
                        position: Some(appended.last_position),
                    });
                }
                Err(AppendError::Conflict { .. }) => {
                    loaded = self.catch_up(stream_id, loaded).await?;
                    current = true;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::TooMuchContention(MAX_ATTEMPTS))
    }

    /// For commands that span streams: `decide` loads what it needs (through [`Self::load`])
    /// and answers the events of each stream; they are appended all at once or not at all.
    /// If any of the streams changed meanwhile, `decide` runs again on the fresh states.
    ///
    /// (`decide` answers a boxed future rather than being an async closure: the web layer
    /// needs the future to be `Send`, which the compiler cannot yet prove for async closures.)
    pub async fn execute_across<'a, T, E>(
        &self,
        metadata: &Metadata,
        mut decide: impl FnMut() -> Decision<'a, T, E>,
    ) -> Result<(T, Option<i64>), CommandError<E>> {
        for _ in 0..MAX_ATTEMPTS {
            let (changes, outcome) = decide().await?;
            if changes.writes.is_empty() {
                return Ok((outcome, None));
            }
            match self.log.append(changes.writes, metadata.clone()).await {
                Ok(appended) => return Ok((outcome, Some(appended.last_position))),
                Err(AppendError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::TooMuchContention(MAX_ATTEMPTS))
    }
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

    /// The state once `events` are appended.
    pub fn after(&self, events: &[A::Event]) -> Self
    where
        A::Event: Clone,
    {
        let mut next = self.clone();
        for event in events {
            next.version += 1;
            next.state.evolve(event.clone(), next.version);
        }
        next
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
            state.evolve(event, index as i64 + 1);
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
