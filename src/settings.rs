//! Settings shared by every subcommand, from flags or the environment.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchyard_command::secrets::SecretKeyring;
use switchyard_workers::jobs::WorkerOptions;

use crate::service::ServiceOptions;

#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// Database URL: `sqlite://…` (embedded, the default) or `postgres://…`.
    /// Default: an SQLite file in the data folder.
    #[arg(long, env = "SWITCHYARD_DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// Folder for local state: the SQLite database and the secrets key file.
    #[arg(
        long,
        env = "SWITCHYARD_DATA_DIR",
        default_value = "data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Keys that seal secrets at rest, `<key id>:<base64 of 32 bytes>`, comma-separated,
    /// the current key first. Default: the key file `secrets.key` in the data folder,
    /// generated on first start.
    #[arg(
        long,
        env = "SWITCHYARD_SECRETS_KEYS",
        hide_env_values = true,
        global = true
    )]
    pub secrets_keys: Option<String>,
}

impl DatabaseSettings {
    pub fn keyring(&self) -> anyhow::Result<SecretKeyring> {
        Ok(match &self.secrets_keys {
            Some(keys) => SecretKeyring::from_config(keys)?,
            None => {
                std::fs::create_dir_all(&self.data_dir)?;
                SecretKeyring::load_or_generate(&self.data_dir.join("secrets.key"))?
            }
        })
    }

    pub fn url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("switchyard.db").display()
            )
        })
    }
}

/// How a process runs job workers (`serve` and `worker`).
#[derive(Debug, Clone, Args)]
pub struct WorkerSettings {
    /// Jobs of one queue that run at once in this process.
    #[arg(long, env = "SWITCHYARD_WORKER_CONCURRENCY", default_value_t = 16)]
    pub worker_concurrency: usize,

    /// Seconds between a worker's heartbeats. A worker silent for three of them is presumed
    /// dead, and the jobs it held are queued again.
    #[arg(long, env = "SWITCHYARD_WORKER_HEARTBEAT_SECS", default_value_t = 5)]
    pub worker_heartbeat_secs: u64,

    /// A certificate authority (PEM or DER file) that SMTP connections trust besides the
    /// public ones, for a mail relay with a private CA.
    #[arg(long, env = "SWITCHYARD_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
}

impl WorkerSettings {
    /// The service options with workers as set here, or none when `run_workers` is false.
    pub fn service_options(&self, run_workers: bool) -> anyhow::Result<ServiceOptions> {
        let smtp_extra_root = match &self.smtp_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading the SMTP CA file {}", path.display()))?,
            ),
            None => None,
        };
        let workers = run_workers.then(|| WorkerOptions {
            concurrency: self.worker_concurrency.max(1),
            heartbeat: std::time::Duration::from_secs(self.worker_heartbeat_secs.max(1)),
            ..WorkerOptions::default()
        });
        Ok(ServiceOptions {
            workers,
            smtp_extra_root,
        })
    }
}
