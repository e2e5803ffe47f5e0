//! `switchyard`: the account backend of a hosted VoIP platform.

use std::{io::IsTerminal, net::SocketAddr};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use switchyard::{
    bench,
    service::{self, AdminCredentials, Service, ServiceOptions},
    settings::{DatabaseSettings, HttpSettings, WorkerSettings},
};
use switchyard_command::{
    domain::AccountId, event_log::EventLog, handler::CommandHandler, password::PasswordHasher,
};
use switchyard_projections::replay;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: events decode into many small strings and
/// JSON values, and with glibc's allocator a rebuild spent about a fifth of its time
/// allocating and freeing them (rebuild of 104k events on SQLite: 2.0 s → 1.6 s). The
/// workspace's `Cargo.toml` says why SQLite's allocations go to it too, without huge pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Switchyard: the account backend of a hosted VoIP platform"
)]
struct Cli {
    #[command(flatten)]
    database: DatabaseSettings,
    /// Log lines as text (coloured only on a terminal) or as one JSON object per line.
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `serve`'s settings (boxed in [`Command`]: they outweigh every other command's).
#[derive(Args)]
struct ServeArgs {
    /// Leave jobs to `switchyard worker` processes.
    #[arg(long)]
    without_workers: bool,
    #[command(flatten)]
    workers: WorkerSettings,
    #[command(flatten)]
    http: HttpSettings,
    /// Address to listen on.
    #[arg(long, env = "SWITCHYARD_BIND", default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// On an empty database: the first account's name.
    #[arg(long, env = "SWITCHYARD_ACCOUNT_NAME", default_value = "Operator")]
    account_name: String,
    /// On an empty database: the first administrator's email.
    #[arg(
        long,
        env = "SWITCHYARD_ADMIN_EMAIL",
        default_value = "admin@switchyard.local"
    )]
    admin_email: String,
    /// On an empty database: the first administrator's password (generated if absent).
    #[arg(long, env = "SWITCHYARD_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service, the projections and the job workers (migrates first).
    Serve(Box<ServeArgs>),
    /// Run job workers only, beside `serve --without-workers` processes on the same database.
    Worker {
        #[command(flatten)]
        workers: WorkerSettings,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Drop every read model and rebuild it from the event log.
    Replay,
    /// Each projection's position, how far it is behind the log, and why it is failing.
    Projections,
    /// Manage accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Measure speed and memory on an empty database.
    #[command(subcommand)]
    Bench(BenchSuite),
}

#[derive(Subcommand)]
enum BenchSuite {
    /// Command throughput through the event log, then a rebuild of the read models.
    Log(bench::event_log::Options),
    /// Logins per second, the per-request permission check, paging a large user list.
    Identity(bench::identity::Options),
    /// Jobs per second through the dispatcher and workers, no-op and test emails, and the
    /// time from an event's append to its job's start.
    Jobs(bench::jobs::Options),
    /// Concurrent unconditional writers on one stream, through the command handler and
    /// through HTTP: commands per second and every answer by kind.
    HotStream(bench::hot_stream::Options),
    /// A user with a very long stream (many logins): a cold load, a cold command, logins.
    LongStream(bench::long_stream::Options),
    /// Ledger entries by concurrent writers to one account and across many, then the
    /// ledger projection catching up.
    Ledger(bench::ledger::Options),
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Open an account with its first administrator; prints the account id.
    Create {
        /// The account's name (its company name until changed).
        #[arg(long)]
        name: String,
        /// The first administrator's email, their login name; unique in the installation.
        #[arg(long)]
        admin_email: String,
        /// The first administrator's password, 8 to 128 characters and not a common one.
        /// Generated and printed once if absent.
        #[arg(long)]
        admin_password: Option<String>,
    },
    /// Set how far below zero an account's balance may go.
    SetDebitLimit {
        /// The account's id (`GET /v1/me` shows it as `account_id`).
        #[arg(long)]
        account: AccountId,
        /// A decimal amount in the currency the balance is kept in, e.g. `50.00`.
        #[arg(long)]
        amount: String,
    },
}

