//! Secrets at rest: every process on one database has the same keys or does not start, and
//! the read models keep no secret.

mod common;

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{Backend, TestApp, TestDatabase, USER_PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;
use switchyard::service::{Service, ServiceOptions};
use switchyard_command::secrets::SecretKeyring;

on_both_backends!(
    a_process_whose_keys_differ_from_the_databases_refuses_to_start,
    audit_sections_keep_no_secret,
);

/// A keyring of `(key id, fill byte)` keys, the first one current.
fn keyring(keys: &[(&str, u8)]) -> SecretKeyring {
    let config: Vec<String> = keys
        .iter()
        .map(|(id, fill)| format!("{id}:{}", STANDARD.encode([*fill; 32])))
        .collect();
    SecretKeyring::from_config(&config.join(",")).unwrap()
}

async fn start(database: &TestDatabase, keys: &[(&str, u8)]) -> anyhow::Result<Service> {
    let options = ServiceOptions {
        workers: None,
        ..ServiceOptions::default()
    };
    Service::start_with(database.open().await, keyring(keys), options).await
}

async fn a_process_whose_keys_differ_from_the_databases_refuses_to_start(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    start(&database, &[("k1", 1)])
        .await
        .expect("the first process records its key")
        .shutdown()
        .await
        .unwrap();

    // Another machine's generated key file: the same id, another key.
    let refused = start(&database, &[("k1", 2)])
        .await
        .err()
        .expect("a process with another k1 must not start");
    let message = format!("{refused:#}");
    assert!(message.contains("SWITCHYARD_SECRETS_KEYS"), "{message}");
    assert!(message.contains("\"k1\""), "{message}");

    // Rotation: a new current key, the old one kept to open what it sealed.
    for keys in [&[("k2", 3), ("k1", 1)][..], &[("k1", 1)], &[("k2", 3)]] {
        start(&database, keys)
            .await
            .unwrap_or_else(|e| panic!("{keys:?} agrees with the database: {e:#}"))
            .shutdown()
            .await
            .unwrap();
    }
    let refused = start(&database, &[("k3", 4)])
        .await
        .err()
        .expect("a keyring with none of the database's keys must not start");
    assert!(format!("{refused:#}").contains("k1, k2"), "{refused:#}");
    let refused = start(&database, &[("k3", 4), ("k2", 9)]).await.err();
    assert!(refused.is_some(), "another k2 must not start either");
}

async fn audit_sections_keep_no_secret(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let smtp = json!({"from_address": "noc@acme.example.com", "host": "smtp.example.com",
                      "port": 587, "security": "starttls", "username": "noc",
                      "password": "an smtp password"});
    let (status, _) = app
        .admin(Method::PUT, "/v1/account/smtp", Some(&smtp))
        .await;
    assert_eq!(status, StatusCode::OK);
    let bob = app.add_user("bob@acme.example.com", "user", &[]).await;
    let reset = json!({"password": format!("{USER_PASSWORD} again")});
    let (status, _) = app
        .admin(Method::PATCH, &format!("/v1/users/{bob}"), Some(&reset))
        .await;
    assert_eq!(status, StatusCode::OK);

    let rows = sqlx::query("SELECT section, data FROM audit_sections")
        .fetch_all(&app.service.state.db.pool)
        .await
        .unwrap();
    let sections: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
    assert!(sections.iter().any(|s| s == "smtp"), "{sections:?}");
    for row in &rows {
        let data: String = row.get(1);
        for secret in ["$argon2", "\"v1."] {
            assert!(
                !data.contains(secret),
                "{secret} kept in audit_sections: {data}"
            );
        }
    }
}
