//! What every route shares: the command path, the read models, the stores of sessions,
//! login throttling and idempotency keys, and the helpers that run a command and wait for
//! the read models to show it.

use std::{convert::Infallible, sync::Arc, time::Duration};

use ipnet::IpNet;
use switchyard_command::{
    Database,
    access::{
        sessions::Sessions,
        throttle::{LoginThrottle, ThrottlePolicy},
    },
    domain::AccountId,
    domain::OutboundPolicy,
    event_log::{EventLog, Metadata},
    handler::{Aggregate, CommandHandler, Executed, Loaded},
    idempotency::{ABANDONED_AFTER, Answering, IdempotencyKeys},
    password::PasswordHasher,
    secrets::SecretKeyring,
};
use switchyard_projections::{
    Projection, Projections, UsersProjection, queries, worker_health::WorkerHealth,
};
use url::Url;

use crate::{domain_errors::DomainError, error::ApiError, forwarded::TrustedProxies, read_models};

/// How long a command's response waits for the read models to show its events.
const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(5);

/// How the service meets its clients.
#[derive(Clone, Debug)]
pub struct WebOptions {
    /// Reverse proxies whose forwarding headers are believed (see [`crate::forwarded`]).
    pub trusted_proxies: Vec<IpNet>,
    /// The address browsers load the console from: when set, cookie requests that change
    /// state must come from its origin, whatever `Host` a proxy passes on.
    pub public_url: Option<Url>,
    /// When a request holding an `Idempotency-Key` counts as abandoned, so that a retry may
    /// take the key over: a minute, but in tests.
    pub abandoned_key_after: Duration,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            public_url: None,
            abandoned_key_after: ABANDONED_AFTER,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub log: EventLog,
    pub commands: CommandHandler,
    pub projections: Projections,
    pub passwords: PasswordHasher,
    pub secrets: Arc<SecretKeyring>,
    pub sessions: Sessions,
    pub throttle: LoginThrottle,
    pub idempotency: IdempotencyKeys,
    /// Which addresses a tenant may name for the service to connect to (refused literals
    /// are invalid settings).
    pub outbound: Arc<OutboundPolicy>,
    /// The job workers of this process, if it runs any.
    pub workers: WorkerHealth,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) public_origin: Option<url::Origin>,
    /// Where the service is reached from outside: the base of the webhook URLs it gives out.
    pub(crate) public_url: Option<Url>,
    /// The operator account, once known: it never changes once designated.
    operator: Arc<tokio::sync::OnceCell<AccountId>>,
}

impl AppState {
    pub fn new(
        log: EventLog,
        projections: Projections,
        passwords: PasswordHasher,
        secrets: Arc<SecretKeyring>,
        outbound: OutboundPolicy,
        options: WebOptions,
    ) -> Self {
        let db = log.database().clone();
        Self {
            trusted_proxies: TrustedProxies::new(options.trusted_proxies),
            public_origin: options.public_url.as_ref().map(|url| url.origin()),
            public_url: options.public_url,
            sessions: Sessions::new(db.clone()),
            throttle: LoginThrottle::new(db.clone(), ThrottlePolicy::default()),
            idempotency: IdempotencyKeys::new(db.clone(), options.abandoned_key_after),
            db,
            commands: CommandHandler::new(log.clone()),
            log,
            projections,
            passwords,
            secrets,
            outbound: Arc::new(outbound),
            workers: WorkerHealth::default(),
            operator: Arc::default(),
        }
    }

    /// The account that runs the platform; `None` before the first account is opened.
    pub(crate) async fn operator_account(&self) -> Result<Option<AccountId>, ApiError> {
        if let Some(operator) = self.operator.get() {
            return Ok(Some(*operator));
        }
        let operator = queries::operator_account(&self.db).await?;
        if let Some(operator) = operator {
            let _ = self.operator.set(operator);
        }
        Ok(operator)
    }

    /// The current state of an aggregate's stream.
    pub(crate) async fn load<A: Aggregate>(&self, stream_id: &str) -> Result<Loaded<A>, ApiError> {
        self.commands
            .load::<A, Infallible>(stream_id)
            .await
            .map_err(ApiError::internal)
    }

    /// Runs a command on one stream and waits for the read models to show its events
    /// (read-your-writes): the next GET and the audit log see the change.
    pub(crate) async fn execute<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Executed<A>, ApiError>
    where
        A::Error: DomainError,
    {
        self.execute_answering(stream_id, command, metadata, None)
            .await
    }

    /// [`Self::execute`] for a request under an `Idempotency-Key`: its append keeps the
    /// answer `answering` renders (see [`crate::idempotency`]).
    pub(crate) async fn execute_answering<A: Aggregate>(
        &self,
        stream_id: &str,
        command: A::Command,
        metadata: &Metadata,
        answering: Option<Answering<'_, Loaded<A>>>,
    ) -> Result<Executed<A>, ApiError>
    where
        A::Error: DomainError,
    {
        let executed = self
            .commands
            .execute_answering::<A>(stream_id, command, metadata, answering)
            .await?;
        self.caught_up(executed.position).await;
        Ok(executed)
    }

    /// Read-your-writes: waits until the read models show the event at `position`, so the
    /// next read (a GET, the audit log) sees the command's effect. If they do not in time,
    /// the response says so ([`crate::READ_MODELS_HEADER`]).
    pub(crate) async fn caught_up(&self, position: Option<i64>) {
        if let Some(position) = position
            && !self
                .projections
                .wait_for(position, READ_YOUR_WRITES_TIMEOUT)
                .await
        {
            tracing::warn!(position, "read models did not catch up before the response");
            read_models::mark_behind();
        }
    }

    /// For a change whose security effect the users projection carries out (ending
    /// sessions, taking permissions away): success only once that effect is in place.
    /// Otherwise 503: the change is recorded, but not yet in force.
    pub(crate) async fn in_force(&self, position: Option<i64>) -> Result<(), ApiError> {
        let Some(position) = position else {
            return Ok(());
        };
        let users = UsersProjection.name();
        if !self
            .projections
            .wait_for_one(users, position, READ_YOUR_WRITES_TIMEOUT)
            .await
        {
            tracing::error!(
                position,
                "a security change is recorded but not yet in force"
            );
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "not_yet_in_force",
                "the change is recorded, but not yet in force: sessions it ends and \
                 permissions it takes away may still work until the read models catch up \
                 (see /readyz); it need not be sent again",
            ));
        }
        self.caught_up(Some(position)).await;
        Ok(())
    }

    /// [`Self::execute`] for a change with a security effect ([`Self::in_force`]).
    pub(crate) async fn execute_in_force<A: Aggregate>(
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
        self.in_force(executed.position).await?;
        Ok(executed)
    }
}