/// Logs go to standard output: coloured only when it is a terminal, so a file or a pipe
/// gets no escape codes; as JSON, one object per line for log collectors.
fn init_logging(format: LogFormat) {
    // PostgreSQL's notices are the "already exists, skipping" of idempotent migrations at
    // every start: noise at `info`.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let url = cli.database.url();
    let limits = match cli.command {
        // One long transaction: its statements may take long, and it idles while it plans.
        Command::Replay => cli.database.session_limits().for_maintenance(),
        _ => cli.database.session_limits(),
    };
    let db = service::open_database_with(&url, limits).await?;
    match cli.command {
        Command::Serve(serve) => {
            let ServeArgs {
                without_workers,
                workers,
                http,
                bind,
                account_name,
                admin_email,
                admin_password,
            } = *serve;
            // Installed first, so a signal that arrives during start-up is not lost.
            let stop = shutdown_signal()?;
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("listening on {bind}"))?;
            let options = ServiceOptions {
                http: http.limits(),
                web: http.web_options(),
                ..workers.service_options(!without_workers)?
            };
            let mut service = Service::start_with(db, cli.database.keyring()?, options).await?;
            let admin = AdminCredentials {
                email: admin_email,
                password: admin_password,
            };
            // Before serving, so the printed credentials work as soon as anyone can connect.
            if let Some(created) = service.bootstrap(&account_name, admin).await? {
                show_first_credentials(&created);
            }
            let address = service.serve(listener)?;
            tracing::info!(%address, database = %service::redact_url(&url), "serving");
            stop.await;
            tracing::info!("shutting down: finishing in-flight requests");
            service.shutdown().await?;
        }
        Command::Worker { workers } => {
            let stop = shutdown_signal()?;
            let shutdown = CancellationToken::new();
            let stopping = shutdown.clone();
            tokio::spawn(async move {
                stop.await;
                tracing::info!("shutting down: finishing running jobs");
                stopping.cancel();
            });
            tracing::info!(database = %service::redact_url(&url), "running job workers");
            let options = workers.service_options(true)?;
            service::run_worker_process(db, cli.database.keyring()?, options, shutdown).await?;
        }
        Command::Migrate => println!("Database is up to date: {}", service::redact_url(&url)),
        Command::Replay => {
            let log = EventLog::start(db.clone()).await?;
            let head = log.head_position().await?;
            let bar = ProgressBar::new(head.max(0) as u64).with_style(
                ProgressStyle::with_template("[{bar:40}] {pos}/{len} events ({per_sec})")?
                    .progress_chars("=> "),
            );
            let started = std::time::Instant::now();
            replay::rebuild_all(&db, |position| bar.set_position(position.max(0) as u64)).await?;
            bar.finish();
            let took = started.elapsed();
            println!("Rebuilt every read model from {head} events in {took:.2?}.");
        }
        Command::Projections => print_projections(&db).await?,
        Command::Account(AccountCommand::Create {
            name,
            admin_email,
            admin_password,
        }) => {
            let commands = CommandHandler::new(EventLog::start(db).await?);
            let admin = AdminCredentials {
                email: admin_email,
                password: admin_password,
            };
            let created =
                service::create_account(&commands, &PasswordHasher::new(1), &name, admin).await?;
            println!("{}", created.opened.account_id);
            if let Some(password) = created.generated_password {
                eprintln!("Administrator password (shown only now): {password}");
            }
        }
        Command::Account(AccountCommand::SetDebitLimit { account, amount }) => {
            let commands = CommandHandler::new(EventLog::start(db).await?);
            let limit = service::set_debit_limit(&commands, account, &amount).await?;
            println!("Debit limit of account {account}: {limit}");
        }
        Command::Bench(BenchSuite::Log(options)) => {
            let report = bench::event_log::run(db, &options).await?;
            println!(
                "commands: {} with {} callers over {} accounts in {:.2?} = {:.0} commands/s",
                report.commands,
                options.callers,
                options.accounts,
                report.command_time,
                report.commands_per_second()
            );
            println!(
                "rebuild: {} events in {:.2?} = {:.0} events/s",
                report.events_rebuilt,
                report.rebuild_time,
                report.rebuild_events_per_second()
            );
            print_peak_memory(report.peak_rss_kib);
        }
        Command::Bench(BenchSuite::Identity(options)) => {
            let report = bench::identity::run(db, &options, cli.database.keyring()?).await?;
            let per_second = |n: usize, time: std::time::Duration| n as f64 / time.as_secs_f64();
            println!(
                "users: {} added through the command path in {:.2?} = {:.0} users/s",
                report.users,
                report.user_creation,
                per_second(report.users, report.user_creation)
            );
            println!(
                "logins: {} with {} clients in {:.2?} = {:.1} logins/s",
                report.logins,
                options.clients,
                report.login_time,
                per_second(report.logins, report.login_time)
            );
            print_peak_memory(report.peak_rss_kib);
            println!(
                "permission check: session lookup {:.2?} per request (one query), \
                 evaluation {:.2?} (17 resources, 3 groups, in memory)",
                report.session_lookup, report.permission_evaluation
            );
            for (limit, pages, time) in report.paging {
                println!(
                    "GET /v1/users of {} users, limit {limit}: {pages} pages in {:.2?} = {:.2?} per page",
                    report.users,
                    time,
                    time / pages.max(1) as u32
                );
            }
        }
        Command::Bench(BenchSuite::Jobs(options)) => {
            let report = bench::jobs::run(db, &options, cli.database.keyring()?).await?;
            for (what, unit, measured) in [
                ("no-op jobs", "jobs/s", &report.noop),
                ("test emails", "emails/s", &report.emails),
            ] {
                println!(
                    "{what}: {} with {} callers in {:.2?} = {:.0} {unit}; \
                     append→start median {:.1?}, p99 {:.1?}",
                    measured.jobs,
                    options.callers,
                    measured.time,
                    measured.per_second(),
                    measured.start_median,
                    measured.start_p99
                );
            }
            println!(
                "lone no-op jobs: {} one at a time; append→start median {:.1?}, p99 {:.1?}",
                report.lone_noop.jobs, report.lone_noop.start_median, report.lone_noop.start_p99
            );
            print_peak_memory(report.peak_rss_kib);
        }
        Command::Bench(BenchSuite::HotStream(options)) => {
            let report = bench::hot_stream::run(db, &options, cli.database.keyring()?).await?;
            for (through, run) in [("command handler", &report.handler), ("HTTP", &report.http)] {
                println!(
                    "{through}: {} unconditional changes of one stream by {} writers in {:.2?} \
                     = {:.0} commands/s; answers {:?}; CPU {:.2?} ({:.0?} per command)",
                    run.commands,
                    options.writers,
                    run.time,
                    run.per_second(),
                    run.outcomes,
                    run.cpu_time.unwrap_or_default(),
                    run.cpu_time.unwrap_or_default() / run.commands.max(1) as u32,
                );
            }
            print_peak_memory(report.peak_rss_kib);
        }
        Command::Bench(BenchSuite::Ledger(options)) => {
            let report = bench::ledger::run(db, &options, cli.database.keyring()?).await?;
            let runs = [
                ("one account", &report.one_account),
                ("across accounts", &report.many_accounts),
            ];
            for (to, run) in runs {
                println!(
                    "{to}: {} ledger entries by {} writers in {:.2?} = {:.0} entries/s; \
                     answers {:?}; CPU {:.2?}",
                    run.commands,
                    options.writers,
                    run.time,
                    run.per_second(),
                    run.outcomes,
                    run.cpu_time.unwrap_or_default(),
                );
            }
            println!(
                "ledger projection showed every entry {:.2?} after the last was recorded",
                report.projection_catch_up
            );
            print_peak_memory(report.peak_rss_kib);
        }
        Command::Bench(BenchSuite::LongStream(options)) => {
            let report = bench::long_stream::run(db, &options, cli.database.keyring()?).await?;
            println!(
                "stream of {} events (built in {:.2?})",
                report.stream_length, report.build_time
            );
            println!(
                "load by a new process: first {:.2?}, then {:.2?}; a command from cold {:.2?}",
                report.first_load, report.cold_load, report.cold_command
            );
            println!(
                "login through HTTP with login alerts on (Argon2id included): first {:.2?}, \
                 then median {:.2?}",
                report.first_login, report.login_median
            );
            print_peak_memory(report.peak_rss_kib);
        }
    }
    Ok(())
}

