//! Login throttling on a real database, both backends: slow-downs, lockouts, concurrency, pruning.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::{Backend, TestDatabase};
use sqlx::Row;
use switchyard_command::Database;
use switchyard_web::throttle::{
    Lockout, LockoutScope, LoginThrottle, ThrottlePolicy, UNKNOWN_CLIENT, Verdict,
};

const EMAIL: &str = "jane@acme.example.com";
const IP: &str = "203.0.113.7";
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(86_400);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn after(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    at + TimeDelta::from_std(span).unwrap()
}

fn before(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    at - TimeDelta::from_std(span).unwrap()
}

fn at(offset: Duration) -> DateTime<Utc> {
    after(t0(), offset)
}

fn proceed(millis: u64) -> Verdict {
    Verdict::Proceed {
        delay: Duration::from_millis(millis),
    }
}

fn refused(seconds: u64) -> Verdict {
    Verdict::Refused {
        retry_after: secs(seconds),
    }
}

/// A migrated database for one test, with the default throttle over it.
struct Fixture {
    db: Database,
    _database: TestDatabase,
}

impl Fixture {
    async fn new(backend: Backend) -> Self {
        let database = TestDatabase::new(backend).await;
        Self {
            db: database.open().await,
            _database: database,
        }
    }

    fn throttle(&self) -> LoginThrottle {
        LoginThrottle::new(self.db.clone(), ThrottlePolicy::default())
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query(sql)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap()
    }

    async fn names(&self, sql: &'static str) -> Vec<String> {
        sqlx::query(sql)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get(0).unwrap())
            .collect()
    }
}

on_both_backends!(
    delays_grow_from_the_third_failure,
    fifth_failure_locks_the_client_and_reports_it,
    retry_after_counts_down,
    client_lockouts_double_then_cap,
    success_clears_the_client,
    client_lock_spares_other_clients_of_the_email,
    account_lock_refuses_unknown_clients_only,
    account_lockouts_double_then_cap,
    streak_and_lockout_lengths_are_forgotten,
    concurrent_failures_all_count,
    prune_removes_stale_rows,
);

/// Fails `n` times from `client` at `now`, returning the lockouts started.
async fn fail(
    throttle: &LoginThrottle,
    client: &str,
    n: usize,
    now: DateTime<Utc>,
) -> Vec<Lockout> {
    let mut lockouts = Vec::new();
    for _ in 0..n {
        lockouts.extend(throttle.record_failure(EMAIL, client, now).await.unwrap());
    }
    lockouts
}

async fn delays_grow_from_the_third_failure(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    let mut verdicts = Vec::new();
    for n in 0..5u64 {
        let now = at(secs(n));
        verdicts.push(throttle.check(EMAIL, IP, now).await.unwrap());
        assert!(fail(&throttle, IP, 1, now).await.len() <= 1);
    }
    assert_eq!(
        verdicts,
        [
            proceed(0),
            proceed(0),
            proceed(500),
            proceed(1000),
            proceed(2000)
        ]
    );
}

async fn fifth_failure_locks_the_client_and_reports_it(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    assert!(fail(&throttle, IP, 4, t0()).await.is_empty());
    assert_eq!(
        fail(&throttle, IP, 1, t0()).await,
        [Lockout {
            scope: LockoutScope::Client,
            until: at(secs(60)),
            failures: 5,
        }]
    );
    assert_eq!(throttle.check(EMAIL, IP, t0()).await.unwrap(), refused(60));
    // Another failure during the lockout (a request that checked before it) counts but
    // neither starts nor extends a lockout.
    assert!(fail(&throttle, IP, 1, at(secs(10))).await.is_empty());
    assert_eq!(
        throttle.check(EMAIL, IP, at(secs(10))).await.unwrap(),
        refused(50)
    );
}

async fn retry_after_counts_down(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    fail(&throttle, IP, 5, t0()).await;
    let check = |offset| throttle.check(EMAIL, IP, at(offset));
    assert_eq!(check(Duration::ZERO).await.unwrap(), refused(60));
    assert_eq!(
        check(Duration::from_millis(500)).await.unwrap(),
        refused(60)
    );
    assert_eq!(check(secs(1)).await.unwrap(), refused(59));
    assert_eq!(check(secs(45)).await.unwrap(), refused(15));
    assert_eq!(
        check(Duration::from_millis(59_999)).await.unwrap(),
        refused(1)
    );
    // The streak goes on after the lockout: the next attempt is slowed down.
    assert_eq!(check(secs(60)).await.unwrap(), proceed(2000));
}

