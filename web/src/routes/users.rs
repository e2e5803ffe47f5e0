//! The account's users: for administrators and users whose groups allow `users`.
//!
//! A `user` who manages users may not act beyond their own rights: they cannot change roles,
//! touch administrators, change their own groups, or put anyone in or out of a group that
//! sets a resource they are not allowed themselves.

use std::collections::BTreeSet;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Deserializer, Serialize};
use switchyard_command::{
    domain::{
        EmailAddress, FieldError, GroupId, NewPassword, PhoneNumber, Text, UserId, Validator,
    },
    handler::Loaded,
    idempotency::{Answering, KeyClaim},
    permissions::{EffectivePermissions, Resource},
    team::{self, NewUser, UserOutcome},
    user::{Member, Role, User, UserCommand, UserEdit},
};
use switchyard_projections::queries;
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
    routes::user_views::{PermissionsView, UserView, permissions_view, phone_field},
    state::AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(user_permissions))
        .routes(routes!(reset_user_totp))
}

#[derive(Serialize, ToSchema)]
struct UserPage {
    items: Vec<UserView>,
    next_cursor: Option<String>,
}

/// Deserializes a field that may be absent (keep), `null` (clear) or a value (set).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

fn parse_groups(v: &mut Validator, raw: Option<Vec<String>>) -> Option<Option<BTreeSet<GroupId>>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let mut groups = BTreeSet::new();
    let mut valid = true;
    for (index, id) in raw.iter().enumerate() {
        let parsed = GroupId::parse(id).ok_or_else(|| {
            switchyard_command::domain::InvalidValue(format!("{id:?} is not a group id"))
        });
        match v.field(&format!("groups[{index}]"), parsed) {
            Some(id) => {
                groups.insert(id);
            }
            None => valid = false,
        }
    }
    valid.then_some(Some(groups))
}

