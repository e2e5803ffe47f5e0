//! The write side of Switchyard: domain types, aggregates (pure decide/evolve), the command
//! handler and the event log. Nothing here knows HTTP; the only I/O is the database behind
//! [`event_log::EventLog`].

pub mod account;
pub mod channels;
pub mod db;
pub mod domain;
pub mod event_log;
pub mod group;
pub mod handler;
pub mod onboarding;
pub mod password;
pub mod permissions;
pub mod roster;
pub mod secrets;
pub mod seen;
pub mod team;
pub mod totp;
pub mod user;

pub use db::{Backend, Database};
