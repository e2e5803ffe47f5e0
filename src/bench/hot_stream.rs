//! `switchyard bench hot-stream`: concurrent unconditional writers on one stream (the
//! account's company section, no `If-Match`: last writer wins), first through the command
//! handler alone, then through HTTP `PUT /v1/account/company` against the real service on
//! a local port. Every answer is counted by status: a conflict means a command raced instead
//! of queueing.

use anyhow::Context;
use serde_json::json;
use switchyard_command::{
    Database,
    account::{Account, AccountCommand, CompanyInformation},
    domain::{AccountId, EmailAddress, Text},
    event_log::Metadata,
    handler::{CommandError, CommandHandler},
    secrets::SecretKeyring,
};
use tokio::net::TcpListener;

use super::{
    peak_rss_kib,
    race::{Run, race},
};
use crate::service::{AdminCredentials, Service, ServiceOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Commands per run (one run through the handler, one through HTTP).
    #[arg(long, default_value_t = 20_000)]
    pub commands: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
}

pub struct Report {
    pub handler: Run,
    pub http: Run,
    pub peak_rss_kib: Option<u64>,
}

const PASSWORD: &str = "bench password, long enough";
const ADMIN_EMAIL: &str = "admin@bench.example.com";

/// Runs on an empty, migrated database.
pub async fn run(
    db: Database,
    options: &Options,
    keyring: SecretKeyring,
) -> anyhow::Result<Report> {
    anyhow::ensure!(options.writers > 0, "need writers");
    let service_options = ServiceOptions {
        workers: None,
        ..ServiceOptions::default()
    };
    let mut service = Service::start_with(db, keyring, service_options).await?;
    let admin = AdminCredentials {
        email: ADMIN_EMAIL.into(),
        password: Some(PASSWORD.into()),
    };
    let account = service
        .bootstrap("Bench", admin)
        .await?
        .context("bench needs an empty database")?
        .opened
        .account_id;
    let base = format!(
        "http://{}",
        service.serve(TcpListener::bind("127.0.0.1:0").await?)?
    );
    let handler = through_handler(&service.state.commands, account, options).await?;
    let http = through_http(&base, options).await?;
    service.shutdown().await?;
    Ok(Report {
        handler,
        http,
        peak_rss_kib: peak_rss_kib(),
    })
}

fn company(n: usize) -> CompanyInformation {
    CompanyInformation::initial(
        Text::parse(&format!("Bench {n}"), 1, 100).expect("valid name"),
        EmailAddress::parse("bench@example.com").expect("valid email"),
    )
}

async fn through_handler(
    handler: &CommandHandler,
    account: AccountId,
    options: &Options,
) -> anyhow::Result<Run> {
    let handler = handler.clone();
    race(options.commands, options.writers, move |n| {
        let handler = handler.clone();
        async move {
            let command = AccountCommand::ChangeCompanyInformation(company(n), None);
            let outcome = handler
                .execute::<Account>(&account.stream_id(), command, &Metadata::system(account))
                .await;
            Ok(match outcome {
                Ok(_) => "ok".to_owned(),
                Err(CommandError::TooMuchContention(_)) => "conflict".to_owned(),
                Err(other) => return Err(other).context("bench command"),
            })
        }
    })
    .await
}

async fn through_http(base: &str, options: &Options) -> anyhow::Result<Run> {
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"email": ADMIN_EMAIL, "password": PASSWORD}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 201, "login: {}", response.status());
    let token = response.json::<serde_json::Value>().await?["token"]
        .as_str()
        .context("token")?
        .to_owned();
    let url = format!("{base}/v1/account/company");
    race(options.commands, options.writers, move |n| {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        async move {
            let body = json!({"name": format!("Bench {n}"), "email": "bench@example.com"});
            let response = client
                .put(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            Ok(match response.status().as_u16() {
                200 => "ok".to_owned(),
                409 => "conflict".to_owned(),
                other => other.to_string(),
            })
        }
    })
    .await
}
