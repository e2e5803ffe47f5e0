//! `Idempotency-Key` on POSTs that create or send: the same key with the same request answers
//! the first response again, without running the command twice; with another request, 422.
//!
//! The request's command stores its answer under the key in the same append as its events
//! (`switchyard_command::idempotency`): a client that gives up after the command committed,
//! or a process that dies then, leaves the answer behind, never a command without one. Only
//! a success is remembered. An error releases the key, so the client can correct the request
//! and retry under the same key. While the first request runs, a second one with its key gets
//! 409 with `Retry-After`; a key left unfinished by a crash is taken over after a minute, and
//! the request it was taken from can then no longer append.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{Method, request::Parts},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use switchyard_command::{
    domain::AccountId,
    idempotency::{Claim, IdempotencyKeys, KeyClaim},
};

use crate::{
    answer::Answer,
    error::{ApiError, ApiResult},
    extract::{body_bytes, has_no_body, parse_json},
};

const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The client's `Idempotency-Key`, if it sent one.
pub struct IdempotencyKey(Option<String>);

impl utoipa::IntoParams for IdempotencyKey {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::{
            Required,
            path::{ParameterBuilder, ParameterIn},
        };
        vec![
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Retrying with the same key and request answers the first response \
                     again; the same key with another request is refused (422).",
                ))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .max_length(Some(255)),
                ))
                .build(),
        ]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY_HEADER) else {
            return Ok(Self(None));
        };
        match value.to_str() {
            Ok(key) if (1..=255).contains(&key.len()) => Ok(Self(Some(key.to_owned()))),
            _ => Err(ApiError::invalid_field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )),
        }
    }
}

/// A JSON body (as [`crate::extract::JsonBody`]) with a digest of the request it came in.
pub struct DigestedJson<T> {
    pub body: T,
    pub digest: RequestDigest,
}

/// SHA-256 of a request's method, path and body.
pub struct RequestDigest(String);

impl RequestDigest {
    fn of(method: &Method, path: &str, body: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(method.as_str());
        hasher.update(b" ");
        hasher.update(path);
        hasher.update(b"\n");
        hasher.update(body);
        Self(hex::encode(hasher.finalize()))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for DigestedJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let bytes: Bytes = body_bytes(request, state).await?;
        Ok(Self {
            body: parse_json(&bytes)?,
            digest: RequestDigest::of(&method, &path, &bytes),
        })
    }
}

/// A JSON body that may be left out (no body at all: then `T::default()`), with a digest of
/// the request it came in.
pub struct DigestedOptionalJson<T> {
    pub body: T,
    pub digest: RequestDigest,
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for DigestedOptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if has_no_body(request.headers()) {
            return Ok(Self {
                body: T::default(),
                digest: RequestDigest::of(request.method(), request.uri().path(), b""),
            });
        }
        let DigestedJson { body, digest } = DigestedJson::from_request(request, state).await?;
        Ok(Self { body, digest })
    }
}

/// How long a client told "still running" should wait before it asks again.
const STILL_RUNNING_RETRY: Duration = Duration::from_secs(1);

/// Runs `request` at most once per key and account; see the module documentation. The
/// request gets the key's claim, if the client sent a key, to run its command with.
pub async fn once<Run>(
    keys: &IdempotencyKeys,
    account: AccountId,
    IdempotencyKey(key): IdempotencyKey,
    RequestDigest(digest): RequestDigest,
    request: impl FnOnce(Option<KeyClaim>) -> Run,
) -> ApiResult<Response>
where
    Run: Future<Output = ApiResult<Answer>>,
{
    let Some(key) = key else {
        return Ok(request(None).await?.into_response());
    };
    match keys.claim(account, &key, &digest).await? {
        Claim::Finished { digest: first, .. } if first != digest => Err(ApiError::invalid_field(
            "Idempotency-Key",
            "was used before with another request; use a new key for a new request",
        )),
        Claim::Finished { answer, .. } => Ok(Answer::from(answer).into_response()),
        Claim::Running => Err(ApiError::conflict(
            "a request with this Idempotency-Key is still running; retry in a moment",
        )
        .with_retry_after(STILL_RUNNING_RETRY)),
        Claim::Fresh(claim) => match request(Some(claim.clone())).await {
            Ok(answer) => {
                // A no-op if the command's append kept the answer already.
                keys.settle(&claim, &answer.stored()).await?;
                Ok(answer.into_response())
            }
            Err(error) => {
                keys.release(&claim).await?;
                Err(error)
            }
        },
    }
}
