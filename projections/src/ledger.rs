//! The ledger read model: each account's entries (`ledger_entries`, one row per entry, never
//! changed) and its current balances (`account_balances`). Every value it writes is in its
//! event — an entry carries the balance after it — so it plans without reading the
//! database: a rebuild and the live projection run the same planner.

use std::collections::HashMap;

use futures::future::BoxFuture;
use sqlx::AnyConnection;
use switchyard_command::{
    domain::{AccountId, Money},
    event_log::{EventCodec, RecordedEvent, decode},
    ledger::{Entry, EntryKind, LedgerEvent},
};

use crate::{
    Planner, Projection, ProjectionError,
    bulk::{Param, Rows},
    write_planned,
};

pub struct LedgerProjection;

impl Projection for LedgerProjection {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["ledger_entries", "account_balances"]
    }

    fn apply<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        events: &'c [RecordedEvent],
    ) -> BoxFuture<'c, Result<(), ProjectionError>> {
        write_planned(LedgerPlanner::default(), conn, events)
    }

    fn planner(&self) -> Option<Box<dyn Planner>> {
        Some(Box::<LedgerPlanner>::default())
    }
}

/// What the batches folded so far changed in each account's balances. Each column is
/// upserted on its own, so a batch that only sets a limit leaves the balance as stored.
#[derive(Default)]
struct LedgerPlanner {
    balances: HashMap<AccountId, Money>,
    limits: HashMap<AccountId, Money>,
    thresholds: HashMap<AccountId, (Money, Option<Money>)>,
}

impl Planner for LedgerPlanner {
    fn plan(&mut self, events: &[RecordedEvent]) -> Result<Vec<Rows>, ProjectionError> {
        let mut entries = Vec::new();
        for event in events
            .iter()
            .filter(|e| e.stream_type == LedgerEvent::STREAM_TYPE)
        {
            let account = event.metadata.account_id;
            match decode::<LedgerEvent>(event).map_err(ProjectionError::decode(event))? {
                LedgerEvent::EntryRecorded(entry) => {
                    self.balances.insert(account, entry.balance_after);
                    entries.push(entry_row(event, entry));
                }
                LedgerEvent::DebitLimitSet { debit_limit } => {
                    self.limits.insert(account, debit_limit);
                }
                LedgerEvent::LowBalanceThresholdSet { threshold } => {
                    // A threshold turned off still names the ledger's currency for a new row.
                    let currency_of = threshold
                        .or_else(|| self.balances.get(&account).copied())
                        .or_else(|| self.limits.get(&account).copied());
                    if let Some(currency_of) = currency_of {
                        self.thresholds.insert(account, (currency_of, threshold));
                    }
                }
                LedgerEvent::BalanceFellBelowThreshold { .. }
                | LedgerEvent::BalanceRecovered { .. } => {}
            }
        }
        Ok(vec![Rows {
            insert: "INSERT INTO ledger_entries (account_id, entry, position, at, kind, \
                     amount_minor, balance_after_minor, currency, description, payment_id, \
                     package_id, period)",
            on_conflict: "ON CONFLICT (account_id, entry) DO NOTHING",
            rows: entries,
        }])
    }

    fn event_tables(&self) -> &'static [&'static str] {
        &["ledger_entries"]
    }

    fn take_latest(&mut self) -> Vec<Rows> {
        let row = |account: AccountId, money: &Money, value: Param| {
            vec![
                account.to_string().into(),
                money.currency().as_str().into(),
                value,
            ]
        };
        let balances = self
            .balances
            .drain()
            .map(|(account, balance)| row(account, &balance, balance.minor_units().into()))
            .collect();
        let limits = self
            .limits
            .drain()
            .map(|(account, limit)| row(account, &limit, limit.minor_units().into()))
            .collect();
        let thresholds = self
            .thresholds
            .drain()
            .map(|(account, (currency_of, threshold))| {
                let minor = threshold.map(|t| t.minor_units());
                row(account, &currency_of, minor.into())
            })
            .collect();
        vec![
            Rows {
                insert: "INSERT INTO account_balances (account_id, currency, balance_minor)",
                on_conflict: "ON CONFLICT (account_id) DO UPDATE \
                              SET balance_minor = excluded.balance_minor",
                rows: balances,
            },
            Rows {
                insert: "INSERT INTO account_balances (account_id, currency, debit_limit_minor)",
                on_conflict: "ON CONFLICT (account_id) DO UPDATE \
                              SET debit_limit_minor = excluded.debit_limit_minor",
                rows: limits,
            },
            Rows {
                insert: "INSERT INTO account_balances (account_id, currency, threshold_minor)",
                on_conflict: "ON CONFLICT (account_id) DO UPDATE \
                              SET threshold_minor = excluded.threshold_minor",
                rows: thresholds,
            },
        ]
    }
}

fn entry_row(event: &RecordedEvent, entry: Entry) -> Vec<Param> {
    let kind_name = entry.kind.as_str();
    let (payment_id, package_id, period) = match entry.kind {
        EntryKind::Payment { payment_id } | EntryKind::Refund { payment_id } => {
            (Some(payment_id), None, None)
        }
        EntryKind::PackageCharge { package_id, period } => (None, Some(package_id), Some(period)),
        EntryKind::UsageCharge { period } => (None, None, Some(period)),
        EntryKind::Adjustment => (None, None, None),
    };
    vec![
        event.metadata.account_id.to_string().into(),
        i64::try_from(entry.entry).unwrap_or(i64::MAX).into(),
        event.global_position.into(),
        entry.at.into(),
        kind_name.into(),
        entry.amount.minor_units().into(),
        entry.balance_after.minor_units().into(),
        entry.amount.currency().as_str().into(),
        entry.description.into(),
        payment_id.into(),
        package_id.into(),
        period.into(),
    ]
}
