//! A fake PayPal OAuth endpoint on 127.0.0.1, answering as PayPal does: `POST
//! /v1/oauth2/token` with basic auth `client_id:client_secret` and the form
//! `grant_type=client_credentials` gets an access token; anything else gets PayPal's OAuth
//! error body (`{"error": "invalid_client", "error_description": "…"}`).

use std::sync::Arc;

use axum::{
    Form, Json, Router,
    extract::{State, rejection::FormRejection},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

/// The access token the fake issues: a test checks that no report shows it.
pub const ACCESS_TOKEN: &str = "A21AAFakeAccessToken0123456789";

pub struct PaypalFake {
    /// What to set as `SWITCHYARD_PAYPAL_API_BASE`.
    pub base_url: String,
}

struct Client {
    id: String,
    secret: String,
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
}

impl PaypalFake {
    /// An app whose credentials are `client_id:client_secret`.
    pub async fn start(client_id: &str, client_secret: &str) -> Self {
        let client = Arc::new(Client {
            id: client_id.into(),
            secret: client_secret.into(),
        });
        let router = Router::new()
            .route("/v1/oauth2/token", post(token))
            .with_state(client);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { base_url }
    }
}

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, Json(body)).into_response()
}

async fn token(
    State(client): State<Arc<Client>>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let credentials = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok());
    let expected = format!("{}:{}", client.id, client.secret);
    if credentials.as_deref() != Some(expected.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client Authentication failed",
        );
    }
    match form {
        Ok(Form(TokenRequest {
            grant_type: Some(grant),
        })) if grant == "client_credentials" => Json(json!({
            "scope": "https://uri.paypal.com/services/payments/payment https://uri.paypal.com/services/payments/refund",
            "access_token": ACCESS_TOKEN,
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": 32400,
            "nonce": "2026-12-05T03:00:00ZfakeNonce",
        }))
        .into_response(),
        Ok(_) => error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Grant Type is NULL",
        ),
        Err(_) => error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Request is not well-formed",
        ),
    }
}
