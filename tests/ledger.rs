//! The balance ledger end to end: the operator's adjustments, the running balance on every
//! entry, the CSV export, the debit limit, the low-balance alert, and concurrent writers on
//! one account's ledger.

mod common;

use std::time::Duration;

use common::{
    ADMIN_EMAIL, Backend, TestApp, expect_invalid_fields, expect_problem,
    smtp_server::{ServerOptions, SmtpServer},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use switchyard_command::domain::AccountId;
use switchyard_projections::replay;

on_both_backends!(
    the_operator_adjusts_a_balance_and_the_ledger_tells_the_story,
    concurrent_credits_and_debits_end_at_their_sum,
    a_debit_limit_and_a_low_balance_alert_once_per_fall,
);

fn usd(amount: &str) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

/// The other account's id, as its administrator's row says.
async fn account_of(app: &TestApp, email: &str) -> String {
    sqlx::query_scalar("SELECT account_id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&app.service.state.db.pool)
        .await
        .unwrap()
}

async fn adjust(app: &TestApp, account: &str, amount: &str, reason: &str) -> Value {
    let body = json!({"account_id": account, "amount": usd(amount), "reason": reason});
    let (status, entry) = app
        .admin(Method::POST, "/v1/account/balance/adjustments", Some(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");
    entry
}

async fn balance(app: &TestApp, token: &str) -> Value {
    let response = app
        .send(Method::GET, "/v1/account/balance", token, None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn the_operator_adjusts_a_balance_and_the_ledger_tells_the_story(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let globex = app.open_other_account().await;
    let account = account_of(&app, "root@globex.example.com").await;
    let zero = balance(&app, &globex).await;
    assert_eq!(
        zero,
        json!({"balance": usd("0.00"), "debit_limit": usd("0.00"), "available": usd("0.00"),
               "currency": "USD", "low_balance_threshold": null})
    );

    let credit = adjust(&app, &account, "25.00", "Welcome credit").await;
    assert_eq!(credit["id"], "1");
    assert_eq!(credit["kind"], "adjustment");
    assert_eq!(credit["amount"], usd("25.00"));
    assert_eq!(credit["balance_after"], usd("25.00"));
    let debit = adjust(&app, &account, "-5.5", "Correction").await;
    assert_eq!(debit["balance_after"], usd("19.50"));
    assert_eq!(balance(&app, &globex).await["available"], usd("19.50"));

    // Only the operator's administrators adjust, and only with a valid amount.
    let path = "/v1/account/balance/adjustments";
    let body = json!({"account_id": account, "amount": usd("1.00"), "reason": "mine"});
    let response = app.send(Method::POST, path, &globex, Some(&body)).await;
    expect_problem(response, StatusCode::FORBIDDEN).await;
    for (amount, field) in [
        (
            json!({"amount": "1.00", "currency": "EUR"}),
            "amount.currency",
        ),
        (usd("1.005"), "amount.amount"),
        (usd("0"), "amount.amount"),
        (json!({"amount": "1", "currency": "XXX"}), "amount.currency"),
    ] {
        let body = json!({"account_id": account, "amount": amount, "reason": "no"});
        let response = app.send(Method::POST, path, &app.token, Some(&body)).await;
        assert_eq!(expect_invalid_fields(response).await, [field], "{amount}");
    }
    let nobody =
        json!({"account_id": AccountId::new().to_string(), "amount": usd("1"), "reason": "x"});
    let response = app
        .send(Method::POST, path, &app.token, Some(&nobody))
        .await;
    expect_problem(response, StatusCode::NOT_FOUND).await;

    // A retried adjustment under its key is recorded once.
    let body = json!({"account_id": account, "amount": usd("3.00"), "reason": "Retried"});
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url(path))
            .bearer_auth(&app.token)
            .header("idempotency-key", "retried-credit")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        answers.push(response.json::<Value>().await.unwrap());
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(balance(&app, &globex).await["balance"], usd("22.50"));

    // The ledger, newest first, each entry with the balance after it.
    let ledger: Value = app
        .send(Method::GET, "/v1/ledger", &globex, None)
        .await
        .json()
        .await
        .unwrap();
    let amounts: Vec<(&str, &str)> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let amount = e["amount"]["amount"].as_str().unwrap();
            (amount, e["balance_after"]["amount"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        amounts,
        [("3.00", "22.50"), ("-5.50", "19.50"), ("25.00", "25.00")]
    );
    let page: Value = app
        .send(Method::GET, "/v1/ledger?limit=1&cursor=3", &globex, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["id"], "2");
    assert_eq!(page["next_cursor"], "2");
    let bad = app
        .send(Method::GET, "/v1/ledger?kind=gift", &globex, None)
        .await;
    assert_eq!(expect_invalid_fields(bad).await, ["kind"]);

    // The same entries as CSV.
    let csv = app
        .client
        .get(app.url("/v1/ledger"))
        .bearer_auth(&globex)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "id,at,kind,amount,currency,balance_after,description,payment_id,package_id,period"
    );
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[2].starts_with("2,") && lines[2].contains(",adjustment,-5.50,USD,19.50,Correction,"),
        "{}",
        lines[2]
    );

    // The account's audit log tells who moved its money; the operator's does not hold it.
    let audit: Value = app
        .send(Method::GET, "/v1/audit?type=EntryRecorded", &globex, None)
        .await
        .json()
        .await
        .unwrap();
    let first = audit["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        first["summary"],
        "Balance adjusted by 25.00 USD: Welcome credit"
    );
    assert_eq!(first["actor"]["email"], ADMIN_EMAIL);
    assert_eq!(
        first["changes"],
        json!({"balance": {"from": null, "to": "25.00 USD"}})
    );

    // A rebuild from the log gives the same balance and ledger.
    let before = (balance(&app, &globex).await, ledger.clone());
    replay::rebuild_all(&app.service.state.db, |_| {})
        .await
        .unwrap();
    let after: Value = app
        .send(Method::GET, "/v1/ledger", &globex, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((balance(&app, &globex).await, after), before);
}

async fn concurrent_credits_and_debits_end_at_their_sum(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let globex = app.open_other_account().await;
    let account = account_of(&app, "root@globex.example.com").await;
    // 50 writers at once: credits of n.01 and debits of n.00 for n in 1..=25.
    let amounts: Vec<String> = (1..=25)
        .flat_map(|n| [format!("{n}.01"), format!("-{n}.00")])
        .collect();
    let writes = amounts
        .iter()
        .map(|amount| adjust(&app, &account, amount, "concurrent"));
    futures::future::join_all(writes).await;

    let expected_cents: i64 = (1..=25).map(|_| 1).sum();
    let balance = balance(&app, &globex).await;
    assert_eq!(
        balance["balance"],
        usd(&format!("0.{expected_cents:02}")),
        "{balance}"
    );
    let ledger: Value = app
        .send(Method::GET, "/v1/ledger?limit=500", &globex, None)
        .await
        .json()
        .await
        .unwrap();
    let mut entries = ledger["items"].as_array().unwrap().clone();
    entries.reverse();
    assert_eq!(entries.len(), 50);
    let cents = |money: &Value| {
        let amount = money["amount"].as_str().unwrap().replace('.', "");
        amount.parse::<i64>().unwrap()
    };
    let mut running = 0;
    for (n, entry) in entries.iter().enumerate() {
        assert_eq!(entry["id"], (n + 1).to_string());
        running += cents(&entry["amount"]);
        assert_eq!(cents(&entry["balance_after"]), running, "{entry}");
    }
}

async fn a_debit_limit_and_a_low_balance_alert_once_per_fall(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let globex = app.open_other_account().await;
    let account = account_of(&app, "root@globex.example.com").await;
    let server = SmtpServer::start(ServerOptions::default()).await;
    let smtp = json!({"from_address": "noc@globex.example.com", "host": "127.0.0.1",
                      "port": server.port(), "security": "none"});
    let response = app
        .send(Method::PUT, "/v1/account/smtp", &globex, Some(&smtp))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let id = AccountId::parse(&account).unwrap();
    let state = &app.service.state;
    let limit = switchyard::service::set_debit_limit(&state.commands, id, "50.00")
        .await
        .unwrap();
    assert_eq!(limit.decimal_string(), "50.00");
    assert!(
        switchyard::service::set_debit_limit(&state.commands, id, "5.001")
            .await
            .is_err()
    );
    let alerts = json!({"low_balance_threshold": usd("10.00")});
    let response = app
        .send(Method::PUT, "/v1/account/alerts", &globex, Some(&alerts))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let set: Value = response.json().await.unwrap();
    assert_eq!(set["debit_limit"], usd("50.00"));
    assert_eq!(set["available"], usd("50.00"));
    assert_eq!(set["low_balance_threshold"], usd("10.00"));

    // Below the threshold: one email to the administrator; further falls are the same fall.
    adjust(&app, &account, "-45.00", "Usage").await;
    adjust(&app, &account, "-1.00", "Usage").await;
    let alert = wait_for_emails(&server, 1).await;
    assert_eq!(alert[0].rcpt_to, ["root@globex.example.com"]);
    assert_eq!(
        alert[0].header("Subject"),
        Some("Your account's balance is running low")
    );
    assert!(
        alert[0].body().contains("is 5.00 USD"),
        "{}",
        alert[0].body()
    );
    // Back above it, then below again: a second email.
    adjust(&app, &account, "20.00", "Top-up").await;
    adjust(&app, &account, "-20.00", "Usage").await;
    wait_for_emails(&server, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.received().len(), 2, "one email per fall");

    let refused = json!({"low_balance_threshold": json!({"amount": "1", "currency": "EUR"})});
    let response = app
        .send(Method::PUT, "/v1/account/alerts", &globex, Some(&refused))
        .await;
    assert_eq!(
        expect_invalid_fields(response).await,
        ["low_balance_threshold.currency"]
    );
}

async fn wait_for_emails(
    server: &SmtpServer,
    count: usize,
) -> Vec<common::smtp_server::ReceivedMessage> {
    // Up to 30 s, on a machine busy with other tests.
    for _ in 0..600 {
        let received = server.received();
        if received.len() >= count {
            return received;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{count} emails did not arrive: {:?}",
        server.received().len()
    );
}
