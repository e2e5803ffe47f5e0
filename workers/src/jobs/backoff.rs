//! When a failed attempt is tried again. apalis retries a failed job as soon as it is fetched
//! again; the worker pushes the job's `run_at` out by this delay first, so the wait is
//! stored with the job and survives a restart.

use std::time::Duration;

use rand::Rng;

const FIRST_DELAY: Duration = Duration::from_secs(5);
const MAX_DELAY: Duration = Duration::from_secs(600);

/// The delay after failed attempt number `attempt` (1-based): 5 s, 10 s, 20 s, … up to
/// 10 minutes, each spread by ±25% so jobs that failed together do not retry together.
pub fn retry_delay(attempt: u32) -> Duration {
    let exponential = FIRST_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let jitter = rand::thread_rng().gen_range(0.75..=1.25);
    exponential.min(MAX_DELAY).mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_their_jitter_and_stop_growing_at_the_cap() {
        for (attempt, base) in [(1, 5.0), (2, 10.0), (3, 20.0), (8, 600.0), (40, 600.0)] {
            let delay = retry_delay(attempt).as_secs_f64();
            assert!(
                (base * 0.75..=base * 1.25).contains(&delay),
                "attempt {attempt}: {delay} s"
            );
        }
    }

    #[test]
    fn jitter_spreads_jobs_that_failed_together() {
        let delays: std::collections::HashSet<_> =
            (0..20).map(|_| retry_delay(3).as_millis()).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
