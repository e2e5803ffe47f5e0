//! Logs written to a file or a pipe: no terminal colour codes, and one JSON object per line
//! with `SWITCHYARD_LOG_FORMAT=json`.

use std::process::Command;

use serde_json::Value;

/// The log lines of `switchyard migrate` on a fresh database, stdout piped.
fn migrate_logs(format: Option<&str>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .arg("migrate")
        .env("SWITCHYARD_DATA_DIR", dir.path())
        .env_remove("SWITCHYARD_DATABASE_URL")
        // sqlx logs every statement at `debug`: plenty of lines.
        .env("RUST_LOG", "debug");
    match format {
        Some(format) => command.env("SWITCHYARD_LOG_FORMAT", format),
        None => command.env_remove("SWITCHYARD_LOG_FORMAT"),
    };
    let output = command.output().expect("run switchyard migrate");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let logs: Vec<String> = stdout
        .lines()
        .filter(|line| !line.starts_with("Database is up to date"))
        .map(str::to_owned)
        .collect();
    assert!(logs.len() > 3, "few log lines to judge by: {stdout}");
    logs
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    for line in migrate_logs(None) {
        assert!(!line.contains('\u{1b}'), "{line:?}");
        assert!(line.contains("DEBUG"), "{line:?}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    for line in migrate_logs(Some("json")) {
        let object: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(object["level"], "DEBUG", "{line}");
        assert!(object["fields"].is_object(), "{line}");
    }
}

#[test]
fn an_unknown_log_format_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("migrate")
        .env("SWITCHYARD_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("SWITCHYARD_LOG_FORMAT") || stderr.contains("log-format"),
        "{stderr}"
    );
}
