//! The real binary, killed and restarted: no acknowledged change is lost, and SIGTERM
//! stops it gracefully.

mod common;

use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, TestDatabase, company, login};
use reqwest::{Client, StatusCode};
use serde_json::Value;

on_both_backends!(
    a_killed_server_loses_no_acknowledged_change,
    sigterm_shuts_down_gracefully,
);

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    /// A failed test must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(database: &TestDatabase) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("serve")
        .env("SWITCHYARD_DATABASE_URL", &database.url)
        .env("SWITCHYARD_BIND", format!("127.0.0.1:{port}"))
        .env("SWITCHYARD_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("SWITCHYARD_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start switchyard serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "the server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, base }
}

async fn a_killed_server_loses_no_acknowledged_change(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let mut server = start(&database).await;
    let client = Client::new();
    let token = login(&client, &server.base, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // Writers keep changing the company; the server is killed while they are at it.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (client, token, base, acknowledged) = (
                client.clone(),
                token.clone(),
                server.base.clone(),
                acknowledged.clone(),
            );
            tokio::spawn(async move {
                for n in 0.. {
                    let name = format!("W{writer} N{n}");
                    let sent = client
                        .put(format!("{base}/v1/account/company"))
                        .bearer_auth(&token)
                        .json(&company(&name))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == StatusCode::OK => {
                            acknowledged.lock().unwrap().push(name)
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    while acknowledged.lock().unwrap().len() < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap(); // SIGKILL: no shutdown code runs
    server.child.wait().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let server = start(&database).await;
    let token = login(&client, &server.base, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mut recorded = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!(
                "{}/v1/audit?type=CompanyInformationChanged&limit=500{cursor}",
                server.base
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in page["items"].as_array().unwrap() {
            recorded.push(item["changes"]["name"]["to"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|name| !recorded.contains(name))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost after the kill: {lost:?}"
    );
}

async fn sigterm_shuts_down_gracefully(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let mut server = start(&database).await;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
}
