//! Who may come in: login sessions and login throttling. Operational state beside the event
//! log, not events: failed logins must not grow the log, and a session token is a secret of
//! the moment. Replay leaves these tables alone.

pub mod sessions;
pub mod throttle;