fn parse_role(v: &mut Validator, raw: Option<String>) -> Option<Option<Role>> {
    match raw {
        None => Some(None),
        Some(raw) => v
            .field(
                "role",
                Role::parse(&raw).ok_or_else(|| {
                    switchyard_command::domain::InvalidValue(
                        "must be `user` or `administrator`".into(),
                    )
                }),
            )
            .map(Some),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    #[schema(format = Email)]
    email: String,
    /// 8 to 128 characters, not a commonly used password. Write-only.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    /// `user` (default) or `administrator`.
    #[schema(value_type = Option<crate::openapi::values::Role>)]
    role: Option<String>,
    /// Group ids.
    #[serde(default)]
    groups: Vec<String>,
    phone: Option<String>,
    mobile: Option<String>,
}

struct ParsedNewUser {
    name: Text,
    email: EmailAddress,
    password: NewPassword,
    role: Role,
    groups: BTreeSet<GroupId>,
    phone: Option<PhoneNumber>,
    mobile: Option<PhoneNumber>,
}

impl NewUserBody {
    fn parse(self) -> Result<ParsedNewUser, Vec<FieldError>> {
        let mut v = Validator::default();
        let name = v.field("name", Text::parse(&self.name, 1, 100));
        let email = v.field("email", EmailAddress::parse(&self.email));
        let password = v.field("password", NewPassword::parse(self.password));
        let role = parse_role(&mut v, self.role);
        let groups = parse_groups(&mut v, Some(self.groups));
        let phone = phone_field(&mut v, "phone", self.phone.map(Some));
        let mobile = phone_field(&mut v, "mobile", self.mobile.map(Some));
        v.finish(|| {
            Some(ParsedNewUser {
                name: name?,
                email: email?,
                password: password?,
                role: role?.unwrap_or(Role::User),
                groups: groups?.unwrap_or_default(),
                phone: phone?.flatten(),
                mobile: mobile?.flatten(),
            })
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    #[schema(format = Email)]
    email: Option<String>,
    /// A new password for the user; their sessions end. Write-only.
    #[schema(min_length = 8, max_length = 128)]
    password: Option<String>,
    #[schema(value_type = Option<crate::openapi::values::Role>)]
    role: Option<String>,
    groups: Option<Vec<String>>,
    /// `false` disables the user: they cannot log in and their sessions end.
    enabled: Option<bool>,
    /// `null` or `""` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    mobile: Option<Option<String>>,
}

impl UserPatch {
    fn parse(self) -> Result<(UserEdit, Option<NewPassword>), Vec<FieldError>> {
        let mut v = Validator::default();
        let name = self
            .name
            .map(|raw| v.field("name", Text::parse(&raw, 1, 100)));
        let email = self
            .email
            .map(|raw| v.field("email", EmailAddress::parse(&raw)));
        let password = self
            .password
            .map(|raw| v.field("password", NewPassword::parse(raw)));
        let role = parse_role(&mut v, self.role);
        let groups = parse_groups(&mut v, self.groups);
        let phone = phone_field(&mut v, "phone", self.phone);
        let mobile = phone_field(&mut v, "mobile", self.mobile);
        v.finish(|| {
            let edit = UserEdit {
                name: name.map(|name| name.ok_or(())).transpose().ok()?,
                email: email.map(|email| email.ok_or(())).transpose().ok()?,
                role: role?,
                groups: groups?,
                phone: phone?,
                mobile: mobile?,
                enabled: self.enabled,
                password_hash: None,
            };
            let password = password.map(|p| p.ok_or(())).transpose().ok()?;
            Some((edit, password))
        })
    }
}

fn user_id(raw: &str) -> ApiResult<UserId> {
    UserId::parse(raw).ok_or_else(|| ApiError::not_found("user"))
}

/// The resources that joining or leaving `groups` changes for a user.
async fn resources_of_groups(
    state: &AppState,
    caller: &Caller,
    groups: impl Iterator<Item = &GroupId>,
) -> ApiResult<BTreeSet<Resource>> {
    let mut touched = BTreeSet::new();
    for group in groups {
        if let Some(row) = queries::group(&state.db, caller.account_id, *group).await? {
            touched.extend(row.permissions().map_err(ApiError::internal)?.into_keys());
        }
    }
    Ok(touched)
}

/// What a command does to a user, as far as the caller's rights go.
struct Reach<'a> {
    edit: &'a UserEdit,
    /// It sets their password.
    sets_password: bool,
    /// It deletes them.
    deletes: bool,
}

impl Reach<'_> {
    /// Whether it decides who logs in as `member`: whoever sets their password or email can
    /// log in as them, enabling them lets them log in again, and deleting them is the end of
    /// everything they may do.
    fn controls_login(&self, member: &Member) -> bool {
        let edit = self.edit;
        self.sets_password
            || self.deletes
            || edit
                .email
                .as_ref()
                .is_some_and(|email| email.normalized() != member.email.normalized())
            || edit
                .enabled
                .is_some_and(|enabled| enabled != member.enabled)
    }
}

/// The limits on whoever manages users, administrators included: your own password and
/// email change at `/v1/me`, which asks for your current password.
fn check_own_login(caller: &Caller, target: UserId, reach: &Reach) -> ApiResult<()> {
    if target != caller.user_id {
        return Ok(());
    }
    if reach.sets_password {
        return Err(ApiError::invalid_field(
            "password",
            "change your own password with POST /v1/me/password, which asks for the current one",
        ));
    }
    if reach.edit.email.is_some() {
        return Err(ApiError::invalid_field(
            "email",
            "change your own email with PUT /v1/me, which asks for your current password",
        ));
    }
    Ok(())
}

/// The limits on a `user` who manages users (administrators have none): nothing beyond
/// their own rights.
async fn check_delegation(
    state: &AppState,
    caller: &Caller,
    target: Option<(UserId, &Member)>,
    reach: &Reach<'_>,
) -> ApiResult<()> {
    if caller.is_administrator() {
        return Ok(());
    }
    let edit = reach.edit;
    if edit
        .role
        .is_some_and(|role| Some(role) != target.map(|(_, m)| m.role))
    {
        return Err(ApiError::forbidden("only administrators may change roles"));
    }
    if let Some((id, member)) = target {
        if member.role == Role::Administrator {
            return Err(ApiError::forbidden(
                "only administrators may change an administrator",
            ));
        }
        if id == caller.user_id && edit.groups.as_ref().is_some_and(|g| *g != member.groups) {
            return Err(ApiError::forbidden("you may not change your own groups"));
        }
        if id != caller.user_id && reach.controls_login(member) {
            let theirs = resources_of_groups(state, caller, member.groups.iter()).await?;
            caller.require_delegable(theirs)?;
        }
    }
    if let Some(groups) = &edit.groups {
        let current = target.map(|(_, m)| m.groups.clone()).unwrap_or_default();
        let changed = groups.symmetric_difference(&current);
        let touched = resources_of_groups(state, caller, changed).await?;
        caller.require_delegable(touched)?;
    }
    Ok(())
}

async fn load_member(state: &AppState, caller: &Caller, id: UserId) -> ApiResult<Loaded<User>> {
    let loaded: Loaded<User> = state.load(&id.stream_id()).await?;
    match &loaded.state.member {
        Some(member) if member.account_id == caller.account_id => Ok(loaded),
        _ => Err(ApiError::not_found("user")),
    }
}

/// The user as `outcome` left them, showing the groups in `live`.
fn answer(status: StatusCode, outcome: &UserOutcome, live: &BTreeSet<GroupId>) -> Answer {
    let view = UserView::of_member(outcome.user_id, &outcome.member, live);
    tagged(status, outcome.member.version, &view)
}

/// The account's users, oldest first.
#[utoipa::path(get, path = "/v1/users", params(PageQuery<UserId>), responses(
    (status = 200, body = UserPage), (status = 401), (status = 403),
))]
async fn list_users(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    Query(query): Query<PageQuery<UserId>>,
) -> ApiResult<Json<UserPage>> {
    let limit = query.limit()?;
    let rows = queries::users_page(
        &state.db,
        caller.account_id,
        query.cursor.map(|cursor| cursor.key()).as_deref(),
        limit + 1,
    )
    .await?;
    let (rows, next_cursor) = page(rows, limit, |row| row.user.id.clone());
    Ok(Json(UserPage {
        items: rows.into_iter().map(UserView::of_row).collect(),
        next_cursor,
    }))
}

