//! The `switchyard` binary's library: wiring the crates into a running service, and the
//! operations the CLI offers (open an account, replay, benchmark).

pub mod bench;
pub mod service;
pub mod settings;
