//! Liveness, readiness and the OpenAPI document.

use std::collections::BTreeMap;

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{auth::Caller, error::ApiError, state::AppState};

/// `/readyz` fails when a projection is further behind the log than this.
const READY_MAX_LAG: i64 = 10_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

pub fn openapi_route(document: serde_json::Value) -> Router<AppState> {
    let document = document.to_string();
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

#[derive(Serialize, ToSchema)]
struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// Why: for administrators only (it names the installation's projections and errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<ReadinessDetails>,
}

#[derive(Serialize, ToSchema)]
struct ReadinessDetails {
    /// `ok` or `unavailable`.
    database: &'static str,
    /// The log's last position; absent when the database does not answer.
    head: Option<i64>,
    projections: Vec<ProjectionReadiness>,
    /// This process's job workers by queue; empty when they run in other processes.
    workers: BTreeMap<String, WorkerReadiness>,
}

#[derive(Serialize, ToSchema)]
struct ProjectionReadiness {
    name: &'static str,
    /// The last position it applied.
    position: i64,
    /// How far it is behind the log's head.
    lag: Option<i64>,
    /// Set while it fails to apply the log.
    failing: Option<ProjectionFailure>,
}

#[derive(Serialize, ToSchema)]
struct ProjectionFailure {
    error: String,
    since: DateTime<Utc>,
    /// The position of the event it cannot get past, when one event alone fails.
    stuck_at: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct WorkerReadiness {
    /// Restarts since the process started.
    restarts: u64,
    /// Set while its worker keeps failing.
    failing: Option<WorkerFailure>,
}

#[derive(Serialize, ToSchema)]
struct WorkerFailure {
    error: String,
    since: DateTime<Utc>,
    /// Failures in a row; each waits longer before the next start.
    failures: u32,
    restart_in_ms: u64,
}

/// Ready when the database answers, no projection is failing or more than 10,000 events
/// behind the log, and no job worker of this process keeps failing. Anyone may ask; an
/// administrator's session also gets the details (projections with their positions, lags
/// and errors, the job workers).
#[utoipa::path(get, path = "/readyz", security((), ("bearer" = [])), responses(
    (status = 200, body = Readiness, description = "Ready"),
    (status = 503, body = Readiness, description = "The database does not answer, a projection \
        is failing or far behind, or a job worker keeps failing"),
))]
async fn readyz(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> (StatusCode, Json<Readiness>) {
    let details = readiness(&state).await;
    let ready = details.database == "ok"
        && details
            .projections
            .iter()
            .all(|p| p.failing.is_none() && p.lag.is_some_and(|lag| lag <= READY_MAX_LAG))
        && details.workers.values().all(|w| w.failing.is_none());
    let (status, code) = match ready {
        true => (StatusCode::OK, "ready"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
    };
    let administrator = caller.is_ok_and(|caller| caller.is_administrator());
    let body = Readiness {
        status: code,
        details: administrator.then_some(details),
    };
    (status, Json(body))
}

async fn readiness(state: &AppState) -> ReadinessDetails {
    let head = match state.log.head_position().await {
        Ok(head) => Some(head),
        Err(error) => {
            tracing::warn!(%error, "readiness: database does not answer");
            None
        }
    };
    let projections = state
        .projections
        .handles()
        .iter()
        .map(|handle| {
            let position = handle.checkpoint();
            ProjectionReadiness {
                name: handle.name,
                position,
                lag: head.map(|head| (head - position).max(0)),
                failing: handle.failure().map(|f| ProjectionFailure {
                    error: f.error,
                    since: f.since,
                    stuck_at: f.stuck_at,
                }),
            }
        })
        .collect();
    let workers = state
        .workers
        .queues()
        .into_iter()
        .map(|(queue, health)| {
            let failing = health.failing.map(|f| WorkerFailure {
                error: f.error,
                since: f.since,
                failures: f.failures,
                restart_in_ms: f.restart_in_ms,
            });
            let readiness = WorkerReadiness {
                restarts: health.restarts,
                failing,
            };
            (queue.to_owned(), readiness)
        })
        .collect();
    ReadinessDetails {
        database: if head.is_some() { "ok" } else { "unavailable" },
        head,
        projections,
        workers,
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("this path")
}

/// A path that exists, asked with a method it does not answer (axum adds `Allow`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
