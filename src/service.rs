//! Starting and stopping the service: the event log writer, the projection runners and the
//! HTTP server, on one database.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use rand::{Rng, distributions::Alphanumeric};
use switchyard_command::{
    Database,
    domain::{EmailAddress, NewPassword, Text},
    event_log::EventLog,
    handler::CommandHandler,
    onboarding::{NewAccount, OpenedAccount, open_account},
    password::PasswordHasher,
    secrets::SecretKeyring,
};
use switchyard_projections::{Projection, Projections};
use switchyard_web::{AppState, idempotency};
use switchyard_workers::jobs::{self, Dispatcher, JobContext, WorkerOptions, run_workers};
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
}

/// A running service: event log writer, projections and the job dispatcher, job workers,
/// then (after [`Service::serve`]) HTTP. [`Service::shutdown`] stops it after in-flight
/// requests and jobs finish.
pub struct Service {
    pub state: AppState,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    workers: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            workers: Some(WorkerOptions::default()),
            smtp_extra_root: None,
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
        let shutdown = CancellationToken::new();
        let log = EventLog::start(db)
            .await
            .context("starting the event log")?;
        let projections = Projections::start(&log, vec![Arc::new(Dispatcher)], shutdown.clone());
        let state = AppState::new(log, projections, password_hasher(), Arc::new(secrets));
        tokio::spawn(prune_operational_state(state.clone(), shutdown.clone()));
        let workers = options.workers.map(|worker_options| {
            let dispatched = state.projections.checkpoint_of(Dispatcher.name());
            let context = job_context(
                state.commands.clone(),
                state.secrets.clone(),
                options.smtp_extra_root,
            );
            tokio::spawn(run_workers(
                state.db.clone(),
                context,
                dispatched,
                worker_options,
                shutdown.clone(),
            ))
        });
        Ok(Self {
            state,
            shutdown,
            server: None,
            workers,
        })
    }

    /// Serves the HTTP API on `listener` until shutdown; answers the address it serves on.
    pub fn serve(&mut self, listener: TcpListener) -> anyhow::Result<SocketAddr> {
        let address = listener.local_addr()?;
        let app = switchyard_web::router(self.state.clone())
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

fn job_context(
    commands: CommandHandler,
    secrets: Arc<SecretKeyring>,
    smtp_extra_root: Option<Vec<u8>>,
) -> JobContext {
    JobContext {
        commands,
        secrets,
        http: reqwest::Client::new(),
        smtp_extra_root,
    }
}

/// The job workers alone, for a process of their own (`switchyard worker`): they take jobs
/// that `serve` processes dispatch, until `shutdown`, then let running jobs finish.
pub async fn run_worker_process(
    db: Database,
    secrets: SecretKeyring,
    options: ServiceOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let log = EventLog::start(db.clone())
        .await
        .context("starting the event log")?;
    let context = job_context(
        CommandHandler::new(log),
        Arc::new(secrets),
        options.smtp_extra_root,
    );
    let worker_options = options.workers.unwrap_or_default();
    run_workers(db, context, None, worker_options, shutdown).await
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
                if let Err(error) = idempotency::prune(&state.db, now).await {
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
    let db = Database::open(url)
        .await
        .with_context(|| format!("opening {}", redact_url(url)))?;
    jobs::migrate(&db)
        .await
        .context("creating the job queue's tables")?;
    Ok(db)
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
