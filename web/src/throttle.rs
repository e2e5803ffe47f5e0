//! Login throttling (OWASP ASVS 2.2.1): repeated wrong passwords are slowed down, then locked
//! out, per client and per account, in a way an attacker cannot turn into a lockout of the
//! real user.
//!
//! Two counters see every failed login (a wrong password, or an email nobody has):
//!
//! - **per client**, the email at one client address: from the third attempt of a streak the
//!   answer is slowed down, and the fifth failure locks that client out of that email. A
//!   success clears the counter.
//! - **per account**, the email from any client: twenty failures lock the email for clients
//!   that have not logged in to it lately. A client that has (a *known* client) is not
//!   refused, so an attack from many addresses cannot keep the real user out; its own client
//!   counter still throttles it.
//!
//! A *streak* is a run of failures each within the window of the previous one, time spent
//! locked out not counted: once a lockout ends, a failure within the window starts the next
//! lockout at once, twice as long as the previous one (capped). A counter quiet for a day is
//! forgotten, lockout lengths included. A success does not clear the account counter: the
//! real user logging in must not reset an attack's lockout.
//!
//! The counters are operational state like sessions, not events: failed logins must not grow
//! the event log. A failure updates both its rows in one write transaction that holds them
//! (the upsert that reads a row locks it on PostgreSQL; SQLite has one writer), so failures
//! at the same moment all count. Rows past their use are ignored when read, overwritten by
//! the next failure, and deleted by [`LoginThrottle::prune`], which the caller runs
//! periodically.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, SubsecRound, TimeDelta, Utc};
use sqlx::{Any, Row, Transaction, any::AnyRow};
use switchyard_command::Database;

/// Which counter a lockout holds: `Client` (this client at this email) or `Account` (this
/// email, for clients not known to it). The user aggregate's type, since lockouts are audited.
pub use switchyard_command::user::LockoutScope;

/// The `client` to pass when the address is not known. Such requests share one counter per
/// email, and it is never remembered as a known client.
pub const UNKNOWN_CLIENT: &str = "unknown";

/// When the failures of one counter lock it out, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRule {
    /// The failure of a streak that starts the first lockout.
    pub lock_after: u32,
    /// A failure continues the streak when it comes within this long of the previous one,
    /// or of the end of the lockout that followed it; a later one starts a new count.
    pub window: Duration,
    /// How long the first lockout lasts; each further one lasts twice as long as the
    /// previous, up to `max_lock`.
    pub first_lock: Duration,
    pub max_lock: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures at one email from one client address.
    pub client: LockRule,
    /// Failures at one email from any client; its lockout refuses only clients not known.
    pub account: LockRule,
    /// Failures of a client's streak after which attempts are slowed down: the next waits
    /// `first_delay`, each further one twice as long, up to `max_delay`.
    pub free_failures: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A counter without a failure (and out of lockout) for this long is forgotten,
    /// lockout lengths included.
    pub forget_after: Duration,
    /// A client that logged in to an email within this long is known to it.
    pub known_client_for: Duration,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

impl Default for ThrottlePolicy {
    /// A person who mistypes gets two attempts at full speed and four before any lockout,
    /// and waits a minute after the fifth; the delays of 0.5 to 2 s are hardly felt by a
    /// person but bound what a script gets from one address. A script on one address gets
    /// 10 guesses in its first hour (5, then one as each lockout of 1, 2, 4, 8, 16 minutes
    /// ends) and 2 an hour after that; one spread over many addresses gets 20 at once, then
    /// one per account lockout (5, 10, 20, 40 minutes, then every hour). Both stay well under
    /// ASVS 2.2.1's 100 failed attempts an hour. Lockouts are short at first because they
    /// also hit the real user typing on the same address (per client) or on a new device
    /// (per account). A day of memory keeps waiting out a lockout from resetting its length
    /// and bounds the tables to a day of failures; 30 days of being known covers a user who
    /// logs in monthly from the same place.
    fn default() -> Self {
        Self {
            client: LockRule {
                lock_after: 5,
                window: 15 * MINUTE,
                first_lock: MINUTE,
                max_lock: 30 * MINUTE,
            },
            account: LockRule {
                lock_after: 20,
                window: HOUR,
                first_lock: 5 * MINUTE,
                max_lock: HOUR,
            },
            free_failures: 2,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(2),
            forget_after: DAY,
            known_client_for: 30 * DAY,
        }
    }
}

