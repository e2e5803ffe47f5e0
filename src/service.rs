//! Starting and stopping the service: the event log writer, the projection runners and the
//! HTTP server, on one database.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use rand::{Rng, distributions::Alphanumeric};
use switchyard_command::{
    Database,
    account::Account,
    db::SessionLimits,
    domain::{AccountId, AllowList, EmailAddress, Money, NewPassword, OutboundPolicy, Text},
    event_log::{EventLog, Metadata},
    handler::CommandHandler,
    key_check::verify_keyring,
    ledger::{Ledger, LedgerCommand, ledger_stream},
    onboarding::{NewAccount, OpenedAccount, open_account},
    password::PasswordHasher,
    secrets::SecretKeyring,
};
use switchyard_projections::{Projection, Projections};
use switchyard_web::{AppState, HttpLimits, WebOptions};
use switchyard_workers::{
    gateways::ProviderApis,
    jobs::{self, Dispatcher, JobContext, WorkerHealth, WorkerOptions, run_workers},
    outbound::Outbound,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Argon2 hashes that may run at once: one per core keeps logins from starving requests.
fn password_hasher() -> PasswordHasher {
    PasswordHasher::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// The first administrator: from settings, or generated.
pub struct AdminCredentials {
    pub email: String,
    pub password: Option<String>,
}

pub struct CreatedAccount {
    pub opened: OpenedAccount,
    /// The administrator's email, normalised as stored.
    pub admin_email: String,
    /// Set when the password was generated: show it once, it is stored only as a hash.
    pub generated_password: Option<String>,
}

/// Opens an account with its first administrator.
pub async fn create_account(
    commands: &CommandHandler,
    passwords: &PasswordHasher,
    name: &str,
    admin: AdminCredentials,
) -> anyhow::Result<CreatedAccount> {
    let name = Text::parse(name, 1, 100).map_err(|e| anyhow::anyhow!("account name: {e}"))?;
    let email =
        EmailAddress::parse(&admin.email).map_err(|e| anyhow::anyhow!("admin email: {e}"))?;
    let (password, generated_password) = match admin.password {
        Some(password) => {
            let password =
                NewPassword::parse(password).map_err(|e| anyhow::anyhow!("admin password {e}"))?;
            (password.into_secret(), None)
        }
        None => {
            let generated: String = rand::thread_rng()
                .sample_iter(&Alphanumeric)
                .take(20)
                .map(char::from)
                .collect();
            (generated.clone().into(), Some(generated))
        }
    };
    let opened = open_account(
        commands,
        NewAccount {
            name,
            admin_name: Text::parse("Administrator", 1, 100).expect("valid name"),
            admin_email: email.clone(),
            admin_password_hash: passwords.hash(password).await,
        },
    )
    .await?;
    Ok(CreatedAccount {
        opened,
        admin_email: email.normalized(),
        generated_password,
    })
}

/// What runs beside the projections in a service process. The default runs the job workers.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The job workers, unless they run in processes of their own (`switchyard worker`).
    pub workers: Option<WorkerOptions>,
    /// A certificate authority SMTP connections trust besides the public ones (PEM or DER).
    pub smtp_extra_root: Option<Vec<u8>>,
    /// Ranges tenant-directed connections may reach although they are not public (loopback,
    /// private, …). Empty: none.
    pub outbound_allow: AllowList,
    /// The name server that resolves tenants' host names; `None`: the system's configuration.
    pub dns_server: Option<SocketAddr>,
    /// Where the payment providers' APIs are.
    pub providers: ProviderApis,
    /// How HTTP requests are bounded.
    pub http: HttpLimits,
    /// How HTTP meets its clients: trusted proxies, the public URL.
    pub web: WebOptions,
}

/// A running service: event log writer, projections and the job dispatcher, job workers,
/// then (after [`Service::serve`]) HTTP. [`Service::shutdown`] stops it after in-flight
/// requests and jobs finish.
pub struct Service {
    pub state: AppState,
    http: HttpLimits,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    workers: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            workers: Some(WorkerOptions::default()),
            smtp_extra_root: None,
            outbound_allow: AllowList::default(),
            dns_server: None,
            providers: ProviderApis::default(),
            http: HttpLimits::default(),
            web: WebOptions::default(),
        }
    }
}

