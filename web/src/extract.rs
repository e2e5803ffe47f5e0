//! Request extractors that answer bad input with problem+json naming the field.

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use serde::de::DeserializeOwned;
use switchyard_command::{
    domain::AccountId,
    event_log::{Actor, Metadata},
};
use uuid::Uuid;

use crate::{auth::Caller, error::ApiError};

/// A JSON body. Malformed JSON is 400; a wrong type, a missing or an unknown field is 422
/// naming the field; over the body limit is 413; another content type is 415.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        parse_json(&body_bytes(request, state).await?).map(JsonBody)
    }
}

/// A JSON body that may be left out (no body at all): then `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let empty = request.headers().get(header::CONTENT_TYPE).is_none()
            && request
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_none_or(|length| length == "0");
        if empty {
            return Ok(Self(T::default()));
        }
        JsonBody::from_request(request, state)
            .await
            .map(|JsonBody(body)| Self(body))
    }
}

/// The bytes of a JSON body: 415 for another content type, 413 over the limit.
pub(crate) async fn body_bytes<S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<Bytes, ApiError> {
    if !is_json(request.headers()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection: BytesRejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body is over the limit of {} bytes",
                    crate::MAX_BODY_BYTES
                ),
            ),
            _ => ApiError::malformed(rejection.body_text()),
        })
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim();
            mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
        })
        .unwrap_or(false)
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::malformed(format!("the body is not valid JSON: {inner}"));
        }
        let message = strip_position(&inner.to_string());
        // The path names the offending field, except for a missing one: then it names the
        // object that lacks it, and only the message says which.
        let field = match missing_field(&message) {
            Some(missing) => join_path(&path, &missing),
            None if path == "." => String::new(),
            None => path,
        };
        ApiError::invalid_field(field, message)
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::malformed(format!("the body is not valid JSON: {error}")))?;
    Ok(value)
}

/// serde's messages end in " at line 1 column 42", which means nothing to a form.
fn strip_position(message: &str) -> String {
    message
        .rsplit_once(" at line ")
        .map_or(message, |(before, _)| before)
        .to_owned()
}

fn backticked(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    let rest = rest.strip_prefix('`')?;
    rest.split('`').next().map(str::to_owned)
}

fn missing_field(message: &str) -> Option<String> {
    backticked(message, "missing field ")
}

fn join_path(path: &str, field: &str) -> String {
    if path == "." || path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Where a request came from, for event metadata and the audit log.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
}

impl RequestContext {
    pub fn metadata(&self, account_id: AccountId, actor: Actor) -> Metadata {
        Metadata {
            account_id,
            actor,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            request_id: self.request_id.clone(),
            client_ip: self.client_ip.clone(),
            user_agent: self.user_agent.clone(),
            session_id: None,
        }
    }

    /// Metadata of a command an authenticated caller runs.
    pub fn metadata_for(&self, caller: &Caller) -> Metadata {
        Metadata {
            session_id: Some(caller.session_id.clone()),
            ..self.metadata(caller.account_id, caller.actor())
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(512).collect::<String>())
        };
        Ok(Self {
            request_id: header(crate::REQUEST_ID_HEADER),
            user_agent: header(header::USER_AGENT.as_str()),
            client_ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_string()),
        })
    }
}

/// The `If-Match` precondition: `None` when absent or `*`, else the version it names.
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        let value = value.to_str().unwrap_or_default().trim();
        if value == "*" {
            return Ok(Self(None));
        }
        crate::etag::parse(value)
            .map(|version| Self(Some(version)))
            .ok_or_else(|| {
                ApiError::precondition_failed(format!(
                    "If-Match {value:?} matches no version of this resource"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(rename = "name")]
        _name: String,
        #[serde(rename = "port")]
        _port: u16,
    }

    fn rejected(json: &str) -> ApiError {
        parse_json::<Body>(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn malformed_json_is_400() {
        assert_eq!(rejected(r#"{"name":"a""#).status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            rejected(r#"{"name":"a","port":1} x"#).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn wrong_missing_and_unknown_fields_are_422_naming_the_field() {
        assert!(parse_json::<Body>(br#"{"name":"a","port":1}"#).is_ok());
        for (json, field) in [
            (r#"{"name":"a","port":"x"}"#, "port"),
            (r#"{"name":"a","port":70000}"#, "port"),
            (r#"{"name":"a"}"#, "port"),
            (r#"{"name":"a","port":1,"extra":1}"#, "extra"),
        ] {
            let error = rejected(json);
            assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY, "{json}");
            assert_eq!(error.fields(), vec![field], "{json}");
        }
    }
}
