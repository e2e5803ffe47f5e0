//! Every connection the service opens on a tenant's behalf goes through [`Outbound`]: to the
//! SMTP server, the SMS gateway and payment providers today, to DNS checks and SIP probes next.
//! Names resolve through one resolver (the operator's `SWITCHYARD_DNS_SERVER`, else the
//! system's configuration); each address is checked against the [`OutboundPolicy`] before
//! anything is sent to it; connections are opened to the checked addresses themselves, so a
//! name is never resolved a second time for the connection (nothing for a name that changes
//! its answer to slip through). The pieces a protocol takes:
//!
//! - TCP: [`Outbound::connect_tcp`];
//! - UDP, or any protocol that addresses packets itself: [`Outbound::resolve`], the addresses
//!   it may send to;
//! - HTTP: [`Outbound::http`], a client that resolves through the policy, refuses literal
//!   addresses the policy refuses, follows no redirects and ignores proxy settings.
//!
//! What a tenant's server answers is shown as an [`excerpt`], never in full.

mod excerpt;
mod http;
mod resolve;

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use switchyard_command::domain::{AddressRefused, OutboundPolicy};
use tokio::net::TcpStream;

use self::resolve::PolicyResolver;
pub use self::{
    excerpt::{excerpt, without_secret},
    http::{TenantHttp, outbound_refusal, read_body_start, root_cause},
};

/// The policy, the resolver and the HTTP client for tenant-directed connections. Cheap to
/// clone; build it once per process (the resolver caches, the HTTP client pools).
#[derive(Clone)]
pub struct Outbound {
    resolver: PolicyResolver,
    http: TenantHttp,
}

/// Why no connection was opened, or how opening one failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The name has no address, or the lookup failed.
    #[error("{host} could not be resolved: {reason}")]
    NotResolved { host: String, reason: String },
    /// The address, or every address of the name, is refused by the policy. Nothing was sent.
    #[error("address not allowed: {}", refusal(.host.as_deref(), .refused))]
    NotAllowed {
        /// The name, when a name was resolved.
        host: Option<String>,
        refused: AddressRefused,
    },
    #[error("no answer within {timeout:?} {waiting_for}")]
    TimedOut {
        timeout: Duration,
        waiting_for: String,
    },
    /// An allowed address refused the connection or could not be reached.
    #[error("connecting to {address}: {error}")]
    Connect {
        address: SocketAddr,
        error: io::Error,
    },
}

/// "relay.example.com resolves to 10.0.0.5, a private address (10.0.0.0/8, RFC 1918)".
fn refusal(host: Option<&str>, refused: &AddressRefused) -> String {
    match host {
        Some(host) => format!("{host} resolves to {refused}"),
        None => refused.to_string(),
    }
}

impl Outbound {
    /// `dns_server`: the name server to ask (port 53 unless given); `None` reads the system's
    /// configuration (`/etc/resolv.conf`).
    pub fn new(policy: OutboundPolicy, dns_server: Option<SocketAddr>) -> anyhow::Result<Self> {
        let resolver = PolicyResolver::new(policy, dns_server)?;
        let http = TenantHttp::new(resolver.clone())?;
        Ok(Self { resolver, http })
    }

    /// The addresses of `host` (a name or a literal address) that connections may go to,
    /// refused ones left out; an error when none is left.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, OutboundError> {
        self.resolver.allowed_addresses(host).await
    }

    /// Connects to the first of `host`'s allowed addresses that accepts, resolving and each
    /// connection attempt bounded by `timeout`; returns the stream and the address reached.
    pub async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<(TcpStream, SocketAddr), OutboundError> {
        let timed_out = |waiting_for: String| OutboundError::TimedOut {
            timeout,
            waiting_for,
        };
        let addresses = tokio::time::timeout(timeout, self.resolve(host))
            .await
            .map_err(|_| timed_out(format!("while resolving {host}")))??;
        let mut last_error = None;
        for ip in addresses {
            let address = SocketAddr::new(ip, port);
            match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => return Ok((stream, address)),
                Ok(Err(error)) => last_error = Some(OutboundError::Connect { address, error }),
                Err(_) => last_error = Some(timed_out(format!("while connecting to {address}"))),
            }
        }
        Err(last_error.expect("resolving answers at least one address"))
    }

    /// The client for requests to tenant-given URLs.
    pub fn http(&self) -> &TenantHttp {
        &self.http
    }
}
