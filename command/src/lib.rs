//! The write side of Switchyard: domain types, aggregates (pure decide/evolve), the command
//! handler and the event log, and the operational state kept beside the log (sessions,
//! login throttling, idempotency keys). Nothing here knows HTTP; the only I/O is the
//! database.

// Money is integer minor units (`domain::Money`): no float arithmetic on this side at all.
#![deny(clippy::float_arithmetic, clippy::cast_precision_loss)]

pub mod access;
pub mod account;
pub mod channels;
pub mod db;
pub mod domain;
pub mod event_log;
pub mod gateways;
pub mod group;
pub mod handler;
pub mod idempotency;
pub mod installation;
pub mod key_check;
pub mod ledger;
pub mod onboarding;
pub mod password;
pub mod permissions;
pub mod roster;
pub mod secrets;
pub mod seen;
pub mod snapshot;
pub mod team;
pub mod timestamp;
pub mod totp;
pub mod user;

pub use db::{Backend, Database};
