//! Test Email, Test Mobile, login alerts and security notices, end to end: HTTP → event →
//! dispatcher → apalis worker → a real SMTP server on loopback or an SMS gateway fake →
//! the job's report at `GET /v1/jobs/{id}`.

mod common;

use std::time::Duration;

use common::{
    ADMIN_EMAIL, Backend, TestApp, USER_PASSWORD, expect_problem, finished, login, request_test,
    sms_fake::SmsFake,
    smtp_server::{ServerOptions, ServerTls, SmtpServer, TestPki},
    test_keyring, wait_for_job,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard::service::ServiceOptions;
use switchyard_projections::queries;
use switchyard_workers::jobs::store;

on_both_backends!(
    test_email_arrives_and_its_stages_are_recorded,
    a_refused_login_fails_at_once_at_the_auth_stage,
    an_unreachable_server_is_retried_with_backoff,
    a_test_of_an_unreachable_server_gives_its_verdict_after_one_retry,
    test_email_needs_saved_settings_and_a_valid_address,
    test_mobile_reaches_the_gateway_and_records_its_answer,
    login_alerts_follow_the_account_setting,
    security_changes_are_told_to_the_user,
    alerts_without_smtp_fail_once_with_the_reason,
    jobs_are_the_accounts_own,
    finished_jobs_are_pruned_after_their_retention,
    shutdown_lets_a_running_job_finish,
    a_private_ca_set_for_the_workers_secures_starttls,
);

const SMTP_USER: &str = "noc";
const SMTP_PASSWORD: &str = "smtp-secret-Zq7";

fn smtp_settings(port: u16, password: &str) -> Value {
    json!({"from_address": "noc@acme.example.com", "host": "127.0.0.1", "port": port,
           "security": "none", "username": SMTP_USER, "password": password})
}

async fn save_smtp(app: &TestApp, settings: &Value) {
    let response = app.put("/v1/account/smtp", settings).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
}

fn server_with_login() -> ServerOptions {
    ServerOptions {
        credentials: Some((SMTP_USER.into(), SMTP_PASSWORD.into())),
        ..ServerOptions::default()
    }
}

/// The account's jobs of one kind, newest first.
async fn jobs_of_kind(app: &TestApp, kind: &str) -> Vec<Value> {
    let (status, page) = app
        .admin(Method::GET, &format!("/v1/jobs?kind={kind}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// Waits until `count` jobs of `kind` have finished, and answers them.
async fn finished_jobs(app: &TestApp, kind: &str, count: usize) -> Vec<Value> {
    // Up to 30 s: retries wait out their backoff on a machine busy with other tests.
    for _ in 0..600 {
        let jobs = jobs_of_kind(app, kind).await;
        if jobs.len() >= count && jobs.iter().all(finished) {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{count} {kind} jobs did not finish: {:?}",
        jobs_of_kind(app, kind).await
    );
}

fn stage_names(job: &Value) -> Vec<String> {
    job["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| stage["stage"].as_str().unwrap().to_owned())
        .collect()
}

async fn test_email_arrives_and_its_stages_are_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let server = SmtpServer::start(server_with_login()).await;
    save_smtp(&app, &smtp_settings(server.port(), SMTP_PASSWORD)).await;

    // Without a body: to the caller's own address.
    let id = request_test(&app, "/v1/account/smtp/test", None).await;
    let job = wait_for_job(&app, &id, finished).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["kind"], "smtp_test");
    assert_eq!(job["attempts"], 1);
    assert!(job["finished_at"].is_string() && job["created_at"].is_string());
    assert_eq!(
        stage_names(&job),
        ["connect", "auth", "mail_from", "rcpt_to", "data"]
    );
    assert!(
        job["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ok"] == true)
    );
    assert!(
        job["stages"][1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("235"),
        "the server's own reply: {job}"
    );

    let received = server.received();
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.rcpt_to, [ADMIN_EMAIL]);
    assert_eq!(message.authenticated_as.as_deref(), Some(SMTP_USER));
    assert!(
        message
            .header("From")
            .unwrap()
            .contains("noc@acme.example.com")
    );
    assert!(message.header("To").unwrap().contains(ADMIN_EMAIL));
    assert_eq!(message.header("Subject"), Some("Switchyard test email"));
    assert!(
        message
            .body()
            .contains("If you can read it, those settings work.")
    );

    // To another address; both in the list, newest first; the audit log tells who asked.
    let second = request_test(
        &app,
        "/v1/account/smtp/test",
        Some(&json!({"to": "ops@acme.example.com"})),
    )
    .await;
    wait_for_job(&app, &second, finished).await;
    assert_eq!(server.received()[1].rcpt_to, ["ops@acme.example.com"]);
    let listed = jobs_of_kind(&app, "smtp_test").await;
    let ids: Vec<_> = listed.iter().map(|job| job["id"].clone()).collect();
    assert_eq!(ids, [json!(second), json!(id)]);
    let audit = app.audit().await;
    assert!(
        audit
            .iter()
            .any(|entry| entry["summary"] == "Test email to ops@acme.example.com requested"),
        "{audit:?}"
    );
}

async fn a_refused_login_fails_at_once_at_the_auth_stage(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let server = SmtpServer::start(server_with_login()).await;
    save_smtp(&app, &smtp_settings(server.port(), "not the password")).await;

    let id = request_test(&app, "/v1/account/smtp/test", None).await;
    let job = wait_for_job(&app, &id, finished).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "a refused login is not retried");
    assert_eq!(stage_names(&job), ["connect", "auth"]);
    assert_eq!(job["stages"][1]["ok"], false);
    assert!(
        job["stages"][1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("535")
    );
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("535"), "{error}");
    assert!(
        !error.contains("not the password"),
        "no secret in the report"
    );
    assert!(server.received().is_empty());
}

async fn an_unreachable_server_is_retried_with_backoff(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A port nothing listens on: bound, then closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    save_smtp(&app, &smtp_settings(port, SMTP_PASSWORD)).await;

    let id = request_test(&app, "/v1/account/smtp/test", None).await;
    // The first attempt is over: counted, and no longer running.
    let job = wait_for_job(&app, &id, |job| {
        job["attempts"] == 1 && job["status"] != "running"
    })
    .await;
    assert_eq!(
        job["status"], "queued",
        "a refused connection is retried: {job}"
    );
    assert_eq!(stage_names(&job), ["connect"]);
    assert!(
        job["error"].as_str().unwrap().contains("refused"),
        "{}",
        job["error"]
    );
    let retry_at = chrono::DateTime::parse_from_rfc3339(job["retry_at"].as_str().unwrap()).unwrap();
    let wait = retry_at.signed_duration_since(chrono::Utc::now());
    assert!(
        (2..=7).contains(&wait.num_seconds()),
        "the first retry waits about 5 s: {wait}"
    );
    // Not retried before then.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, job) = app
        .admin(Method::GET, &format!("/v1/jobs/{id}"), None)
        .await;
    assert_eq!(job["attempts"], 1, "{job}");

    // The server comes up on that port: the retry gets through.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await;
    if let Ok(listener) = listener {
        drop(listener);
        let server = SmtpServer::start_on(port, server_with_login()).await;
        let job = wait_for_job(&app, &id, finished).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 2);
        assert_eq!(server.received().len(), 1);
    }
}

async fn a_test_of_an_unreachable_server_gives_its_verdict_after_one_retry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A port nothing listens on: bound, then closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    save_smtp(&app, &smtp_settings(port, SMTP_PASSWORD)).await;
    let sms = json!({"provider": "http", "from_number": "+14155550100",
                     "base_url": format!("http://127.0.0.1:{port}/sms"), "api_key": "sms-key-1"});
    assert_eq!(
        app.put("/v1/account/sms", &sms).await.status(),
        StatusCode::OK
    );
    let to = json!({"to": "+14155550199"});

    let email = request_test(&app, "/v1/account/smtp/test", None).await;
    let mobile = request_test(&app, "/v1/account/sms/test", Some(&to)).await;

    // Someone is waiting for these: after the retry, the report gives the verdict.
    for id in [email, mobile] {
        let job = wait_for_job(&app, &id, |job| {
            job["attempts"] == 2 && job["status"] != "running"
        })
        .await;
        assert_eq!(job["status"], "failed", "no third attempt: {job}");
        assert_eq!(job["retry_at"], Value::Null, "{job}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    }
}

async fn test_email_needs_saved_settings_and_a_valid_address(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .send(Method::POST, "/v1/account/smtp/test", &app.token, None)
        .await;
    let problem = expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("SMTP settings are not saved")
    );

    save_smtp(&app, &smtp_settings(2525, SMTP_PASSWORD)).await;
    let response = app
        .send(
            Method::POST,
            "/v1/account/smtp/test",
            &app.token,
            Some(&json!({"to": "not an address"})),
        )
        .await;
    assert_eq!(common::expect_invalid_fields(response).await, ["to"]);
    let response = app
        .send(
            Method::POST,
            "/v1/account/sms/test",
            &app.token,
            Some(&json!({"to": "+14155550100"})),
        )
        .await;
    expect_problem(response, StatusCode::CONFLICT).await;
    assert!(
        jobs_of_kind(&app, "smtp_test").await.is_empty(),
        "nothing queued"
    );
}

async fn test_mobile_reaches_the_gateway_and_records_its_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let gateway = SmsFake::twilio("AC123", "sms-key-1").await;
    let settings = json!({"provider": "twilio", "from_number": "+14155550100",
                          "base_url": gateway.base_url, "account_sid": "AC123",
                          "api_key": "sms-key-1"});
    let response = app.put("/v1/account/sms", &settings).await;
    assert_eq!(response.status(), StatusCode::OK);

    // The caller has no mobile: `to` is needed.
    let response = app
        .send(Method::POST, "/v1/account/sms/test", &app.token, None)
        .await;
    assert_eq!(common::expect_invalid_fields(response).await, ["to"]);
    let (status, _) = app
        .admin(
            Method::PUT,
            "/v1/me",
            Some(&json!({"name": "Admin", "email": ADMIN_EMAIL,
                                                   "mobile": "+14155550199"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let id = request_test(&app, "/v1/account/sms/test", None).await;
    let job = wait_for_job(&app, &id, finished).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["kind"], "sms_test");
    assert_eq!(stage_names(&job), ["request"]);
    assert!(
        job["stages"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 201")
    );
    let sent = gateway.received();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].from.as_str(), sent[0].to.as_str()),
        ("+14155550100", "+14155550199")
    );

    // The gateway refuses: its status and body are on the job, and it is not retried.
    gateway.answer(
        StatusCode::BAD_REQUEST,
        common::sms_fake::twilio_error_body(
            StatusCode::BAD_REQUEST,
            21211,
            "Invalid 'To' Phone Number",
        ),
    );
    let id = request_test(
        &app,
        "/v1/account/sms/test",
        Some(&json!({"to": "+14155550123"})),
    )
    .await;
    let job = wait_for_job(&app, &id, finished).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1);
    let detail = job["stages"][0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("HTTP 400") && detail.contains("21211"),
        "{detail}"
    );
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("Invalid 'To' Phone Number")
    );
}

