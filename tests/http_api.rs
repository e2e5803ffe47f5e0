//! The HTTP contract end to end: a real server on port 0 with a fresh database.

mod common;

use common::{
    Backend, TestApp, company, expect_invalid_fields, expect_problem, login, problem_fields,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    login_gives_a_token_and_logout_ends_it,
    wrong_password_and_unknown_email_get_the_same_answer,
    company_information_round_trips_with_an_etag_and_is_audited,
    general_information_round_trips,
    invalid_values_are_refused_naming_each_field,
    malformed_bodies_are_refused_with_problem_json,
    a_stale_if_match_is_refused,
    of_two_concurrent_puts_with_the_same_if_match_exactly_one_wins,
    a_put_that_changes_nothing_records_nothing,
    cookie_sessions_refuse_cross_site_changes,
    the_audit_log_filters_and_pages,
    service_endpoints_answer,
    every_answer_carries_the_security_headers,
);

async fn every_answer_carries_the_security_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let credentials = json!({"email": common::ADMIN_EMAIL, "password": common::ADMIN_PASSWORD});
    let answers = [
        (
            "a login with its token",
            app.client.post(app.url("/v1/sessions")).json(&credentials),
        ),
        ("a refusal", app.client.get(app.url("/v1/me"))),
        (
            "a read",
            app.client.get(app.url("/v1/me")).bearer_auth(&app.token),
        ),
        (
            "a path that does not exist",
            app.client.get(app.url("/nowhere")),
        ),
        (
            "the OpenAPI document",
            app.client.get(app.url("/v1/openapi.json")),
        ),
    ];
    for (what, request) in answers {
        let response = request.send().await.unwrap();
        let headers = response.headers();
        for (name, value) in [
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("content-security-policy", "frame-ancestors 'none'"),
        ] {
            assert_eq!(
                headers.get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{name} on {what}"
            );
        }
    }
}