/// Add a user to the account.
#[utoipa::path(post, path = "/v1/users", request_body = NewUserBody, params(IdempotencyKey), responses(
    (status = 201, body = UserView, headers(("ETag" = String)), links(
        ("GetUser" = (operation_id = "get_user", parameters(("id" = "$response.body#/id")))),
        ("PatchUser" = (operation_id = "patch_user", parameters(("id" = "$response.body#/id")))),
        ("DeleteUser" = (operation_id = "delete_user", parameters(("id" = "$response.body#/id")))),
    )),
    (status = 403, description = "Beyond the caller's own rights"),
    (status = 409, description = "The email belongs to another user"),
    (status = 422, description = "Invalid fields, each named"),
))]
async fn create_user(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    context: RequestContext,
    key: IdempotencyKey,
    DigestedJson { body, digest }: DigestedJson<NewUserBody>,
) -> ApiResult<Response> {
    let account = caller.account_id;
    let request = |claim| add_user(&state, &caller, &context, body, claim);
    idempotency::once(&state.idempotency, account, key, digest, request).await
}

async fn add_user(
    state: &AppState,
    caller: &Caller,
    context: &RequestContext,
    body: NewUserBody,
    claim: Option<KeyClaim>,
) -> ApiResult<Answer> {
    let new = body.parse().map_err(ApiError::validation)?;
    let edit = UserEdit {
        groups: Some(new.groups.clone()),
        ..UserEdit::default()
    };
    if !caller.is_administrator() && new.role == Role::Administrator {
        return Err(ApiError::forbidden(
            "only administrators may add administrators",
        ));
    }
    let reach = Reach {
        edit: &edit,
        sets_password: false,
        deletes: false,
    };
    check_delegation(state, caller, None, &reach).await?;
    let password_hash = state.passwords.hash(new.password.into_secret()).await;
    let metadata = context.metadata_for(caller);
    let new_user = NewUser {
        account_id: caller.account_id,
        name: new.name,
        email: new.email,
        role: new.role,
        groups: new.groups,
        phone: new.phone,
        mobile: new.mobile,
        password_hash,
    };
    // The groups were checked live before the user joined them.
    let render = |outcome: &UserOutcome| {
        answer(StatusCode::CREATED, outcome, &outcome.member.groups).stored()
    };
    let answering = claim.as_ref().map(|claim| Answering::new(claim, &render));
    let outcome = team::add_user(&state.commands, new_user, &metadata, answering).await?;
    state.caught_up(outcome.position).await;
    Ok(answer(
        StatusCode::CREATED,
        &outcome,
        &outcome.member.groups,
    ))
}

