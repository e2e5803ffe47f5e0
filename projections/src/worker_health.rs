//! How this process's job workers are doing, for `/readyz` (the workers report it; the
//! web layer reads it, without depending on the workers): per queue, how often its worker
//! was restarted, and while it keeps failing, why, since when and when it starts again.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Shared by the workers that report and the readiness check that reads.
#[derive(Debug, Clone, Default)]
pub struct WorkerHealth {
    queues: Arc<Mutex<BTreeMap<&'static str, QueueHealth>>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueHealth {
    /// Restarts since the process started.
    pub restarts: u64,
    /// Set from a failure until the restarted worker has run for a while.
    pub failing: Option<WorkerFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerFailure {
    pub error: String,
    pub since: DateTime<Utc>,
    /// Failures in a row; each waits longer before the next start.
    pub failures: u32,
    /// The wait before the next start, in milliseconds.
    pub restart_in_ms: u64,
}

impl WorkerHealth {
    /// Every queue with a worker in this process (none when workers run elsewhere).
    pub fn queues(&self) -> BTreeMap<&'static str, QueueHealth> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, QueueHealth>> {
        // A panic while holding this lock leaves plain data behind: still good to read.
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn started(&self, queue: &'static str) {
        self.lock().entry(queue).or_default();
    }

    /// The queue's worker stopped with `error`; it starts again after `delay`.
    pub fn failed(&self, queue: &'static str, error: String, delay: Duration) {
        let mut queues = self.lock();
        let health = queues.entry(queue).or_default();
        health.restarts += 1;
        let (since, failures) = health
            .failing
            .as_ref()
            .map_or((Utc::now(), 1), |f| (f.since, f.failures + 1));
        health.failing = Some(WorkerFailure {
            error,
            since,
            failures,
            restart_in_ms: delay.as_millis() as u64,
        });
    }

    /// The queue's worker has run long enough since its last failure to count as well.
    pub fn recovered(&self, queue: &'static str) {
        if let Some(health) = self.lock().get_mut(queue) {
            health.failing = None;
        }
    }
}