async fn login_gives_a_token_and_logout_ends_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .client
        .post(app.url("/v1/sessions"))
        .json(&json!({"email": "ADMIN@acme.example.com", "password": common::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "email is case-insensitive"
    );
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["email"], "admin@acme.example.com");
    assert_eq!(body["user"]["role"], "administrator");
    let token = body["token"].as_str().unwrap();
    assert!(token.len() >= 43, "256-bit token");

    let with_token = |path: &str| app.client.get(app.url(path)).bearer_auth(token);
    assert_eq!(
        with_token("/v1/account/company")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let logout = app
        .client
        .delete(app.url("/v1/sessions/current"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let after = with_token("/v1/account/company").send().await.unwrap();
    expect_problem(after, StatusCode::UNAUTHORIZED).await;
    // The other session is untouched.
    assert_eq!(
        app.get("/v1/account/company").await.status(),
        StatusCode::OK
    );
}

async fn wrong_password_and_unknown_email_get_the_same_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let attempt = |email: &'static str, password: &'static str| {
        app.client
            .post(app.url("/v1/sessions"))
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    let wrong_password = attempt(common::ADMIN_EMAIL, "not the password")
        .await
        .unwrap();
    let wrong_body = expect_problem(wrong_password, StatusCode::UNAUTHORIZED).await;
    let unknown = attempt("nobody@acme.example.com", "not the password")
        .await
        .unwrap();
    let unknown_body = expect_problem(unknown, StatusCode::UNAUTHORIZED).await;
    assert_eq!(wrong_body, unknown_body);
}

async fn company_information_round_trips_with_an_etag_and_is_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let initial = app.get("/v1/account/company").await;
    assert_eq!(initial.headers()["etag"], "\"1\"");
    let initial: Value = initial.json().await.unwrap();
    assert_eq!(initial["name"], "Acme");
    assert_eq!(initial["country"], Value::Null);

    let response = app
        .put_if_match("/v1/account/company", "\"1\"", &company("Acme Telecom"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(etag, "\"1\"");
    let put_body: Value = response.json().await.unwrap();
    assert_eq!(put_body, company("Acme Telecom"));

    // Read-your-writes: the next GET and the audit log already show the change.
    let got = app.get("/v1/account/company").await;
    assert_eq!(got.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(got.json::<Value>().await.unwrap(), put_body);
    let audit = app.audit().await;
    let entry = &audit[0];
    assert_eq!(entry["event_type"], "CompanyInformationChanged");
    assert_eq!(entry["actor"]["email"], common::ADMIN_EMAIL);
    assert_eq!(entry["ip"], "127.0.0.1");
    assert_eq!(entry["summary"], "Company information changed");
    assert_eq!(
        entry["changes"]["name"],
        json!({"from": "Acme", "to": "Acme Telecom"})
    );
    assert_eq!(
        entry["changes"]["country"],
        json!({"from": null, "to": "GB"})
    );
    assert!(
        entry["changes"].get("address_line2").is_none(),
        "unchanged fields are not listed"
    );
    // The account opening is audited too, and no secret reaches the audit log.
    let text = serde_json::to_string(&audit).unwrap();
    assert!(
        !text.contains("argon2"),
        "a password hash leaked into the audit log"
    );
    assert!(text.contains("\"***\""));
}

async fn general_information_round_trips(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let initial: Value = app.get("/v1/account/general").await.json().await.unwrap();
    assert_eq!(
        initial,
        json!({"currency": "USD", "date_format": "YYYY-MM-DD", "phone": null, "mobile": null, "login_alerts": false})
    );
    let sent = json!({"currency": "jpy", "date_format": "DD.MM.YYYY", "phone": "+44 20 7123 4567",
                      "mobile": "+447700900123", "login_alerts": true});
    let response = app.put("/v1/account/general", &sent).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stored = json!({"currency": "JPY", "date_format": "DD.MM.YYYY", "phone": "+442071234567",
                        "mobile": "+447700900123", "login_alerts": true});
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        stored,
        "normalised"
    );
    assert_eq!(
        app.get("/v1/account/general")
            .await
            .json::<Value>()
            .await
            .unwrap(),
        stored
    );
    // The company section's ETag did not move with the general section.
    assert_eq!(
        app.get("/v1/account/company").await.headers()["etag"],
        "\"1\""
    );
}

async fn invalid_values_are_refused_naming_each_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut bad_company = company("Acme");
    bad_company["country"] = json!("UK");
    bad_company["email"] = json!("not-an-email");
    bad_company["name"] = json!("   ");
    bad_company["post_code"] = json!("x".repeat(21));
    let fields = expect_invalid_fields(app.put("/v1/account/company", &bad_company).await).await;
    assert_eq!(fields, ["country", "email", "name", "post_code"]);

    let bad_general = json!({"currency": "EURO", "date_format": "YYYY/MM/DD", "phone": "0207 123 4567",
                             "mobile": "+0123", "login_alerts": false});
    let fields = expect_invalid_fields(app.put("/v1/account/general", &bad_general).await).await;
    assert_eq!(fields, ["currency", "date_format", "mobile", "phone"]);
    // Nothing was written.
    let current: Value = app.get("/v1/account/company").await.json().await.unwrap();
    assert_eq!(current["name"], "Acme");
    assert_eq!(
        app.audit().await.len(),
        common::OPENING_EVENTS + 1,
        "only the account opening and the login are audited"
    );
}

async fn malformed_bodies_are_refused_with_problem_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let put_raw = |body: String, content_type: &'static str| {
        app.client
            .put(app.url("/v1/account/company"))
            .bearer_auth(&app.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let json = "application/json";
    expect_problem(
        put_raw("{\"name\": ".into(), json).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;

    let mut wrong_type = company("Acme");
    wrong_type["city"] = json!(42);
    let problem = expect_problem(
        put_raw(wrong_type.to_string(), json).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["city"]);

    let mut missing = company("Acme");
    missing.as_object_mut().unwrap().remove("email");
    let problem = expect_problem(
        put_raw(missing.to_string(), json).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["email"]);

    let mut unknown = company("Acme");
    unknown["fax"] = json!("+441234567890");
    let problem = expect_problem(
        put_raw(unknown.to_string(), json).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem_fields(&problem), ["fax"]);

    let mut oversized = company("Acme");
    oversized["address_line2"] = json!("x".repeat(70 * 1024));
    expect_problem(
        put_raw(oversized.to_string(), json).await.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    expect_problem(
        put_raw(company("Acme").to_string(), "text/plain")
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;

    let current: Value = app.get("/v1/account/company").await.json().await.unwrap();
    assert_eq!(current["name"], "Acme", "nothing was written");
}

async fn a_stale_if_match_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(
        app.put_if_match("/v1/account/company", "\"1\"", &company("First"))
            .await
            .status(),
        StatusCode::OK
    );
    let stale = app
        .put_if_match("/v1/account/company", "\"1\"", &company("Second"))
        .await;
    expect_problem(stale, StatusCode::PRECONDITION_FAILED).await;
    let garbage = app
        .put_if_match("/v1/account/company", "W/\"x\"", &company("Third"))
        .await;
    expect_problem(garbage, StatusCode::PRECONDITION_FAILED).await;
    let current: Value = app.get("/v1/account/company").await.json().await.unwrap();
    assert_eq!(current["name"], "First");
}

async fn of_two_concurrent_puts_with_the_same_if_match_exactly_one_wins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for round in 0..5 {
        let etag = app.get("/v1/account/company").await.headers()["etag"]
            .to_str()
            .unwrap()
            .to_owned();
        let (body_a, body_b) = (company(&format!("A{round}")), company(&format!("B{round}")));
        let (a, b) = tokio::join!(
            app.put_if_match("/v1/account/company", &etag, &body_a),
            app.put_if_match("/v1/account/company", &etag, &body_b),
        );
        let mut statuses = [a.status(), b.status()];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::PRECONDITION_FAILED],
            "round {round}"
        );
        let winner = if a.status() == StatusCode::OK {
            format!("A{round}")
        } else {
            format!("B{round}")
        };
        let current: Value = app.get("/v1/account/company").await.json().await.unwrap();
        assert_eq!(current["name"], winner.as_str());
    }
}

async fn a_put_that_changes_nothing_records_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.put("/v1/account/company", &company("Same")).await;
    let etag = first.headers()["etag"].clone();
    let audited = app.audit().await.len();
    let again = app.put("/v1/account/company", &company("Same")).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["etag"], etag);
    assert_eq!(app.audit().await.len(), audited);
}

