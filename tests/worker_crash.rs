//! A `switchyard worker` process killed (SIGKILL) in the middle of a batch of test emails:
//! after a new worker process starts, every job completes, and no email whose success was
//! recorded is sent again.
//!
//! The service runs in the test without workers; the workers run in the real binary, on the
//! same database and secrets key. The SMTP server takes a while to answer each message, so
//! that the kill lands while emails are in flight.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use common::{
    Backend, TestApp,
    smtp_server::{ServerOptions, SmtpServer},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard::service::ServiceOptions;
use switchyard_command::{Database, secrets::SecretKeyring};

on_both_backends!(a_killed_worker_strands_no_job_and_resends_no_recorded_email);

/// Test emails in the batch, each to its own recipient.
const EMAILS: usize = 20;
/// Jobs the worker process runs at once (`--worker-concurrency`).
const CONCURRENCY: usize = 4;
/// How long the SMTP server takes to answer the end of each message.
const DATA_DELAY: Duration = Duration::from_millis(250);
/// Emails whose success is recorded before the worker is killed, at least.
const RECORDED_BEFORE_KILL: usize = 3;

const SMTP_USER: &str = "noc";
const SMTP_PASSWORD: &str = "smtp-secret-Zq7";

/// A `switchyard worker` process, killed when dropped so that a failed test leaves none
/// behind. Its output goes to a file, shown when the test fails.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    /// Resolves through `dns`, and may connect to the SMTP server on loopback.
    fn start(
        database_url: &str,
        secrets_keys: &str,
        dns: SocketAddr,
        dir: &Path,
        name: &str,
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let output = File::create(&log).expect("worker log file");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["--database-url", database_url])
            .args(["--secrets-keys", secrets_keys])
            .arg("worker")
            .args(["--worker-heartbeat-secs", "1"])
            .args(["--worker-concurrency", &CONCURRENCY.to_string()])
            .args(["--outbound-allow", common::LOOPBACK])
            .args(["--dns-server", &dns.to_string()])
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("worker log file"))
            .stderr(output)
            .spawn()
            .expect("start switchyard worker");
        Self { child, log }
    }

    /// Panics, with its output, if the process has ended by itself.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the worker exited with {status}:\n{}", self.output());
        }
    }

    /// SIGKILL: no shutdown code runs.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The jobs whose effect (the email sent) is recorded.
async fn recorded_effects(db: &Database) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("SELECT job_id FROM job_effects")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

fn queue_table(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "Jobs",
        Backend::Postgres => "apalis.jobs",
    }
}

