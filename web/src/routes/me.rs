//! The current user: their profile, password, two-factor login and permissions. Everyone
//! may use these, whatever their groups say.

use axum::{Json, extract::State, http::StatusCode, response::Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use switchyard_command::{
    domain::{EmailAddress, FieldError, NewPassword, Text, Validator},
    handler::Loaded,
    permissions::EffectivePermissions,
    team,
    totp::{self, RecoveryCodes, TotpSeed},
    user::{Member, Totp, User, UserCommand, UserEdit},
};
use switchyard_projections::queries;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::Caller,
    credentials::{Attempt, totp_step},
    error::{ApiError, ApiResult},
    etag::with_etag,
    extract::{IfMatch, JsonBody, RequestContext},
    routes::user_views::{PermissionsView, UserView, permissions_view, phone_field},
    state::AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me, put_me))
        .routes(routes!(change_password))
        .routes(routes!(start_totp_setup, disable_totp))
        .routes(routes!(enable_totp))
        .routes(routes!(my_permissions))
}

/// The name authenticator apps show next to the code.
const TOTP_ISSUER: &str = "Switchyard";

async fn me(state: &AppState, caller: &Caller) -> ApiResult<(Loaded<User>, Member)> {
    let loaded: Loaded<User> = state.load(&caller.user_id.stream_id()).await?;
    let member = loaded
        .state
        .member
        .clone()
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok((loaded, member))
}

/// Runs a command on the caller's own user stream: a password or two-factor change, whose
/// effect on sessions must be in force before it is answered.
async fn on_me(
    state: &AppState,
    caller: &Caller,
    context: &RequestContext,
    command: UserCommand,
) -> ApiResult<()> {
    let metadata = context.metadata_for(caller);
    state
        .execute_in_force::<User>(&caller.user_id.stream_id(), command, &metadata)
        .await?;
    Ok(())
}

/// Re-authentication before a change that needs it: the caller proves they know their
/// password, in an attempt the login throttle counts like a login (under their email, from
/// this client; 429 once locked out). A wrong password is a validation error on `field`.
async fn confirm_password<'a>(
    state: &'a AppState,
    caller: &Caller,
    context: &'a RequestContext,
    member: &Member,
    field: &'static str,
    password: String,
) -> ApiResult<Attempt<'a>> {
    let email = member.email.normalized();
    let owner = Some((caller.user_id, caller.account_id));
    let hash = Some(member.password_hash.clone());
    Attempt::begin(state, context, &email, owner)
        .await?
        .verify_password(password, hash, || {
            ApiError::invalid_field(field, "is not your current password")
        })
        .await
}

/// Your own profile.
#[utoipa::path(get, path = "/v1/me", responses(
    (status = 200, body = UserView, headers(("ETag" = String))), (status = 401),
))]
async fn get_me(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    let (_, member) = me(&state, &caller).await?;
    let live = queries::live_groups(&state.db, caller.account_id, &member.groups).await?;
    Ok(with_etag(
        StatusCode::OK,
        member.version,
        UserView::of_member(caller.user_id, &member, &live),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MeBody {
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    #[schema(format = Email)]
    email: String,
    phone: Option<String>,
    mobile: Option<String>,
    /// Required when `email` changes.
    current_password: Option<String>,
}

impl MeBody {
    fn parse(self) -> Result<(UserEdit, Option<String>), Vec<FieldError>> {
        let mut v = Validator::default();
        let name = v.field("name", Text::parse(&self.name, 1, 100));
        let email = v.field("email", EmailAddress::parse(&self.email));
        let phone = phone_field(&mut v, "phone", Some(self.phone));
        let mobile = phone_field(&mut v, "mobile", Some(self.mobile));
        v.finish(|| {
            let edit = UserEdit {
                name: Some(name?),
                email: Some(email?),
                phone: phone?,
                mobile: mobile?,
                ..UserEdit::default()
            };
            Some((edit, self.current_password))
        })
    }
}

/// Change your profile. A new email needs `current_password`.
#[utoipa::path(put, path = "/v1/me", request_body = MeBody, params(IfMatch), responses(
    (status = 200, body = UserView, headers(("ETag" = String))),
    (status = 409, description = "The email belongs to another user"),
    (status = 412), (status = 422),
))]
async fn put_me(
    State(state): State<AppState>,
    caller: Caller,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    JsonBody(body): JsonBody<MeBody>,
) -> ApiResult<Response> {
    let (edit, current_password) = body.parse().map_err(ApiError::validation)?;
    let (_, member) = me(&state, &caller).await?;
    let new_email = edit.email.as_ref().map(EmailAddress::normalized);
    if new_email.is_some_and(|email| email != member.email.normalized()) {
        let password = current_password.ok_or_else(|| {
            ApiError::invalid_field("current_password", "is required to change your email")
        })?;
        confirm_password(
            &state,
            &caller,
            &context,
            &member,
            "current_password",
            password,
        )
        .await?
        .succeeded()
        .await?;
    }
    let metadata = context.metadata_for(&caller);
    let outcome = team::edit_user(
        &state.commands,
        caller.account_id,
        caller.user_id,
        edit,
        seen,
        &metadata,
    )
    .await?;
    state.caught_up(outcome.position).await;
    let groups = &outcome.member.groups;
    let live = queries::live_groups(&state.db, caller.account_id, groups).await?;
    Ok(with_etag(
        StatusCode::OK,
        outcome.member.version,
        UserView::of_member(outcome.user_id, &outcome.member, &live),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    /// 8 to 128 characters, not a commonly used password, not the current one.
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

/// Change your password. Your other sessions end; this one stays.
#[utoipa::path(post, path = "/v1/me/password", request_body = PasswordChange, responses(
    (status = 204), (status = 422, description = "Wrong current password, or a new one that breaks a rule"),
))]
async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    context: RequestContext,
    JsonBody(body): JsonBody<PasswordChange>,
) -> ApiResult<StatusCode> {
    let new_password = NewPassword::parse(body.new_password)
        .map_err(|invalid| ApiError::invalid_field("new_password", invalid.0))?;
    let (_, member) = me(&state, &caller).await?;
    let current = body.current_password;
    confirm_password(
        &state,
        &caller,
        &context,
        &member,
        "current_password",
        current,
    )
    .await?
    .succeeded()
    .await?;
    let old_hash = Some(member.password_hash.clone());
    let plaintext = SecretString::from(new_password.expose_secret());
    if state.passwords.verify(plaintext, old_hash).await {
        return Err(ApiError::invalid_field(
            "new_password",
            "must differ from your current password",
        ));
    }
    let password_hash = state.passwords.hash(new_password.into_secret()).await;
    let command = UserCommand::ChangePassword {
        account_id: caller.account_id,
        password_hash,
    };
    on_me(&state, &caller, &context, command).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
struct TotpSetup {
    /// The seed in base32, for typing into an authenticator app.
    secret: String,
    /// The same as a URI, for a QR code.
    otpauth_uri: String,
}

/// Start setting up two-factor login: a new secret, pending until a code from it is confirmed.
#[utoipa::path(post, path = "/v1/me/totp", responses(
    (status = 200, body = TotpSetup), (status = 409, description = "Already on"),
))]
async fn start_totp_setup(
    State(state): State<AppState>,
    caller: Caller,
    context: RequestContext,
) -> ApiResult<Json<TotpSetup>> {
    let (_, member) = me(&state, &caller).await?;
    let seed = TotpSeed::generate();
    let sealed = state
        .secrets
        .encrypt(caller.account_id, seed.to_base32().expose_secret());
    let command = UserCommand::StartTotpSetup {
        account_id: caller.account_id,
        seed: sealed,
    };
    on_me(&state, &caller, &context, command).await?;
    Ok(Json(TotpSetup {
        secret: seed.to_base32().expose_secret().to_owned(),
        otpauth_uri: totp::otpauth_uri(&seed, TOTP_ISSUER, member.email.as_str())
            .expose_secret()
            .to_owned(),
    }))
}

