//! A JSON answer kept as text: given now, and under an idempotency key given again to a
//! retry exactly as it was.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use switchyard_command::idempotency::StoredAnswer;

pub struct Answer(StoredAnswer);

impl Answer {
    pub fn json(status: StatusCode, etag: Option<String>, body: &impl Serialize) -> Self {
        Self(StoredAnswer {
            status: status.as_u16(),
            etag,
            body: serde_json::to_string(body).expect("views serialize to JSON"),
        })
    }

    /// What an idempotency key keeps of it.
    pub fn stored(&self) -> StoredAnswer {
        self.0.clone()
    }
}

impl From<StoredAnswer> for Answer {
    fn from(stored: StoredAnswer) -> Self {
        Self(stored)
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let StoredAnswer { status, etag, body } = self.0;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let mut response =
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(etag) = etag.and_then(|etag| HeaderValue::from_str(&etag).ok()) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        response
    }
}