/// One user.
#[utoipa::path(get, path = "/v1/users/{id}", responses(
    (status = 200, body = UserView, headers(("ETag" = String))),
    (status = 404, description = "No such user in this account"),
))]
async fn get_user(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let row = queries::user(&state.db, caller.account_id, user_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let version = row.user.version;
    Ok(with_etag(StatusCode::OK, version, UserView::of_row(row)))
}

/// Change a user; fields left out stay as they are. A new password ends their sessions.
#[utoipa::path(patch, path = "/v1/users/{id}", request_body = UserPatch, params(IfMatch), responses(
    (status = 200, body = UserView, headers(("ETag" = String))),
    (status = 403), (status = 404), (status = 409, description = "Email taken, or the last administrator"),
    (status = 412), (status = 422),
))]
async fn patch_user(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UserPatch>,
) -> ApiResult<Response> {
    let id = user_id(&id)?;
    let loaded = load_member(&state, &caller, id).await?;
    let (mut edit, password) = body.parse().map_err(ApiError::validation)?;
    let member = loaded
        .state
        .member
        .as_ref()
        .expect("checked by load_member");
    let reach = Reach {
        edit: &edit,
        sets_password: password.is_some(),
        deletes: false,
    };
    check_own_login(&caller, id, &reach)?;
    check_delegation(&state, &caller, Some((id, member)), &reach).await?;
    if let Some(password) = password {
        edit.password_hash = Some(state.passwords.hash(password.into_secret()).await);
    }
    let metadata = context.metadata_for(&caller);
    let outcome = team::edit_user(
        &state.commands,
        caller.account_id,
        id,
        edit,
        seen,
        &metadata,
    )
    .await?;
    state.in_force(outcome.position).await?;
    let live = queries::live_groups(&state.db, caller.account_id, &outcome.member.groups).await?;
    Ok(answer(StatusCode::OK, &outcome, &live).into_response())
}

/// Delete a user; their sessions end. The last administrator cannot be deleted.
#[utoipa::path(delete, path = "/v1/users/{id}", params(IfMatch), responses(
    (status = 204), (status = 403), (status = 404),
    (status = 409, description = "The account's last administrator"), (status = 412),
))]
async fn delete_user(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = user_id(&id)?;
    let loaded = load_member(&state, &caller, id).await?;
    let member = loaded
        .state
        .member
        .as_ref()
        .expect("checked by load_member");
    let reach = Reach {
        edit: &UserEdit::default(),
        sets_password: false,
        deletes: true,
    };
    check_delegation(&state, &caller, Some((id, member)), &reach).await?;
    let metadata = context.metadata_for(&caller);
    let position =
        team::delete_user(&state.commands, caller.account_id, id, seen, &metadata).await?;
    state.in_force(position).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a user may do, and which groups decided it.
#[utoipa::path(get, path = "/v1/users/{id}/permissions", responses(
    (status = 200, body = PermissionsView), (status = 404),
))]
async fn user_permissions(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    Path(id): Path<String>,
) -> ApiResult<Json<PermissionsView>> {
    let id = user_id(&id)?;
    let row = queries::user(&state.db, caller.account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let role = Role::parse(&row.user.role).ok_or_else(|| ApiError::internal("stored role"))?;
    let grants = queries::grants_of(&state.db, id).await?;
    let effective = EffectivePermissions::of(role, &grants);
    Ok(Json(permissions_view(&effective, &grants)))
}

/// Turn off two-factor login for a user who lost their authenticator (administrators only).
/// Their sessions end; the audit log records who did it.
#[utoipa::path(delete, path = "/v1/users/{id}/totp", responses(
    (status = 204), (status = 403), (status = 404), (status = 409, description = "Two-factor login is not on"),
))]
async fn reset_user_totp(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    context: RequestContext,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !caller.is_administrator() {
        return Err(ApiError::forbidden(
            "only administrators may reset another user's two-factor login",
        ));
    }
    let id = user_id(&id)?;
    let command = UserCommand::DisableTotp {
        account_id: caller.account_id,
        step: None,
    };
    state
        .execute_in_force::<User>(&id.stream_id(), command, &context.metadata_for(&caller))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
