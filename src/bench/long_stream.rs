//! `switchyard bench long-stream`: a user who has logged in very often. Their stream is built
//! straight through the event log (one `LoggedIn` per login), then the bench times what a long
//! stream makes slow: loading it cold (as a new process does), a command on it from cold, and
//! logins through HTTP with login alerts on (so the job dispatcher looks the user up too).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use switchyard_command::{
    Database,
    account::{Account, AccountCommand, GeneralInformation},
    domain::{Text, UserId},
    event_log::{EventLog, ExpectedVersion, Metadata, StreamWrite, encode},
    handler::{CommandHandler, Loaded},
    secrets::SecretKeyring,
    user::{SecondFactor, User, UserCommand, UserEdit, UserEvent},
};
use tokio::net::TcpListener;

use super::peak_rss_kib;
use crate::service::{AdminCredentials, Service, ServiceOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Logins already on the user's stream.
    #[arg(long, default_value_t = 200_000)]
    pub logins: usize,
    /// Logins through HTTP to time after the first.
    #[arg(long, default_value_t = 20)]
    pub http_logins: usize,
}

pub struct Report {
    pub stream_length: i64,
    /// Appending the logins straight to the log.
    pub build_time: Duration,
    /// A process's first load of the stream.
    pub first_load: Duration,
    /// A load by a process that has not seen the stream, after the first.
    pub cold_load: Duration,
    /// A command (a profile change) on the stream by a process that has not seen it.
    pub cold_command: Duration,
    /// The service's first login of the user, and the median of the logins after it.
    pub first_login: Duration,
    pub login_median: Duration,
    pub peak_rss_kib: Option<u64>,
}

const PASSWORD: &str = "bench password, long enough";
const ADMIN_EMAIL: &str = "admin@bench.example.com";
/// Logins appended at once while building the stream.
const BUILD_CHUNK: usize = 1_000;

/// Runs on an empty, migrated database.
pub async fn run(
    db: Database,
    options: &Options,
    keyring: SecretKeyring,
) -> anyhow::Result<Report> {
    let service_options = ServiceOptions {
        workers: None,
        ..ServiceOptions::default()
    };
    let mut service = Service::start_with(db.clone(), keyring, service_options).await?;
    let admin = AdminCredentials {
        email: ADMIN_EMAIL.into(),
        password: Some(PASSWORD.into()),
    };
    let opened = service
        .bootstrap("Bench", admin)
        .await?
        .context("bench needs an empty database")?
        .opened;
    let state = service.state.clone();
    let metadata = Metadata::system(opened.account_id);
    let stream = opened.admin_id.stream_id();

    let started = Instant::now();
    let position = append_logins(&state.log, &stream, options.logins, &metadata).await?;
    let build_time = started.elapsed();
    anyhow::ensure!(
        state
            .projections
            .wait_for(position, Duration::from_secs(600))
            .await,
        "read models did not catch up with the logins"
    );
    // Only now: with alerts on, the dispatcher looks the user up for every login.
    let alerts_on = AccountCommand::ChangeGeneralInformation(
        GeneralInformation {
            login_alerts: true,
            ..GeneralInformation::default()
        },
        None,
    );
    let executed = state
        .commands
        .execute::<Account>(&opened.account_id.stream_id(), alerts_on, &metadata)
        .await?;
    if let Some(position) = executed.position {
        state
            .projections
            .wait_for(position, Duration::from_secs(60))
            .await;
    }

    let (first_load, stream_length) = time_cold_load(&db, &stream).await?;
    let (cold_load, _) = time_cold_load(&db, &stream).await?;
    let cold_command = time_cold_command(&db, opened.admin_id, opened.account_id).await?;

    let base = format!(
        "http://{}",
        service.serve(TcpListener::bind("127.0.0.1:0").await?)?
    );
    let client = reqwest::Client::new();
    let first_login = time_login(&client, &base).await?;
    let mut logins = Vec::with_capacity(options.http_logins);
    for _ in 0..options.http_logins {
        logins.push(time_login(&client, &base).await?);
    }
    logins.sort();
    let login_median = logins.get(logins.len() / 2).copied().unwrap_or_default();
    service.shutdown().await?;
    Ok(Report {
        stream_length,
        build_time,
        first_load,
        cold_load,
        cold_command,
        first_login,
        login_median,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// Appends `count` logins to `stream`, `BUILD_CHUNK` at a time; answers the last position.
async fn append_logins(
    log: &EventLog,
    stream: &str,
    count: usize,
    metadata: &Metadata,
) -> anyhow::Result<i64> {
    let mut version = log.read_stream(stream).await?.len() as i64;
    let mut position = 0;
    let login = encode(&UserEvent::LoggedIn {
        second_factor: SecondFactor::None,
    });
    for chunk_start in (0..count).step_by(BUILD_CHUNK) {
        let chunk = BUILD_CHUNK.min(count - chunk_start);
        let events = (0..chunk)
            .map(|_| {
                let mut event = login.clone();
                event.event_id = uuid::Uuid::now_v7();
                event
            })
            .collect();
        let write = StreamWrite {
            stream_id: stream.to_owned(),
            stream_type: "user".into(),
            expected: ExpectedVersion::Exact(version),
            events,
        };
        position = log
            .append(vec![write], metadata.clone())
            .await?
            .last_position;
        version += chunk as i64;
    }
    Ok(position)
}

/// A handler that has never seen the stream, as in a new process.
async fn fresh_handler(db: &Database) -> anyhow::Result<CommandHandler> {
    Ok(CommandHandler::new(EventLog::start(db.clone()).await?))
}

async fn time_cold_load(db: &Database, stream: &str) -> anyhow::Result<(Duration, i64)> {
    let handler = fresh_handler(db).await?;
    let started = Instant::now();
    let loaded: Loaded<User> = handler
        .load::<User, std::convert::Infallible>(stream)
        .await?;
    Ok((started.elapsed(), loaded.version))
}

async fn time_cold_command(
    db: &Database,
    user: UserId,
    account: switchyard_command::domain::AccountId,
) -> anyhow::Result<Duration> {
    let handler = fresh_handler(db).await?;
    let command = UserCommand::Edit {
        account_id: account,
        edit: UserEdit {
            name: Some(Text::parse("Long stream", 1, 100)?),
            ..UserEdit::default()
        },
        seen: None,
    };
    let started = Instant::now();
    handler
        .execute::<User>(&user.stream_id(), command, &Metadata::system(account))
        .await?;
    Ok(started.elapsed())
}

/// One login through HTTP, Argon2id verification and read-your-writes included.
async fn time_login(client: &reqwest::Client, base: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"email": ADMIN_EMAIL, "password": PASSWORD}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "login: {}", response.status());
    Ok(started.elapsed())
}
