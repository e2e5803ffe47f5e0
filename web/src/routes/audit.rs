//! The audit log: who changed what, when and from where.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_projections::queries::{self, AuditFilter, AuditRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{Authorized, section},
    error::{ApiError, ApiResult},
    extract::{Query, query_time},
    paging::{Cursor, checked_limit, page},
    state::AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// Only changes by this user id (or `system`).
    actor: Option<String>,
    /// Only this event type, e.g. `CompanyInformationChanged`.
    r#type: Option<String>,
    /// Only this stream, e.g. `account-…`.
    stream: Option<String>,
    /// From this time (RFC 3339, inclusive).
    from: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    to: Option<String>,
    /// `next_cursor` of the previous page (the position of its last entry).
    #[param(value_type = Option<String>, pattern = "^-?[0-9]{1,19}$")]
    cursor: Option<Cursor<i64>>,
    /// Entries per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct AuditActor {
    id: String,
    email: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct AuditEntry {
    position: i64,
    at: String,
    actor: AuditActor,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    event_type: String,
    stream: String,
    summary: String,
    /// `{field: {from, to}}`; secrets show as `"***"`.
    #[schema(value_type = Object)]
    changes: Value,
}

#[derive(Serialize, ToSchema)]
struct AuditPage {
    items: Vec<AuditEntry>,
    next_cursor: Option<String>,
}

fn entry(row: AuditRow) -> ApiResult<AuditEntry> {
    Ok(AuditEntry {
        position: row.position,
        at: row.recorded_at,
        actor: AuditActor {
            id: row.actor_id,
            email: row.actor_email,
        },
        ip: row.client_ip,
        user_agent: row.user_agent,
        request_id: row.request_id,
        event_type: row.event_type,
        stream: row.stream_id,
        summary: row.summary,
        changes: serde_json::from_str(&row.changes).map_err(ApiError::internal)?,
    })
}

/// The account's audit log, newest first.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery), responses(
    (status = 200, body = AuditPage),
    (status = 401), (status = 403),
))]
async fn list_audit(
    State(state): State<AppState>,
    caller: Authorized<section::Audit>,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = checked_limit(query.limit)?;
    let filter = AuditFilter {
        actor: query.actor,
        event_type: query.r#type,
        stream: query.stream,
        from: query_time("from", query.from)?,
        to: query_time("to", query.to)?,
        before: query.cursor.map(|Cursor(position)| position),
    };
    let rows = queries::audit(&state.db, caller.account_id, &filter, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, |row| row.position.to_string());
    let items = rows.into_iter().map(entry).collect::<ApiResult<_>>()?;
    Ok(Json(AuditPage { items, next_cursor }))
}
