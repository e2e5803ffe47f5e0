//! HTTP for Switchyard: command and query endpoints, sessions, problem+json errors and the
//! OpenAPI document generated from the handlers. Only this crate knows HTTP.

mod answer;
mod auth;
mod credentials;
mod domain_errors;
mod error;
mod etag;
mod extract;
mod forwarded;
mod idempotency;
mod limits;
mod money;
mod openapi;
mod paging;
mod read_models;
mod routes;
mod state;
mod strict;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, header},
};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use extract::{MAX_BODY_BYTES, REQUEST_ID_HEADER};

pub use error::ApiError;
pub use limits::HttpLimits;
pub use read_models::READ_MODELS_HEADER;
pub use state::{AppState, WebOptions};

fn keep_or_set(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}

/// The whole HTTP API with its middleware.
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    let (api, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(routes::service::routes())
        .merge(routes::sessions::routes())
        .merge(routes::config::routes())
        .merge(routes::channels::routes())
        .merge(routes::me::routes())
        .merge(routes::users::routes())
        .merge(routes::groups::routes())
        .merge(routes::audit::routes())
        .merge(routes::jobs::routes())
        .merge(routes::balance::routes())
        .merge(routes::gateways::routes())
        .split_for_parts();
    read_models::document(&mut document);
    let document = openapi::served(document);
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let api = api
        .merge(routes::service::openapi_route(document))
        .fallback(routes::service::not_found)
        .method_not_allowed_fallback(routes::service::method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn(read_models::report));
    limits::apply(api, limits)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let request_id = request
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", %request_id, method = %request.method(), path = %request.uri().path())
            }),
        )
        // On every answer: nothing is cached (answers carry tokens and account data), a
        // browser takes each answer as the type it says, sends no referrer, and frames
        // nothing. A page that needs another policy sets its own, which these leave alone.
        .layer(keep_or_set(header::CACHE_CONTROL, "no-store"))
        .layer(keep_or_set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(keep_or_set(header::REFERRER_POLICY, "no-referrer"))
        .layer(keep_or_set(header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}
