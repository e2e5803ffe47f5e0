//! Groups: a name and, per resource, `allow`, `deny` or unset. For administrators and users
//! whose groups allow `users`; a `user` may neither change a group they belong to nor set a
//! resource they are not allowed themselves.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use switchyard_command::{
    domain::{FieldError, GroupId, InvalidValue, Text, Validator},
    group::{self, Group, GroupCommand, GroupSettings, LiveGroup},
    handler::Loaded,
    idempotency::{Answering, KeyClaim},
    permissions::{Access, Permissions, Resource, touched},
};
use switchyard_projections::queries::{self, GroupRow};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    answer::Answer,
    auth::{Authorized, Caller, section},
    error::{ApiError, ApiResult},
    etag::{tagged, with_etag},
    extract::{IfMatch, JsonBody, Query, RequestContext},
    idempotency::{self, DigestedJson, IdempotencyKey},
    paging::{PageQuery, page},
    state::AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, patch_group, delete_group))
}

#[derive(Debug, Serialize, ToSchema)]
struct GroupView {
    id: String,
    name: String,
    /// `{resource: "allow" | "deny"}`; a resource left out is unset.
    #[schema(schema_with = crate::openapi::permissions_view)]
    permissions: BTreeMap<String, String>,
}

fn permissions_view(permissions: &Permissions) -> BTreeMap<String, String> {
    permissions
        .iter()
        .map(|(resource, access)| {
            let access = match access {
                Access::Allow => "allow",
                Access::Deny => "deny",
            };
            (resource.as_str().to_owned(), access.to_owned())
        })
        .collect()
}

impl GroupView {
    fn of_row(row: &GroupRow) -> ApiResult<Self> {
        Ok(Self {
            id: row.id.clone(),
            name: row.name.clone(),
            permissions: permissions_view(&row.permissions().map_err(ApiError::internal)?),
        })
    }

    fn of_group(id: GroupId, group: &LiveGroup) -> Self {
        Self {
            id: id.to_string(),
            name: group.settings.name.as_str().to_owned(),
            permissions: permissions_view(&group.settings.permissions),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct GroupPage {
    items: Vec<GroupView>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    /// `{resource: "allow" | "deny"}`; `null` or a missing resource leaves it unset.
    #[schema(schema_with = crate::openapi::permissions_request)]
    permissions: Option<BTreeMap<String, Option<String>>>,
}

fn parse_permissions(
    v: &mut Validator,
    raw: BTreeMap<String, Option<String>>,
) -> Option<Permissions> {
    let mut permissions = Permissions::new();
    let mut valid = true;
    for (resource, access) in raw {
        let field = format!("permissions.{resource}");
        let Some(resource) = v.field(
            &field,
            Resource::parse(&resource).ok_or_else(|| {
                let known: Vec<&str> = Resource::ALL.iter().map(|r| r.as_str()).collect();
                InvalidValue(format!("is not a resource; one of {}", known.join(", ")))
            }),
        ) else {
            valid = false;
            continue;
        };
        let access = match access.as_deref() {
            None => continue,
            Some("allow") => Access::Allow,
            Some("deny") => Access::Deny,
            Some(_) => {
                v.field::<()>(
                    &field,
                    Err(InvalidValue("must be `allow`, `deny` or null".into())),
                );
                valid = false;
                continue;
            }
        };
        permissions.insert(resource, access);
    }
    valid.then_some(permissions)
}

impl GroupBody {
    /// The settings this body asks for, over `current` (a PATCH leaves out what stays).
    fn parse(self, current: Option<&GroupSettings>) -> Result<GroupSettings, Vec<FieldError>> {
        let mut v = Validator::default();
        let name = match (self.name, current) {
            (Some(raw), _) => v.field("name", Text::parse(&raw, 1, 100)),
            (None, Some(current)) => Some(current.name.clone()),
            (None, None) => v.field::<Text>("name", Err(InvalidValue("is required".into()))),
        };
        let permissions = match (self.permissions, current) {
            (Some(raw), _) => parse_permissions(&mut v, raw),
            (None, Some(current)) => Some(current.permissions.clone()),
            (None, None) => Some(Permissions::new()),
        };
        v.finish(|| {
            Some(GroupSettings {
                name: name?,
                permissions: permissions?,
            })
        })
    }
}

fn group_id(raw: &str) -> ApiResult<GroupId> {
    GroupId::parse(raw).ok_or_else(|| ApiError::not_found("group"))
}

async fn load_group(state: &AppState, caller: &Caller, id: GroupId) -> ApiResult<LiveGroup> {
    let loaded: Loaded<Group> = state.load(&id.stream_id()).await?;
    loaded
        .state
        .live
        .filter(|group| group.account_id == caller.account_id)
        .ok_or_else(|| ApiError::not_found("group"))
}

/// A `user` may not change a group they are in, nor set resources they are not allowed.
async fn check_delegation(
    state: &AppState,
    caller: &Caller,
    id: Option<GroupId>,
    before: &Permissions,
    after: &Permissions,
) -> ApiResult<()> {
    if caller.is_administrator() {
        return Ok(());
    }
    if let Some(id) = id {
        let own = queries::grants_of(&state.db, caller.user_id).await?;
        if own.iter().any(|grant| grant.id == id) {
            return Err(ApiError::forbidden(
                "you may not change a group you belong to",
            ));
        }
    }
    caller.require_delegable(touched(before, after))
}

/// Runs a group command; what it changes in permissions is in force when it answers.
async fn run(
    state: &AppState,
    caller: &Caller,
    context: &RequestContext,
    id: GroupId,
    command: GroupCommand,
    answering: Option<Answering<'_, Loaded<Group>>>,
) -> ApiResult<Loaded<Group>> {
    let metadata = context.metadata_for(caller);
    let (group, position) =
        group::execute(&state.commands, id, command, &metadata, answering).await?;
    state.in_force(position).await?;
    Ok(group)
}

/// The group as answered; 404 once deleted.
fn answer(status: StatusCode, id: GroupId, group: &Loaded<Group>) -> ApiResult<Answer> {
    let live = group
        .state
        .live
        .as_ref()
        .ok_or_else(|| ApiError::not_found("group"))?;
    Ok(tagged(status, live.version, &GroupView::of_group(id, live)))
}

/// The account's groups, oldest first.
#[utoipa::path(get, path = "/v1/groups", params(PageQuery<GroupId>), responses(
    (status = 200, body = GroupPage), (status = 401), (status = 403),
))]
async fn list_groups(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    Query(query): Query<PageQuery<GroupId>>,
) -> ApiResult<Json<GroupPage>> {
    let limit = query.limit()?;
    let rows = queries::groups_page(
        &state.db,
        caller.account_id,
        query.cursor.map(|cursor| cursor.key()).as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = page(rows, limit, |row| row.id.clone());
    Ok(Json(GroupPage {
        items: rows
            .iter()
            .map(GroupView::of_row)
            .collect::<ApiResult<_>>()?,
        next_cursor,
    }))
}

/// Create a group.
#[utoipa::path(post, path = "/v1/groups", request_body = GroupBody, params(IdempotencyKey), responses(
    (status = 201, body = GroupView, headers(("ETag" = String)), links(
        ("GetGroup" = (operation_id = "get_group", parameters(("id" = "$response.body#/id")))),
        ("PatchGroup" = (operation_id = "patch_group", parameters(("id" = "$response.body#/id")))),
        ("DeleteGroup" = (operation_id = "delete_group", parameters(("id" = "$response.body#/id")))),
    )),
    (status = 403, description = "Sets a resource the caller is not allowed"),
    (status = 409, description = "Another group of the account has this name"), (status = 422),
))]
async fn create_group(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    context: RequestContext,
    key: IdempotencyKey,
    DigestedJson { body, digest }: DigestedJson<GroupBody>,
) -> ApiResult<Response> {
    let account = caller.account_id;
    let request = |claim| add_group(&state, &caller, &context, body, claim);
    idempotency::once(&state.idempotency, account, key, digest, request).await
}

