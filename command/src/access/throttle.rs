//! Login throttling (OWASP ASVS 2.2.1): repeated wrong passwords are slowed down, then locked
//! out, per client and per account, in a way an attacker cannot turn into a lockout of the
//! real user.
//!
//! Two counters see every failed attempt at a password: a wrong password or second factor,
//! or an email nobody has, at login or when a signed-in user confirms who they are:
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
//! An attempt is counted as a failure *before* its password is verified, in the write
//! transaction that checks the lockout and holds both its rows (the upsert that reads a row
//! locks it on PostgreSQL; SQLite has one writer): attempts at the same moment cannot all
//! pass the check before one of them fails, so no more than `lock_after` passwords are ever
//! verified in a streak. A success takes its count back ([`LoginThrottle::succeeded`]), as
//! does an attempt that was neither right nor wrong ([`LoginThrottle::withdraw`]).
//!
//! The counters are operational state like sessions, not events: failed logins must not grow
//! the event log. Rows past their use are ignored when read, overwritten by the next
//! failure, and deleted by [`LoginThrottle::prune`], which the caller runs periodically.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use sqlx::{Row, any::AnyRow};

use crate::db::WriteTransaction;

use crate::{
    Database,
    db::PerBackend,
    timestamp::{self, format as timestamp, parse as parse_timestamp},
};

/// Which counter a lockout holds: `Client` (this client at this email) or `Account` (this
/// email, for clients not known to it). The user aggregate's type, since lockouts are audited.
pub use crate::user::LockoutScope;

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

/// What [`LoginThrottle::reserve`] answers before a password is verified.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Verify the password, answering a failure no sooner than the attempt's `delay` after
    /// the request came in (or sleep `delay` before verifying). The attempt already counts
    /// as a failure: tell the throttle how it ended.
    Proceed(Attempt),
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

/// An attempt that [`LoginThrottle::reserve`] let through. It counts as a failure from the
/// start; [`LoginThrottle::succeeded`] or [`LoginThrottle::withdraw`] takes it back, and a
/// failure leaves it counted (nothing to call: audit its [`Attempt::lockouts`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Attempt {
    email: String,
    client: String,
    delay: Duration,
    lockouts: Vec<Lockout>,
    /// The client's and the account's counter rows before and after this attempt counted.
    counted: [(Counter, Counter); 2],
}

impl Attempt {
    /// The slow-down of the client's streak before this attempt.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The lockouts that counting this attempt started: audit them when it fails.
    pub fn lockouts(&self) -> &[Lockout] {
        &self.lockouts
    }
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