impl Service {
    /// Starts everything but HTTP, workers included, on an open (migrated) database.
    /// `secrets` seals the secrets the service keeps (TOTP seeds, SMTP passwords, …).
    pub async fn start(db: Database, secrets: SecretKeyring) -> anyhow::Result<Self> {
        Self::start_with(db, secrets, ServiceOptions::default()).await
    }

    pub async fn start_with(
        db: Database,
        secrets: SecretKeyring,
        options: ServiceOptions,
    ) -> anyhow::Result<Self> {
        verify_keyring(&db, &secrets).await?;
        // Before anything starts, so a bad setting stops nothing half-started.
        let worker_outbound = match &options.workers {
            Some(_) => Some(outbound(&options)?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let log = EventLog::start(db)
            .await
            .context("starting the event log")?;
        let projections = Projections::start(&log, vec![Arc::new(Dispatcher)], shutdown.clone());
        let policy = OutboundPolicy::new(options.outbound_allow.clone());
        let state = AppState::new(
            log,
            projections,
            password_hasher(),
            Arc::new(secrets),
            policy,
            options.web,
        );
        tokio::spawn(prune_operational_state(state.clone(), shutdown.clone()));
        let workers = options
            .workers
            .zip(worker_outbound)
            .map(|(worker_options, outbound)| {
                let dispatched = state.projections.checkpoint_of(Dispatcher.name());
                let context = JobContext {
                    commands: state.commands.clone(),
                    secrets: state.secrets.clone(),
                    outbound,
                    smtp_extra_root: options.smtp_extra_root,
                    providers: options.providers,
                };
                tokio::spawn(run_workers(
                    state.db.clone(),
                    context,
                    dispatched,
                    worker_options,
                    state.workers.clone(),
                    shutdown.clone(),
                ))
            });
        Ok(Self {
            state,
            http: options.http,
            shutdown,
            server: None,
            workers,
        })
    }

    /// Serves the HTTP API on `listener` until shutdown; answers the address it serves on.
    pub fn serve(&mut self, listener: TcpListener) -> anyhow::Result<SocketAddr> {
        let address = listener.local_addr()?;
        let app = switchyard_web::router(self.state.clone(), self.http)
            .into_make_service_with_connect_info::<SocketAddr>();
        let stop = self.shutdown.clone();
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }));
        Ok(address)
    }

    /// On an empty database, opens the first account (the platform operator's).
    pub async fn bootstrap(
        &self,
        account_name: &str,
        admin: AdminCredentials,
    ) -> anyhow::Result<Option<CreatedAccount>> {
        if self.state.log.head_position().await? > 0 {
            return Ok(None);
        }
        let created = create_account(
            &self.state.commands,
            &self.state.passwords,
            account_name,
            admin,
        )
        .await?;
        // The administrator can log in as soon as this returns.
        let position = created.opened.position;
        anyhow::ensure!(
            self.state
                .projections
                .wait_for(position, Duration::from_secs(30))
                .await,
            "read models did not catch up with the new account"
        );
        Ok(Some(created))
    }

    /// Stops accepting requests, lets in-flight requests and jobs finish, stops the
    /// projections.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(server) = self.server {
            server.await??;
        }
        if let Some(workers) = self.workers {
            workers.await??;
        }
        Ok(())
    }
}

/// The resolver, policy and HTTP client the workers reach tenants' servers through.
fn outbound(options: &ServiceOptions) -> anyhow::Result<Outbound> {
    let policy = OutboundPolicy::new(options.outbound_allow.clone());
    Outbound::new(policy, options.dns_server).context(
        "setting up the resolver for tenants' servers: set SWITCHYARD_DNS_SERVER, or check the \
         system's DNS configuration",
    )
}

