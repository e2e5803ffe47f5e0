//! The workers: one apalis worker per queue, on apalis-sqlite or apalis-postgres over the
//! same database as the event log, each supervised here: a worker that stops with an error
//! starts again after a growing delay (apalis' own `Monitor` starts it again at once, so a
//! database that refuses or drops connections made it log thousands of lines a second).
//!
//! apalis 1.0's sharp edges, and what this module does about each:
//! - its workers need a typed pool: one is opened on the event log's database, with the
//!   same SQLite settings (its own `setup` would set `synchronous = OFF` on one connection);
//! - backend retries come at once and default to 25: the worker pushes `run_at` out by the
//!   backoff before it fails an attempt, and each job is queued with its own attempt limit;
//! - `WorkerBuilder::timeout` leaves a timed-out job `Running` forever: the timeout is taken
//!   inside [`handle`], which records it as a failed attempt;
//! - an idle worker only looks for jobs at its heartbeat: it is woken when the dispatcher
//!   commits (in this process) and polls every [`POLL_INTERVAL`] (for other processes);
//! - a worker with fetched jobs waiting for a free slot sends no heartbeat: queues whose
//!   jobs can be slow fetch one job at a time ([`batch_size`]);
//! - apalis-sqlite's acknowledgement walks every job a worker ever locked unless SQLite
//!   knows `lock_by` is not selective ([`seed_lock_by_statistics`]);
//! - any backend error (a busy database, a lost connection) ends a worker: [`supervise`]
//!   starts it again after [`restart_delays`], under a new name (SQLite refuses a name seen
//!   in the last heartbeat), logs one line per attempt, and reports it in [`WorkerHealth`];
//! - a payload that does not decode would end the worker and strand its batch: payloads are
//!   decoded here, from a JSON value, and a bad one fails its own job only.

use std::{sync::Arc, time::Duration};

use apalis::prelude::{
    AbortError, BackendExt, BoxDynError, Data, Strategy, StreamStrategy, TaskId, WorkerBuilder,
    WorkerBuilderExt, WorkerError,
};
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use chrono::Utc;
use futures::{Stream, future::BoxFuture};
use serde_json::Value;
use switchyard_command::{Backend, Database};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use ulid::Ulid;

use super::{
    WorkerHealth,
    backoff::retry_delay,
    job::{Job, Queue},
    perform::{JobContext, Performed, perform},
    store::{self, Ending, StageReport},
};

/// How often an idle worker looks for jobs queued by another process.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A worker that stopped starts again after this, doubling (with jitter) up to the maximum.
const RESTART_MIN: Duration = Duration::from_millis(500);
const RESTART_MAX: Duration = Duration::from_secs(60);
/// A restarted worker that runs this long counts as well again: the next failure waits
/// the shortest delay.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// The waits before each restart of a worker that keeps stopping: growing, with jitter (so
/// workers of several processes do not hammer a recovering database in step), capped.
pub fn restart_delays() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(RESTART_MIN)
        .with_max_delay(RESTART_MAX)
        .with_jitter()
        .without_max_times()
        .build()
}

/// How the workers of one process run.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs of one queue that run at once.
    pub concurrency: usize,
    /// How often a worker says it is alive; a worker silent for three of these is presumed
    /// dead, and the jobs it held are queued again.
    pub heartbeat: Duration,
    /// On shutdown, running jobs get this long to finish; the rest are left to be taken up
    /// again after the heartbeat timeout.
    pub shutdown_grace: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            heartbeat: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Everything a worker's handler gets.
struct Shared {
    db: Database,
    context: JobContext,
}

/// One run of a queue's worker, until shutdown or an error.
type WorkerRun = BoxFuture<'static, Result<(), WorkerError>>;

