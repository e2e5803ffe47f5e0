//! `switchyard bench jobs`: jobs per second through the dispatcher and the workers, and the
//! time from an event's append to its job's start — for no-op jobs (the queue itself) and for
//! test emails through the real send path to a local SMTP sink.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use switchyard_command::{
    Database,
    channels::{Channels, ChannelsCommand, SecretChange, Security, SmtpSettings, channels_stream},
    db::PerBackend,
    domain::{AccountId, AllowList, EmailAddress, Hostname, Port},
    event_log::{EventLog, ExpectedVersion, Metadata, NewEvent, StreamWrite},
    handler::CommandHandler,
    secrets::SecretKeyring,
    timestamp,
};
use switchyard_workers::jobs::{
    dispatcher::{BENCH_STREAM_TYPE, NOOP_REQUESTED},
    job_id,
};
use uuid::Uuid;

use super::{peak_rss_kib, smtp_sink::SmtpSink};
use crate::service::{AdminCredentials, Service, ServiceOptions, create_account};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// No-op jobs to run.
    #[arg(long, default_value_t = 5_000)]
    pub jobs: usize,
    /// Test emails to send.
    #[arg(long, default_value_t = 500)]
    pub emails: usize,
    /// Concurrent callers appending the events that ask for jobs, each for its own account.
    #[arg(long, default_value_t = 4)]
    pub callers: usize,
    /// No-op requests per append (a test email is one command, one append).
    #[arg(long, default_value_t = 10)]
    pub per_append: usize,
    /// No-op jobs requested one at a time, each after the previous one finished: the
    /// append→start time without a backlog.
    #[arg(long, default_value_t = 200)]
    pub lone_jobs: usize,
}

/// One kind of job, from its first append to its last job's end.
#[derive(Debug)]
pub struct Measured {
    pub jobs: usize,
    /// From just before the first append to the end of the last job.
    pub time: Duration,
    /// From just before each event's append to the start of its job.
    pub start_median: Duration,
    pub start_p99: Duration,
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        self.jobs as f64 / self.time.as_secs_f64()
    }
}

#[derive(Debug)]
pub struct Report {
    pub noop: Measured,
    pub emails: Measured,
    pub lone_noop: Measured,
    pub peak_rss_kib: Option<u64>,
}

const PASSWORD: &str = "bench password, long enough";
/// How often the reports are counted while jobs run.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Beyond a minute, how long each job may take before the bench gives up: generous, 50 jobs/s
/// where 1,000 are aimed at.
const TIME_ALLOWED_PER_JOB: Duration = Duration::from_millis(20);

/// Runs on an empty, migrated database.
pub async fn run(
    db: Database,
    options: &Options,
    keyring: SecretKeyring,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.jobs > 0 && options.emails > 0 && options.callers > 0 && options.per_append > 0,
        "need jobs, emails, callers and at least one request per append"
    );
    // The SMTP sink listens on loopback, which tenants' servers may not be at unless allowed.
    let service_options = ServiceOptions {
        outbound_allow: AllowList::parse(SmtpSink::ADDRESS)?,
        ..ServiceOptions::default()
    };
    let service = Service::start_with(db.clone(), keyring, service_options).await?;
    let state = service.state.clone();
    anyhow::ensure!(
        state.log.head_position().await? == 0,
        "bench needs an empty database"
    );
    let mut accounts = Vec::with_capacity(options.callers);
    for n in 0..options.callers {
        let admin = AdminCredentials {
            email: format!("admin{n}@bench.example.com"),
            password: Some(PASSWORD.into()),
        };
        let name = format!("Bench {n}");
        let created = create_account(&state.commands, &state.passwords, &name, admin).await?;
        accounts.push(created.opened.account_id);
    }

    let since = Utc::now();
    let appended_at = request_noops(&state.log, &accounts, options).await?;
    let noop = measure(&db, "noop", since, &appended_at).await?;

    let sink = SmtpSink::start().await?;
    for account in &accounts {
        save_smtp_settings(&state.commands, *account, sink.port()).await?;
    }
    let since = Utc::now();
    let appended_at = request_test_emails(&state.commands, &accounts, options.emails).await?;
    let emails = measure(&db, "smtp_test", since, &appended_at).await?;
    anyhow::ensure!(
        sink.received() == options.emails,
        "the SMTP sink received {} of {} test emails",
        sink.received(),
        options.emails
    );

    let since = Utc::now();
    let appended_at = request_lone_noops(&state.log, &db, accounts[0], options.lone_jobs).await?;
    let lone_noop = measure(&db, "noop", since, &appended_at).await?;

    let peak_rss_kib = peak_rss_kib();
    service.shutdown().await?;
    Ok(Report {
        noop,
        emails,
        lone_noop,
        peak_rss_kib,
    })
}

