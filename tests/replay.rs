//! `switchyard replay`: dropping every read model and rebuilding it from the log gives back
//! exactly the state the live projections built.

mod common;

use std::time::Duration;

use common::{Backend, TestApp, USER_PASSWORD, company};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;
use switchyard::service::{AdminCredentials, create_account};
use switchyard_command::{
    Backend as SqliteOrPostgres, Database,
    domain::AccountId,
    event_log::{EventLog, ExpectedVersion, Metadata, NewEvent, StreamWrite},
};
use switchyard_projections::{ProjectionError, replay};
use uuid::Uuid;

on_both_backends!(
    a_rebuild_equals_the_live_read_models,
    a_failed_rebuild_leaves_the_read_models_as_they_were,
    a_rebuild_ends_no_session_the_live_projection_kept,
);

/// Every read-model table, rows in a stable order, values as text.
async fn dump(db: &Database) -> Vec<(String, Vec<String>)> {
    let tables = [
        ("account_config", "account_id, section"),
        ("users", "id"),
        ("groups", "id"),
        ("user_groups", "user_id, group_id"),
        ("audit_log", "position"),
        ("audit_sections", "stream_id, section"),
        ("gateways", "gateway_id"),
        ("projection_checkpoints", "projection"),
    ];
    let mut dumped = Vec::new();
    for (table, order) in tables {
        // PostgreSQL answers each row as one text: the Any driver cannot decode its times.
        let columns = match db.backend {
            SqliteOrPostgres::Sqlite => "*".to_owned(),
            SqliteOrPostgres::Postgres => format!("{table}::text"),
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM {table} ORDER BY {order}"
        )))
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let rows: Vec<String> = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match row.try_get::<Option<String>, _>(i) {
                        Ok(text) => format!("{text:?}"),
                        Err(_) => format!("{:?}", row.try_get::<Option<i64>, _>(i).unwrap()),
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .collect();
        assert!(
            !rows.is_empty(),
            "{table} is empty: the comparison would prove nothing"
        );
        dumped.push((table.to_owned(), rows));
    }
    dumped
}

