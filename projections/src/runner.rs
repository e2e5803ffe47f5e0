//! Runs each projection as its own task: wake on local appends (or poll for other processes'
//! appends), then apply the next batch and move the checkpoint in one transaction.
//!
//! Several processes may run the same projection: the checkpoint row is locked for the
//! batch (`BEGIN IMMEDIATE` on SQLite, `FOR UPDATE` on PostgreSQL), so they take turns and
//! never apply an event twice.
//!
//! A projection that cannot apply the log does not stop quietly. A failed batch is applied
//! again one event at a time, so the projection moves up to the event it cannot apply and
//! names it; it then retries with a growing delay, and its failure (error, since when, the
//! event it is stuck on) is visible in this process ([`ProjectionHandle::failure`], which
//! `/readyz` reports) and in the database for any other (`switchyard projections`). A task
//! that panics is restarted the same way.

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use switchyard_command::db::WriteTransaction;
use switchyard_command::{
    Backend, Database,
    db::PerBackend,
    event_log::{EventLog, read_after},
    timestamp,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{Projection, ProjectionError};

/// Events applied per transaction.
pub const BATCH_SIZE: i64 = 1000;
/// How often an idle runner looks for events appended by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A failing projection tries again after this, doubling (with jitter) up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

fn retry_delays() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(RETRY_MIN)
        .with_max_delay(RETRY_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Why a projection is not moving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub error: String,
    /// When the failures began.
    pub since: DateTime<Utc>,
    /// The log position of the event the projection cannot get past, once a batch of that
    /// event alone has failed.
    pub stuck_at: Option<i64>,
}

/// What one batch did.
enum Step {
    /// Applied events up to this position.
    Advanced(i64),
    /// Nothing new after this position.
    CaughtUp(i64),
}

/// A batch that did not commit.
struct BatchFailure {
    error: ProjectionError,
    /// The position of its first event, when the events were read.
    first: Option<i64>,
    /// How many events it held (0 when they were not read).
    events: usize,
}

impl BatchFailure {
    fn unread(error: impl Into<ProjectionError>) -> Self {
        Self {
            error: error.into(),
            first: None,
            events: 0,
        }
    }
}

/// Applies the events after the projection's checkpoint, up to `limit` of them.
async fn apply_next_batch(
    db: &Database,
    projection: &dyn Projection,
    limit: i64,
) -> Result<Step, BatchFailure> {
    let mut tx = db.begin_write().await.map_err(BatchFailure::unread)?;
    let checkpoint = read_checkpoint(&mut tx, db.backend, projection.name())
        .await
        .map_err(BatchFailure::unread)?;
    let events = read_after(&mut *tx, db.backend, checkpoint, limit)
        .await
        .map_err(BatchFailure::unread)?;
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Ok(Step::CaughtUp(checkpoint));
    };
    let failed = |error: ProjectionError| BatchFailure {
        error,
        first: Some(first.global_position),
        events: events.len(),
    };
    projection.apply(&mut tx, &events).await.map_err(failed)?;
    let last = last.global_position;
    save_checkpoint(&mut tx, projection.name(), last)
        .await
        .map_err(|e| failed(e.into()))?;
    tx.commit().await.map_err(|e| failed(e.into()))?;
    Ok(Step::Advanced(last))
}

/// Moves the checkpoint; a projection that moves is no longer failing.
pub(crate) async fn save_checkpoint(
    tx: &mut WriteTransaction,
    projection: &str,
    position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET position = $1, last_error = NULL, \
         failing_since = NULL, stuck_at = NULL WHERE projection = $2",
    )
    .bind(position)
    .bind(projection)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a failure where other processes see it (`switchyard projections`).
async fn save_failure(
    db: &Database,
    projection: &str,
    failure: &Failure,
) -> Result<(), sqlx::Error> {
    static SAVE_FAILURE: PerBackend<String> = PerBackend::new(|backend| {
        format!(
            "UPDATE projection_checkpoints SET last_error = $1, failing_since = {}, \
             stuck_at = $3 WHERE projection = $4",
            timestamp::param(backend, 2)
        )
    });
    sqlx::query(SAVE_FAILURE.get(db.backend).as_str())
        .bind(&failure.error)
        .bind(timestamp::format(failure.since))
        .bind(failure.stuck_at)
        .bind(projection)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// A projection's checkpoint row, as any process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub projection: String,
    pub position: i64,
    pub last_error: Option<String>,
    /// As [`timestamp::format`] writes it.
    pub failing_since: Option<String>,
    pub stuck_at: Option<i64>,
}

