//! Sessions and the authenticated caller.
//!
//! A session token is 256 random bits, given to the client once; the database keeps only its
//! SHA-256. Clients send it as `Authorization: Bearer <token>` or in the `HttpOnly; Secure;
//! SameSite=Strict` cookie set at login. Cookie requests that change state must also come
//! from our own origin (`Sec-Fetch-Site` or `Origin`), since a browser attaches cookies to
//! cross-site requests too.

use std::{marker::PhantomData, ops::Deref};

use axum::{
    extract::FromRequestParts,
    http::{Method, header, request::Parts},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use switchyard_command::{
    Database,
    domain::{AccountId, UserId},
    event_log::Actor,
    permissions::{EffectivePermissions, Resource},
    user::Role,
};
use switchyard_projections::queries;
use uuid::Uuid;

use crate::{AppState, error::ApiError};

pub const SESSION_COOKIE: &str = "switchyard_session";
/// A session ends this long after login, whatever happens (OWASP ASVS 7.3: 12 hours) …
pub const SESSION_LIFETIME: Duration = Duration::hours(12);
/// … or after this long unused (ASVS 7.3: 30 minutes).
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::minutes(30);
/// How stale `last_used_at` may get before a request moves it: one write a minute, not one
/// per request.
const LAST_USED_RESOLUTION: Duration = Duration::minutes(1);

/// The user a request acts for, within their account, and what they may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub account_id: AccountId,
    pub permissions: EffectivePermissions,
    /// The public id of the session, named in the metadata of the events it causes.
    pub session_id: String,
    token_hash: String,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::User(self.user_id)
    }

    pub fn role(&self) -> Role {
        self.permissions.role
    }

    pub fn is_administrator(&self) -> bool {
        self.role() == Role::Administrator
    }

    /// Refuses a `user` who would change the settings of a resource they are not allowed
    /// themselves (administrators may change anything).
    pub fn require_delegable(
        &self,
        touched: impl IntoIterator<Item = Resource>,
    ) -> Result<(), ApiError> {
        self.permissions.may_delegate(touched).map_err(|resource| {
            ApiError::forbidden(format!(
                "you may not change what others may do with `{}`: you are not allowed it yourself",
                resource.as_str()
            ))
        })
    }
}

/// An account section an endpoint belongs to. Handlers name it in their signature through
/// [`Authorized`], so the permission check cannot be forgotten.
pub trait Section {
    const RESOURCE: Resource;
}

/// Marker types for [`Authorized`], one per section of the account.
pub mod section {
    use super::{Resource, Section};

    macro_rules! sections {
        ($($name:ident => $resource:ident),* $(,)?) => {$(
            pub struct $name;
            impl Section for $name {
                const RESOURCE: Resource = Resource::$resource;
            }
        )*};
    }

    sections!(Config => Config, Users => Users, Audit => Audit);
}

/// A caller whose permissions allow section `S`; anyone else gets 403.
pub struct Authorized<S>(pub Caller, PhantomData<S>);

impl<S> Deref for Authorized<S> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl<S: Section> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.permissions.allows(S::RESOURCE) {
            return Err(ApiError::forbidden(format!(
                "your groups do not allow `{}`",
                S::RESOURCE.as_str()
            )));
        }
        Ok(Self(caller, PhantomData))
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
        "INSERT INTO sessions (id, token_hash, user_id, account_id, created_at, expires_at, \
         last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $5)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(hash_token(&token))
    .bind(user_id)
    .bind(account_id)
    .bind(timestamp(now))
    .bind(timestamp(expires_at))
    .execute(&db.pool)
    .await?;
    Ok(NewSession { token, expires_at })
}

async fn touch_session(db: &Database, id: &str, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
        .bind(timestamp(now))
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
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
        let now = Utc::now();
        let idle_since = timestamp(now - SESSION_IDLE_TIMEOUT);
        let session = queries::session_user(&state.db, &token_hash, &timestamp(now), &idle_since)
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        if session.last_used_at < timestamp(now - LAST_USED_RESOLUTION) {
            touch_session(&state.db, &session.session_id, now).await?;
        }
        let invalid = |what: &str| ApiError::internal(format!("session row has an invalid {what}"));
        let role = Role::parse(&session.role).ok_or_else(|| invalid("role"))?;
        Ok(Self {
            user_id: UserId::parse(&session.user_id).ok_or_else(|| invalid("user id"))?,
            account_id: AccountId::parse(&session.account_id)
                .ok_or_else(|| invalid("account id"))?,
            permissions: EffectivePermissions::of(role, &session.grants),
            session_id: session.session_id,
            token_hash,
        })
    }
}
