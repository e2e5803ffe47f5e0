//! `switchyard bench`: speed and memory figures, each suite on an empty database.

pub mod event_log;
pub mod hot_stream;
pub mod identity;
pub mod jobs;
pub mod ledger;
pub mod long_stream;
pub mod race;
mod smtp_sink;

/// CPU time (user and system) this process has used so far (Linux `/proc/self/stat`).
pub fn cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every architecture.
    Some(std::time::Duration::from_millis(ticks * 10))
}

/// Peak resident memory of this process (Linux `VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