impl ThrottlePolicy {
    /// The slow-down of an attempt that follows `failures` failures of the client's streak.
    fn delay(&self, failures: u32) -> Duration {
        match failures.checked_sub(self.free_failures) {
            Some(beyond) => doubled(self.first_delay, beyond).min(self.max_delay),
            None => Duration::ZERO,
        }
    }
}

impl LockRule {
    /// The length of the lockout that follows `earlier` ones.
    fn lock_duration(&self, earlier: u32) -> Duration {
        doubled(self.first_lock, earlier).min(self.max_lock)
    }
}

fn doubled(first: Duration, times: u32) -> Duration {
    first.saturating_mul(2u32.saturating_pow(times))
}

/// What [`LoginThrottle::check`] answers before a password is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Verify the password, answering a failure no sooner than `delay` after the request
    /// came in (or sleep `delay` before verifying).
    Proceed { delay: Duration },
    /// Do not verify the password; answer 429 with `Retry-After` (whole seconds, at least 1).
    Refused { retry_after: Duration },
}

/// A lockout that a failure started, for the caller to audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lockout {
    pub scope: LockoutScope,
    pub until: DateTime<Utc>,
    /// Failures of the streak, counting the one that started the lockout.
    pub failures: u32,
}

/// Login throttling over the database's `login_throttle_*` and `login_known_clients` tables.
#[derive(Clone, Debug)]
pub struct LoginThrottle {
    db: Database,
    policy: ThrottlePolicy,
}

