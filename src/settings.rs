//! Settings shared by every subcommand, from flags or the environment.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use ipnet::IpNet;
use switchyard_command::{db::SessionLimits, domain::AllowList, secrets::SecretKeyring};
use switchyard_web::{HttpLimits, WebOptions};
use switchyard_workers::{gateways::ProviderApis, jobs::WorkerOptions};
use url::Url;

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

    /// PostgreSQL: how long a statement waits for a lock before it fails (milliseconds;
    /// 0: without end). A session holding the event log's append lock too long then makes
    /// other writers fail with a clear error instead of hanging.
    #[arg(
        long,
        env = "SWITCHYARD_DB_LOCK_TIMEOUT_MS",
        default_value_t = 5_000,
        global = true
    )]
    pub db_lock_timeout_ms: u64,

    /// PostgreSQL: how long a statement may run before the server stops it (milliseconds;
    /// 0: without end). `switchyard replay` sets none.
    #[arg(
        long,
        env = "SWITCHYARD_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub db_statement_timeout_ms: u64,

    /// PostgreSQL: how long a session may sit idle inside a transaction before the server
    /// ends it and releases its locks (milliseconds; 0: without end). `switchyard replay`
    /// sets none.
    #[arg(
        long,
        env = "SWITCHYARD_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        default_value_t = 30_000,
        global = true
    )]
    pub db_idle_in_transaction_timeout_ms: u64,
}

impl DatabaseSettings {
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            lock_timeout: Duration::from_millis(self.db_lock_timeout_ms),
            statement_timeout: Duration::from_millis(self.db_statement_timeout_ms),
            idle_in_transaction_timeout: Duration::from_millis(
                self.db_idle_in_transaction_timeout_ms,
            ),
        }
    }

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

/// How `serve` meets its clients: how long and how many requests, behind which proxies.
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// Seconds a request may take; a slower one is stopped and answered 503.
    #[arg(
        long,
        env = "SWITCHYARD_HTTP_REQUEST_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub http_request_timeout_secs: u64,

    /// Requests handled at once; beyond them a request is answered 503 at once.
    #[arg(
        long,
        env = "SWITCHYARD_HTTP_MAX_CONCURRENT_REQUESTS",
        default_value_t = 1024
    )]
    pub http_max_concurrent_requests: usize,

    /// Reverse proxies whose forwarding headers (`X-Forwarded-For`, `-Proto`, `-Host`, or
    /// `Forwarded`) are believed, as CIDRs or addresses, comma-separated. The client is the
    /// right-most forwarded address that is not one of them. Default: none (the peer of the
    /// connection is the client).
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXIES", value_delimiter = ',', value_parser = network)]
    pub trusted_proxies: Vec<IpNet>,

    /// The URL browsers load the console from, e.g. `https://console.example.com`. Cookie
    /// requests that change state must come from its origin. Default: the origin each
    /// request was addressed to (its `Host`).
    #[arg(long, env = "SWITCHYARD_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<Url>,
}

impl HttpSettings {
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            request_timeout: Duration::from_secs(self.http_request_timeout_secs.max(1)),
            max_concurrent_requests: self.http_max_concurrent_requests.max(1),
        }
    }

    pub fn web_options(&self) -> WebOptions {
        WebOptions {
            trusted_proxies: self.trusted_proxies.clone(),
            public_url: self.public_url.clone(),
            ..WebOptions::default()
        }
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

    #[command(flatten)]
    pub outbound: OutboundSettings,
}

/// Where the service may connect on a tenant's behalf (SMTP servers, SMS gateways, …).
#[derive(Debug, Clone, Args)]
pub struct OutboundSettings {
    /// Address ranges that tenants' servers may be at although they are not public, as
    /// comma-separated CIDRs (`10.1.0.0/16,fd00:1::/64`; a bare address stands for itself).
    /// Private, loopback, link-local, carrier-grade NAT, multicast and documentation
    /// addresses are refused otherwise. For an internal mail relay, or tests.
    #[arg(long, env = "SWITCHYARD_OUTBOUND_ALLOW", default_value = "", value_parser = parse_allow_list)]
    pub outbound_allow: AllowList,

    /// The name server (`address` or `address:port`, port 53 by default) that resolves
    /// tenants' host names. Default: the system's configuration (`/etc/resolv.conf`).
    #[arg(long, env = "SWITCHYARD_DNS_SERVER", value_parser = parse_dns_server)]
    pub dns_server: Option<SocketAddr>,

    /// Where Stripe's API is: Stripe's own host, or a fake or staging server.
    #[arg(long, env = "SWITCHYARD_STRIPE_API_BASE", default_value = "https://api.stripe.com", value_parser = api_base)]
    pub stripe_api_base: Url,

    /// Where PayPal's API is. Default: PayPal's live or sandbox host, by the gateway's mode.
    #[arg(long, env = "SWITCHYARD_PAYPAL_API_BASE", value_parser = api_base)]
    pub paypal_api_base: Option<Url>,
}

/// A provider's API base: an http(s) URL, without query or fragment (paths go after it).
fn api_base(raw: &str) -> Result<Url, String> {
    Url::parse(raw)
        .ok()
        .filter(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.has_host()
                && url.query().is_none()
                && url.fragment().is_none()
        })
        .ok_or_else(|| format!("{raw:?} is not an http(s) URL such as https://api.stripe.com"))
}

fn parse_allow_list(raw: &str) -> Result<AllowList, String> {
    AllowList::parse(raw).map_err(|error| error.to_string())
}

fn parse_dns_server(raw: &str) -> Result<SocketAddr, String> {
    raw.parse::<SocketAddr>()
        .or_else(|_| raw.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!("{raw:?} is not an address or address:port (e.g. 10.0.0.2 or [fd00::53]:53)")
        })
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
            heartbeat: Duration::from_secs(self.worker_heartbeat_secs.max(1)),
            ..WorkerOptions::default()
        });
        Ok(ServiceOptions {
            workers,
            smtp_extra_root,
            outbound_allow: self.outbound.outbound_allow.clone(),
            dns_server: self.outbound.dns_server,
            providers: ProviderApis {
                stripe: self.outbound.stripe_api_base.clone(),
                paypal: self.outbound.paypal_api_base.clone(),
            },
            ..ServiceOptions::default()
        })
    }
}

/// A CIDR (`10.0.0.0/8`), or one address (`10.0.0.5`).
fn network(raw: &str) -> Result<IpNet, String> {
    let raw = raw.trim();
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{raw:?} is neither a CIDR (10.0.0.0/8) nor an IP address"))
}

fn public_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    match (url.scheme(), url.host()) {
        ("http" | "https", Some(_)) => Ok(url),
        _ => Err(format!(
            "{raw:?} must be an http:// or https:// URL with a host"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_are_cidrs_or_addresses() {
        assert_eq!(network("10.0.0.0/8"), Ok("10.0.0.0/8".parse().unwrap()));
        assert_eq!(network(" 10.0.0.5 "), Ok("10.0.0.5/32".parse().unwrap()));
        assert_eq!(network("::1"), Ok("::1/128".parse().unwrap()));
        assert!(network("10.0.0.0/33").is_err());
        assert!(network("proxy.local").is_err());
    }

    #[test]
    fn the_public_url_is_http_or_https_with_a_host() {
        assert!(public_url("https://console.example.com").is_ok());
        assert!(public_url("http://127.0.0.1:8080/console").is_ok());
        assert!(public_url("console.example.com").is_err());
        assert!(public_url("file:///tmp/x").is_err());
    }
}
