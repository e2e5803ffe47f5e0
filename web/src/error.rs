//! Every error answer is `application/problem+json` (RFC 9457): `type`, `title` (a stable
//! code), `status`, `detail` (for people) and, for validation, `errors` naming each field.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use switchyard_command::domain::FieldError;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    /// For 429: when to try again.
    retry_after: Option<Duration>,
}

/// An error answer, `application/problem+json` (RFC 9457): as sent, and as the OpenAPI
/// document describes it.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `/problems/<title>`, a reference relative to the service.
    #[serde(rename = "type")]
    problem_type: String,
    /// A stable code: `validation_failed`, `not_found`, `precondition_failed`, …
    title: &'static str,
    /// The HTTP status.
    status: u16,
    /// What went wrong, for people.
    detail: String,
    /// For validation: each invalid field, named as sent (`groups[1]`, `permissions.cdr`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<ProblemField>)]
    errors: Vec<FieldError>,
}

/// One invalid field of a validation problem.
#[derive(ToSchema)]
#[allow(dead_code)] // the shape of `FieldError` as serialized, for the OpenAPI document
pub struct ProblemField {
    field: String,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 429 with `Retry-After` in whole seconds (at least one).
    pub fn too_many_requests(retry_after: Duration, detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", detail)
        }
    }

    /// 503 with `Retry-After`: the service cannot answer now, and may shortly.
    pub fn unavailable(
        code: &'static str,
        detail: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
        }
    }

    /// A database error: 503 when the database is out of reach or gave up waiting (a lock
    /// held too long, a statement that ran too long), so nothing was changed and a retry may
    /// work; 500 otherwise.
    pub fn database(error: &sqlx::Error) -> Self {
        const LOCK_TIMEOUT: &str = "55P03";
        const STATEMENT_TIMEOUT: &str = "57014";
        let code = error.as_database_error().and_then(|e| e.code());
        let detail = match (error, code.as_deref()) {
            (_, Some(LOCK_TIMEOUT)) => {
                "the database waited too long for a lock held by another session; nothing was \
                 changed, try again"
            }
            (_, Some(STATEMENT_TIMEOUT)) => {
                "the database stopped a statement that ran too long; nothing was changed, try again"
            }
            (sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed, _) => {
                "the database cannot be reached; try again"
            }
            _ => return Self::internal(error),
        };
        tracing::warn!(%error, "database unavailable");
        Self::unavailable("database_unavailable", detail, Duration::from_secs(1))
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            detail: format!("invalid fields: {}", fields.join(", ")),
            errors,
            retry_after: None,
        }
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// 422 for a request that is wrong as a whole rather than in a field.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            detail,
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not answer this method; the `Allow` header lists those it does",
        )
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", detail)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "log in and send the session token as `Authorization: Bearer <token>`",
        )
    }

    /// A wrong email or password: the same answer for both.
    pub fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the email or the password is wrong",
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 404 for settings never set: not an error of the client's, a step still to take.
    pub fn not_configured(what: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            format!(
                "{what} are not configured yet: set them with `PUT {path}` and `If-Match: \"0\"`"
            ),
        )
    }

    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            detail,
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// Logs the cause and answers 500 without leaking it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to handle the request; it has been logged",
        )
    }

    /// Adds `Retry-After` (whole seconds, at least one).
    pub fn with_retry_after(self, wait: Duration) -> Self {
        Self {
            retry_after: Some(wait),
            ..self
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    #[cfg(test)]
    pub fn detail(&self) -> &str {
        &self.detail
    }

    #[cfg(test)]
    pub fn fields(&self) -> Vec<&str> {
        self.errors.iter().map(|e| e.field.as_str()).collect()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::database(&error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            problem_type: format!("/problems/{}", self.code),
            title: self.code,
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
        };
        let content_type = HeaderValue::from_static("application/problem+json");
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, content_type)],
            Json(problem),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