/// When each job's event was appended (just before the append was called), by job id.
type AppendTimes = HashMap<String, DateTime<Utc>>;

/// `options.jobs` no-op requests, `per_append` at a time, each caller on a stream of its
/// own (no version conflicts: the queue is measured, not contention).
async fn request_noops(
    log: &EventLog,
    accounts: &[AccountId],
    options: &Options,
) -> anyhow::Result<AppendTimes> {
    let next = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = accounts
        .iter()
        .map(|&account| {
            let (log, next, total, per_append) =
                (log.clone(), next.clone(), options.jobs, options.per_append);
            tokio::spawn(async move {
                let stream_id = format!("{BENCH_STREAM_TYPE}-{account}");
                let mut expected = ExpectedVersion::NoStream;
                let mut appended_at = AppendTimes::new();
                loop {
                    let first = next.fetch_add(per_append, Ordering::Relaxed);
                    if first >= total {
                        return anyhow::Ok(appended_at);
                    }
                    let events: Vec<NewEvent> = (first..total.min(first + per_append))
                        .map(|_| noop_request())
                        .collect();
                    let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
                    let write = StreamWrite {
                        stream_id: stream_id.clone(),
                        stream_type: BENCH_STREAM_TYPE.into(),
                        expected,
                        events,
                    };
                    let at = Utc::now();
                    let appended = log
                        .append(vec![write], Metadata::system(account))
                        .await
                        .context("appending no-op requests")?;
                    expected = ExpectedVersion::Exact(appended.stream_versions[0]);
                    appended_at.extend(ids.into_iter().map(|id| (job_id(id).to_string(), at)));
                }
            })
        })
        .collect();
    let mut appended_at = AppendTimes::with_capacity(options.jobs);
    for caller in callers {
        appended_at.extend(caller.await??);
    }
    Ok(appended_at)
}

fn noop_request() -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: NOOP_REQUESTED.into(),
        schema_version: 1,
        data: serde_json::json!({}),
    }
}

/// `count` no-op requests, each appended once the previous job has finished.
async fn request_lone_noops(
    log: &EventLog,
    db: &Database,
    account: AccountId,
    count: usize,
) -> anyhow::Result<AppendTimes> {
    let stream_id = format!("{BENCH_STREAM_TYPE}-lone-{account}");
    let mut expected = ExpectedVersion::NoStream;
    let mut appended_at = AppendTimes::with_capacity(count);
    for _ in 0..count {
        let event = noop_request();
        let id = job_id(event.event_id).to_string();
        let write = StreamWrite {
            stream_id: stream_id.clone(),
            stream_type: BENCH_STREAM_TYPE.into(),
            expected,
            events: vec![event],
        };
        let at = Utc::now();
        let appended = log.append(vec![write], Metadata::system(account)).await?;
        expected = ExpectedVersion::Exact(appended.stream_versions[0]);
        appended_at.insert(id.clone(), at);
        let finished = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let status: Option<String> =
                    sqlx::query_scalar("SELECT status FROM job_reports WHERE job_id = $1")
                        .bind(&id)
                        .fetch_optional(&db.pool)
                        .await?;
                if status.as_deref() == Some("succeeded") {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        finished
            .await
            .context("a lone no-op job did not finish within 10 s")??;
    }
    Ok(appended_at)
}

async fn save_smtp_settings(
    commands: &CommandHandler,
    account: AccountId,
    port: u16,
) -> anyhow::Result<()> {
    let settings = SmtpSettings {
        from_address: EmailAddress::parse("noc@bench.example.com")?,
        host: Hostname::parse(SmtpSink::ADDRESS)?,
        port: Port::parse(port.into())?,
        security: Security::None,
        username: None,
        password: None,
    };
    let command = ChannelsCommand::ChangeSmtp {
        settings,
        password: SecretChange::Clear,
        seen: None,
    };
    commands
        .execute::<Channels>(
            &channels_stream(account),
            command,
            &Metadata::system(account),
        )
        .await
        .context("saving the SMTP settings")?;
    Ok(())
}

/// `total` Test Email commands, as the "Test" button sends them: one caller per account, one
/// command at a time.
async fn request_test_emails(
    commands: &CommandHandler,
    accounts: &[AccountId],
    total: usize,
) -> anyhow::Result<AppendTimes> {
    let next = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = accounts
        .iter()
        .map(|&account| {
            let (commands, next) = (commands.clone(), next.clone());
            tokio::spawn(async move {
                let (stream_id, metadata) = (channels_stream(account), Metadata::system(account));
                let to = EmailAddress::parse("ops@bench.example.com")?;
                let mut appended_at = AppendTimes::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let test_id = Uuid::now_v7();
                    let command = ChannelsCommand::RequestSmtpTest {
                        test_id,
                        to: to.clone(),
                    };
                    let at = Utc::now();
                    commands
                        .execute::<Channels>(&stream_id, command, &metadata)
                        .await
                        .context("requesting a test email")?;
                    appended_at.insert(job_id(test_id).to_string(), at);
                }
                anyhow::Ok(appended_at)
            })
        })
        .collect();
    let mut appended_at = AppendTimes::with_capacity(total);
    for caller in callers {
        appended_at.extend(caller.await??);
    }
    Ok(appended_at)
}

