//! The optimistic-concurrency guard behind `If-Match`: a change decided on an old version of
//! something is refused instead of silently overwriting what changed since.

/// The version the client last saw (its `If-Match`), or `None` to overwrite whatever is there.
pub type SeenVersion = Option<i64>;

/// The client saw `seen`; the thing is at `current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale {
    pub seen: i64,
    pub current: i64,
}

/// Refuses when the client saw another version than `current`.
pub fn check_seen(seen: SeenVersion, current: i64) -> Result<(), Stale> {
    match seen {
        Some(seen) if seen != current => Err(Stale { seen, current }),
        _ => Ok(()),
    }
}
