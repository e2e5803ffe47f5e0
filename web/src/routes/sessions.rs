//! Login and logout.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchyard_command::domain::EmailAddress;
use switchyard_projections::queries;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{Caller, create_session, end_session, session_cookie},
    error::{ApiError, ApiResult},
    extract::JsonBody,
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
    /// Needed when the user has two-factor authentication on.
    #[allow(dead_code)]
    totp_code: Option<String>,
    /// Instead of `totp_code`, one of the user's single-use recovery codes.
    #[allow(dead_code)]
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

/// Log in with email and password.
#[utoipa::path(post, path = "/v1/sessions", security(()), request_body = LoginRequest, responses(
    (status = 201, body = SessionCreated, description = "Logged in; the token is also set as a cookie"),
    (status = 401, description = "Wrong email or password (the same answer for both)"),
))]
async fn login(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<LoginRequest>,
) -> ApiResult<Response> {
    let user = match EmailAddress::parse(&request.email) {
        Ok(email) => queries::user_by_email(&state.db, &email.normalized()).await?,
        Err(_) => None,
    };
    // Verify even for an unknown email, so timing does not reveal which emails exist.
    let verified = state
        .passwords
        .verify(
            request.password,
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await;
    let user = match user {
        Some(user) if verified => user,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "the email or the password is wrong",
            ));
        }
    };
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
