//! `switchyard bench`: speed and memory figures, each suite on an empty database.

pub mod event_log;
pub mod identity;
pub mod jobs;
mod smtp_sink;

/// Peak resident memory of this process (Linux `VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
