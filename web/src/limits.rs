//! What bounds every request: a time limit, a cap on requests in flight (beyond it a
//! request is turned away at once rather than queued), and a panic caught — each answered
//! as problem+json rather than a hang, a dropped connection or an empty 500.

use std::{any::Any, time::Duration};

use axum::{
    BoxError, Router,
    error_handling::HandleErrorLayer,
    response::{IntoResponse, Response},
};
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;

/// How long a request may take and how many may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
        }
    }
}

/// `router` with the limits applied to every route.
pub fn apply(router: Router, limits: HttpLimits) -> Router {
    let timeout = limits.request_timeout;
    router.layer(CatchPanicLayer::custom(panicked)).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |error: BoxError| async move {
                refused(error, timeout)
            }))
            .load_shed()
            // One count for the whole router, not one per route.
            .layer(GlobalConcurrencyLimitLayer::new(
                limits.max_concurrent_requests,
            ))
            .timeout(timeout),
    )
}

fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let cause = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    ApiError::internal(format!("the request handler panicked: {cause}")).into_response()
}

fn refused(error: BoxError, timeout: Duration) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        tracing::warn!(timeout = ?timeout, "request timed out");
        let detail = format!(
            "the request took longer than {} s and was stopped; a change it was making may \
             still have been recorded",
            timeout.as_secs()
        );
        return ApiError::unavailable("timed_out", detail, Duration::from_secs(1)).into_response();
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        return ApiError::unavailable(
            "overloaded",
            "the service is handling as many requests as it may at once; try again shortly",
            Duration::from_secs(1),
        )
        .into_response();
    }
    ApiError::internal(error).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::{body::Body, http::Request, routing::get};
    use serde_json::Value;
    use tokio::sync::{Notify, oneshot};
    use tower::ServiceExt;

    use super::*;
    use axum::http::StatusCode;

    async fn call(app: &Router, path: &str) -> (StatusCode, String, Value) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn a_request_that_takes_too_long_is_stopped_with_a_problem() {
        let limits = HttpLimits {
            request_timeout: Duration::from_millis(100),
            ..HttpLimits::default()
        };
        let slow = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "late"
            }),
        );
        let (status, content_type, problem) = call(&apply(slow, limits), "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["title"], "timed_out");
    }

    #[tokio::test]
    async fn a_panic_is_answered_with_a_problem() {
        let panics = Router::new().route(
            "/panics",
            get(|| async {
                if true {
                    panic!("a bug in a handler");
                }
                "unreachable"
            }),
        );
        let (status, content_type, problem) =
            call(&apply(panics, HttpLimits::default()), "/panics").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["title"], "internal_error");
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_are_turned_away_at_once() {
        let limits = HttpLimits {
            max_concurrent_requests: 1,
            ..HttpLimits::default()
        };
        let (entered_tx, entered) = oneshot::channel::<()>();
        let entered_tx = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
        let release = Arc::new(Notify::new());
        let held = release.clone();
        let app = apply(
            Router::new().route(
                "/hold",
                get(move || {
                    let (entered_tx, held) = (entered_tx.clone(), held.clone());
                    async move {
                        if let Some(entered) = entered_tx.lock().unwrap().take() {
                            let _ = entered.send(());
                        }
                        held.notified().await;
                        "done"
                    }
                }),
            ),
            limits,
        );
        let first = tokio::spawn({
            let app = app.clone();
            async move { call(&app, "/hold").await }
        });
        entered.await.unwrap();
        let (status, content_type, problem) = call(&app, "/hold").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["title"], "overloaded");
        release.notify_one();
        assert_eq!(first.await.unwrap().0, StatusCode::OK);
    }
}