/// Every projection's checkpoint and last failure, by name.
pub async fn stored_checkpoints(db: &Database) -> Result<Vec<StoredCheckpoint>, sqlx::Error> {
    static CHECKPOINTS: PerBackend<String> = PerBackend::new(|backend| {
        format!(
            "SELECT projection, position, last_error, {}, stuck_at \
             FROM projection_checkpoints ORDER BY projection",
            timestamp::read(backend, "failing_since")
        )
    });
    let rows = sqlx::query(CHECKPOINTS.get(db.backend).as_str())
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(StoredCheckpoint {
                projection: row.try_get(0)?,
                position: row.try_get(1)?,
                last_error: row.try_get(2)?,
                failing_since: row.try_get(3)?,
                stuck_at: row.try_get(4)?,
            })
        })
        .collect()
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
    tx: &mut WriteTransaction,
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

/// Where a running projection is, and why it is not moving, as its runner reports them.
struct Reporter {
    name: &'static str,
    db: Database,
    checkpoint: watch::Sender<i64>,
    failure: watch::Sender<Option<Failure>>,
}

impl Reporter {
    /// The projection applied the log up to `position`: it is no longer failing, unless it
    /// has not yet got past the event it is stuck on.
    fn advanced(&self, position: i64) {
        // Cleared first: whoever sees the new checkpoint sees the failure gone with it.
        self.failure.send_if_modified(|failure| {
            let past = failure
                .as_ref()
                .is_some_and(|f| f.stuck_at.is_none_or(|at| position >= at));
            if past {
                *failure = None;
            }
            past
        });
        self.checkpoint.send_replace(position);
    }

    /// One line per attempt: the attempts themselves are spaced by a growing delay.
    async fn failed(&self, error: String, stuck_at: Option<i64>) {
        let since = self
            .failure
            .borrow()
            .as_ref()
            .map_or_else(Utc::now, |f| f.since);
        let position = *self.checkpoint.borrow();
        tracing::error!(
            projection = self.name, position, stuck_at, %error, %since,
            "projection cannot apply the log; retrying"
        );
        let failure = Failure {
            error,
            since,
            stuck_at,
        };
        self.failure.send_replace(Some(failure.clone()));
        if let Err(error) = save_failure(&self.db, self.name, &failure).await {
            tracing::debug!(projection = self.name, %error, "cannot record the failure");
        }
    }
}

/// A running projection's progress.
#[derive(Clone)]
pub struct ProjectionHandle {
    pub name: &'static str,
    checkpoint: watch::Receiver<i64>,
    failure: watch::Receiver<Option<Failure>>,
}

impl ProjectionHandle {
    pub fn checkpoint(&self) -> i64 {
        *self.checkpoint.borrow()
    }

    /// Why it is not moving, while it is failing.
    pub fn failure(&self) -> Option<Failure> {
        self.failure.borrow().clone()
    }

    /// Waits until it has applied `position`. False if it stopped, or is stuck on an event
    /// at or before `position` (waiting longer would not help).
    async fn applied(&self, position: i64) -> bool {
        let (mut checkpoint, mut failure) = (self.checkpoint.clone(), self.failure.clone());
        loop {
            if *checkpoint.borrow_and_update() >= position {
                return true;
            }
            let stuck = failure
                .borrow_and_update()
                .as_ref()
                .and_then(|f| f.stuck_at)
                .is_some_and(|at| at <= position);
            if stuck {
                return false;
            }
            let changed = tokio::select! {
                changed = checkpoint.changed() => changed,
                changed = failure.changed() => changed,
            };
            if changed.is_err() {
                return false;
            }
        }
    }
}

/// Every projection of the service, running.
#[derive(Clone)]
pub struct Projections {
    handles: Vec<ProjectionHandle>,
}