async fn cookie_sessions_refuse_cross_site_changes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = login(
        &app.client,
        &app.base,
        common::ADMIN_EMAIL,
        common::ADMIN_PASSWORD,
    )
    .await;
    let cookie = format!("switchyard_session={token}");
    let put = |site: &'static str| {
        app.client
            .put(app.url("/v1/account/company"))
            .header("cookie", &cookie)
            .header("sec-fetch-site", site)
            .json(&company("Via cookie"))
            .send()
    };
    expect_problem(put("cross-site").await.unwrap(), StatusCode::FORBIDDEN).await;
    let evil_origin = app
        .client
        .put(app.url("/v1/account/company"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .json(&company("Via cookie"))
        .send()
        .await
        .unwrap();
    expect_problem(evil_origin, StatusCode::FORBIDDEN).await;
    assert_eq!(put("same-origin").await.unwrap().status(), StatusCode::OK);
    let read = app
        .client
        .get(app.url("/v1/account/company"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.status(),
        StatusCode::OK,
        "safe methods need no origin check"
    );
}

async fn the_audit_log_filters_and_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for n in 0..5 {
        app.put("/v1/account/company", &company(&format!("Name {n}")))
            .await;
    }
    app.put(
        "/v1/account/general",
        &json!({"currency": "EUR", "date_format": "YYYY-MM-DD"}),
    )
    .await;

    let page: Value = app
        .get("/v1/audit?type=CompanyInformationChanged&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["changes"]["name"]["to"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&page), ["Name 4", "Name 3"], "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let next: Value = app
        .get(&format!(
            "/v1/audit?type=CompanyInformationChanged&limit=2&cursor={cursor}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&next), ["Name 2", "Name 1"]);

    let by_system: Value = app
        .get("/v1/audit?actor=system")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        by_system["items"].as_array().unwrap().len(),
        common::OPENING_EVENTS,
        "the account opening"
    );
    let future: Value = app
        .get("/v1/audit?from=2999-01-01T00:00:00Z")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(future["items"], json!([]));
    let bad = expect_problem(
        app.get("/v1/audit?from=yesterday").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(problem_fields(&bad), ["from"]);
}

async fn service_endpoints_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(ready.headers().contains_key("x-request-id"));
    let openapi: Value = app
        .client
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/sessions",
        "/v1/sessions/current",
        "/v1/account/company",
        "/v1/account/general",
        "/v1/audit",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    expect_problem(app.get("/v1/nothing-here").await, StatusCode::NOT_FOUND).await;
}
