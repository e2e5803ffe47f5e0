//! HTTP for Switchyard: command and query endpoints, sessions, problem+json errors and the
//! OpenAPI document generated from the handlers. Only this crate knows HTTP.

mod auth;
mod domain_errors;
mod error;
mod etag;
mod extract;
pub mod idempotency;
mod paging;
mod routes;
pub mod throttle;

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{Router, extract::DefaultBodyLimit, http::HeaderName};
use switchyard_command::{
    Database,
    event_log::{EventLog, Metadata},
    handler::{Aggregate, CommandHandler, Executed, Loaded},
    password::PasswordHasher,
    secrets::SecretKeyring,
};
use switchyard_projections::Projections;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use domain_errors::DomainError;
pub use error::ApiError;
use throttle::{LoginThrottle, ThrottlePolicy};

/// Request bodies above this answer 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// How long a command's response waits for the read models to show its events.
const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(5);
/// `/readyz` fails when a projection is further behind the log than this.
const READY_MAX_LAG: i64 = 10_000;

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub log: EventLog,
    pub commands: CommandHandler,
    pub projections: Projections,
    pub passwords: PasswordHasher,
    pub secrets: Arc<SecretKeyring>,
    pub throttle: LoginThrottle,
}

impl AppState {
    pub fn new(
        log: EventLog,
        projections: Projections,
        passwords: PasswordHasher,
        secrets: Arc<SecretKeyring>,
    ) -> Self {
        let db = log.database().clone();
        Self {
            throttle: LoginThrottle::new(db.clone(), ThrottlePolicy::default()),
            db,
            commands: CommandHandler::new(log.clone()),
            log,
            projections,
            passwords,
            secrets,
        }
    }

    /// The current state of an aggregate's stream.
    async fn load<A: Aggregate>(&self, stream_id: &str) -> Result<Loaded<A>, ApiError> {
        self.commands
            .load::<A, Infallible>(stream_id)
            .await
            .map_err(ApiError::internal)
    }

    /// Runs a command on one stream and waits for the read models to show its events
    /// (read-your-writes): the next GET and the audit log see the change.
    async fn execute<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Executed<A>, ApiError>
    where
        A::Error: DomainError,
    {
        let executed = self
            .commands
            .execute::<A>(stream_id, command, metadata)
            .await?;
        self.caught_up(executed.position).await;
        Ok(executed)
    }

    /// Read-your-writes: waits until the read models show the event at `position`, so the
    /// next read (a GET, the audit log) sees the command's effect.
    async fn caught_up(&self, position: Option<i64>) {
        if let Some(position) = position
            && !self
                .projections
                .wait_for(position, READ_YOUR_WRITES_TIMEOUT)
                .await
        {
            tracing::warn!(position, "read models did not catch up before the response");
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchyard", description = "Account backend of a hosted VoIP switching and billing platform"),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// The whole HTTP API with its middleware.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::service::routes())
        .merge(routes::sessions::routes())
        .merge(routes::config::routes())
        .merge(routes::channels::routes())
        .merge(routes::me::routes())
        .merge(routes::users::routes())
        .merge(routes::groups::routes())
        .merge(routes::audit::routes())
        .merge(routes::jobs::routes())
        .split_for_parts();
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    api.merge(routes::service::openapi_route(openapi))
        .fallback(routes::service::not_found)
        .with_state(state)
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
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}
