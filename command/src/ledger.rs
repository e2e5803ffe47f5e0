//! The `Ledger` aggregate: an account's prepaid balance, one stream per account. Every credit
//! and debit is an entry carrying the running balance after it, so the stream alone tells the
//! balance at any point, and the read model's `balance_after` column chains.
//!
//! The ledger records; it does not deduplicate. What a credit or debit is *for* (a payment,
//! a package period, an hour of usage, an adjustment under an `Idempotency-Key`) is guarded
//! once by its own stream, appended atomically with the ledger entry: so the ledger keeps
//! no ever-growing set of what it has seen.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    domain::{AccountId, CurrencyCode, Money, MoneyError},
    event_log::EventCodec,
    handler::{Aggregate, Inconsistent},
    snapshot::SnapshotCodec,
};

pub fn ledger_stream(account_id: AccountId) -> String {
    format!("ledger-{account_id}")
}

/// Why money moved, and what it refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    /// A payment the provider confirmed: a credit.
    Payment { payment_id: String },
    /// Money the provider returned to the payer: a debit.
    Refund { payment_id: String },
    /// A package's charge for one period: a debit.
    PackageCharge { package_id: String, period: String },
    /// Metered usage of one hour: a debit.
    UsageCharge { period: String },
    /// The operator's correction, either way, with its reason in the description.
    Adjustment,
}

impl EntryKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Payment { .. } => "payment",
            Self::Refund { .. } => "refund",
            Self::PackageCharge { .. } => "package_charge",
            Self::UsageCharge { .. } => "usage_charge",
            Self::Adjustment => "adjustment",
        }
    }
}

/// How far a debit may take the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdraft {
    /// No further than the debit limit below zero (a renewal the account cannot pay).
    WithinLimit,
    /// As far as it takes: the money is already gone (usage, a refund) or the operator
    /// says so (an adjustment).
    Unbounded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum LedgerEvent {
    /// `amount` is signed: positive credits, negative debits.
    EntryRecorded(Entry),
    /// How far below zero the balance may go.
    DebitLimitSet {
        debit_limit: Money,
    },
    LowBalanceThresholdSet {
        threshold: Option<Money>,
    },
    /// `available` fell below the threshold: the account's administrators are emailed,
    /// once per crossing.
    BalanceFellBelowThreshold {
        available: Money,
        threshold: Money,
    },
    /// `available` is at or above the threshold again: the next fall alerts again.
    BalanceRecovered {
        available: Money,
    },
}

/// One credit or debit, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The entry's number in this ledger, from 1.
    pub entry: u64,
    /// When the money moved, as the command said (a renewal's period start, a payment's
    /// confirmation): entries are dated by their business time, not by their append.
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EntryKind,
    /// Signed: positive credits, negative debits.
    pub amount: Money,
    pub balance_after: Money,
    pub description: String,
}

impl EventCodec for LedgerEvent {
    const STREAM_TYPE: &'static str = "ledger";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerCommand {
    Record {
        at: DateTime<Utc>,
        kind: EntryKind,
        /// Signed: positive credits, negative debits.
        amount: Money,
        description: String,
        overdraft: Overdraft,
    },
    SetDebitLimit(Money),
    SetLowBalanceThreshold(Option<Money>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("the ledger is kept in {}, not {}", .ledger.as_str(), .given.as_str())]
    WrongCurrency {
        ledger: CurrencyCode,
        given: CurrencyCode,
    },
    #[error("an entry of zero changes nothing")]
    ZeroAmount,
    #[error("a debit limit cannot be negative")]
    NegativeDebitLimit,
    #[error("the balance would fall below the debit limit: {available} available")]
    InsufficientFunds { available: Money },
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// A ledger's state. Its currency is set by its first entry or limit (the account's currency
/// then); until then the ledger is empty and takes any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Balance, debit limit and threshold, all in the ledger's currency.
    money: Option<Balances>,
    entries: u64,
    below_threshold: bool,
    /// The newest entry, for the answer to the command that recorded it.
    pub last_entry: Option<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Balances {
    balance: Money,
    debit_limit: Money,
    threshold: Option<Money>,
}

impl Balances {
    fn empty(currency: CurrencyCode) -> Self {
        Self {
            balance: Money::zero(currency),
            debit_limit: Money::zero(currency),
            threshold: None,
        }
    }