fn wrong_code() -> ApiError {
    ApiError::invalid_field("code", "is wrong, expired or already used")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TotpCode {
    /// The 6-digit code the authenticator app shows now.
    code: String,
}

#[derive(Serialize, ToSchema)]
struct RecoveryCodesIssued {
    /// 10 single-use codes, shown this once: each logs in instead of an app code.
    recovery_codes: Vec<String>,
}

/// Turn two-factor login on with a code from the app; answers the recovery codes, once.
#[utoipa::path(post, path = "/v1/me/totp/enable", request_body = TotpCode, responses(
    (status = 200, body = RecoveryCodesIssued),
    (status = 409, description = "No setup pending, or already on"),
    (status = 422, description = "The code is wrong, expired or already used"),
))]
async fn enable_totp(
    State(state): State<AppState>,
    caller: Caller,
    context: RequestContext,
    JsonBody(body): JsonBody<TotpCode>,
) -> ApiResult<Json<RecoveryCodesIssued>> {
    let (_, member) = me(&state, &caller).await?;
    let Totp::Pending(sealed) = &member.totp else {
        return Err(ApiError::conflict(match member.totp {
            Totp::On(_) => "two-factor login is already on",
            _ => "start the setup first: POST /v1/me/totp",
        }));
    };
    let step = totp_step(&state, &member, sealed, &body.code)?.ok_or_else(wrong_code)?;
    let recovery = RecoveryCodes::generate();
    let command = UserCommand::EnableTotp {
        account_id: caller.account_id,
        step,
        recovery_codes: recovery.hashes,
    };
    on_me(&state, &caller, &context, command).await?;
    Ok(Json(RecoveryCodesIssued {
        recovery_codes: recovery
            .codes
            .iter()
            .map(|code: &SecretString| code.expose_secret().to_owned())
            .collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TotpDisable {
    password: String,
    /// A code from the authenticator app.
    code: String,
}

/// Turn two-factor login off: needs your password and a code. Your other sessions end.
#[utoipa::path(delete, path = "/v1/me/totp", request_body = TotpDisable, responses(
    (status = 204), (status = 409, description = "Not on"), (status = 422),
))]
async fn disable_totp(
    State(state): State<AppState>,
    caller: Caller,
    context: RequestContext,
    JsonBody(body): JsonBody<TotpDisable>,
) -> ApiResult<StatusCode> {
    let (_, member) = me(&state, &caller).await?;
    let Totp::On(sealed) = &member.totp else {
        return Err(ApiError::conflict("two-factor login is not on"));
    };
    let attempt = confirm_password(
        &state,
        &caller,
        &context,
        &member,
        "password",
        body.password,
    )
    .await?;
    let (attempt, step) = attempt
        .verify_code(&member, sealed, &body.code, wrong_code)
        .await?;
    attempt.succeeded().await?;
    let command = UserCommand::DisableTotp {
        account_id: caller.account_id,
        step: Some(step),
    };
    on_me(&state, &caller, &context, command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What you may do, and which groups decided it.
#[utoipa::path(get, path = "/v1/me/permissions", responses(
    (status = 200, body = PermissionsView), (status = 401),
))]
async fn my_permissions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<PermissionsView>> {
    let grants = queries::grants_of(&state.db, caller.user_id).await?;
    let effective = EffectivePermissions::of(caller.role(), &grants);
    Ok(Json(permissions_view(&effective, &grants)))
}
