//! The authenticated caller.
//!
//! Clients send their session token (`switchyard_command::access::sessions`) as
//! `Authorization: Bearer <token>` or in the `HttpOnly; Secure; SameSite=Strict` cookie set
//! at login. Cookie requests that change state must also come from our own origin
//! (`Sec-Fetch-Site` or `Origin`), since a browser attaches cookies to cross-site requests
//! too.

use std::{marker::PhantomData, ops::Deref};

use axum::{
    extract::FromRequestParts,
    http::{Method, header, request::Parts},
};
use chrono::Utc;
use switchyard_command::{
    access::sessions::{NewSession, SESSION_LIFETIME, hash_token},
    domain::{AccountId, UserId},
    event_log::Actor,
    permissions::{EffectivePermissions, Resource},
    user::Role,
};
use switchyard_projections::queries;

use url::Url;

use crate::{error::ApiError, forwarded, state::AppState};

pub const SESSION_COOKIE: &str = "switchyard_session";

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

    /// What the database keeps of the session's token.
    pub fn token_hash(&self) -> &str {
        &self.token_hash
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

    sections!(Config => Config, Users => Users, Audit => Audit, Usage => Usage, Api => Api);
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

/// Cookie-authenticated requests that change state must come from our own pages: from the
/// public origin when it is configured, else from the host (and scheme, when a trusted proxy
/// said it) that the request was addressed to.
fn same_origin(parts: &Parts, state: &AppState) -> bool {
    let header = |name| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    // Neither header: not a browser, which would have sent one of them.
    let Some(origin) = header("origin") else {
        return true;
    };
    if let Some(public) = &state.public_origin {
        return Url::parse(origin).is_ok_and(|origin| origin.origin() == *public);
    }
    let addressed = forwarded::of_request(parts, &state.trusted_proxies);
    match (origin.split_once("://"), addressed.host) {
        (Some((scheme, origin_host)), Some(host)) => {
            origin_host.eq_ignore_ascii_case(&host)
                && addressed
                    .proto
                    .is_none_or(|proto| proto.eq_ignore_ascii_case(scheme))
        }
        _ => false,
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = match credential(parts).ok_or_else(ApiError::unauthenticated)? {
            Credential::Bearer(token) => token,
            Credential::Cookie(token) => {
                let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
                if !safe && !same_origin(parts, state) {
                    return Err(ApiError::forbidden(
                        "cross-site request refused: use the bearer token, or send it from the console's own origin",
                    ));
                }
                token
            }
        };
        let token_hash = hash_token(&token);
        let now = Utc::now();
        let session = queries::session_user(&state.db, &token_hash, now)
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        state
            .sessions
            .used(&session.session_id, &session.last_used_at, now)
            .await?;
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

/// An administrator of the operator account, the one that runs the platform: they act on
/// other accounts where the contract says so (balance adjustments). Anyone else gets 403.
pub struct OperatorAdministrator(pub Caller);

impl Deref for OperatorAdministrator {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl FromRequestParts<AppState> for OperatorAdministrator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let operator = state.operator_account().await?;
        if !caller.is_administrator() || operator != Some(caller.account_id) {
            return Err(ApiError::forbidden(
                "only the platform operator's administrators may do this",
            ));
        }
        Ok(Self(caller))
    }
}