async fn add_group(
    state: &AppState,
    caller: &Caller,
    context: &RequestContext,
    body: GroupBody,
    claim: Option<KeyClaim>,
) -> ApiResult<Answer> {
    let settings = body.parse(None).map_err(ApiError::validation)?;
    let no_permissions = Permissions::new();
    check_delegation(state, caller, None, &no_permissions, &settings.permissions).await?;
    let id = GroupId::new();
    let command = GroupCommand::Create {
        account_id: caller.account_id,
        settings,
    };
    let render = |group: &Loaded<Group>| {
        let created = answer(StatusCode::CREATED, id, group);
        created.expect("a group just created is live").stored()
    };
    let answering = claim.as_ref().map(|claim| Answering::new(claim, &render));
    let group = run(state, caller, context, id, command, answering).await?;
    answer(StatusCode::CREATED, id, &group)
}

/// One group.
#[utoipa::path(get, path = "/v1/groups/{id}", responses(
    (status = 200, body = GroupView, headers(("ETag" = String))), (status = 404),
))]
async fn get_group(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let row = queries::group(&state.db, caller.account_id, group_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("group"))?;
    Ok(with_etag(
        StatusCode::OK,
        row.version,
        GroupView::of_row(&row)?,
    ))
}

/// Change a group's name or permissions; what is left out stays.
#[utoipa::path(patch, path = "/v1/groups/{id}", request_body = GroupBody, params(IfMatch), responses(
    (status = 200, body = GroupView, headers(("ETag" = String))),
    (status = 403), (status = 404),
    (status = 409, description = "Another group of the account has this name"), (status = 412), (status = 422),
))]
async fn patch_group(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<GroupBody>,
) -> ApiResult<Response> {
    let id = group_id(&id)?;
    let current = load_group(&state, &caller, id).await?;
    let settings = body
        .parse(Some(&current.settings))
        .map_err(ApiError::validation)?;
    let before = &current.settings.permissions;
    check_delegation(&state, &caller, Some(id), before, &settings.permissions).await?;
    let command = GroupCommand::Change {
        account_id: caller.account_id,
        settings,
        seen,
    };
    let group = run(&state, &caller, &context, id, command, None).await?;
    Ok(answer(StatusCode::OK, id, &group)?.into_response())
}

/// Delete a group; its members leave it.
#[utoipa::path(delete, path = "/v1/groups/{id}", params(IfMatch), responses(
    (status = 204), (status = 403), (status = 404), (status = 412),
))]
async fn delete_group(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = group_id(&id)?;
    let current = load_group(&state, &caller, id).await?;
    let before = &current.settings.permissions;
    check_delegation(&state, &caller, Some(id), before, &Permissions::new()).await?;
    let command = GroupCommand::Delete {
        account_id: caller.account_id,
        seen,
    };
    run(&state, &caller, &context, id, command, None).await?;
    Ok(StatusCode::NO_CONTENT)
}
