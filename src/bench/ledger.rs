//! `switchyard bench ledger`: ledger entries (credits and debits) through the command
//! handler by concurrent writers, first all to one account's ledger (the hottest stream:
//! payments, renewals and usage all write it), then spread over many accounts; then how
//! long the ledger projection takes to show them all. The one account's balance must end
//! at exactly the sum of its entries.

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::Utc;
use switchyard_command::{
    Database,
    domain::{AccountId, CurrencyCode, Money},
    event_log::Metadata,
    handler::{CommandError, CommandHandler},
    ledger::{EntryKind, Ledger, LedgerCommand, Overdraft, ledger_stream},
    secrets::SecretKeyring,
};

use super::{
    peak_rss_kib,
    race::{Run, race},
};
use crate::service::{Service, ServiceOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Entries per run (one run to one account, one across `--accounts`).
    #[arg(long, default_value_t = 20_000)]
    pub entries: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Accounts the second run spreads its entries over.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
}

pub struct Report {
    pub one_account: Run,
    pub many_accounts: Run,
    /// From the end of the second run until the ledger projection showed every entry.
    pub projection_catch_up: Duration,
    pub peak_rss_kib: Option<u64>,
}

/// Runs on an empty, migrated database.
pub async fn run(
    db: Database,
    options: &Options,
    keyring: SecretKeyring,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        options.writers > 0 && options.accounts > 0,
        "need writers and accounts"
    );
    let service_options = ServiceOptions {
        workers: None,
        ..ServiceOptions::default()
    };
    let service = Service::start_with(db.clone(), keyring, service_options).await?;
    let commands = &service.state.commands;

    let hot = AccountId::new();
    let one_account = record(commands, options, vec![hot]).await?;
    let balance = commands
        .load::<Ledger, Infallible>(&ledger_stream(hot))
        .await?
        .state
        .balance()
        .context("the ledger has entries")?;
    anyhow::ensure!(
        balance == expected_balance(options.entries)?,
        "the balance {} is not the sum of its entries",
        balance.decimal_string()
    );

    let accounts = (0..options.accounts).map(|_| AccountId::new()).collect();
    let many_accounts = record(commands, options, accounts).await?;

    let started = Instant::now();
    let total = i64::try_from(2 * options.entries)?;
    loop {
        let shown: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries")
            .fetch_one(&db.pool)
            .await?;
        if shown >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let projection_catch_up = started.elapsed();
    service.shutdown().await?;
    Ok(Report {
        one_account,
        many_accounts,
        projection_catch_up,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// Entry `n`: even ones credit 2.00, odd ones debit 1.00 (US dollars).
fn amount(n: usize) -> anyhow::Result<Money> {
    let amount = if n.is_multiple_of(2) { "2.00" } else { "-1.00" };
    Ok(Money::parse(amount, CurrencyCode::DEFAULT)?)
}

fn expected_balance(entries: usize) -> anyhow::Result<Money> {
    let credits = i64::try_from(entries.div_ceil(2))?;
    let debits = i64::try_from(entries / 2)?;
    Ok(Money::from_minor(
        200 * credits - 100 * debits,
        CurrencyCode::DEFAULT,
    ))
}

/// `options.entries` entries by `options.writers` writers, entry `n` to account
/// `n % accounts.len()`.
async fn record(
    commands: &CommandHandler,
    options: &Options,
    accounts: Vec<AccountId>,
) -> anyhow::Result<Run> {
    let commands = commands.clone();
    race(options.entries, options.writers, move |n| {
        let (commands, account) = (commands.clone(), accounts[n % accounts.len()]);
        async move {
            let command = LedgerCommand::Record {
                at: Utc::now(),
                kind: EntryKind::Adjustment,
                amount: amount(n)?,
                description: format!("bench entry {n}"),
                overdraft: Overdraft::Unbounded,
            };
            let outcome = commands
                .execute::<Ledger>(&ledger_stream(account), command, &Metadata::system(account))
                .await;
            Ok(match outcome {
                Ok(_) => "ok".to_owned(),
                Err(CommandError::TooMuchContention(_)) => "conflict".to_owned(),
                Err(other) => return Err(other).context("bench entry"),
            })
        }
    })
    .await
}
