//! Login throttling on a real database, both backends: slow-downs, lockouts, concurrency,
//! pruning; and over HTTP, guesses at once at login and at re-authentication.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::{Backend, TestApp, TestDatabase, USER_PASSWORD};
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;
use switchyard_command::{
    Database,
    access::throttle::{
        Attempt, Lockout, LockoutScope, LoginThrottle, ThrottlePolicy, UNKNOWN_CLIENT, Verdict,
    },
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

/// A verdict as these tests compare it.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Proceed { delay: Duration },
    Refused { retry_after: Duration },
}

fn proceed(millis: u64) -> Seen {
    Seen::Proceed {
        delay: Duration::from_millis(millis),
    }
}

fn refused(seconds: u64) -> Seen {
    Seen::Refused {
        retry_after: secs(seconds),
    }
}

fn seen(verdict: &Verdict) -> Seen {
    match verdict {
        Verdict::Proceed(attempt) => Seen::Proceed {
            delay: attempt.delay(),
        },
        Verdict::Refused { retry_after } => Seen::Refused {
            retry_after: *retry_after,
        },
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
    attempts_at_once_pass_the_check_at_most_lock_after_times,
    prune_removes_stale_rows,
    wrong_passwords_at_once_are_verified_at_most_lock_after_times,
    reauthentication_is_counted_like_a_login,
);

/// Reserves an attempt, which counts as a failure from then on.
async fn reserve(throttle: &LoginThrottle, client: &str, now: DateTime<Utc>) -> Verdict {
    throttle.reserve(EMAIL, client, now).await.unwrap()
}

/// The verdict an attempt would get, without counting one: reserved, then withdrawn.
async fn peek(throttle: &LoginThrottle, client: &str, now: DateTime<Utc>) -> Seen {
    let verdict = reserve(throttle, client, now).await;
    let answer = seen(&verdict);
    if let Verdict::Proceed(attempt) = verdict {
        throttle.withdraw(attempt, now).await.unwrap();
    }
    answer
}

fn granted(verdict: Verdict) -> Attempt {
    match verdict {
        Verdict::Proceed(attempt) => attempt,
        Verdict::Refused { retry_after } => panic!("refused for {retry_after:?}"),
    }
}

/// Fails `n` times from `client` at `now` (each attempt must be let through), returning the
/// lockouts started.
async fn fail(
    throttle: &LoginThrottle,
    client: &str,
    n: usize,
    now: DateTime<Utc>,
) -> Vec<Lockout> {
    let mut lockouts = Vec::new();
    for _ in 0..n {
        let attempt = granted(reserve(throttle, client, now).await);
        lockouts.extend_from_slice(attempt.lockouts());
    }
    lockouts
}

/// A successful login at `email` from `client` at `now`.
async fn log_in(throttle: &LoginThrottle, email: &str, client: &str, now: DateTime<Utc>) {
    let attempt = granted(throttle.reserve(email, client, now).await.unwrap());
    throttle.succeeded(attempt, now).await.unwrap();
}

async fn delays_grow_from_the_third_failure(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    let mut verdicts = Vec::new();
    for n in 0..5u64 {
        let verdict = reserve(&throttle, IP, at(secs(n))).await;
        verdicts.push(seen(&verdict));
        assert!(granted(verdict).lockouts().len() <= 1);
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
    assert_eq!(peek(&throttle, IP, t0()).await, refused(60));
    // An attempt during the lockout is refused, not counted, and extends nothing.
    assert_eq!(peek(&throttle, IP, at(secs(10))).await, refused(50));
    assert_eq!(
        db.count("SELECT failures FROM login_throttle_clients")
            .await,
        5
    );
}

async fn retry_after_counts_down(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    fail(&throttle, IP, 5, t0()).await;
    let check = |offset| peek(&throttle, IP, at(offset));
    assert_eq!(check(Duration::ZERO).await, refused(60));
    assert_eq!(check(Duration::from_millis(500)).await, refused(60));
    assert_eq!(check(secs(1)).await, refused(59));
    assert_eq!(check(secs(45)).await, refused(15));
    assert_eq!(check(Duration::from_millis(59_999)).await, refused(1));
    // The streak goes on after the lockout: the next attempt is slowed down.
    assert_eq!(check(secs(60)).await, proceed(2000));
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
        assert_eq!(peek(&throttle, IP, before_end).await, refused(1));
        now = lockout.until;
        let verdict = reserve(&throttle, IP, now).await;
        assert_eq!(seen(&verdict), proceed(2000));
        lockouts = granted(verdict).lockouts().to_vec();
    }
    assert_eq!(lengths, [1, 2, 4, 8, 16, 30, 30]);
}

async fn success_clears_the_client(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    fail(&throttle, IP, 4, t0()).await;
    // The fifth attempt locks the client as it is counted; it turns out right.
    let fifth = granted(reserve(&throttle, IP, t0()).await);
    assert_eq!(fifth.delay(), Duration::from_millis(2000));
    assert_eq!(fifth.lockouts().len(), 1);
    assert_eq!(peek(&throttle, IP, t0()).await, refused(60));
    throttle.succeeded(fifth, t0()).await.unwrap();
    // Its lockout is gone with the client's failures; the account keeps the four others.
    assert_eq!(
        db.count("SELECT COUNT(*) FROM login_throttle_clients")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT failures FROM login_throttle_accounts")
            .await,
        4
    );
    assert_eq!(peek(&throttle, IP, t0()).await, proceed(0));
    // Counting starts again from nothing, and lockouts start again from a minute.
    assert!(fail(&throttle, IP, 4, at(secs(1))).await.is_empty());
    let lockouts = fail(&throttle, IP, 1, at(secs(1))).await;
    assert_eq!(lockouts[0].until, at(secs(61)));
}

async fn client_lock_spares_other_clients_of_the_email(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    fail(&throttle, IP, 5, t0()).await;
    assert_eq!(peek(&throttle, IP, t0()).await, refused(60));
    let other = "198.51.100.1";
    assert_eq!(peek(&throttle, other, t0()).await, proceed(0));
    // Nor does it touch the same client at another email.
    let bob = throttle
        .reserve("bob@acme.example.com", IP, t0())
        .await
        .unwrap();
    assert_eq!(seen(&bob), proceed(0));
}

async fn account_lock_refuses_unknown_clients_only(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    let (known, stale) = ("192.0.2.10", "192.0.2.11");
    log_in(&throttle, EMAIL, stale, before(t0(), 30 * DAY)).await;
    log_in(&throttle, EMAIL, known, before(t0(), DAY)).await;
    // "unknown" never becomes known, even after a success.
    log_in(&throttle, EMAIL, UNKNOWN_CLIENT, before(t0(), MINUTE)).await;
    let mut lockouts = Vec::new();
    for i in 0..20 {
        let ip = format!("10.0.0.{i}");
        let verdict = reserve(&throttle, &ip, at(secs(i))).await;
        assert_eq!(seen(&verdict), proceed(0));
        lockouts.extend_from_slice(granted(verdict).lockouts());
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
            peek(&throttle, unknown, now).await,
            refused(299),
            "{unknown}"
        );
    }
    assert_eq!(peek(&throttle, known, now).await, proceed(0));
    // The known client's own failures still lock it out.
    fail(&throttle, known, 5, now).await;
    assert_eq!(peek(&throttle, known, now).await, refused(60));
    // Known means within 30 days.
    assert_eq!(peek(&throttle, stale, now).await, refused(299));
    // Other emails are not affected.
    let other = throttle
        .reserve("bob@acme.example.com", "10.0.0.99", now)
        .await
        .unwrap();
    assert_eq!(seen(&other), proceed(0));
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
        lockouts.extend(fail(&throttle, &next_ip(), 1, now).await);
    }
    for _ in 0..6 {
        let [lockout] = &lockouts[..] else {
            panic!("one account lockout expected, got {lockouts:?}")
        };
        assert_eq!(lockout.scope, LockoutScope::Account);
        lengths.push((lockout.until - now).num_minutes());
        now = lockout.until;
        lockouts = fail(&throttle, &next_ip(), 1, now).await;
    }
    assert_eq!(lengths, [5, 10, 20, 40, 60, 60]);
}

