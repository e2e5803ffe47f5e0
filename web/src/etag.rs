//! Strong ETags over a resource's version: `"7"`.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::answer::Answer;

pub fn format(version: i64) -> String {
    format!("\"{version}\"")
}

pub fn parse(value: &str) -> Option<i64> {
    value.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// A resource answer with its version as the ETag.
pub fn with_etag(status: StatusCode, version: i64, body: impl Serialize) -> Response {
    tagged(status, version, &body).into_response()
}

/// [`with_etag`], as an [`Answer`] that an idempotency key can keep.
pub fn tagged(status: StatusCode, version: i64, body: &impl Serialize) -> Answer {
    Answer::json(status, Some(format(version)), body)
}
