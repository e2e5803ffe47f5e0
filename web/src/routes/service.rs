//! Liveness, readiness and the OpenAPI document.

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{AppState, READY_MAX_LAG, error::ApiError};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

pub fn openapi_route(openapi: utoipa::openapi::OpenApi) -> Router<AppState> {
    let document = openapi.to_json().expect("the OpenAPI document serializes");
    Router::new().route(
        "/v1/openapi.json",
        get(move || async move { ([("content-type", "application/json")], document) }),
    )
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "The process runs")))]
async fn healthz() -> &'static str {
    "ok"
}

/// 200 when the database answers and every projection is within bounds of the log.
#[utoipa::path(get, path = "/readyz", security(()), responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "Database down or projections behind"),
))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let head = match state.log.head_position().await {
        Ok(head) => head,
        Err(error) => {
            tracing::warn!(%error, "readiness: database does not answer");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"database": "unavailable"})),
            );
        }
    };
    let lags: serde_json::Map<String, serde_json::Value> = state
        .projections
        .handles()
        .iter()
        .map(|handle| (handle.name.to_owned(), (head - handle.checkpoint()).into()))
        .collect();
    let ready = lags
        .values()
        .all(|lag| lag.as_i64().unwrap_or(i64::MAX) <= READY_MAX_LAG);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"database": "ok", "head": head, "projection_lag": lags})),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("this path")
}
