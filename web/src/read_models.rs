//! Read-your-writes, and saying so when it did not happen. A command's response waits
//! (bounded) until the read models show its events; if they do not in time, the change is
//! still durable, and the response carries `Switchyard-Read-Models: behind` so that the
//! client knows the next read may not show it yet.

use std::cell::Cell;

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};

pub const READ_MODELS_HEADER: HeaderName = HeaderName::from_static("switchyard-read-models");

tokio::task_local! {
    /// Set while a request is handled, when its read models did not catch up.
    static BEHIND: Cell<bool>;
}

/// Notes that this request's read models are behind its change.
pub fn mark_behind() {
    let _ = BEHIND.try_with(|behind| behind.set(true));
}

/// Middleware: adds the header to a response whose read models were behind.
pub async fn report(request: Request, next: Next) -> Response {
    BEHIND
        .scope(Cell::new(false), async move {
            let mut response = next.run(request).await;
            if BEHIND.with(Cell::get) {
                response
                    .headers_mut()
                    .insert(READ_MODELS_HEADER, HeaderValue::from_static("behind"));
            }
            response
        })
        .await
}

/// Documents, on every operation of the OpenAPI document, what this module and the
/// request limits add: the header on a change's success, and the 503 answers.
pub fn document(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        RefOr, Response, Type,
        schema::{Object, Schema},
    };
    let header = utoipa::openapi::HeaderBuilder::new()
        .schema(Schema::Object(Object::with_type(Type::String)))
        .description(Some(
            "`behind` when the change is stored (durable) but the read models did not show it \
             within 5 s: the next read may not show it yet. Absent otherwise.",
        ))
        .build();
    let unavailable = Response::new(
        "`database_unavailable` (the database is out of reach, or gave up waiting for a lock \
         or a statement; nothing was changed), `timed_out` (the request took too long; a change \
         may still have been recorded), `overloaded` (too many requests at once): each with \
         `Retry-After`. On a change to passwords, two-factor login, users or groups: \
         `not_yet_in_force` (the change is recorded, but the sessions it ends or the \
         permissions it takes away may still work until the read models catch up; do not \
         send it again).",
    );
    for item in openapi.paths.paths.values_mut() {
        let changes = [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in changes.into_iter().flatten() {
            for (status, response) in operation.responses.responses.iter_mut() {
                if let (true, RefOr::T(response)) = (status.starts_with('2'), response) {
                    response
                        .headers
                        .insert(READ_MODELS_HEADER.as_str().to_owned(), header.clone());
                }
            }
            operation
                .responses
                .responses
                .entry("503".into())
                .or_insert_with(|| RefOr::T(unavailable.clone()));
        }
    }
}