/// The reads of the `kind` jobs queued since a time, per backend.
struct Statements {
    /// How many succeeded and how many failed.
    outcomes: String,
    /// The succeeded ones' ids and times.
    reports: String,
}

static SQL: PerBackend<Statements> = PerBackend::new(|backend| {
    let since = timestamp::param(backend, 2);
    Statements {
        outcomes: format!(
            "SELECT COUNT(CASE WHEN status = 'succeeded' THEN 1 END), \
             COUNT(CASE WHEN status = 'failed' THEN 1 END) FROM job_reports \
             WHERE kind = $1 AND created_at >= {since}"
        ),
        reports: format!(
            "SELECT job_id, {}, {} FROM job_reports \
             WHERE kind = $1 AND status = 'succeeded' AND created_at >= {since}",
            timestamp::read(backend, "started_at"),
            timestamp::read(backend, "finished_at")
        ),
    }
});

/// Waits until every job in `appended_at` (the `kind` jobs queued since `since`) has
/// succeeded, then measures them from their reports. Fails on a failed job or when they take
/// far longer than expected.
async fn measure(
    db: &Database,
    kind: &str,
    since: DateTime<Utc>,
    appended_at: &AppendTimes,
) -> anyhow::Result<Measured> {
    let since = timestamp::format(since);
    let sql = SQL.get(db.backend);
    let timeout = Duration::from_secs(60) + TIME_ALLOWED_PER_JOB * appended_at.len() as u32;
    let waited = tokio::time::timeout(timeout, async {
        loop {
            let (succeeded, failed): (i64, i64) = sqlx::query_as(sql.outcomes.as_str())
                .bind(kind)
                .bind(&since)
                .fetch_one(&db.pool)
                .await?;
            anyhow::ensure!(failed == 0, "{failed} {kind} jobs failed");
            if succeeded as usize >= appended_at.len() {
                return anyhow::Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    })
    .await;
    waited.with_context(|| format!("{kind} jobs did not all succeed within {timeout:?}"))??;

    let reports: Vec<(String, String, String)> = sqlx::query_as(sql.reports.as_str())
        .bind(kind)
        .bind(&since)
        .fetch_all(&db.pool)
        .await?;
    let first_append = appended_at.values().min().context("no jobs")?;
    let mut last_finish = *first_append;
    let mut start_latencies = Vec::with_capacity(appended_at.len());
    for (id, started_at, finished_at) in reports {
        let appended = appended_at
            .get(&id)
            .with_context(|| format!("a {kind} job no event asked for: {id}"))?;
        let start_latency = (timestamp::parse(&started_at)? - *appended).to_std();
        start_latencies.push(start_latency.unwrap_or_default());
        last_finish = last_finish.max(timestamp::parse(&finished_at)?);
    }
    anyhow::ensure!(
        start_latencies.len() == appended_at.len(),
        "{} {kind} jobs reported, {} asked for",
        start_latencies.len(),
        appended_at.len()
    );
    start_latencies.sort_unstable();
    Ok(Measured {
        jobs: appended_at.len(),
        time: (last_finish - *first_append).to_std()?,
        start_median: percentile(&start_latencies, 50),
        start_p99: percentile(&start_latencies, 99),
    })
}

/// Nearest rank of sorted, non-empty `values`.
fn percentile(values: &[Duration], percent: usize) -> Duration {
    let rank = (values.len() * percent).div_ceil(100).max(1);
    values[rank - 1]
}