/// The job workers alone, for a process of their own (`switchyard worker`): they take jobs
/// that `serve` processes dispatch, until `shutdown`, then let running jobs finish.
pub async fn run_worker_process(
    db: Database,
    secrets: SecretKeyring,
    options: ServiceOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    verify_keyring(&db, &secrets).await?;
    let log = EventLog::start(db.clone())
        .await
        .context("starting the event log")?;
    let context = JobContext {
        commands: CommandHandler::new(log),
        secrets: Arc::new(secrets),
        outbound: outbound(&options)?,
        smtp_extra_root: options.smtp_extra_root,
        providers: options.providers,
    };
    let worker_options = options.workers.unwrap_or_default();
    let health = WorkerHealth::default();
    run_workers(db, context, None, worker_options, health, shutdown).await
}

/// How often expired operational state is deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Keeps the login-throttle, idempotency and job tables from growing with every email ever
/// tried, every key ever sent and every job ever run.
async fn prune_operational_state(state: AppState, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                let now = chrono::Utc::now();
                if let Err(error) = state.throttle.prune(now).await {
                    tracing::warn!(%error, "pruning the login throttle failed");
                }
                if let Err(error) = state.idempotency.prune(now).await {
                    tracing::warn!(%error, "pruning idempotency keys failed");
                }
                if let Err(error) = jobs::store::prune(&state.db, now).await {
                    tracing::warn!(%error, "pruning finished jobs failed");
                }
            }
        }
    }
}

/// Opens the database and brings its schema up to date, the job queue's included.
pub async fn open_database(url: &str) -> anyhow::Result<Database> {
    open_database_with(url, SessionLimits::default()).await
}

/// As [`open_database`], its PostgreSQL sessions bounded by `limits`.
pub async fn open_database_with(url: &str, limits: SessionLimits) -> anyhow::Result<Database> {
    let db = Database::open_with(url, limits)
        .await
        .with_context(|| format!("opening {}", redact_url(url)))?;
    jobs::migrate(&db)
        .await
        .context("creating the job queue's tables")?;
    Ok(db)
}

/// A database URL without its passwords, for messages: the user's password and query
/// parameters named like one (`password`, `sslpassword`) show as `***`.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        // Not a URL, so nothing tells where a password would be: show none of it.
        return "(a database URL that does not parse)".to_owned();
    };
    if url.password().is_some() {
        url.set_password(Some("***"))
            .expect("a URL with a password can have one");
    }
    let secret = |name: &str| name.to_ascii_lowercase().contains("password");
    if url.query_pairs().any(|(name, _)| secret(&name)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) { "***".into() } else { value };
                (name.into_owned(), value.into_owned())
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Sets how far below zero `account`'s balance may go (`switchyard account set-debit-limit`):
/// `amount` is a decimal string in the currency the balance is kept in.
pub async fn set_debit_limit(
    commands: &CommandHandler,
    account: AccountId,
    amount: &str,
) -> anyhow::Result<Money> {
    let opened = commands
        .load::<Account, Infallible>(&account.stream_id())
        .await?
        .state
        .sections
        .ok_or_else(|| anyhow::anyhow!("there is no account {account}"))?;
    let stream = ledger_stream(account);
    let ledger = commands.load::<Ledger, Infallible>(&stream).await?.state;
    let currency = ledger.currency().unwrap_or(opened.1.value.currency);
    let limit = Money::parse(amount, currency).map_err(|e| anyhow::anyhow!("amount: {e}"))?;
    commands
        .execute::<Ledger>(
            &stream,
            LedgerCommand::SetDebitLimit(limit),
            &Metadata::system(account),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_in_the_user_part_and_in_the_query() {
        for (url, redacted) in [
            (
                "postgres://app:s3cret@db.example.com:5432/switchyard",
                "postgres://app:***@db.example.com:5432/switchyard",
            ),
            (
                "postgres://db.example.com/switchyard?user=app&password=s3cret&sslmode=require",
                "postgres://db.example.com/switchyard?user=app&password=***&sslmode=require",
            ),
            (
                "postgres://app@db.example.com/switchyard?sslpassword=s3cret&PASSWORD=s3cret",
                "postgres://app@db.example.com/switchyard?sslpassword=***&PASSWORD=***",
            ),
            (
                "sqlite://data/switchyard.db?mode=rwc",
                "sqlite://data/switchyard.db?mode=rwc",
            ),
        ] {
            assert_eq!(redact_url(url), redacted);
        }
        assert!(!redact_url("postgres://app:s3cret@[bad/db").contains("s3cret"));
    }
}