    /// What may still be spent: the balance plus the debit limit.
    fn available(&self) -> Result<Money, MoneyError> {
        self.balance.checked_add(self.debit_limit)
    }
}

impl Ledger {
    /// The balances in `currency`: the ledger's own, or empty ones for a new ledger; another
    /// currency is refused.
    fn balances_in(&self, currency: CurrencyCode) -> Result<Balances, LedgerError> {
        match self.money {
            None => Ok(Balances::empty(currency)),
            Some(money) if money.balance.currency() == currency => Ok(money),
            Some(money) => Err(LedgerError::WrongCurrency {
                ledger: money.balance.currency(),
                given: currency,
            }),
        }
    }

    pub fn balance(&self) -> Option<Money> {
        self.money.map(|m| m.balance)
    }

    /// The currency the ledger is kept in, once its first entry or limit set it.
    pub fn currency(&self) -> Option<CurrencyCode> {
        self.money.map(|m| m.balance.currency())
    }

    /// The crossing events, if `after` moves `available` across the threshold.
    fn crossing(&self, after: &Balances) -> Result<Option<LedgerEvent>, LedgerError> {
        let Some(threshold) = after.threshold else {
            return Ok(None);
        };
        let available = after.available()?;
        let below = available.minor_units() < threshold.minor_units();
        Ok(match (self.below_threshold, below) {
            (false, true) => Some(LedgerEvent::BalanceFellBelowThreshold {
                available,
                threshold,
            }),
            (true, false) => Some(LedgerEvent::BalanceRecovered { available }),
            _ => None,
        })
    }

    fn then_crossing(
        &self,
        event: LedgerEvent,
        after: &Balances,
    ) -> Result<Vec<LedgerEvent>, LedgerError> {
        Ok(std::iter::once(event)
            .chain(self.crossing(after)?)
            .collect())
    }
}

impl Aggregate for Ledger {
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type Error = LedgerError;

    /// A busy account's ledger takes an entry for every payment, renewal and hour of usage.
    const SNAPSHOTS: Option<SnapshotCodec<Self>> = Some(SnapshotCodec::serde(1));

    fn decide(&self, command: LedgerCommand) -> Result<Vec<LedgerEvent>, LedgerError> {
        match command {
            LedgerCommand::Record {
                at,
                kind,
                amount,
                description,
                overdraft,
            } => {
                if amount.minor_units() == 0 {
                    return Err(LedgerError::ZeroAmount);
                }
                let mut after = self.balances_in(amount.currency())?;
                after.balance = after.balance.checked_add(amount)?;
                let within_limit = after.available()?.minor_units() >= 0;
                if amount.is_negative() && overdraft == Overdraft::WithinLimit && !within_limit {
                    let before = self.balances_in(amount.currency())?;
                    return Err(LedgerError::InsufficientFunds {
                        available: before.available()?,
                    });
                }
                let entry = LedgerEvent::EntryRecorded(Entry {
                    entry: self.entries + 1,
                    at,
                    kind,
                    amount,
                    balance_after: after.balance,
                    description,
                });
                self.then_crossing(entry, &after)
            }
            LedgerCommand::SetDebitLimit(debit_limit) => {
                if debit_limit.is_negative() {
                    return Err(LedgerError::NegativeDebitLimit);
                }
                let mut after = self.balances_in(debit_limit.currency())?;
                if self.money.is_some() && after.debit_limit == debit_limit {
                    return Ok(Vec::new());
                }
                after.debit_limit = debit_limit;
                self.then_crossing(LedgerEvent::DebitLimitSet { debit_limit }, &after)
            }
            LedgerCommand::SetLowBalanceThreshold(threshold) => {
                let mut after = match threshold {
                    Some(threshold) => self.balances_in(threshold.currency())?,
                    None => match self.money {
                        Some(money) => money,
                        None => return Ok(Vec::new()),
                    },
                };
                if after.threshold == threshold {
                    return Ok(Vec::new());
                }
                after.threshold = threshold;
                let set = LedgerEvent::LowBalanceThresholdSet { threshold };
                match (threshold, self.below_threshold) {
                    // No threshold, nothing to fall below: the next one starts afresh.
                    (None, true) => Ok(vec![
                        set,
                        LedgerEvent::BalanceRecovered {
                            available: after.available()?,
                        },
                    ]),
                    _ => self.then_crossing(set, &after),
                }
            }
        }
    }