async fn streak_and_lockout_lengths_are_forgotten(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    // A quiet window ends the streak: no more slow-down, and five new failures to lock.
    fail(&throttle, IP, 4, t0()).await;
    let later = at(15 * MINUTE);
    assert_eq!(peek(&throttle, IP, later).await, proceed(0));
    // The same after a lockout: the window starts when the lockout ends.
    let lockouts = fail(&throttle, IP, 5, later).await;
    let first_end = lockouts[0].until;
    assert_eq!(first_end, after(later, MINUTE));
    let quiet = after(first_end, 15 * MINUTE);
    assert_eq!(
        peek(&throttle, IP, quiet - TimeDelta::seconds(1)).await,
        proceed(2000)
    );
    assert_eq!(peek(&throttle, IP, quiet).await, proceed(0));
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

/// Reserves attempts from `clients` all at once; answers the verdicts.
async fn reserve_at_once(throttle: &LoginThrottle, clients: Vec<String>) -> Vec<Verdict> {
    let tasks = clients.into_iter().map(|client| {
        let throttle = throttle.clone();
        tokio::spawn(async move { throttle.reserve(EMAIL, &client, t0()).await })
    });
    join_all(tasks)
        .await
        .into_iter()
        .map(|verdict| verdict.unwrap().unwrap())
        .collect()
}

async fn attempts_at_once_pass_the_check_at_most_lock_after_times(backend: Backend) {
    let db = Fixture::new(backend).await;
    let throttle = db.throttle();
    let policy = ThrottlePolicy::default();
    // Ten attempts at once from one client: the check and the count are one step, so five
    // pass (the fifth locking the client out) and the other five are refused.
    let verdicts = reserve_at_once(&throttle, vec![IP.to_owned(); 10]).await;
    let (passed, refused): (Vec<_>, Vec<_>) = verdicts
        .into_iter()
        .partition(|verdict| matches!(verdict, Verdict::Proceed(_)));
    assert_eq!(passed.len(), policy.client.lock_after as usize);
    assert_eq!(refused.len(), 10 - passed.len());
    let lockouts: Vec<Lockout> = passed
        .into_iter()
        .flat_map(|verdict| granted(verdict).lockouts().to_vec())
        .collect();
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
        5
    );
    // Fifteen more at once from fifteen clients: the account counts all twenty, one lockout.
    let clients = (0..15).map(|i| format!("10.0.0.{i}")).collect();
    let lockouts: Vec<Lockout> = reserve_at_once(&throttle, clients)
        .await
        .into_iter()
        .flat_map(|verdict| granted(verdict).lockouts().to_vec())
        .collect();
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
        16
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
    log_in(
        &throttle,
        "old@acme.example.com",
        "10.0.0.4",
        before(now, 30 * DAY),
    )
    .await;
    log_in(&throttle, EMAIL, "10.0.0.5", before(now, 29 * DAY)).await;
    throttle
        .reserve("bob@acme.example.com", "10.0.0.6", before(now, 2 * DAY))
        .await
        .unwrap();
    // Deleted: client rows 10.0.0.1 and bob's, the account rows of bob and old (whose one
    // attempt was taken back by its success), old's known client.
    assert_eq!(throttle.prune(now).await.unwrap(), 5);
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

const BOB: &str = "bob@acme.example.com";

/// Sends `request` `n` times at once; answers how many got each status.
async fn at_once(n: usize, request: impl Fn() -> reqwest::RequestBuilder) -> Vec<StatusCode> {
    let answers = join_all((0..n).map(|_| request().send())).await;
    answers
        .into_iter()
        .map(|answer| answer.unwrap().status())
        .collect()
}

fn how_many(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Fifty wrong passwords at once from one client: the lockout lets `lock_after` of them be
/// verified (401), and refuses the rest unverified (429).
async fn wrong_passwords_at_once_are_verified_at_most_lock_after_times(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_user(BOB, "user", &[]).await;
    let allowed = ThrottlePolicy::default().client.lock_after as usize;
    let login = |password: &str| {
        let body = json!({"email": BOB, "password": password});
        app.client.post(app.url("/v1/sessions")).json(&body)
    };
    let statuses = at_once(50, || login("not bob's password")).await;
    let verified = how_many(&statuses, StatusCode::UNAUTHORIZED);
    let refused = how_many(&statuses, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!((verified, refused), (allowed, 50 - allowed), "{statuses:?}");
    let right = login(USER_PASSWORD).send().await.unwrap();
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Confirming your password before a change (a new password or email, turning two-factor
/// login off) is an attempt like a login: counted, locked out, in the same counter.
async fn reauthentication_is_counted_like_a_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_user(BOB, "user", &[]).await;
    let allowed = ThrottlePolicy::default().client.lock_after as usize;
    let bob = common::login(&app.client, &app.base, BOB, USER_PASSWORD).await;
    let as_bob = |method: Method, path: &str, body: Value| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(&bob)
            .json(&body)
    };
    let new_password = |current: &str| {
        let body = json!({"current_password": current, "new_password": "a brand new passphrase"});
        as_bob(Method::POST, "/v1/me/password", body)
    };
    let statuses = at_once(50, || new_password("not bob's password")).await;
    let verified = how_many(&statuses, StatusCode::UNPROCESSABLE_ENTITY);
    let refused = how_many(&statuses, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!((verified, refused), (allowed, 50 - allowed), "{statuses:?}");
    // Locked out: the right password too, at every re-authentication and at login.
    let response = new_password(USER_PASSWORD).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let email_change = json!({"name": "Bob", "email": "robert@acme.example.com",
                              "current_password": USER_PASSWORD});
    let response = as_bob(Method::PUT, "/v1/me", email_change).send().await;
    assert_eq!(response.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    let login = json!({"email": BOB, "password": USER_PASSWORD});
    let response = app.client.post(app.url("/v1/sessions")).json(&login).send();
    assert_eq!(
        response.await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // Carol turns two-factor login on; wrong passwords for an email change and for turning
    // it off, and a wrong code, add up to a lockout.
    let carol_email = "carol@acme.example.com";
    app.add_user(carol_email, "user", &[]).await;
    let carol = common::login(&app.client, &app.base, carol_email, USER_PASSWORD).await;
    let secret = common::enable_totp(&app, &carol).await;
    let as_carol = |method: Method, path: &str, body: Value| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(&carol)
            .json(&body)
            .send()
    };
    let wrong_code = common::totp_code(&secret, common::unix_now() + 3600);
    let failures = [
        (
            Method::PUT,
            "/v1/me",
            json!({"name": "Carol", "email": "caro@acme.example.com",
                                       "current_password": "not carol's"}),
        ),
        (
            Method::PUT,
            "/v1/me",
            json!({"name": "Carol", "email": "caro@acme.example.com",
                                       "current_password": "not carol's"}),
        ),
        (
            Method::DELETE,
            "/v1/me/totp",
            json!({"password": "not carol's", "code": wrong_code}),
        ),
        (
            Method::DELETE,
            "/v1/me/totp",
            json!({"password": "not carol's", "code": wrong_code}),
        ),
        (
            Method::DELETE,
            "/v1/me/totp",
            json!({"password": USER_PASSWORD, "code": wrong_code}),
        ),
    ];
    assert_eq!(failures.len(), allowed);
    for (method, path, body) in failures {
        let response = as_carol(method, path, body).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}"
        );
    }
    let right = json!({"password": USER_PASSWORD,
                       "code": common::totp_code(&secret, common::unix_now() + 30)});
    let response = as_carol(Method::DELETE, "/v1/me/totp", right)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
}
