//! A fake Stripe API on 127.0.0.1, answering as Stripe does: the balance of the account a
//! secret key (`Authorization: Bearer sk_…`) belongs to, with its `livemode`, and Stripe's
//! error body with 401 for a missing or unknown key.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tokio::net::TcpListener;

pub struct StripeFake {
    /// What to set as `SWITCHYARD_STRIPE_API_BASE`.
    pub base_url: String,
    state: Arc<FakeState>,
}

struct FakeState {
    secret_key: String,
    /// What the balance says: whether the key is a live mode key.
    livemode: bool,
    requests: AtomicUsize,
}

impl StripeFake {
    /// An account whose only key is `secret_key`, in live mode or not.
    pub async fn start(secret_key: &str, livemode: bool) -> Self {
        let state = Arc::new(FakeState {
            secret_key: secret_key.into(),
            livemode,
            requests: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/v1/balance", get(balance))
            .fallback(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "Unrecognized request URL. Please see https://stripe.com/docs",
                )
            })
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { base_url, state }
    }

    /// Balance requests received, valid or not.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

/// Stripe's error body.
fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"type": "invalid_request_error", "message": message}});
    (status, Json(body)).into_response()
}

/// Stripe shows an unknown key masked, its last four characters in the clear.
fn masked(key: &str) -> String {
    let (prefix, rest) = key.split_at(key.len().min(8));
    let last4 = &rest[rest.len().saturating_sub(4)..];
    format!(
        "{prefix}{}{last4}",
        "*".repeat(rest.len().saturating_sub(4))
    )
}

async fn balance(State(state): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let key = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match key {
        None => error(
            StatusCode::UNAUTHORIZED,
            "You did not provide an API key. You need to provide your API key in the \
             Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        ),
        Some(key) if key != state.secret_key => error(
            StatusCode::UNAUTHORIZED,
            &format!("Invalid API Key provided: {}", masked(key)),
        ),
        Some(_) => {
            let funds = json!([{"amount": 0, "currency": "usd", "source_types": {"card": 0}}]);
            Json(json!({
                "object": "balance",
                "available": funds,
                "connect_reserved": [{"amount": 0, "currency": "usd"}],
                "livemode": state.livemode,
                "pending": funds,
            }))
            .into_response()
        }
    }
}