    fn sql(&self) -> &'static Statements {
        SQL.get(self.db.backend)
    }

    /// Before verifying a password: may `client` try `email` now? If so, the attempt is
    /// counted as a failure at once, in the transaction that checked, so that attempts at
    /// the same moment cannot all pass the check before any of them fails: at most
    /// `lock_after` of them are let through. `email` is normalized; `client` is the client's
    /// IP address, or [`UNKNOWN_CLIENT`]. A refused attempt is not counted.
    pub async fn reserve(
        &self,
        email: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<Verdict, sqlx::Error> {
        let now = now.trunc_subsecs(6);
        let policy = &self.policy;
        let sql = self.sql();
        let mut tx = self.db.begin_write().await?;
        // Always the client's row before the account's, so transactions cannot deadlock.
        let own = sql.clients.hold(&mut tx, &[email, client], now).await?;
        let account = sql.accounts.hold(&mut tx, &[email], now).await?;
        let mut until = own.at(now, policy.forget_after).locked(now);
        if let Some(account_until) = account.at(now, policy.forget_after).locked(now)
            && !self.is_known(&mut tx, email, client, now).await?
        {
            until = until.max(Some(account_until));
        }
        if let Some(until) = until {
            return Ok(Verdict::Refused {
                retry_after: retry_after(until, now),
            });
        }
        let delay = policy.delay(own.at(now, policy.forget_after).streak(now, &policy.client));
        let mut lockouts = Vec::new();
        let mut counted = [(own, own), (account, account)];
        for ((table, key, rule), (before, after)) in [
            (&sql.clients, &[email, client][..], &policy.client),
            (&sql.accounts, &[email][..], &policy.account),
        ]
        .into_iter()
        .zip(&mut counted)
        {
            *after = before.at(now, policy.forget_after);
            if let Some(until) = after.fail(now, rule) {
                lockouts.push(Lockout {
                    scope: table.scope,
                    until,
                    failures: after.failures,
                });
            }
            table.save(&mut tx, key, after).await?;
        }
        tx.commit().await?;
        Ok(Verdict::Proceed(Attempt {
            email: email.to_owned(),
            client: client.to_owned(),
            delay,
            lockouts,
            counted,
        }))
    }

    /// The attempt logged in: it is no failure, and the client's failures at the email are
    /// cleared (its lockout too, for a login the caller let through); the client is
    /// remembered as known to the email (unless it is [`UNKNOWN_CLIENT`]). The account
    /// counter keeps the failures of others: the real user logging in must not reset an
    /// attack's lockout.
    pub async fn succeeded(&self, attempt: Attempt, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        let now = now.trunc_subsecs(6);
        let Attempt { email, client, .. } = &attempt;
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM login_throttle_clients WHERE email = $1 AND client = $2")
            .bind(email)
            .bind(client)
            .execute(&mut *tx)
            .await?;
        self.sql()
            .accounts
            .refund(&mut tx, &[email], attempt.counted[1], now)
            .await?;
        if rememberable(client) {
            sqlx::query(self.sql().known.as_str())
                .bind(email)
                .bind(client)
                .bind(timestamp(now))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// The attempt was neither right nor wrong (say, the password was right but a second
    /// factor is needed): it stops counting, and nothing else changes.
    pub async fn withdraw(&self, attempt: Attempt, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        let now = now.trunc_subsecs(6);
        let Attempt { email, client, .. } = &attempt;
        let mut tx = self.db.begin_write().await?;
        self.sql()
            .clients
            .refund(&mut tx, &[email, client], attempt.counted[0], now)
            .await?;
        self.sql()
            .accounts
            .refund(&mut tx, &[email], attempt.counted[1], now)
            .await?;
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
        let [clients, accounts, known] = &self.sql().prune;
        for (sql, cutoff) in [
            (clients, &forgotten),
            (accounts, &forgotten),
            (known, &unknown),
        ] {
            // Separate statements, not one transaction: a long prune must not hold rows
            // that logins wait for.
            deleted += sqlx::query(sql.as_str())
                .bind(cutoff)
                .execute(&self.db.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }

    async fn is_known(
        &self,
        tx: &mut WriteTransaction,
        email: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        if !rememberable(client) {
            return Ok(false);
        }
        let row = sqlx::query(self.sql().is_known.as_str())
            .bind(email)
            .bind(client)
            .bind(timestamp(before(now, self.policy.known_client_for)))
            .fetch_optional(&mut **tx)
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

    /// Takes back the failure that moved the row from `before` to `after`: all that it
    /// changed, a lockout it started included, when nothing else has counted since (the row
    /// is still `after`); else only the failure itself.
    fn refund(self, (before, after): (Self, Self)) -> Self {
        match self == after {
            true => before,
            false => Self {
                failures: self.failures.saturating_sub(1),
                ..self
            },
        }
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
    /// Reads the row for update, creating it if missing. The no-op `DO UPDATE` locks an
    /// existing row until the transaction ends on PostgreSQL, as the insert does a new one
    /// (a concurrent insert waits for it, then takes the update path on the committed row).
    hold: String,
    save: String,
}

/// The statements that write, compare or read times, per backend.
struct Statements {
    clients: CounterTable,
    accounts: CounterTable,
    /// Remembers a client as known to an email, at the later of two successes.
    known: String,
    is_known: String,
    /// Clients' and accounts' counters, then known clients.
    prune: [String; 3],
}

static SQL: PerBackend<Statements> = PerBackend::new(|backend| {
    let time = |n| timestamp::param(backend, n);
    let counters = |table| {
        format!(
            "DELETE FROM {table} WHERE last_failure_at <= {} \
             AND (locked_until IS NULL OR locked_until <= {})",
            time(1),
            time(1)
        )
    };
    let returning = format!(
        "RETURNING failures, lockouts, {}, {}",
        timestamp::read(backend, "last_failure_at"),
        timestamp::read(backend, "locked_until")
    );
    Statements {
        clients: CounterTable {
            scope: LockoutScope::Client,
            hold: format!(
                "INSERT INTO login_throttle_clients \
                 (email, client, failures, lockouts, last_failure_at) VALUES ($1, $2, 0, 0, {}) \
                 ON CONFLICT (email, client) DO UPDATE \
                 SET failures = login_throttle_clients.failures {returning}",
                time(3)
            ),
            save: format!(
                "UPDATE login_throttle_clients \
                 SET failures = $3, lockouts = $4, last_failure_at = {}, locked_until = {} \
                 WHERE email = $1 AND client = $2",
                time(5),
                time(6)
            ),
        },
        accounts: CounterTable {
            scope: LockoutScope::Account,
            hold: format!(
                "INSERT INTO login_throttle_accounts \
                 (email, failures, lockouts, last_failure_at) VALUES ($1, 0, 0, {}) \
                 ON CONFLICT (email) DO UPDATE \
                 SET failures = login_throttle_accounts.failures {returning}",
                time(2)
            ),
            save: format!(
                "UPDATE login_throttle_accounts \
                 SET failures = $2, lockouts = $3, last_failure_at = {}, locked_until = {} \
                 WHERE email = $1",
                time(4),
                time(5)
            ),
        },
        known: format!(
            "INSERT INTO login_known_clients (email, client, last_success_at) \
             VALUES ($1, $2, {}) \
             ON CONFLICT (email, client) DO UPDATE SET last_success_at = CASE \
             WHEN excluded.last_success_at > login_known_clients.last_success_at \
             THEN excluded.last_success_at ELSE login_known_clients.last_success_at END",
            time(3)
        ),
        is_known: format!(
            "SELECT 1 FROM login_known_clients \
             WHERE email = $1 AND client = $2 AND last_success_at > {}",
            time(3)
        ),
        prune: [
            counters("login_throttle_clients"),
            counters("login_throttle_accounts"),
            format!(
                "DELETE FROM login_known_clients WHERE last_success_at <= {}",
                time(1)
            ),
        ],
    }
});

impl CounterTable {
    async fn hold(
        &'static self,
        tx: &mut WriteTransaction,
        key: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Counter, sqlx::Error> {
        let mut query = sqlx::query(self.hold.as_str());
        for part in key {
            query = query.bind(*part);
        }
        counter(&query.bind(timestamp(now)).fetch_one(&mut **tx).await?)
    }

    async fn save(
        &'static self,
        tx: &mut WriteTransaction,
        key: &[&str],
        counter: &Counter,
    ) -> Result<(), sqlx::Error> {
        let mut query = sqlx::query(self.save.as_str());
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

    /// Takes back an attempt's failure from this table's row (see [`Counter::refund`]).
    async fn refund(
        &'static self,
        tx: &mut WriteTransaction,
        key: &[&str],
        counted: (Counter, Counter),
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let current = self.hold(tx, key, now).await?;
        self.save(tx, key, &current.refund(counted)).await
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

    // The tests that need a database are in the root package's tests/login_throttle.rs.

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
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
    fn a_refund_undoes_all_of_an_untouched_failure_and_only_the_failure_else() {
        let rule = ThrottlePolicy::default().client;
        let before = Counter {
            failures: 4,
            lockouts: 2,
            last_failure: Some(t0()),
            locked_until: None,
        };
        let mut after = before;
        assert!(after.fail(t0() + TimeDelta::seconds(1), &rule).is_some());
        assert_eq!(after.refund((before, after)), before, "lockout included");
        let mut later = after;
        later.fail(t0() + TimeDelta::seconds(2), &rule);
        assert_eq!(
            later.refund((before, after)),
            Counter {
                failures: 5,
                ..later
            },
            "another failure counted since: only ours is taken back"
        );
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
}