    fn evolve(&mut self, event: LedgerEvent, _version: i64) -> Result<(), Inconsistent> {
        let currency_of = |money: &Money| money.currency();
        match event {
            LedgerEvent::EntryRecorded(entry) => {
                let money = self
                    .money
                    .get_or_insert_with(|| Balances::empty(currency_of(&entry.balance_after)));
                money.balance = entry.balance_after;
                self.entries = entry.entry;
                self.last_entry = Some(entry);
            }
            LedgerEvent::DebitLimitSet { debit_limit } => {
                let money = self
                    .money
                    .get_or_insert_with(|| Balances::empty(currency_of(&debit_limit)));
                money.debit_limit = debit_limit;
            }
            LedgerEvent::LowBalanceThresholdSet { threshold } => {
                if let Some(threshold) = threshold {
                    self.money
                        .get_or_insert_with(|| Balances::empty(currency_of(&threshold)));
                }
                if let Some(money) = &mut self.money {
                    money.threshold = threshold;
                }
            }
            LedgerEvent::BalanceFellBelowThreshold { .. } => self.below_threshold = true,
            LedgerEvent::BalanceRecovered { .. } => self.below_threshold = false,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::testing::given;

    fn usd(amount: &str) -> Money {
        Money::parse(amount, CurrencyCode::parse("USD").unwrap()).unwrap()
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn record(amount: &str, overdraft: Overdraft) -> LedgerCommand {
        LedgerCommand::Record {
            at: at(),
            kind: EntryKind::Adjustment,
            amount: usd(amount),
            description: "test".into(),
            overdraft,
        }
    }

    fn recorded(entry: u64, amount: &str, balance_after: &str) -> LedgerEvent {
        LedgerEvent::EntryRecorded(Entry {
            entry,
            at: at(),
            kind: EntryKind::Adjustment,
            amount: usd(amount),
            balance_after: usd(balance_after),
            description: "test".into(),
        })
    }

    #[test]
    fn entries_carry_the_running_balance() {
        given::<Ledger>(vec![])
            .when(record("10.00", Overdraft::Unbounded))
            .then(vec![recorded(1, "10.00", "10.00")]);
        given::<Ledger>(vec![recorded(1, "10.00", "10.00")])
            .when(record("-2.50", Overdraft::WithinLimit))
            .then(vec![recorded(2, "-2.50", "7.50")]);
    }

    #[test]
    fn a_ledger_keeps_one_currency() {
        let yen = Money::parse("100", CurrencyCode::parse("JPY").unwrap()).unwrap();
        given::<Ledger>(vec![recorded(1, "10.00", "10.00")])
            .when(LedgerCommand::Record {
                at: at(),
                kind: EntryKind::Adjustment,
                amount: yen,
                description: "test".into(),
                overdraft: Overdraft::Unbounded,
            })
            .then_error(LedgerError::WrongCurrency {
                ledger: CurrencyCode::parse("USD").unwrap(),
                given: CurrencyCode::parse("JPY").unwrap(),
            });
        given::<Ledger>(vec![])
            .when(record("0", Overdraft::Unbounded))
            .then_error(LedgerError::ZeroAmount);
    }

    #[test]
    fn a_bounded_debit_stops_at_the_debit_limit() {
        let history = vec![
            LedgerEvent::DebitLimitSet {
                debit_limit: usd("5.00"),
            },
            recorded(1, "10.00", "10.00"),
        ];
        given::<Ledger>(history.clone())
            .when(record("-15.00", Overdraft::WithinLimit))
            .then(vec![recorded(2, "-15.00", "-5.00")]);
        given::<Ledger>(history.clone())
            .when(record("-15.01", Overdraft::WithinLimit))
            .then_error(LedgerError::InsufficientFunds {
                available: usd("15.00"),
            });
        given::<Ledger>(history)
            .when(record("-15.01", Overdraft::Unbounded))
            .then(vec![recorded(2, "-15.01", "-5.01")]);
    }

    #[test]
    fn falling_below_the_threshold_alerts_once_per_crossing() {
        let threshold = LedgerEvent::LowBalanceThresholdSet {
            threshold: Some(usd("5.00")),
        };
        let funded = vec![recorded(1, "10.00", "10.00"), threshold];
        let fell = LedgerEvent::BalanceFellBelowThreshold {
            available: usd("4.00"),
            threshold: usd("5.00"),
        };
        given::<Ledger>(funded.clone())
            .when(record("-6.00", Overdraft::WithinLimit))
            .then(vec![recorded(2, "-6.00", "4.00"), fell.clone()]);
        let below: Vec<_> = funded
            .into_iter()
            .chain([recorded(2, "-6.00", "4.00"), fell])
            .collect();
        given::<Ledger>(below.clone())
            .when(record("-1.00", Overdraft::WithinLimit))
            .then(vec![recorded(3, "-1.00", "3.00")]);
        given::<Ledger>(below)
            .when(record("1.00", Overdraft::WithinLimit))
            .then(vec![
                recorded(3, "1.00", "5.00"),
                LedgerEvent::BalanceRecovered {
                    available: usd("5.00"),
                },
            ]);
    }

    #[test]
    fn a_threshold_above_what_is_available_alerts_at_once() {
        given::<Ledger>(vec![recorded(1, "3.00", "3.00")])
            .when(LedgerCommand::SetLowBalanceThreshold(Some(usd("5.00"))))
            .then(vec![
                LedgerEvent::LowBalanceThresholdSet {
                    threshold: Some(usd("5.00")),
                },
                LedgerEvent::BalanceFellBelowThreshold {
                    available: usd("3.00"),
                    threshold: usd("5.00"),
                },
            ]);
    }

    #[test]
    fn limits_are_not_negative_and_unchanged_ones_record_nothing() {
        let limit = LedgerEvent::DebitLimitSet {
            debit_limit: usd("5.00"),
        };
        given::<Ledger>(vec![])
            .when(LedgerCommand::SetDebitLimit(usd("-1.00")))
            .then_error(LedgerError::NegativeDebitLimit);
        given::<Ledger>(vec![limit.clone()])
            .when(LedgerCommand::SetDebitLimit(usd("5.00")))
            .then(vec![]);
        given::<Ledger>(vec![])
            .when(LedgerCommand::SetDebitLimit(usd("5.00")))
            .then(vec![limit]);
        given::<Ledger>(vec![])
            .when(LedgerCommand::SetLowBalanceThreshold(None))
            .then(vec![]);
    }

    #[test]
    fn an_entry_is_stored_flat_with_its_kind_and_reads_back() {
        let event = LedgerEvent::EntryRecorded(Entry {
            entry: 7,
            at: at(),
            kind: EntryKind::PackageCharge {
                package_id: "p1".into(),
                period: "2026-12-01".into(),
            },
            amount: usd("-9.99"),
            balance_after: usd("0.01"),
            description: "Gold plan".into(),
        });
        let stored = serde_json::to_value(&event).unwrap();
        assert_eq!(stored["type"], "EntryRecorded");
        assert_eq!(stored["data"]["kind"], "package_charge");
        assert_eq!(stored["data"]["package_id"], "p1");
        assert_eq!(stored["data"]["amount"]["minor"], -999);
        assert_eq!(
            serde_json::from_value::<LedgerEvent>(stored).unwrap(),
            event
        );
    }
}
