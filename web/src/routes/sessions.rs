//! Login and logout.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use std::time::Duration;

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
    AppState,
    auth::{Caller, create_session, end_session, session_cookie},
    error::{ApiError, ApiResult},
    extract::{JsonBody, RequestContext},
    routes::me::verify_code,
    throttle::{Lockout, UNKNOWN_CLIENT, Verdict},
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
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

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the email or the password is wrong",
    )
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
    let client = context.client_ip.as_deref().unwrap_or(UNKNOWN_CLIENT);
    let attempt = Attempt {
        state: &state,
        context: &context,
        email: &email,
        client,
    };
    match state.throttle.check(&email, client, Utc::now()).await? {
        Verdict::Refused { retry_after } => return Err(too_many_attempts(retry_after)),
        Verdict::Proceed { delay } => tokio::time::sleep(delay).await,
    }
    let user = queries::user_by_email(&state.db, &email).await?;
    // Verify even for an unknown email, so timing does not reveal which emails exist.
    let verified = state
        .passwords
        .verify(
            request.password.into(),
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await;
    let user = match user {
        Some(user) if verified => user,
        user => return Err(attempt.failed(user.as_ref(), invalid_credentials()).await),
    };
    let user_id = UserId::parse(&user.id).ok_or_else(|| ApiError::internal("stored user id"))?;
    let account_id = AccountId::parse(&user.account_id)
        .ok_or_else(|| ApiError::internal("stored account id"))?;
    let loaded: Loaded<User> = state.load(&user_id.stream_id()).await?;
    let member = loaded
        .state
        .member
        .as_ref()
        .ok_or_else(invalid_credentials)?;
    let second_factor = match (&member.totp, request.totp_code, request.recovery_code) {
        (Totp::On(sealed), Some(code), _) => {
            match verify_code(&state, account_id, member, sealed, &code)? {
                Some(step) => SecondFactor::Totp { step },
                None => return Err(attempt.failed(Some(&user), invalid_second_factor()).await),
            }
        }
        (Totp::On(_), None, Some(code)) => SecondFactor::RecoveryCode {
            code_hash: hash_recovery_code(&code),
        },
        (Totp::On(_), None, None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "totp_required",
                "two-factor login is on: send `totp_code` from the authenticator app, or a `recovery_code`",
            ));
        }
        _ => SecondFactor::None,
    };
    // The aggregate accepts each code once, even if two logins race with the same one.
    let metadata = context.metadata(account_id, Actor::User(user_id));
    let command = UserCommand::RecordLogin { second_factor };
    match state
        .commands
        .execute::<User>(&user_id.stream_id(), command, &metadata)
        .await
    {
        Ok(executed) => state.caught_up(executed.position).await,
        Err(CommandError::Domain(UserError::SecondFactorRejected)) => {
            return Err(attempt.failed(Some(&user), invalid_second_factor()).await);
        }
        Err(other) => return Err(other.into()),
    }
    state
        .throttle
        .record_success(&email, client, Utc::now())
        .await?;
    let session = create_session(&state.db, &user.id, &user.account_id).await?;
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

fn invalid_second_factor() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_second_factor",
        "the code is wrong, expired or already used",
    )
}

fn too_many_attempts(retry_after: Duration) -> ApiError {
    ApiError::too_many_requests(
        retry_after,
        "too many failed logins: wait before trying again",
    )
}

/// One login attempt, for counting its failure.
struct Attempt<'a> {
    state: &'a AppState,
    context: &'a RequestContext,
    email: &'a str,
    client: &'a str,
}

impl Attempt<'_> {
    /// Counts the failure; a lockout it starts is recorded in the user's audit trail. Answers
    /// the error to give (429 once locked out).
    async fn failed(&self, user: Option<&UserRow>, answer: ApiError) -> ApiError {
        let now = Utc::now();
        let lockouts = match self
            .state
            .throttle
            .record_failure(self.email, self.client, now)
            .await
        {
            Ok(lockouts) => lockouts,
            Err(error) => return ApiError::from(error),
        };
        let Some(user) = user else {
            return answer;
        };
        for lockout in &lockouts {
            if let Err(error) = self.audit(user, lockout).await {
                return error;
            }
        }
        answer
    }

    async fn audit(&self, user: &UserRow, lockout: &Lockout) -> ApiResult<()> {
        let (Some(user_id), Some(account_id)) =
            (UserId::parse(&user.id), AccountId::parse(&user.account_id))
        else {
            return Err(ApiError::internal("stored user or account id"));
        };
        let metadata = self.context.metadata(account_id, Actor::System);
        let command = UserCommand::RecordLockout {
            scope: lockout.scope,
            until: lockout.until,
        };
        self.state
            .execute::<User>(&user_id.stream_id(), command, &metadata)
            .await?;
        Ok(())
    }
}

/// End the current session; its token stops working.
#[utoipa::path(delete, path = "/v1/sessions/current", responses(
    (status = 204, description = "Logged out"),
    (status = 401, description = "Not logged in"),
))]
async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    end_session(&state.db, &caller).await?;
    let expired = format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
        crate::auth::SESSION_COOKIE
    );
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]).into_response())
}