/// An app whose log holds every kind of event the read models show, all of it projected;
/// returns the second account's id.
async fn app_with_history(backend: Backend) -> (TestApp, AccountId) {
    let app = TestApp::spawn(backend).await;
    for n in 0..3 {
        app.put("/v1/account/company", &company(&format!("Acme {n}")))
            .await;
    }
    app.put(
        "/v1/account/general",
        &json!({"currency": "EUR", "date_format": "DD/MM/YYYY", "login_alerts": true}),
    )
    .await;
    let smtp = json!({"from_address": "noc@acme.example.com", "host": "smtp.example.com",
                      "port": 465, "security": "tls", "password": "secret"});
    assert_eq!(
        app.put("/v1/account/smtp", &smtp).await.status(),
        StatusCode::OK
    );
    // The team: groups, users in them, a deletion of each, a login.
    let support = app.add_group("Support", json!({"cdr": "allow"})).await;
    let gone = app.add_group("Gone", json!({"log": "deny"})).await;
    app.add_user("bob@acme.example.com", "user", &[&support, &gone])
        .await;
    let carol = app.add_user("carol@acme.example.com", "user", &[]).await;
    for path in [format!("/v1/groups/{gone}"), format!("/v1/users/{carol}")] {
        let (status, _) = app.admin(Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}");
    }
    // Gateways: one added and changed, one added and removed.
    let stripe = json!({"provider": "stripe", "mode": "test", "publishable_key": "pk_test_a",
                        "secret_key": "sk_test_a", "currencies": ["USD"]});
    let paypal = json!({"provider": "paypal", "mode": "live", "client_id": "id",
                        "client_secret": "secret", "currencies": ["EUR"]});
    let mut gateways = Vec::new();
    for body in [stripe, paypal] {
        let (status, gateway) = app.admin(Method::POST, "/v1/gateways", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{gateway}");
        gateways.push(format!("/v1/gateways/{}", gateway["id"].as_str().unwrap()));
    }
    let change = json!({"surcharge_percent": "1.5"});
    let (status, _) = app.admin(Method::PATCH, &gateways[0], Some(&change)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.admin(Method::DELETE, &gateways[1], None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    common::login(
        &app.client,
        &app.base,
        "bob@acme.example.com",
        USER_PASSWORD,
    )
    .await;
    let state = &app.service.state;
    let second = create_account(
        &state.commands,
        &state.passwords,
        "Globex",
        AdminCredentials {
            email: "root@globex.example.com".into(),
            password: Some("globex password".into()),
        },
    )
    .await
    .unwrap();
    assert!(
        state
            .projections
            .wait_for(second.opened.position, Duration::from_secs(10))
            .await
    );
    (app, second.opened.account_id)
}

async fn a_rebuild_equals_the_live_read_models(backend: Backend) {
    let (app, _) = app_with_history(backend).await;
    let db = app.database.open().await;
    let live = dump(&db).await;
    let schema = indexes(&db).await;
    replay::rebuild_all(&db, |_| {}).await.unwrap();
    let rebuilt = dump(&db).await;
    assert_eq!(live, rebuilt);
    // Batches of 4: the audit planner carries each section's values across batches.
    replay::rebuild_in_batches(&db, 4, |_| {}).await.unwrap();
    assert_eq!(live, dump(&db).await);
    assert_eq!(
        schema,
        indexes(&db).await,
        "every dropped key and index is back"
    );
    let shown: serde_json::Value = app.get("/v1/account/company").await.json().await.unwrap();
    assert_eq!(shown["name"], "Acme 2");
    // The live projections go on from the rebuilt state: their upserts need the keys.
    let response = app.put("/v1/account/company", &company("Acme 3")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let audit = app.audit().await;
    assert_eq!(
        audit[0]["changes"]["name"],
        json!({"from": "Acme 2", "to": "Acme 3"})
    );
}

/// Every index of the database, as its definition: keys included.
async fn indexes(db: &Database) -> Vec<String> {
    let list = match db.backend {
        SqliteOrPostgres::Sqlite => {
            "SELECT name || ': ' || COALESCE(sql, '') FROM sqlite_master \
             WHERE type = 'index' ORDER BY name"
        }
        SqliteOrPostgres::Postgres => {
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() \
             ORDER BY indexname"
        }
    };
    sqlx::query_scalar(list).fetch_all(&db.pool).await.unwrap()
}

/// A rebuild is one transaction: one that fails part way leaves every read model, checkpoint,
/// key and index as it was.
async fn a_failed_rebuild_leaves_the_read_models_as_they_were(backend: Backend) {
    let (app, account) = app_with_history(backend).await;
    // Stopped, so that no live projection moves a checkpoint while the rebuild fails.
    let TestApp {
        service, database, ..
    } = app;
    service.shutdown().await.unwrap();
    let db = database.open().await;
    let before = dump(&db).await;
    let schema = indexes(&db).await;
    // An event no projection can decode, after all the good ones.
    let unreadable = StreamWrite {
        stream_id: format!("account-{}", Uuid::new_v4()),
        stream_type: "account".into(),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            event_id: Uuid::new_v4(),
            event_type: "CompanyInformationChanged".into(),
            schema_version: 1,
            data: json!({"not": "company information"}),
        }],
    };
    let log = EventLog::start(db.clone()).await.unwrap();
    log.append(vec![unreadable], Metadata::system(account))
        .await
        .unwrap();

    let failed = replay::rebuild_in_batches(&db, 4, |_| {}).await;
    assert!(
        matches!(failed, Err(ProjectionError::Decode { .. })),
        "{failed:?}"
    );
    assert_eq!(before, dump(&db).await);
    assert_eq!(
        schema,
        indexes(&db).await,
        "every dropped key and index is back"
    );
}

/// Disabling a user ended the sessions issued before it; a rebuild must not end the ones
/// issued after they were enabled again.
async fn a_rebuild_ends_no_session_the_live_projection_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let email = "bob@acme.example.com";
    let bob = app.add_user(email, "user", &[]).await;
    let ended = common::login(&app.client, &app.base, email, USER_PASSWORD).await;
    let path = format!("/v1/users/{bob}");
    for enabled in [false, true] {
        let body = json!({ "enabled": enabled });
        let (status, _) = app.admin(Method::PATCH, &path, Some(&body)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let kept = common::login(&app.client, &app.base, email, USER_PASSWORD).await;
    let status = |token: String| {
        let app = &app;
        async move { app.send(Method::GET, "/v1/me", &token, None).await.status() }
    };
    assert_eq!(status(ended.clone()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(kept.clone()).await, StatusCode::OK);
    let db = app.database.open().await;
    replay::rebuild_all(&db, |_| {}).await.unwrap();
    assert_eq!(status(ended).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(kept).await,
        StatusCode::OK,
        "the session issued after the user was enabled again survives the rebuild"
    );
}
