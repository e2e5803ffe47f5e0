//! Sessions and the authenticated caller.
//!
//! A session token is 256 random bits, given to the client once; the database keeps only its
//! SHA-256. Clients send it as `Authorization: Bearer <token>` or in the `HttpOnly; Secure;
//! SameSite=Strict` cookie set at login. Cookie requests that change state must also come
//! from our own origin (`Sec-Fetch-Site` or `Origin`), since a browser attaches cookies to
//! cross-site requests too.

use axum::{
    extract::FromRequestParts,
    http::{Method, header, request::Parts},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use switchyard_command::{
    Database,
    domain::{AccountId, UserId},
    event_log::Actor,
    user::Role,
};

use crate::{AppState, error::ApiError};

pub const SESSION_COOKIE: &str = "switchyard_session";
/// A session ends this long after login, whatever happens.
pub const SESSION_LIFETIME: Duration = Duration::hours(12);

/// The user a request acts for, within their account.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub role: Role,
    token_hash: String,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::User(self.user_id)
    }

    /// Account configuration is for administrators (groups come with the identity work).
    pub fn require_administrator(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Administrator => Ok(()),
            Role::User => Err(ApiError::forbidden("only administrators may do this")),
        }
    }
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub struct NewSession {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn create_session(
    db: &Database,
    user_id: &str,
    account_id: &str,
) -> Result<NewSession, sqlx::Error> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let now = Utc::now();
    let expires_at = now + SESSION_LIFETIME;
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, account_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash_token(&token))
    .bind(user_id)
    .bind(account_id)
    .bind(timestamp(now))
    .bind(timestamp(expires_at))
    .execute(&db.pool)
    .await?;
    Ok(NewSession { token, expires_at })
}

pub async fn end_session(db: &Database, caller: &Caller) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(&caller.token_hash)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// The cookie that carries the session token in browsers.
pub fn session_cookie(session: &NewSession) -> String {
    format!(
        "{SESSION_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        session.token,
        SESSION_LIFETIME.num_seconds()
    )
}

enum Credential {
    Bearer(String),
    Cookie(String),
}

fn credential(parts: &Parts) -> Option<Credential> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| Credential::Bearer(token.trim().to_owned()));
    }
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, token)| Credential::Cookie(token.to_owned()))
}

/// Cookie-authenticated requests that change state must come from our own pages.
fn same_origin(parts: &Parts) -> bool {
    let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, origin_host)| origin_host == host),
        // Neither header: not a browser, which would have sent one of them.
        (None, _) => true,
        (Some(_), None) => false,
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match credential(parts).ok_or_else(ApiError::unauthenticated)? {
            Credential::Bearer(token) => token,
            Credential::Cookie(token) => {
                let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
                if !safe && !same_origin(parts) {
                    return Err(ApiError::forbidden(
                        "cross-site request refused: use the bearer token, or send it from the console's own origin",
                    ));
                }
                token
            }
        };
        let token_hash = hash_token(&token);
        let row = sqlx::query(
            "SELECT s.user_id, s.account_id, u.role FROM sessions s \
             JOIN users u ON u.id = s.user_id AND u.account_id = s.account_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(&token_hash)
        .bind(timestamp(Utc::now()))
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(ApiError::unauthenticated)?;
        let invalid = |what: &str| ApiError::internal(format!("session row has an invalid {what}"));
        Ok(Self {
            user_id: UserId::parse(&row.try_get::<String, _>(0)?)
                .ok_or_else(|| invalid("user id"))?,
            account_id: AccountId::parse(&row.try_get::<String, _>(1)?)
                .ok_or_else(|| invalid("account id"))?,
            role: Role::parse(&row.try_get::<String, _>(2)?).ok_or_else(|| invalid("role"))?,
            token_hash,
        })
    }
}
