//! The account's users: for administrators and users whose groups allow `users`.
//!
//! A `user` who manages users may not act beyond their own rights: they cannot change roles,
//! touch administrators, change their own groups, or put anyone in or out of a group that
//! sets a resource they are not allowed themselves.

use std::collections::BTreeSet;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Deserializer, Serialize};
use switchyard_command::{
    domain::{
        EmailAddress, FieldError, GroupId, NewPassword, PhoneNumber, Text, UserId, Validator,
    },
    handler::Loaded,
    permissions::{EffectivePermissions, Resource},
    team::{self, NewUser, UserOutcome},
    user::{Member, Role, User, UserCommand, UserEdit},
};
use switchyard_projections::queries::{self, UserWithGroups};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{Authorized, Caller, section},
    error::{ApiError, ApiResult},
    etag,
    extract::{IfMatch, JsonBody, RequestContext},
    idempotency::{self, DigestedJson, IdempotencyKey},
    paging::{PageQuery, page},
    routes::me::{PermissionsView, permissions_view},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(user_permissions))
        .routes(routes!(reset_user_totp))
}

/// A user as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    id: String,
    name: String,
    email: String,
    phone: Option<String>,
    mobile: Option<String>,
    /// `user` or `administrator`.
    role: String,
    /// Ids of the groups the user belongs to.
    groups: Vec<String>,
    /// A disabled user cannot log in.
    enabled: bool,
    totp_enabled: bool,
}

impl UserView {
    pub fn of_member(user_id: UserId, member: &Member) -> Self {
        Self {
            id: user_id.to_string(),
            name: member.profile.name.as_str().to_owned(),
            email: member.email.as_str().to_owned(),
            phone: member.profile.phone.as_ref().map(|p| p.as_str().to_owned()),
            mobile: member
                .profile
                .mobile
                .as_ref()
                .map(|p| p.as_str().to_owned()),
            role: member.role.as_str().to_owned(),
            groups: member.groups.iter().map(ToString::to_string).collect(),
            enabled: member.enabled,
            totp_enabled: matches!(member.totp, switchyard_command::user::Totp::On(_)),
        }
    }

    fn of_row(row: UserWithGroups) -> Self {
        Self {
            id: row.user.id,
            name: row.user.name,
            email: row.user.email,
            phone: row.user.phone,
            mobile: row.user.mobile,
            role: row.user.role,
            groups: row.groups,
            enabled: row.user.disabled_at.is_none(),
            totp_enabled: row.user.totp_enabled != 0,
        }
    }
}

/// A resource answer with its version as the ETag.
pub fn with_etag(status: StatusCode, version: i64, body: impl Serialize) -> Response {
    (status, [(header::ETAG, etag::format(version))], Json(body)).into_response()
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

/// Parses an optional phone field: absent keeps, `null` or `""` clears.
pub fn phone_field(
    v: &mut Validator,
    field: &str,
    raw: Option<Option<String>>,
) -> Option<Option<Option<PhoneNumber>>> {
    match raw {
        None => Some(None),
        Some(raw) => {
            let raw = raw.filter(|raw| !raw.trim().is_empty());
            v.field(field, raw.map(|raw| PhoneNumber::parse(&raw)).transpose())
                .map(Some)
        }
    }
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
    email: String,
    /// 8 to 128 characters, not a commonly used password. Write-only.
    password: String,
    /// `user` (default) or `administrator`.
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
    email: Option<String>,
    /// A new password for the user; their sessions end. Write-only.
    password: Option<String>,
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

/// The limits on a `user` who manages users (administrators have none).
async fn check_delegation(
    state: &AppState,
    caller: &Caller,
    target: Option<(UserId, &Member)>,
    edit: &UserEdit,
) -> ApiResult<()> {
    if caller.is_administrator() {
        return Ok(());
    }
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

fn respond(status: StatusCode, outcome: &UserOutcome) -> Response {
    with_etag(
        status,
        outcome.member.version,
        UserView::of_member(outcome.user_id, &outcome.member),
    )
}

/// The account's users, oldest first.
#[utoipa::path(get, path = "/v1/users", params(PageQuery), responses(
    (status = 200, body = UserPage), (status = 401), (status = 403),
))]
async fn list_users(
    State(state): State<AppState>,
    caller: Authorized<section::Users>,
    Query(query): Query<PageQuery>,
) -> ApiResult<Json<UserPage>> {
    let limit = query.limit()?;
    let rows = queries::users_page(
        &state.db,
        caller.account_id,
        query.cursor.as_deref(),
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
    (status = 201, body = UserView, headers(("ETag" = String))),
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
    let request = add_user(&state, &caller, &context, body);
    idempotency::once(&state.db, account, key, digest, request).await
}

async fn add_user(
    state: &AppState,
    caller: &Caller,
    context: &RequestContext,
    body: NewUserBody,
) -> ApiResult<Response> {
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
    check_delegation(state, caller, None, &edit).await?;
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
    let outcome = team::add_user(&state.commands, new_user, &metadata).await?;
    state.caught_up(outcome.position).await;
    Ok(respond(StatusCode::CREATED, &outcome))
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
#[utoipa::path(patch, path = "/v1/users/{id}", request_body = UserPatch, responses(
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
    check_delegation(&state, &caller, Some((id, member)), &edit).await?;
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
    state.caught_up(outcome.position).await;
    Ok(respond(StatusCode::OK, &outcome))
}

/// Delete a user; their sessions end. The last administrator cannot be deleted.
#[utoipa::path(delete, path = "/v1/users/{id}", responses(
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
    check_delegation(&state, &caller, Some((id, member)), &UserEdit::default()).await?;
    if !caller.is_administrator() {
        let touched = resources_of_groups(&state, &caller, member.groups.iter()).await?;
        caller.require_delegable(touched)?;
    }
    let metadata = context.metadata_for(&caller);
    let position =
        team::delete_user(&state.commands, caller.account_id, id, seen, &metadata).await?;
    state.caught_up(position).await;
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
        .execute::<User>(&id.stream_id(), command, &context.metadata_for(&caller))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
