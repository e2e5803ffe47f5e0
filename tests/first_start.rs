//! The first start of the embedded default, as a new user runs it: the administrator's
//! generated password is shown once, on stderr and apart from the log lines, and the local
//! files that hold secrets are readable by their owner only.

mod common;

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::login;
use reqwest::{Client, StatusCode};

#[tokio::test]
async fn first_start_shows_the_password_once_apart_from_the_logs_and_keeps_files_private() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("serve")
        .env_remove("SWITCHYARD_DATABASE_URL")
        .env_remove("SWITCHYARD_ADMIN_PASSWORD")
        .env_remove("SWITCHYARD_SECRETS_KEYS")
        .env("SWITCHYARD_DATA_DIR", data.path())
        .env("SWITCHYARD_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While it runs: SQLite removes its WAL and shared-memory files when it closes.
    #[cfg(unix)]
    for file in [
        "switchyard.db",
        "switchyard.db-wal",
        "switchyard.db-shm",
        "secrets.key",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let path = data.path().join(file);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} is {:o}", mode & 0o777);
    }

    // SIGTERM: a graceful stop closes both streams.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");

    let password = stderr
        .lines()
        .find_map(|line| line.strip_prefix("Password (shown only now, stored only as a hash): "))
        .unwrap_or_else(|| panic!("no password on stderr:\n{stderr}"))
        .to_owned();
    let framed = stderr.contains(&format!("{}\nOpened the first account", "=".repeat(72)));
    assert!(framed, "{stderr}");
    assert_eq!(stderr.matches(password.as_str()).count(), 1, "{stderr}");
    assert!(
        stdout.contains("serving"),
        "the log lines go to stdout:\n{stdout}"
    );
    assert!(
        !stdout.contains(&password),
        "the password is in the logs:\n{stdout}"
    );

    // The password works, on the database the first start left.
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("serve")
        .env("SWITCHYARD_DATA_DIR", data.path())
        .env("SWITCHYARD_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    login(&client, &base, "admin@switchyard.local", &password).await;
    let mut again = String::new();
    child.kill().unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut again)
        .unwrap();
    child.wait().unwrap();
    assert!(!again.contains("Password"), "shown only once:\n{again}");
}
