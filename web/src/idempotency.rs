//! `Idempotency-Key` on POSTs that create: the same key with the same request answers the
//! first response again, without running the command twice; with another request, 422.
//!
//! Only a success is remembered. An error releases the key, so the client can correct the
//! request and retry under the same key. While the first request runs, a second one with
//! its key gets 409; a key left unfinished by a crash is taken over after a minute.

use axum::{
    body::{Bytes, to_bytes},
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::Row;
use switchyard_command::{Database, domain::AccountId};

use crate::{
    MAX_BODY_BYTES,
    error::{ApiError, ApiResult},
    extract::{body_bytes, parse_json},
};

pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// How long a key is remembered.
pub const KEY_LIFETIME: Duration = Duration::hours(24);
/// A key whose request has not finished after this long was abandoned (the process died).
const ABANDONED_AFTER: Duration = Duration::minutes(1);

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

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for DigestedJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let mut hasher = Sha256::new();
        hasher.update(request.method().as_str());
        hasher.update(b" ");
        hasher.update(request.uri().path());
        hasher.update(b"\n");
        let bytes: Bytes = body_bytes(request, state).await?;
        hasher.update(&bytes);
        Ok(Self {
            body: parse_json(&bytes)?,
            digest: RequestDigest(hex::encode(hasher.finalize())),
        })
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What the key stands for.
enum Claim {
    /// Ours now: run the request.
    Fresh,
    Finished {
        digest: String,
        status: u16,
        etag: Option<String>,
        body: String,
    },
    Running,
}

async fn claim(
    db: &Database,
    account: AccountId,
    key: &str,
    digest: &str,
) -> Result<Claim, sqlx::Error> {
    let now = Utc::now();
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (account_id, key, request_digest, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, key) DO NOTHING",
    )
    .bind(account.to_string())
    .bind(key)
    .bind(digest)
    .bind(timestamp(now))
    .execute(&db.pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Fresh);
    }
    let taken_over = sqlx::query(
        "UPDATE idempotency_keys SET request_digest = $1, created_at = $2 \
         WHERE account_id = $3 AND key = $4 AND status IS NULL AND created_at < $5",
    )
    .bind(digest)
    .bind(timestamp(now))
    .bind(account.to_string())
    .bind(key)
    .bind(timestamp(now - ABANDONED_AFTER))
    .execute(&db.pool)
    .await?;
    if taken_over.rows_affected() == 1 {
        return Ok(Claim::Fresh);
    }
    let row = sqlx::query(
        "SELECT request_digest, status, etag, body FROM idempotency_keys \
         WHERE account_id = $1 AND key = $2",
    )
    .bind(account.to_string())
    .bind(key)
    .fetch_one(&db.pool)
    .await?;
    Ok(match row.try_get::<Option<i64>, _>(1)? {
        None => Claim::Running,
        Some(status) => Claim::Finished {
            digest: row.try_get(0)?,
            status: u16::try_from(status).unwrap_or(500),
            etag: row.try_get(2)?,
            body: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
        },
    })
}

async fn release(db: &Database, account: AccountId, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2")
        .bind(account.to_string())
        .bind(key)
        .execute(&db.pool)
        .await?;
    Ok(())
}

async fn remember(
    db: &Database,
    account: AccountId,
    key: &str,
    status: StatusCode,
    etag: Option<&str>,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $1, etag = $2, body = $3 \
         WHERE account_id = $4 AND key = $5",
    )
    .bind(i64::from(status.as_u16()))
    .bind(etag)
    .bind(body)
    .bind(account.to_string())
    .bind(key)
    .execute(&db.pool)
    .await?;
    Ok(())
}

fn replay(status: u16, etag: Option<String>, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(etag) = etag.and_then(|etag| HeaderValue::from_str(&etag).ok()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// Runs `request` at most once per key and account; see the module documentation.
pub async fn once(
    db: &Database,
    account: AccountId,
    IdempotencyKey(key): IdempotencyKey,
    RequestDigest(digest): RequestDigest,
    request: impl Future<Output = ApiResult<Response>>,
) -> ApiResult<Response> {
    let Some(key) = key else {
        return request.await;
    };
    match claim(db, account, &key, &digest).await? {
        Claim::Finished { digest: first, .. } if first != digest => Err(ApiError::invalid_field(
            "Idempotency-Key",
            "was used before with another request; use a new key for a new request",
        )),
        Claim::Finished {
            status, etag, body, ..
        } => Ok(replay(status, etag, body)),
        Claim::Running => Err(ApiError::conflict(
            "a request with this Idempotency-Key is still running; retry in a moment",
        )),
        Claim::Fresh => match request.await {
            Ok(response) if response.status().is_success() => {
                let (parts, answer) = response.into_parts();
                let bytes = to_bytes(answer, MAX_BODY_BYTES * 16)
                    .await
                    .map_err(ApiError::internal)?;
                let text = String::from_utf8_lossy(&bytes);
                let etag = parts
                    .headers
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok());
                remember(db, account, &key, parts.status, etag, &text).await?;
                Ok(Response::from_parts(parts, bytes.into()))
            }
            answer => {
                release(db, account, &key).await?;
                answer
            }
        },
    }
}

/// Forgets keys older than [`KEY_LIFETIME`]; answers how many.
pub async fn prune(db: &Database, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(timestamp(now - KEY_LIFETIME))
        .execute(&db.pool)
        .await?;
    Ok(deleted.rows_affected())
}
