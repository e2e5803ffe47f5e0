//! Concurrent writers for the benches: tasks that take numbered commands until all are
//! taken, timing the whole and counting each outcome.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::cpu_time;

/// One run: how long it took and how many answers of each kind.
pub struct Run {
    pub commands: usize,
    pub time: Duration,
    /// CPU time this process used meanwhile (server and clients alike).
    pub cpu_time: Option<Duration>,
    /// Answers by outcome: `ok`, `conflict` (409, or the handler giving up), or the status.
    pub outcomes: BTreeMap<String, usize>,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.commands as f64 / self.time.as_secs_f64()
    }
}

/// `writers` tasks take numbers until `commands` are taken, each running `one(n)`, which
/// answers its outcome's name.
pub async fn race<F, Fut>(commands: usize, writers: usize, one: F) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let total = commands;
    let cpu_before = cpu_time();
    let started = Instant::now();
    let writers: Vec<_> = (0..writers)
        .map(|_| {
            let (next, one) = (next.clone(), one.clone());
            tokio::spawn(async move {
                let mut outcomes = BTreeMap::<String, usize>::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return anyhow::Ok(outcomes);
                    }
                    *outcomes.entry(one(n).await?).or_default() += 1;
                }
            })
        })
        .collect();
    let mut outcomes = BTreeMap::new();
    for writer in writers {
        for (outcome, count) in writer.await?? {
            *outcomes.entry(outcome).or_default() += count;
        }
    }
    let time = started.elapsed();
    Ok(Run {
        commands: total,
        time,
        cpu_time: cpu_time()
            .zip(cpu_before)
            .map(|(after, before)| after - before),
        outcomes,
    })
}