/// apalis' own status of each job in its queue.
async fn queue_statuses(db: &Database, backend: Backend) -> HashMap<String, String> {
    let sql = format!("SELECT id, status FROM {}", queue_table(backend));
    sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql))
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn job(app: &TestApp, id: &str) -> Value {
    let (status, job) = app
        .admin(Method::GET, &format!("/v1/jobs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    job
}

async fn a_killed_worker_strands_no_job_and_resends_no_recorded_email(backend: Backend) {
    // One secrets key for the service here and the worker processes: the worker opens the
    // SMTP password that the service sealed.
    let secrets_keys = format!("k1:{}", BASE64.encode(rand::random::<[u8; 32]>()));
    let keyring = SecretKeyring::from_config(&secrets_keys).unwrap();
    let no_workers = ServiceOptions {
        workers: None,
        ..common::loopback_options()
    };
    let app = TestApp::spawn_with(backend, no_workers, keyring).await;
    let db = app.service.state.db.clone();
    let logs = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(ServerOptions {
        credentials: Some((SMTP_USER.into(), SMTP_PASSWORD.into())),
        data_delay: Some(DATA_DELAY),
        ..ServerOptions::default()
    })
    .await;
    let settings = json!({"from_address": "noc@acme.example.com", "host": "127.0.0.1",
                          "port": server.port(), "security": "none",
                          "username": SMTP_USER, "password": SMTP_PASSWORD});
    let response = app.put("/v1/account/smtp", &settings).await;
    assert_eq!(response.status(), StatusCode::OK);

    // The batch: job id → recipient.
    let mut recipients = BTreeMap::new();
    for n in 0..EMAILS {
        let to = format!("n{n}@acme.example.com");
        let body = json!({ "to": to });
        let (status, answer) = app
            .admin(Method::POST, "/v1/account/smtp/test", Some(&body))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        recipients.insert(answer["job_id"].as_str().unwrap().to_owned(), to);
    }

    // The first worker sends a few, and is killed with more in flight.
    let mut first = Worker::start(
        &app.database.url,
        &secrets_keys,
        app.dns.address,
        logs.path(),
        "first",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while recorded_effects(&db).await.len() < RECORDED_BEFORE_KILL {
        first.assert_running();
        assert!(
            Instant::now() < deadline,
            "the first worker recorded fewer than {RECORDED_BEFORE_KILL} emails in 30 s \
             ({} received):\n{}",
            server.received().len(),
            first.output()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    let killed_output = first.output();
    drop(first);
    // The dead process records nothing more: these are the emails whose success was recorded.
    let recorded = recorded_effects(&db).await;
    assert!(
        recorded.len() < EMAILS,
        "the batch was over before the kill: the test proves nothing"
    );

    // A job whose email was recorded runs again when the queue had not heard that it was
    // done: apalis records a job's start and end in batches, so the kill leaves most recorded
    // jobs `Queued` or `Running`, held by the dead worker. Any it did hear of is put in that
    // state, as a kill a moment earlier would have left it: every recorded job runs again.
    let statuses = queue_statuses(&db, backend).await;
    let lose_ack = format!(
        "UPDATE {} SET status = 'Running', done_at = NULL WHERE id = $1",
        queue_table(backend)
    );
    for id in &recorded {
        match statuses.get(id).map(String::as_str) {
            Some("Queued" | "Running") => {}
            Some("Done") => {
                sqlx::query(sqlx::AssertSqlSafe(lose_ack.clone()))
                    .bind(id)
                    .execute(&db.pool)
                    .await
                    .unwrap();
            }
            other => panic!("job {id}, whose email was recorded, is {other:?} in the queue"),
        }
    }

    // A new worker takes up what the dead one left, after its missed heartbeats: every job
    // succeeds, and the queue is done with each of them.
    let mut second = Worker::start(
        &app.database.url,
        &secrets_keys,
        app.dns.address,
        logs.path(),
        "second",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pending: BTreeSet<String> = recipients.keys().cloned().collect();
    loop {
        second.assert_running();
        let statuses = queue_statuses(&db, backend).await;
        let mut still_pending = BTreeSet::new();
        for id in &pending {
            let job = job(&app, id).await;
            match job["status"].as_str() {
                Some("failed") => panic!(
                    "job {id} failed: {job}\nkilled worker:\n{killed_output}\nnew worker:\n{}",
                    second.output()
                ),
                Some("succeeded") if statuses.get(id).is_some_and(|s| s == "Done") => {}
                _ => {
                    still_pending.insert(id.clone());
                }
            }
        }
        pending = still_pending;
        if pending.is_empty() {
            break;
        }
        let stranded: BTreeMap<_, _> = pending.iter().map(|id| (id, statuses.get(id))).collect();
        assert!(
            Instant::now() < deadline,
            "jobs stranded, with their status in the queue: {stranded:?}\nkilled worker:\n\
             {killed_output}\nnew worker:\n{}",
            second.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    second.kill();

    let mut received_by: HashMap<String, usize> = HashMap::new();
    let received = server.received();
    for message in &received {
        for to in &message.rcpt_to {
            *received_by.entry(to.clone()).or_default() += 1;
        }
    }
    for (id, to) in &recipients {
        let count = received_by.get(to).copied().unwrap_or(0);
        assert!(count >= 1, "job {id}: nothing reached {to}");
        if recorded.contains(id) {
            assert_eq!(
                count, 1,
                "job {id}: its email to {to} was recorded as sent, and sent again"
            );
        }
    }
    assert!(
        received_by
            .keys()
            .all(|to| recipients.values().any(|r| r == to)),
        "an email to someone else: {received_by:?}"
    );
    // Only emails in flight at the kill (one per running job at most) go out twice.
    assert!(
        received.len() <= EMAILS + CONCURRENCY,
        "{} emails for {EMAILS} jobs, {} recorded before the restart: {received_by:?}",
        received.len(),
        recorded.len()
    );
    // Each job whose email was recorded ran again, and saw that it had nothing to do.
    for id in &recorded {
        let job = job(&app, id).await;
        let stages: Vec<_> = job["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|stage| stage["stage"].as_str().unwrap())
            .collect();
        assert_eq!(stages, ["already_done"], "{job}");
    }
}