async fn client_lockouts_double_then_cap(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    let mut now = t0();
    let mut lengths = Vec::new();
    let mut lockouts = fail(&throttle, IP, 5, now).await;
    for _ in 0..7 {
        let [lockout] = &lockouts[..] else {
            panic!("one client lockout expected, got {lockouts:?}")
        };
        assert_eq!(lockout.scope, LockoutScope::Client);
        lengths.push((lockout.until - now).num_minutes());
        // Refused until the very end of the lockout, then one failure locks again.
        let before_end = lockout.until - TimeDelta::seconds(1);
        assert_eq!(
            throttle.check(EMAIL, IP, before_end).await.unwrap(),
            refused(1)
        );
        now = lockout.until;
        assert_eq!(throttle.check(EMAIL, IP, now).await.unwrap(), proceed(2000));
        lockouts = fail(&throttle, IP, 1, now).await;
    }
    assert_eq!(lengths, [1, 2, 4, 8, 16, 30, 30]);
}

async fn success_clears_the_client(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    fail(&throttle, IP, 4, t0()).await;
    assert_eq!(
        throttle.check(EMAIL, IP, t0()).await.unwrap(),
        proceed(2000)
    );
    throttle.record_success(EMAIL, IP, t0()).await.unwrap();
    assert_eq!(throttle.check(EMAIL, IP, t0()).await.unwrap(), proceed(0));
    // Counting starts again from nothing, and lockouts start again from a minute.
    assert!(fail(&throttle, IP, 4, at(secs(1))).await.is_empty());
    let lockouts = fail(&throttle, IP, 1, at(secs(1))).await;
    assert_eq!(lockouts[0].until, at(secs(61)));
    // A success also clears a lockout (the caller may let a verified login through).
    throttle
        .record_success(EMAIL, IP, at(secs(2)))
        .await
        .unwrap();
    assert_eq!(
        throttle.check(EMAIL, IP, at(secs(2))).await.unwrap(),
        proceed(0)
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM login_throttle_clients")
            .await,
        0
    );
}

async fn client_lock_spares_other_clients_of_the_email(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    fail(&throttle, IP, 5, t0()).await;
    assert_eq!(throttle.check(EMAIL, IP, t0()).await.unwrap(), refused(60));
    let other = "198.51.100.1";
    assert_eq!(
        throttle.check(EMAIL, other, t0()).await.unwrap(),
        proceed(0)
    );
    // Nor does it touch the same client at another email.
    assert_eq!(
        throttle
            .check("bob@acme.example.com", IP, t0())
            .await
            .unwrap(),
        proceed(0)
    );
}

async fn account_lock_refuses_unknown_clients_only(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    let known = "192.0.2.10";
    throttle
        .record_success(EMAIL, known, before(t0(), DAY))
        .await
        .unwrap();
    // "unknown" never becomes known, even after a success.
    throttle
        .record_success(EMAIL, UNKNOWN_CLIENT, before(t0(), MINUTE))
        .await
        .unwrap();
    let mut lockouts = Vec::new();
    for i in 0..20 {
        let ip = format!("10.0.0.{i}");
        let now = at(secs(i));
        assert_eq!(throttle.check(EMAIL, &ip, now).await.unwrap(), proceed(0));
        lockouts.extend(throttle.record_failure(EMAIL, &ip, now).await.unwrap());
    }
    assert_eq!(
        lockouts,
        [Lockout {
            scope: LockoutScope::Account,
            until: at(secs(19 + 300)),
            failures: 20,
        }]
    );
    let now = at(secs(20));
    for unknown in ["10.0.0.99", "10.0.0.3", UNKNOWN_CLIENT] {
        assert_eq!(
            throttle.check(EMAIL, unknown, now).await.unwrap(),
            refused(299),
            "{unknown}"
        );
    }
    assert_eq!(throttle.check(EMAIL, known, now).await.unwrap(), proceed(0));
    // The known client's own failures still lock it out.
    fail(&throttle, known, 5, now).await;
    assert_eq!(
        throttle.check(EMAIL, known, now).await.unwrap(),
        refused(60)
    );
    // Known means within 30 days.
    let stale = "192.0.2.11";
    throttle
        .record_success(EMAIL, stale, before(t0(), 30 * DAY))
        .await
        .unwrap();
    assert_eq!(
        throttle.check(EMAIL, stale, now).await.unwrap(),
        refused(299)
    );
    // Other emails are not affected.
    assert_eq!(
        throttle
            .check("bob@acme.example.com", "10.0.0.99", now)
            .await
            .unwrap(),
        proceed(0)
    );
}

async fn account_lockouts_double_then_cap(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    let mut now = t0();
    let mut lengths = Vec::new();
    let mut client = 0;
    let mut next_ip = || {
        client += 1;
        format!("10.1.{}.{}", client / 256, client % 256)
    };
    let mut lockouts = Vec::new();
    for _ in 0..20 {
        lockouts.extend(
            throttle
                .record_failure(EMAIL, &next_ip(), now)
                .await
                .unwrap(),
        );
    }
    for _ in 0..6 {
        let [lockout] = &lockouts[..] else {
            panic!("one account lockout expected, got {lockouts:?}")
        };
        assert_eq!(lockout.scope, LockoutScope::Account);
        lengths.push((lockout.until - now).num_minutes());
        now = lockout.until;
        lockouts = throttle
            .record_failure(EMAIL, &next_ip(), now)
            .await
            .unwrap();
    }
    assert_eq!(lengths, [5, 10, 20, 40, 60, 60]);
}