/// Runs the workers of every queue until `shutdown`, then lets running jobs finish.
/// `dispatched` (the dispatcher's checkpoint, when it runs in this process) wakes them as soon
/// as jobs are committed; `health` is told how they are doing.
pub async fn run_workers(
    db: Database,
    context: JobContext,
    dispatched: Option<watch::Receiver<i64>>,
    options: WorkerOptions,
    health: WorkerHealth,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        db: db.clone(),
        context,
    });
    // Names must differ between processes and between restarts.
    let process = uuid::Uuid::new_v4().simple().to_string();
    let name = move |queue: Queue, restarts: usize| {
        format!("{}-{}-{restarts}", queue.name(), &process[..12])
    };
    let mut queues = tokio::task::JoinSet::new();
    macro_rules! start_queues {
        ($storage:ident, $config:path, $pool:expr) => {
            for queue in Queue::ALL {
                let (pool, shared, dispatched, name, stop) = (
                    $pool.clone(),
                    shared.clone(),
                    dispatched.clone(),
                    name.clone(),
                    shutdown.clone(),
                );
                let options = options.clone();
                let start = move |restarts: usize| -> WorkerRun {
                    let config = <$config>::default()
                        .queue(queue.name())
                        .heartbeat_interval(options.heartbeat)
                        .missed_heartbeats(3)
                        .batch_size(batch_size(queue, options.concurrency));
                    let storage = $storage::<Value>::new(&pool)
                        .with_config(config)
                        .poll_with_strategy(wake_strategy(dispatched.clone()));
                    let worker = WorkerBuilder::new(name(queue, restarts))
                        .backend(storage)
                        .concurrency(options.concurrency)
                        .data(shared.clone())
                        .build(handle);
                    let stop = stop.clone();
                    Box::pin(worker.run_until(async move {
                        stop.cancelled().await;
                        Ok::<(), WorkerError>(())
                    }))
                };
                queues.spawn(supervise(queue, start, health.clone(), shutdown.clone()));
            }
        };
    }
    match db.backend {
        Backend::Sqlite => {
            use apalis_sqlite::{Config, SqliteStorage};
            let pool = sqlite_pool(&db).await?;
            start_queues!(SqliteStorage, Config, pool);
        }
        Backend::Postgres => {
            use apalis_postgres::{Config, PostgresStorage};
            use sqlx::Executor;
            let setup = db.session_setup();
            // Lazy: a database that is down now is the workers' to retry, not a start-up error.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .after_connect(move |conn, _| {
                    let setup = setup.clone();
                    Box::pin(async move {
                        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(setup)))
                            .await?;
                        Ok(())
                    })
                })
                .connect_lazy(db.url())?;
            start_queues!(PostgresStorage, Config, pool);
        }
    }
    let grace = options.shutdown_grace;
    tokio::select! {
        _ = async { while queues.join_next().await.is_some() {} } => {}
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("jobs still running after the shutdown grace are left to other workers");
            queues.abort_all();
        }
    }
    Ok(())
}

/// Runs one queue's worker until shutdown; each time it stops with an error, starts it again
/// after the next of [`restart_delays`], logging one line per attempt.
async fn supervise(
    queue: Queue,
    start: impl Fn(usize) -> WorkerRun,
    health: WorkerHealth,
    shutdown: CancellationToken,
) {
    health.started(queue.name());
    let mut delays = restart_delays();
    let mut failing = false;
    for restarts in 0.. {
        let run = start(restarts);
        tokio::pin!(run);
        let healthy = tokio::time::sleep(HEALTHY_AFTER);
        tokio::pin!(healthy);
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = &mut healthy, if failing => {
                    health.recovered(queue.name());
                    delays = restart_delays();
                    failing = false;
                }
            }
        };
        let Err(error) = outcome else {
            return;
        };
        if shutdown.is_cancelled() {
            return;
        }
        let delay = delays.next().unwrap_or(RESTART_MAX);
        tracing::warn!(
            queue = queue.name(), %error, restarts, ?delay,
            "job worker stopped; starting it again after a delay"
        );
        health.failed(queue.name(), error.to_string(), delay);
        failing = true;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Jobs a worker fetches at once. apalis 1.0 neither heartbeats nor records starts and ends
/// while fetched jobs wait for a free slot (`poll_ready` skips both in its `Buffered`
/// state): a worker whose slots are all taken by slow jobs (a mail server answering slowly)
/// would look dead to the other workers after three heartbeats, and they would run its
/// waiting jobs a second time, sending those emails twice. Queues whose jobs can be slow
/// therefore fetch one job when a slot is free. No-op jobs cannot hold a slot: that queue
/// fetches a full round and the next (`bench jobs`: 30–50% more jobs/s than apalis'
/// default of 10).
fn batch_size(queue: Queue, concurrency: usize) -> usize {
    match queue {
        Queue::Email | Queue::Sms | Queue::Payments => 1,
        Queue::Noop => concurrency * 2,
    }
}

/// The typed pool apalis-sqlite needs, on the event log's file with its settings.
async fn sqlite_pool(db: &Database) -> anyhow::Result<sqlx::SqlitePool> {
    use sqlx::Executor;
    // Before the pool opens: a connection reads the statistics when it loads the schema.
    seed_lock_by_statistics(db).await?;
    Ok(sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(switchyard_command::db::SQLITE_PRAGMAS).await?;
                Ok(())
            })
        })
        .connect(db.url())
        .await?)
}