async fn set_login_alerts(app: &TestApp, on: bool) {
    let (_, mut general) = app.admin(Method::GET, "/v1/account/general", None).await;
    general["login_alerts"] = json!(on);
    let response = app.put("/v1/account/general", &general).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
}

async fn login_with_agent(app: &TestApp, email: &str, password: &str, agent: &str) {
    let response = app
        .client
        .post(app.url("/v1/sessions"))
        .header("user-agent", agent)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn login_alerts_follow_the_account_setting(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let server = SmtpServer::start(server_with_login()).await;
    save_smtp(&app, &smtp_settings(server.port(), SMTP_PASSWORD)).await;
    app.add_user("ops@acme.example.com", "user", &[]).await;

    login_with_agent(&app, "ops@acme.example.com", USER_PASSWORD, "quiet/1.0").await;
    set_login_alerts(&app, true).await;
    login_with_agent(&app, "ops@acme.example.com", USER_PASSWORD, "probe/2.0").await;

    let alerts = finished_jobs(&app, "login_alert", 1).await;
    assert_eq!(
        alerts.len(),
        1,
        "only the login after alerts were turned on: {alerts:?}"
    );
    assert_eq!(alerts[0]["status"], "succeeded", "{}", alerts[0]);
    let received = server.received();
    assert_eq!(received.len(), 1);
    let alert = &received[0];
    assert_eq!(alert.rcpt_to, ["ops@acme.example.com"]);
    assert_eq!(alert.header("Subject"), Some("New login to your account"));
    let body = alert.body();
    assert!(body.contains("Browser or app: probe/2.0"), "{body}");
    assert!(body.contains("IP address: 127.0.0.1"), "{body}");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert!(
        body.contains(&format!("When: {today}")),
        "the account's date format: {body}"
    );
}

async fn security_changes_are_told_to_the_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let server = SmtpServer::start(server_with_login()).await;
    save_smtp(&app, &smtp_settings(server.port(), SMTP_PASSWORD)).await;
    let id = app.add_user("ops@acme.example.com", "user", &[]).await;
    let token = login(
        &app.client,
        &app.base,
        "ops@acme.example.com",
        USER_PASSWORD,
    )
    .await;

    let response = app
        .send(
            Method::POST,
            "/v1/me/password",
            &token,
            Some(&json!({"current_password": USER_PASSWORD,
                         "new_password": "another long passphrase"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, _) = app
        .admin(
            Method::PATCH,
            &format!("/v1/users/{id}"),
            Some(&json!({"email": "ops2@acme.example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let notices = finished_jobs(&app, "security_notice", 2).await;
    assert!(
        notices.iter().all(|job| job["status"] == "succeeded"),
        "{notices:?}"
    );
    let mut received = server.received();
    received.sort_by_key(|message| message.header("Subject").unwrap().to_owned());
    let subjects: Vec<_> = received
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            "Your email address was changed",
            "Your password was changed"
        ]
    );
    assert_eq!(
        received[0].rcpt_to,
        ["ops@acme.example.com"],
        "told at the old address"
    );
    assert!(
        received[0]
            .body()
            .contains("changed to ops2@acme.example.com")
    );
}

async fn alerts_without_smtp_fail_once_with_the_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    set_login_alerts(&app, true).await;
    login_with_agent(&app, ADMIN_EMAIL, common::ADMIN_PASSWORD, "probe/1.0").await;

    let alerts = finished_jobs(&app, "login_alert", 1).await;
    let alert = &alerts[0];
    assert_eq!(alert["status"], "failed", "{alert}");
    assert_eq!(alert["attempts"], 1, "not retried: retrying cannot help");
    assert!(
        alert["error"]
            .as_str()
            .unwrap()
            .contains("SMTP is not configured"),
        "{alert}"
    );
}

async fn jobs_are_the_accounts_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let server = SmtpServer::start(server_with_login()).await;
    save_smtp(&app, &smtp_settings(server.port(), SMTP_PASSWORD)).await;
    let id = request_test(&app, "/v1/account/smtp/test", None).await;
    wait_for_job(&app, &id, finished).await;

    let other = app.open_other_account().await;
    let response = app
        .send(Method::GET, &format!("/v1/jobs/{id}"), &other, None)
        .await;
    expect_problem(response, StatusCode::NOT_FOUND).await;
    let page: Value = app
        .send(Method::GET, "/v1/jobs", &other, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"], json!([]));
    let response = app
        .send(Method::GET, "/v1/jobs?status=exploded", &app.token, None)
        .await;
    assert_eq!(common::expect_invalid_fields(response).await, ["status"]);
}

async fn finished_jobs_are_pruned_after_their_retention(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let server = SmtpServer::start(server_with_login()).await;
    save_smtp(&app, &smtp_settings(server.port(), SMTP_PASSWORD)).await;
    let id = request_test(&app, "/v1/account/smtp/test", None).await;
    wait_for_job(&app, &id, finished).await;

    let db = &app.service.state.db;
    let (queue, done) = match backend {
        Backend::Sqlite => (
            "SELECT COUNT(*) FROM Jobs",
            "SELECT COUNT(*) FROM Jobs WHERE status = 'Done'",
        ),
        Backend::Postgres => (
            "SELECT COUNT(*) FROM apalis.jobs",
            "SELECT COUNT(*) FROM apalis.jobs WHERE status = 'Done'",
        ),
    };
    // apalis acknowledges the job just after its report is written.
    for _ in 0..100 {
        let acknowledged: i64 = sqlx::query_scalar(done).fetch_one(&db.pool).await.unwrap();
        if acknowledged == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = chrono::Utc::now();
    store::prune(db, now).await.unwrap();
    let (status, _) = app
        .admin(Method::GET, &format!("/v1/jobs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "kept within the retention");

    store::prune(db, now + store::RETENTION + chrono::Duration::minutes(1))
        .await
        .unwrap();
    let (status, _) = app
        .admin(Method::GET, &format!("/v1/jobs/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for table in ["job_reports", "job_effects"] {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    let left: i64 = sqlx::query_scalar(queue).fetch_one(&db.pool).await.unwrap();
    assert_eq!(left, 0, "the queue's rows");
}

async fn shutdown_lets_a_running_job_finish(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let server = SmtpServer::start(ServerOptions {
        data_delay: Some(Duration::from_millis(1000)),
        ..server_with_login()
    })
    .await;
    save_smtp(&app, &smtp_settings(server.port(), SMTP_PASSWORD)).await;
    let id = request_test(&app, "/v1/account/smtp/test", None).await;
    // The message is with the server, which has not answered yet: the job is running.
    for _ in 0..1000 {
        if !server.received().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, job) = app
        .admin(Method::GET, &format!("/v1/jobs/{id}"), None)
        .await;
    assert_eq!(server.received().len(), 1, "the job started: {job}");
    assert_eq!(job["status"], "running", "{job}");
    assert_eq!(job["attempts"], 1, "counted when it starts");

    let TestApp {
        service, database, ..
    } = app;
    let db = service.state.db.clone();
    let account = jobs_account(&db).await;
    service.shutdown().await.unwrap();
    let job = queries::job(&db, account, &id).await.unwrap().unwrap();
    assert_eq!(
        job.status, "succeeded",
        "finished before shutdown returned: {job:?}"
    );
    assert_eq!(server.received().len(), 1);
    drop(database);
}

/// The account that owns the jobs (the only one).
async fn jobs_account(db: &switchyard_command::Database) -> switchyard_command::domain::AccountId {
    let account: String = sqlx::query_scalar("SELECT account_id FROM job_reports")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    switchyard_command::domain::AccountId::parse(&account).unwrap()
}

async fn a_private_ca_set_for_the_workers_secures_starttls(backend: Backend) {
    let pki = TestPki::generate();
    let options = ServiceOptions {
        smtp_extra_root: Some(pki.ca_pem.clone()),
        ..common::loopback_options()
    };
    let app = TestApp::spawn_with(backend, options, test_keyring()).await;
    let server = SmtpServer::start(ServerOptions {
        tls: ServerTls::StartTls(pki.server_config.clone()),
        ..server_with_login()
    })
    .await;
    let mut settings = smtp_settings(server.port(), SMTP_PASSWORD);
    settings["host"] = json!("localhost");
    settings["security"] = json!("starttls");
    save_smtp(&app, &settings).await;

    let id = request_test(&app, "/v1/account/smtp/test", None).await;
    let job = wait_for_job(&app, &id, finished).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        stage_names(&job),
        ["connect", "tls", "auth", "mail_from", "rcpt_to", "data"]
    );
    let tls = job["stages"][1]["detail"].as_str().unwrap();
    assert!(tls.ends_with("certificate verified for localhost"), "{tls}");
    assert!(server.received()[0].over_tls);
}