async fn streak_and_lockout_lengths_are_forgotten(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    // A quiet window ends the streak: no more slow-down, and five new failures to lock.
    fail(&throttle, IP, 4, t0()).await;
    let later = at(15 * MINUTE);
    assert_eq!(throttle.check(EMAIL, IP, later).await.unwrap(), proceed(0));
    // The same after a lockout: the window starts when the lockout ends.
    let lockouts = fail(&throttle, IP, 5, later).await;
    let first_end = lockouts[0].until;
    assert_eq!(first_end, after(later, MINUTE));
    let quiet = after(first_end, 15 * MINUTE);
    assert_eq!(
        throttle
            .check(EMAIL, IP, quiet - TimeDelta::seconds(1))
            .await
            .unwrap(),
        proceed(2000)
    );
    assert_eq!(throttle.check(EMAIL, IP, quiet).await.unwrap(), proceed(0));
    // The lockout length is remembered across the new streak ...
    assert!(fail(&throttle, IP, 4, quiet).await.is_empty());
    let lockouts = fail(&throttle, IP, 1, quiet).await;
    assert_eq!(lockouts[0].until, after(quiet, 2 * MINUTE));
    // ... until the counter has been quiet for a day.
    let next_day = after(lockouts[0].until, DAY);
    assert!(fail(&throttle, IP, 4, next_day).await.is_empty());
    let lockouts = fail(&throttle, IP, 1, next_day).await;
    assert_eq!(lockouts[0].until, after(next_day, MINUTE));
    assert_eq!(lockouts[0].failures, 5);
}

async fn concurrent_failures_all_count(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    // Ten failures at once from one client: all count, one lockout.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let throttle = throttle.clone();
            tokio::spawn(async move { throttle.record_failure(EMAIL, IP, t0()).await })
        })
        .collect();
    let mut lockouts = Vec::new();
    for task in tasks {
        lockouts.extend(task.await.unwrap().unwrap());
    }
    assert_eq!(
        lockouts,
        [Lockout {
            scope: LockoutScope::Client,
            until: at(MINUTE),
            failures: 5,
        }]
    );
    assert_eq!(
        db.count("SELECT failures FROM login_throttle_clients")
            .await,
        10
    );
    // Ten more at once from ten clients: the account counts all twenty, one lockout.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let throttle = throttle.clone();
            tokio::spawn(async move {
                throttle
                    .record_failure(EMAIL, &format!("10.0.0.{i}"), t0())
                    .await
            })
        })
        .collect();
    let mut lockouts = Vec::new();
    for task in tasks {
        lockouts.extend(task.await.unwrap().unwrap());
    }
    assert_eq!(
        lockouts,
        [Lockout {
            scope: LockoutScope::Account,
            until: at(5 * MINUTE),
            failures: 20,
        }]
    );
    assert_eq!(
        db.count("SELECT failures FROM login_throttle_accounts")
            .await,
        20
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM login_throttle_clients")
            .await,
        11
    );
}

async fn prune_removes_stale_rows(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    let now = t0();
    // Quiet for a day: forgotten. Locked until recently: kept.
    fail(&throttle, "10.0.0.1", 1, before(now, DAY)).await;
    fail(&throttle, "10.0.0.2", 1, before(now, DAY - secs(1))).await;
    // 10.0.0.3 fails last a day and 5 minutes ago, but is locked out for 16 minutes then.
    let mut last = before(now, DAY + 20 * MINUTE);
    let mut lockouts = fail(&throttle, "10.0.0.3", 5, last).await;
    for _ in 0..4 {
        last = lockouts[0].until;
        lockouts = fail(&throttle, "10.0.0.3", 1, last).await;
    }
    assert_eq!(last, before(now, DAY + 5 * MINUTE));
    assert_eq!(lockouts[0].until, after(last, 16 * MINUTE));
    throttle
        .record_success("old@acme.example.com", "10.0.0.4", before(now, 30 * DAY))
        .await
        .unwrap();
    throttle
        .record_success(EMAIL, "10.0.0.5", before(now, 29 * DAY))
        .await
        .unwrap();
    throttle
        .record_failure("bob@acme.example.com", "10.0.0.6", before(now, 2 * DAY))
        .await
        .unwrap();
    // Deleted: client rows 10.0.0.1 and bob's, bob's account row, one known client.
    assert_eq!(throttle.prune(now).await.unwrap(), 4);
    assert_eq!(
        db.names("SELECT client FROM login_throttle_clients ORDER BY client")
            .await,
        ["10.0.0.2", "10.0.0.3"]
    );
    assert_eq!(
        db.names("SELECT email FROM login_throttle_accounts ORDER BY email")
            .await,
        [EMAIL]
    );
    assert_eq!(
        db.names("SELECT client FROM login_known_clients ORDER BY client")
            .await,
        ["10.0.0.5"]
    );
    assert_eq!(throttle.prune(now).await.unwrap(), 0);
}