/// apalis-sqlite acknowledges finished jobs with `UPDATE Jobs … FROM json_each(?1) … WHERE
/// Jobs.lock_by = ?2`. Without statistics SQLite takes `lock_by = ?` for selective, walks every
/// job the worker has ever locked (finished ones keep `lock_by`) and parses the batch's JSON
/// again for each: quadratic in the jobs a worker has run (`bench jobs`: 229 no-op jobs/s, half
/// the CPU in SQLite's JSON parser). The planner is told what ANALYZE would find, that a
/// `lock_by` value is shared by many jobs, and looks each acknowledged id up by key instead.
/// Figures from a real ANALYZE are left alone.
async fn seed_lock_by_statistics(db: &Database) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    // Creates `sqlite_stat1` when it is missing, and analyses no table.
    sqlx::query("ANALYZE sqlite_schema")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO sqlite_stat1 (tbl, idx, stat) SELECT 'Jobs', 'LIdx', '100000 10000' \
         WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 WHERE tbl = 'Jobs' AND idx = 'LIdx')",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Look for jobs when the dispatcher commits, and every [`POLL_INTERVAL`].
fn wake_strategy(dispatched: Option<watch::Receiver<i64>>) -> Strategy {
    let strategy = Strategy::new();
    let strategy = match dispatched {
        Some(receiver) => strategy.apply(StreamStrategy::new(commits(receiver))),
        None => strategy,
    };
    strategy.interval(POLL_INTERVAL)
}

fn commits(
    receiver: watch::Receiver<i64>,
) -> std::pin::Pin<Box<dyn Stream<Item = ()> + Send + Sync>> {
    Box::pin(futures::stream::unfold(
        receiver,
        |mut receiver| async move {
            receiver.changed().await.ok()?;
            Some(((), receiver))
        },
    ))
}

/// One attempt at one job, recorded on its report. An error tells apalis the attempt
/// failed; an [`AbortError`] that the job is over.
async fn handle(payload: Value, id: TaskId, shared: Data<Arc<Shared>>) -> Result<(), BoxDynError> {
    let id: Ulid = id.to_string().parse()?;
    let Shared { db, context } = shared.as_ref();
    let attempt = store::begin_attempt(db, id, Utc::now()).await?;
    let job: Job = match serde_json::from_value(payload) {
        Ok(job) => job,
        Err(error) => {
            let error = format!("the job cannot be read ({error}); it was not run");
            let ending = Ending::Failed {
                error: error.clone(),
            };
            store::record_attempt(db, id, &[], &ending, Utc::now()).await?;
            return Err(AbortError::new(error).into());
        }
    };
    let effect = effect_key(&job, id);
    if let Some(key) = &effect
        && let Some(completed_at) = store::effect_completed_at(db, key).await?
    {
        // Run again after its effect was recorded (a crash before the queue heard of it).
        let stage = StageReport {
            stage: "already_done".into(),
            ok: true,
            detail: format!("completed at {completed_at}; not repeated"),
        };
        let ending = Ending::Succeeded { effect: None };
        store::record_attempt(db, id, &[stage], &ending, Utc::now()).await?;
        return Ok(());
    }
    let persistence = job.persistence();
    let performed = tokio::time::timeout(persistence.timeout, perform(context, &job))
        .await
        .unwrap_or_else(|_| Performed {
            stages: vec![],
            outcome: Err(super::perform::Failure {
                message: format!(
                    "the attempt took longer than {} s and was stopped",
                    persistence.timeout.as_secs()
                ),
                transient: true,
            }),
        });
    let now = Utc::now();
    let ending = match performed.outcome {
        Ok(()) => Ending::Succeeded { effect },
        Err(failure) if failure.transient && attempt < persistence.max_attempts => {
            let delay = chrono::Duration::from_std(retry_delay(attempt)).expect("a short delay");
            Ending::WillRetry {
                error: failure.message,
                retry_at: now + delay,
            }
        }
        Err(failure) => Ending::Failed {
            error: failure.message,
        },
    };
    store::record_attempt(db, id, &performed.stages, &ending, now).await?;
    match ending {
        Ending::Succeeded { .. } => Ok(()),
        Ending::WillRetry { error, .. } => Err(error.into()),
        Ending::Failed { error } => Err(AbortError::new(error).into()),
    }
}

/// The key of the job's side effect: it is the job's (its id is derived from its event), so
/// every attempt of one job shares it and no two jobs do.
fn effect_key(job: &Job, id: Ulid) -> Option<String> {
    match job {
        Job::Noop { .. } => None,
        _ => Some(format!("{}:{id}", job.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_wait_longer_each_time_up_to_a_cap() {
        let delays: Vec<Duration> = restart_delays().take(12).collect();
        // Jitter adds up to the delay itself: each wait lies in [d, 2d), d doubling.
        for (n, delay) in delays.iter().enumerate().take(6) {
            let base = RESTART_MIN * 2u32.pow(n as u32);
            assert!(*delay >= base && *delay < base * 2, "wait {n}: {delay:?}");
        }
        assert!(delays.windows(2).take(6).all(|pair| pair[0] < pair[1]));
        for delay in &delays[8..] {
            assert!(
                *delay >= RESTART_MAX && *delay < RESTART_MAX * 2,
                "{delay:?}"
            );
        }
    }
}
