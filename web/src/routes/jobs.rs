//! Jobs as their account sees them: what a Test Email, a Test Mobile or a login alert did,
//! stage by stage.

use axum::{
    Json,
    extract::{Path, State},
};
use serde::{Deserialize, Serialize};
use switchyard_projections::queries::{self, JOB_KINDS, JobFilter, JobView, StageReport};
use ulid::Ulid;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{Authorized, section},
    error::{ApiError, ApiResult},
    extract::Query,
    paging::{Cursor, checked_limit, page},
    state::AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
}

const STATUSES: [&str; 4] = ["queued", "running", "succeeded", "failed"];

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct JobsQuery {
    /// `smtp_test`, `sms_test`, `login_alert` or `security_notice`.
    kind: Option<String>,
    /// `queued`, `running`, `succeeded` or `failed`.
    status: Option<String>,
    /// `next_cursor` of the previous page (the id of its last job).
    #[param(value_type = Option<String>, pattern = "^[0-7][0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{25}$")]
    cursor: Option<Cursor<Ulid>>,
    /// Jobs per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct Stage {
    /// For email: `connect`, `tls`, `auth`, `mail_from`, `rcpt_to`, `data`; for SMS:
    /// `request`.
    stage: String,
    ok: bool,
    /// The server's reply, or what went wrong.
    detail: String,
}

#[derive(Serialize, ToSchema)]
struct Job {
    id: String,
    kind: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    status: String,
    /// Attempts made so far.
    attempts: i64,
    created_at: String,
    /// When the first attempt started.
    started_at: Option<String>,
    finished_at: Option<String>,
    /// When a failed attempt will be tried again.
    retry_at: Option<String>,
    /// The last attempt's stages.
    stages: Vec<Stage>,
    /// Why the last attempt failed, in words to act on.
    error: Option<String>,
}

impl From<JobView> for Job {
    fn from(view: JobView) -> Self {
        Self {
            id: view.id,
            kind: view.kind,
            status: view.status,
            attempts: view.attempts,
            created_at: view.created_at,
            started_at: view.started_at,
            finished_at: view.finished_at,
            retry_at: view.retry_at,
            stages: view
                .stages
                .into_iter()
                .map(|StageReport { stage, ok, detail }| Stage { stage, ok, detail })
                .collect(),
            error: view.error,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct JobPage {
    items: Vec<Job>,
    next_cursor: Option<String>,
}

fn one_of(field: &str, value: Option<String>, allowed: &[&str]) -> ApiResult<Option<String>> {
    match value {
        Some(value) if !allowed.contains(&value.as_str()) => Err(ApiError::invalid_field(
            field,
            format!("must be one of {}", allowed.join(", ")),
        )),
        value => Ok(value),
    }
}

/// The account's recent jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", params(JobsQuery), responses(
    (status = 200, body = JobPage), (status = 401), (status = 403), (status = 422),
))]
async fn list_jobs(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
    Query(query): Query<JobsQuery>,
) -> ApiResult<Json<JobPage>> {
    let limit = checked_limit(query.limit)?;
    let filter = JobFilter {
        kind: one_of("kind", query.kind, &JOB_KINDS)?,
        status: one_of("status", query.status, &STATUSES)?,
        before: query.cursor.map(|cursor| cursor.key()),
        limit: limit + 1,
    };
    let rows = queries::jobs(&state.db, caller.account_id, &filter).await?;
    let (rows, next_cursor) = page(rows, limit, |job| job.id.clone());
    Ok(Json(JobPage {
        items: rows.into_iter().map(Job::from).collect(),
        next_cursor,
    }))
}

/// One job: its status, attempts and the last attempt's stages.
#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path)), responses(
    (status = 200, body = Job), (status = 401), (status = 403), (status = 404),
))]
async fn get_job(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    queries::job(&state.db, caller.account_id, &id)
        .await?
        .map(|view| Json(view.into()))
        .ok_or_else(|| ApiError::not_found("job"))
}
