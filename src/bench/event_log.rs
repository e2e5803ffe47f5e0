//! `switchyard bench log`: command throughput through the real command path (load, decide,
//! group-committed append) with concurrent callers, then a full rebuild of the read models.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use switchyard_command::{
    Database,
    account::{Account, AccountCommand, CompanyInformation},
    domain::{AccountId, EmailAddress, Text},
    event_log::{EventLog, Metadata},
    handler::CommandHandler,
    onboarding::{NewAccount, open_account},
    password::PasswordHasher,
};
use switchyard_projections::replay;

use super::peak_rss_kib;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Configuration changes to run.
    #[arg(long, default_value_t = 100_000)]
    pub commands: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 16)]
    pub callers: usize,
    /// Accounts the changes are spread over (streams).
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
}

#[derive(Debug)]
pub struct Report {
    pub commands: usize,
    pub command_time: Duration,
    pub events_rebuilt: i64,
    pub rebuild_time: Duration,
    pub peak_rss_kib: Option<u64>,
}

impl Report {
    pub fn commands_per_second(&self) -> f64 {
        self.commands as f64 / self.command_time.as_secs_f64()
    }

    pub fn rebuild_events_per_second(&self) -> f64 {
        self.events_rebuilt as f64 / self.rebuild_time.as_secs_f64()
    }
}

/// Runs on an empty, migrated database.
pub async fn run(db: Database, options: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.accounts > 0 && options.callers > 0,
        "need accounts and callers"
    );
    let log = EventLog::start(db.clone()).await?;
    anyhow::ensure!(
        log.head_position().await? == 0,
        "bench needs an empty database"
    );
    let handler = CommandHandler::new(log.clone());
    let accounts = open_accounts(&handler, options.accounts).await?;

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let callers: Vec<_> = (0..options.callers)
        .map(|_| {
            let (handler, next, accounts) = (handler.clone(), next.clone(), accounts.clone());
            let total = options.commands;
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return anyhow::Ok(());
                    }
                    let account = accounts[n % accounts.len()];
                    let company = CompanyInformation::initial(
                        Text::parse(&format!("Bench {n}"), 1, 100).expect("valid name"),
                        EmailAddress::parse("bench@example.com").expect("valid email"),
                    );
                    handler
                        .execute::<Account>(
                            &account.stream_id(),
                            AccountCommand::ChangeCompanyInformation(company, None),
                            &Metadata::system(account),
                        )
                        .await
                        .context("bench command")?;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await??;
    }
    let command_time = started.elapsed();

    let started = Instant::now();
    replay::rebuild_all(&db, |_| {}).await?;
    let rebuild_time = started.elapsed();
    Ok(Report {
        commands: options.commands,
        command_time,
        events_rebuilt: log.head_position().await?,
        rebuild_time,
        peak_rss_kib: peak_rss_kib(),
    })
}

async fn open_accounts(handler: &CommandHandler, count: usize) -> anyhow::Result<Vec<AccountId>> {
    // One real hash shared by every bench administrator: hashing is not what is measured.
    let hash = PasswordHasher::new(1).hash("bench-password".into()).await;
    let mut accounts = Vec::with_capacity(count);
    for n in 0..count {
        let opened = open_account(
            handler,
            NewAccount {
                name: Text::parse(&format!("Bench account {n}"), 1, 100).expect("valid name"),
                admin_name: Text::parse("Bench", 1, 100).expect("valid name"),
                admin_email: EmailAddress::parse(&format!("bench{n}@example.com"))
                    .expect("valid email"),
                admin_password_hash: hash.clone(),
            },
        )
        .await?;
        accounts.push(opened.account_id);
    }
    Ok(accounts)
}