impl LoginThrottle {
    pub fn new(db: Database, policy: ThrottlePolicy) -> Self {
        Self { db, policy }
    }

    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    /// Before verifying a password: may `client` try `email` now? `email` is normalized;
    /// `client` is the client's IP address, or [`UNKNOWN_CLIENT`].
    pub async fn check(
        &self,
        email: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<Verdict, sqlx::Error> {
        let now = now.trunc_subsecs(6);
        let policy = &self.policy;
        let own = CLIENTS
            .read(&self.db, &[email, client])
            .await?
            .at(now, policy.forget_after);
        let mut until = own.locked(now);
        let account = ACCOUNTS
            .read(&self.db, &[email])
            .await?
            .at(now, policy.forget_after);
        if let Some(account_until) = account.locked(now)
            && !self.is_known(email, client, now).await?
        {
            until = until.max(Some(account_until));
        }
        Ok(match until {
            Some(until) => Verdict::Refused {
                retry_after: retry_after(until, now),
            },
            None => Verdict::Proceed {
                delay: policy.delay(own.streak(now, &policy.client)),
            },
        })
    }

    /// After a wrong password, or an email nobody has: counts the failure for the client and
    /// the account. Returns the lockouts this failure started (none, one, or both scopes),
    /// which the caller audits. A failure during a lockout counts but does not extend it.
    pub async fn record_failure(
        &self,
        email: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Lockout>, sqlx::Error> {
        let now = now.trunc_subsecs(6);
        let policy = &self.policy;
        let mut lockouts = Vec::new();
        let mut tx = self.db.begin_write().await?;
        // Always the client's row before the account's, so transactions cannot deadlock.
        for (table, key, rule) in [
            (&CLIENTS, &[email, client][..], &policy.client),
            (&ACCOUNTS, &[email][..], &policy.account),
        ] {
            let mut counter = table
                .hold(&mut tx, key, now)
                .await?
                .at(now, policy.forget_after);
            if let Some(until) = counter.fail(now, rule) {
                lockouts.push(Lockout {
                    scope: table.scope,
                    until,
                    failures: counter.failures,
                });
            }
            table.save(&mut tx, key, &counter).await?;
        }
        tx.commit().await?;
        Ok(lockouts)
    }

    /// After a successful login: clears the client's failures at `email` and remembers it as
    /// known to `email` (unless it is [`UNKNOWN_CLIENT`]). The account counter stays.
    pub async fn record_success(
        &self,
        email: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let now = now.trunc_subsecs(6);
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM login_throttle_clients WHERE email = $1 AND client = $2")
            .bind(email)
            .bind(client)
            .execute(&mut *tx)
            .await?;
        if rememberable(client) {
            sqlx::query(
                "INSERT INTO login_known_clients (email, client, last_success_at) \
                 VALUES ($1, $2, $3) \
                 ON CONFLICT (email, client) DO UPDATE SET last_success_at = CASE \
                 WHEN excluded.last_success_at > login_known_clients.last_success_at \
                 THEN excluded.last_success_at ELSE login_known_clients.last_success_at END",
            )
            .bind(email)
            .bind(client)
            .bind(timestamp(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Deletes the rows that mean nothing any more at `now`: counters quiet for
    /// `forget_after` and clients last known longer than `known_client_for` ago. Returns how
    /// many. Each statement walks an index on its time column, so running it hourly is cheap;
    /// nothing depends on it for correctness, since such rows are ignored when read.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
        let now = now.trunc_subsecs(6);
        let forgotten = timestamp(before(now, self.policy.forget_after));
        let unknown = timestamp(before(now, self.policy.known_client_for));
        let mut deleted = 0;
        for (sql, cutoff) in [
            (
                "DELETE FROM login_throttle_clients WHERE last_failure_at <= $1 \
                 AND (locked_until IS NULL OR locked_until <= $1)",
                &forgotten,
            ),
            (
                "DELETE FROM login_throttle_accounts WHERE last_failure_at <= $1 \
                 AND (locked_until IS NULL OR locked_until <= $1)",
                &forgotten,
            ),
            (
                "DELETE FROM login_known_clients WHERE last_success_at <= $1",
                &unknown,
            ),
        ] {
            // Separate statements, not one transaction: a long prune must not hold rows
            // that logins wait for.
            deleted += sqlx::query(sql)
                .bind(cutoff)
                .execute(&self.db.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }

    async fn is_known(
        &self,
        email: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        if !rememberable(client) {
            return Ok(false);
        }
        let row = sqlx::query(
            "SELECT 1 FROM login_known_clients \
             WHERE email = $1 AND client = $2 AND last_success_at > $3",
        )
        .bind(email)
        .bind(client)
        .bind(timestamp(before(now, self.policy.known_client_for)))
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.is_some())
    }
}

/// A client address that identifies someone: only those can become known.
fn rememberable(client: &str) -> bool {
    !client.is_empty() && client != UNKNOWN_CLIENT
}

/// One counter row as the code sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counter {
    /// Failures of the streak that was running at `last_failure`.
    failures: u32,
    /// Lockouts so far: the next one lasts 2^lockouts times the first.
    lockouts: u32,
    last_failure: Option<DateTime<Utc>>,
    locked_until: Option<DateTime<Utc>>,
}

impl Counter {
    /// The last failure, or the end of the lockout that followed it.
    fn quiet_since(&self) -> Option<DateTime<Utc>> {
        self.last_failure.max(self.locked_until)
    }

    /// The counter as it stands at `now`: forgotten once quiet for `forget_after`.
    fn at(self, now: DateTime<Utc>, forget_after: Duration) -> Self {
        match self.quiet_since() {
            Some(since) if now < after(since, forget_after) => self,
            _ => Self::default(),
        }
    }

    /// Failures of the streak still running at `now`.
    fn streak(&self, now: DateTime<Utc>, rule: &LockRule) -> u32 {
        match self.quiet_since() {
            Some(since) if now < after(since, rule.window) => self.failures,
            _ => 0,
        }
    }

    fn locked(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.locked_until.filter(|until| *until > now)
    }

    /// Counts a failure at `now`; returns the end of the lockout it starts, if it does.
    fn fail(&mut self, now: DateTime<Utc>, rule: &LockRule) -> Option<DateTime<Utc>> {
        let locked = self.locked(now).is_some();
        self.failures = self.streak(now, rule).saturating_add(1);
        self.last_failure = self.last_failure.max(Some(now));
        if locked || self.failures < rule.lock_after {
            return None;
        }
        let until = after(now, rule.lock_duration(self.lockouts));
        self.lockouts = self.lockouts.saturating_add(1);
        self.locked_until = Some(until);
        Some(until)
    }
}

/// The statements of one counter table. Key columns bind first, in the order given.
struct CounterTable {
    scope: LockoutScope,
    select: &'static str,
    /// Reads the row for update, creating it if missing. The no-op `DO UPDATE` locks an
    /// existing row until the transaction ends on PostgreSQL, as the insert does a new one
    /// (a concurrent insert waits for it, then takes the update path on the committed row).
    hold: &'static str,
    save: &'static str,
}

const CLIENTS: CounterTable = CounterTable {
    scope: LockoutScope::Client,
    select: "SELECT failures, lockouts, last_failure_at, locked_until \
             FROM login_throttle_clients WHERE email = $1 AND client = $2",
    hold: "INSERT INTO login_throttle_clients \
           (email, client, failures, lockouts, last_failure_at) VALUES ($1, $2, 0, 0, $3) \
           ON CONFLICT (email, client) DO UPDATE SET failures = login_throttle_clients.failures \
           RETURNING failures, lockouts, last_failure_at, locked_until",
    save: "UPDATE login_throttle_clients \
           SET failures = $3, lockouts = $4, last_failure_at = $5, locked_until = $6 \
           WHERE email = $1 AND client = $2",
};

const ACCOUNTS: CounterTable = CounterTable {
    scope: LockoutScope::Account,
    select: "SELECT failures, lockouts, last_failure_at, locked_until \
             FROM login_throttle_accounts WHERE email = $1",
    hold: "INSERT INTO login_throttle_accounts \
           (email, failures, lockouts, last_failure_at) VALUES ($1, 0, 0, $2) \
           ON CONFLICT (email) DO UPDATE SET failures = login_throttle_accounts.failures \
           RETURNING failures, lockouts, last_failure_at, locked_until",
    save: "UPDATE login_throttle_accounts \
           SET failures = $2, lockouts = $3, last_failure_at = $4, locked_until = $5 \
           WHERE email = $1",
};

impl CounterTable {
    async fn read(&self, db: &Database, key: &[&str]) -> Result<Counter, sqlx::Error> {
        let mut query = sqlx::query(self.select);
        for part in key {
            query = query.bind(*part);
        }
        query
            .fetch_optional(&db.pool)
            .await?
            .map_or(Ok(Counter::default()), |row| counter(&row))
    }

    async fn hold(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Counter, sqlx::Error> {
        let mut query = sqlx::query(self.hold);
        for part in key {
            query = query.bind(*part);
        }
        counter(&query.bind(timestamp(now)).fetch_one(&mut **tx).await?)
    }

    async fn save(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: &[&str],
        counter: &Counter,
    ) -> Result<(), sqlx::Error> {
        let mut query = sqlx::query(self.save);
        for part in key {
            query = query.bind(*part);
        }
        query
            .bind(i64::from(counter.failures))
            .bind(i64::from(counter.lockouts))
            .bind(counter.last_failure.map(timestamp))
            .bind(counter.locked_until.map(timestamp))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

fn counter(row: &AnyRow) -> Result<Counter, sqlx::Error> {
    let count = |i| -> Result<u32, sqlx::Error> {
        Ok(u32::try_from(row.try_get::<i64, _>(i)?.max(0)).unwrap_or(u32::MAX))
    };
    Ok(Counter {
        failures: count(0)?,
        lockouts: count(1)?,
        last_failure: Some(parse_timestamp(&row.try_get::<String, _>(2)?)?),
        locked_until: row
            .try_get::<Option<String>, _>(3)?
            .map(|at| parse_timestamp(&at))
            .transpose()?,
    })
}

/// Times are stored as RFC 3339 UTC with microseconds, so that they compare as text.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn after(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(span)
        .ok()
        .and_then(|span| at.checked_add_signed(span))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn before(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(span)
        .ok()
        .and_then(|span| at.checked_sub_signed(span))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Whole seconds until `until`, rounded up, at least one.
fn retry_after(until: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let micros = (until - now).num_microseconds().unwrap_or(i64::MAX).max(1);
    Duration::from_secs(micros.unsigned_abs().div_ceil(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const POSTGRES_URL_VAR: &str = "SWITCHYARD_TEST_POSTGRES_URL";
    const EMAIL: &str = "jane@acme.example.com";
    const IP: &str = "203.0.113.7";

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
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

    #[derive(Clone, Copy, Debug)]
    enum Backend {
        Sqlite,
        Postgres,
    }

    /// A migrated database that exists only for one test.
    struct TestDb {
        db: Database,
        _dir: Option<tempfile::TempDir>,
    }

    impl TestDb {
        async fn new(backend: Backend) -> Self {
            match backend {
                Backend::Sqlite => {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                    Self {
                        db: Database::open(&url).await.expect("open SQLite"),
                        _dir: Some(dir),
                    }
                }
                Backend::Postgres => {
                    let admin_url = std::env::var(POSTGRES_URL_VAR).expect(POSTGRES_URL_VAR);
                    let name = format!("sy_test_{}", uuid::Uuid::new_v4().simple());
                    let admin = Database::connect(&admin_url).await.expect("connect");
                    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                        .execute(&admin.pool)
                        .await
                        .expect("create test database");
                    admin.pool.close().await;
                    let (base, _) = admin_url.rsplit_once('/').expect("URL names a database");
                    Self {
                        db: Database::open(&format!("{base}/{name}"))
                            .await
                            .expect("open PostgreSQL"),
                        _dir: None,
                    }
                }
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

    /// Runs each `async fn(Backend)` as `name::sqlite` and `name::postgres`. The PostgreSQL
    /// variant runs only when `SWITCHYARD_TEST_POSTGRES_URL` is set (this crate has no build
    /// script to report it ignored instead), and says so on stderr when it does not.
    macro_rules! on_both_backends {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(super::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if std::env::var_os(super::POSTGRES_URL_VAR).is_none_or(|url| url.is_empty()) {
                        eprintln!("PostgreSQL not tested: set {}", super::POSTGRES_URL_VAR);
                        return;
                    }
                    super::$name(super::Backend::Postgres).await
                }
            }
        )*};
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
        let db = TestDb::new(backend).await;
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
        let db = TestDb::new(backend).await;
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
        let db = TestDb::new(backend).await;
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
        let db = TestDb::new(backend).await;
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
        let db = TestDb::new(backend).await;
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
        let db = TestDb::new(backend).await;
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
        let db = TestDb::new(backend).await;
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
        let db = TestDb::new(backend).await;
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
        let db = TestDb::new(backend).await;
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
        let db = TestDb::new(backend).await;
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
        let db = TestDb::new(backend).await;
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

    #[test]
    fn default_policy_numbers() {
        let policy = ThrottlePolicy::default();
        let delays: Vec<_> = (0..7).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, [0, 0, 500, 1000, 2000, 2000, 2000]);
        let client: Vec<_> = (0..8)
            .map(|n| policy.client.lock_duration(n).as_secs() / 60)
            .collect();
        assert_eq!(client, [1, 2, 4, 8, 16, 30, 30, 30]);
        let account: Vec<_> = (0..7)
            .map(|n| policy.account.lock_duration(n).as_secs() / 60)
            .collect();
        assert_eq!(account, [5, 10, 20, 40, 60, 60, 60]);
        assert_eq!(policy.client.lock_duration(u32::MAX), 30 * MINUTE);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let now = t0();
        let wait = |micros| retry_after(now + TimeDelta::microseconds(micros), now);
        assert_eq!(wait(1), secs(1));
        assert_eq!(wait(1_000_000), secs(1));
        assert_eq!(wait(1_000_001), secs(2));
        assert_eq!(wait(0), secs(1));
        assert_eq!(wait(-5), secs(1));
    }

    #[test]
    fn timestamps_sort_as_text() {
        let a = timestamp(t0());
        let b = timestamp(t0() + TimeDelta::microseconds(1));
        let c = timestamp(t0() + TimeDelta::seconds(10));
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a, "2025-03-01T12:00:00.000000Z");
        assert_eq!(
            parse_timestamp(&b).unwrap(),
            t0() + TimeDelta::microseconds(1)
        );
    }
}