impl Projections {
    /// Starts one supervised task for each read model and each of `actors` (projections
    /// that act on events rather than fold them, such as the job dispatcher); they stop
    /// when `shutdown` is cancelled.
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
                let (failure_tx, failure) = watch::channel(None);
                let name = projection.name();
                let reporter = Arc::new(Reporter {
                    name,
                    db: log.database().clone(),
                    checkpoint: checkpoint_tx,
                    failure: failure_tx,
                });
                tokio::spawn(supervise(
                    log.clone(),
                    projection,
                    reporter,
                    shutdown.clone(),
                ));
                ProjectionHandle {
                    name,
                    checkpoint,
                    failure,
                }
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
    /// response). False if `timeout` passed first, or a projection is stuck before it.
    pub async fn wait_for(&self, position: i64, timeout: Duration) -> bool {
        let all = futures::future::join_all(self.handles.iter().map(|h| h.applied(position)));
        matches!(tokio::time::timeout(timeout, all).await, Ok(done) if done.iter().all(|ok| *ok))
    }

    /// As [`Self::wait_for`], for the projection named `name` alone.
    pub async fn wait_for_one(&self, name: &str, position: i64, timeout: Duration) -> bool {
        let Some(handle) = self.handles.iter().find(|handle| handle.name == name) else {
            return false;
        };
        tokio::time::timeout(timeout, handle.applied(position))
            .await
            .unwrap_or(false)
    }
}

/// Runs the projection, and runs it again (after a growing delay) if its task panics.
async fn supervise(
    log: EventLog,
    projection: Arc<dyn Projection>,
    reporter: Arc<Reporter>,
    shutdown: CancellationToken,
) {
    let mut delays = retry_delays();
    loop {
        let task = tokio::spawn(run(
            log.clone(),
            projection.clone(),
            reporter.clone(),
            shutdown.clone(),
        ));
        let Err(stopped) = task.await else {
            return;
        };
        let cause = match stopped.try_into_panic() {
            Ok(panic) => panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into()),
            Err(other) => other.to_string(),
        };
        reporter
            .failed(format!("the projection's task stopped: {cause}"), None)
            .await;
        if !pause(&shutdown, delays.next()).await {
            return;
        }
    }
}

/// Sleeps for `delay`; false if shutdown came first.
async fn pause(shutdown: &CancellationToken, delay: Option<Duration>) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay.unwrap_or(RETRY_MAX)) => true,
    }
}

/// After a batch of `events` failed: applies them one at a time, so that the projection
/// moves up to the event it cannot apply, and names that one.
async fn isolate(
    db: &Database,
    projection: &dyn Projection,
    reporter: &Reporter,
    events: usize,
) -> Result<Step, BatchFailure> {
    let mut step = Step::CaughtUp(*reporter.checkpoint.borrow());
    for _ in 0..events {
        step = apply_next_batch(db, projection, 1).await?;
        match step {
            Step::Advanced(position) => reporter.advanced(position),
            Step::CaughtUp(_) => break,
        }
    }
    Ok(step)
}

async fn run(
    log: EventLog,
    projection: Arc<dyn Projection>,
    reporter: Arc<Reporter>,
    shutdown: CancellationToken,
) {
    let db = log.database().clone();
    let mut appended = log.subscribe();
    let mut delays = retry_delays();
    while let Err(error) = ensure_checkpoint(&db, projection.as_ref()).await {
        let error = format!("cannot create the checkpoint: {error}");
        reporter.failed(error, None).await;
        if !pause(&shutdown, delays.next()).await {
            return;
        }
    }
    loop {
        let outcome = match apply_next_batch(&db, projection.as_ref(), BATCH_SIZE).await {
            Err(failed) if failed.events > 1 => {
                isolate(&db, projection.as_ref(), &reporter, failed.events).await
            }
            outcome => outcome,
        };
        match outcome {
            Ok(Step::Advanced(position)) => {
                reporter.advanced(position);
                delays = retry_delays();
            }
            Ok(Step::CaughtUp(position)) => {
                reporter.advanced(position);
                delays = retry_delays();
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
            Err(failed) => {
                let stuck_at = failed.first.filter(|_| failed.events == 1);
                reporter.failed(failed.error.to_string(), stuck_at).await;
                if !pause(&shutdown, delays.next()).await {
                    return;
                }
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}
