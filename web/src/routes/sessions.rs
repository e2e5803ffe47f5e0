//! Login and logout.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchyard_command::{
    domain::{AccountId, EmailAddress, UserId},
    event_log::Actor,
    handler::{CommandError, Loaded},
    totp::hash_recovery_code,
    user::{SecondFactor, Totp, User, UserCommand, UserError},
};
use switchyard_projections::queries::{self, UserRow};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{Caller, session_cookie},
    credentials::Attempt,
    domain_errors::DomainError,
    error::{ApiError, ApiResult},
    extract::{JsonBody, RequestContext},
    state::AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    #[schema(format = Email)]
    email: String,
    password: String,
    /// Needed when the user has two-factor login on: the app's current code.
    totp_code: Option<String>,
    /// Instead of `totp_code`, one of the user's single-use recovery codes.
    recovery_code: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct SessionUser {
    id: String,
    name: String,
    email: String,
    role: String,
}

#[derive(Serialize, ToSchema)]
struct SessionCreated {
    token: String,
    expires_at: DateTime<Utc>,
    user: SessionUser,
}

/// Log in with email and password, and the second factor when the user has one.
#[utoipa::path(post, path = "/v1/sessions", security(()), request_body = LoginRequest, responses(
    (status = 201, body = SessionCreated, description = "Logged in; the token is also set as a cookie"),
    (status = 401, description = "Wrong email or password (the same answer for both); \
        `totp_required` when a second factor is needed; `invalid_second_factor` when it is wrong"),
    (status = 429, description = "Too many failures from this client (or for this account): see Retry-After"),
))]
async fn login(
    State(state): State<AppState>,
    context: RequestContext,
    JsonBody(request): JsonBody<LoginRequest>,
) -> ApiResult<Response> {
    let email = EmailAddress::parse(&request.email)
        .map(|email| email.normalized())
        .unwrap_or_else(|_| request.email.trim().to_lowercase());
    let user = queries::user_by_email(&state.db, &email).await?;
    let ids = user.as_ref().map(ids_of).transpose()?;
    let attempt = Attempt::begin(&state, &context, &email, ids).await?;
    // Verified even for an unknown email, so timing does not reveal which emails exist.
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let attempt = attempt
        .verify_password(request.password, hash, ApiError::invalid_credentials)
        .await?;
    let (Some(user), Some((user_id, account_id))) = (user, ids) else {
        return Err(attempt.failed(ApiError::invalid_credentials()).await);
    };
    let loaded: Loaded<User> = state.load(&user_id.stream_id()).await?;
    // A disabled user's right password gets the wrong password's answer, counted as one:
    // neither the answer nor the throttle tells the two apart.
    let Some(member) = loaded.state.member.as_ref().filter(|m| m.enabled) else {
        return Err(attempt.failed(ApiError::invalid_credentials()).await);
    };
    let (attempt, second_factor) = match (&member.totp, request.totp_code, request.recovery_code) {
        (Totp::On(sealed), Some(code), _) => {
            let (attempt, step) = attempt
                .verify_code(member, sealed, &code, invalid_second_factor)
                .await?;
            (attempt, SecondFactor::Totp { step })
        }
        (Totp::On(_), None, Some(code)) => {
            let code_hash = hash_recovery_code(&code);
            (attempt, SecondFactor::RecoveryCode { code_hash })
        }
        (Totp::On(_), None, None) => {
            attempt.withdraw().await?;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "totp_required",
                "two-factor login is on: send `totp_code` from the authenticator app, or a `recovery_code`",
            ));
        }
        _ => (attempt, SecondFactor::None),
    };
    // The aggregate accepts each code once, even if two logins race with the same one.
    let metadata = context.metadata(account_id, Actor::User(user_id));
    let command = UserCommand::RecordLogin {
        second_factor,
        password_hash: user.password_hash.clone(),
    };
    let executed = match state
        .commands
        .execute::<User>(&user_id.stream_id(), command, &metadata)
        .await
    {
        Ok(executed) => executed,
        Err(CommandError::Domain(UserError::SecondFactorRejected)) => {
            return Err(attempt.failed(invalid_second_factor()).await);
        }
        // Checked against the read model, which had not yet seen a new password.
        Err(CommandError::Domain(refusal @ UserError::PasswordChanged)) => {
            return Err(attempt.failed(refusal.into_api_error()).await);
        }
        // Disabled since the check above.
        Err(CommandError::Domain(UserError::Disabled)) => {
            return Err(attempt.failed(ApiError::invalid_credentials()).await);
        }
        Err(other) => return Err(other.into()),
    };
    state.caught_up(executed.position).await;
    attempt.succeeded().await?;
    // Issued at the login's version of the user stream: a later event that ends sessions
    // ends this one too, whatever the clocks say.
    let session = state
        .sessions
        .open(user_id, account_id, executed.version)
        .await?;
    let cookie = session_cookie(&session);
    let body = SessionCreated {
        token: session.token,
        expires_at: session.expires_at,
        user: SessionUser {
            id: user.id,
            name: user.name,
            email: user.email,
            role: user.role,
        },
    };
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, cookie)],
        Json(body),
    )
        .into_response())
}

fn ids_of(user: &UserRow) -> ApiResult<(UserId, AccountId)> {
    UserId::parse(&user.id)
        .zip(AccountId::parse(&user.account_id))
        .ok_or_else(|| ApiError::internal("stored user or account id"))
}

fn invalid_second_factor() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_second_factor",
        "the code is wrong, expired or already used",
    )
}

/// End the current session; its token stops working.
#[utoipa::path(delete, path = "/v1/sessions/current", responses(
    (status = 204, description = "Logged out"),
    (status = 401, description = "Not logged in"),
))]
async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    state.sessions.end(caller.token_hash()).await?;
    let expired = format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        crate::auth::SESSION_COOKIE
    );
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]).into_response())
}
