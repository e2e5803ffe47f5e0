//! Request extractors that answer bad input with problem+json naming the field.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use switchyard_command::{
    domain::AccountId,
    event_log::{Actor, Metadata},
};
use uuid::Uuid;

use crate::{
    auth::Caller,
    error::{ApiError, ApiResult},
    forwarded,
    state::AppState,
    strict::{Strict, client_message},
};

/// Request bodies above this answer 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A JSON body. Malformed JSON is 400; a wrong type, a missing or an unknown field is 422
/// naming the field; over the body limit is 413; another content type is 415.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        parse_json(&body_bytes(request, state).await?).map(JsonBody)
    }
}

/// A request sent without a body: no content type, and no or a zero length.
pub(crate) fn has_no_body(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_none()
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|length| length == "0")
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
                format!("the body is over the limit of {} bytes", MAX_BODY_BYTES),
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

/// Parses a JSON body strictly (see [`Strict`]): malformed JSON is 400; a well-formed body
/// that does not fit `T` is 422 naming the field, in words a client understands.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(Strict(&mut deserializer)).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::malformed(format!("the body is not valid JSON: {inner}"));
        }
        misfit(&path, &strip_position(&inner.to_string()), "the body")
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::malformed(format!("the body is not valid JSON: {error}")))?;
    Ok(value)
}

/// Query parameters, parsed as strictly as bodies: a parameter that does not fit `T` (or
/// that `T` does not know) is 422 naming it, as problem+json. Use it instead of axum's
/// `Query`, whose rejection is a plain-text 400.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(Strict(deserializer))
            .map(Query)
            .map_err(|error| {
                let path = error.path().to_string();
                misfit(&path, &error.into_inner().to_string(), "the query string")
            })
    }
}

/// A value that does not fit the shape asked for, at `path`: 422 naming the field (the
/// whole of it, when the path is the root).
fn misfit(path: &str, message: &str, whole: &str) -> ApiError {
    let message = client_message(message);
    match message.named_field {
        Some(named) => ApiError::invalid_field(join_path(path, &named), message.text),
        None if path == "." => ApiError::unprocessable(format!("{whole} {}", message.text)),
        None => ApiError::invalid_field(path, message.text),
    }
}

/// serde's messages end in " at line 1 column 42", which means nothing to a form.
fn strip_position(message: &str) -> String {
    message
        .rsplit_once(" at line ")
        .map_or(message, |(before, _)| before)
        .to_owned()
}

fn join_path(path: &str, field: &str) -> String {
    if path == "." || path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Where a request came from, for event metadata (and so the audit log) and the login
/// throttle: behind trusted reverse proxies, the client they forwarded (see
/// [`crate::forwarded`], which the CSRF check reads too).
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
        self.metadata_on_behalf(caller, caller.account_id)
    }

    /// Metadata of a command an authenticated caller runs on another account's streams (the
    /// operator adjusting a balance): it belongs to, and is audited in, `account_id`.
    pub fn metadata_on_behalf(&self, caller: &Caller, account_id: AccountId) -> Metadata {
        Metadata {
            session_id: Some(caller.session_id.clone()),
            ..self.metadata(account_id, caller.actor())
        }
    }
}

impl FromRequestParts<AppState> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(512).collect::<String>())
        };
        let client = forwarded::of_request(parts, &state.trusted_proxies).client;
        Ok(Self {
            request_id: header(REQUEST_ID_HEADER),
            user_agent: header(header::USER_AGENT.as_str()),
            client_ip: client.map(|ip| ip.to_string()),
        })
    }
}

/// The `If-Match` precondition: `None` when absent or `*`, else the version it names.
/// Operations that take it name it in `params(IfMatch)`, so the document shows it (and 412).
pub struct IfMatch(pub Option<i64>);

impl utoipa::IntoParams for IfMatch {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        vec![crate::openapi::if_match_parameter()]
    }
}

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

/// An RFC 3339 time from a query string; 422 naming `field`.
pub fn query_time(field: &str, raw: Option<String>) -> ApiResult<Option<DateTime<Utc>>> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(&raw)
            .map(|at| at.with_timezone(&Utc))
            .map_err(|_| ApiError::invalid_field(field, format!("{raw:?} is not an RFC 3339 time")))
    })
    .transpose()
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

    #[test]
    fn an_array_is_no_body_even_when_its_items_would_fill_the_fields() {
        let error = rejected(r#"["a", 1]"#);
        assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error.detail(), "the body must be an object, not an array");
    }
}