/// One line per projection: where it is, how far behind the log, and why it is failing.
async fn print_projections(db: &switchyard_command::Database) -> anyhow::Result<()> {
    let head = EventLog::start(db.clone()).await?.head_position().await?;
    println!("log head: {head}");
    println!(
        "{:<16} {:>10} {:>10}  state",
        "projection", "position", "lag"
    );
    for checkpoint in switchyard_projections::stored_checkpoints(db).await? {
        let state = match (&checkpoint.last_error, &checkpoint.failing_since) {
            (None, _) => "ok".to_owned(),
            (Some(error), since) => {
                let stuck = checkpoint
                    .stuck_at
                    .map(|at| format!(", stuck at event {at}"))
                    .unwrap_or_default();
                let since = since.as_deref().unwrap_or("?");
                format!("failing since {since}{stuck}: {error}")
            }
        };
        let lag = head - checkpoint.position;
        println!(
            "{:<16} {:>10} {:>10}  {state}",
            checkpoint.projection, checkpoint.position, lag
        );
    }
    Ok(())
}

/// The first account's administrator, on stderr and framed, apart from the log stream
/// (stdout): a generated password is shown once, and never in a log line that a log
/// collector would keep.
fn show_first_credentials(created: &service::CreatedAccount) {
    let rule = "=".repeat(72);
    let mut lines = vec![
        format!("Opened the first account {}.", created.opened.account_id),
        format!("Administrator: {}", created.admin_email),
    ];
    if let Some(password) = &created.generated_password {
        lines.push(format!(
            "Password (shown only now, stored only as a hash): {password}"
        ));
    }
    eprintln!("{rule}\n{}\n{rule}", lines.join("\n"));
}

fn print_peak_memory(kib: Option<u64>) {
    if let Some(kib) = kib {
        println!("peak memory: {:.1} MiB", kib as f64 / 1024.0);
    }
}

/// Resolves at Ctrl-C or SIGTERM. The handlers are installed when this is called.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let interrupt = tokio::signal::ctrl_c();
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = interrupt.await;
    })
}
