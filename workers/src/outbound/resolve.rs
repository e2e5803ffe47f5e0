//! Names to the addresses the policy allows.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use hickory_resolver::{
    ResolveError, TokioResolver,
    config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig},
    name_server::TokioConnectionProvider,
};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use switchyard_command::domain::OutboundPolicy;

use super::OutboundError;

/// Resolves names and keeps the addresses the policy allows. Also reqwest's resolver, so an
/// HTTP client connects only where the policy allows.
#[derive(Clone)]
pub(super) struct PolicyResolver {
    policy: Arc<OutboundPolicy>,
    dns: TokioResolver,
}

impl PolicyResolver {
    pub(super) fn new(
        policy: OutboundPolicy,
        dns_server: Option<SocketAddr>,
    ) -> Result<Self, ResolveError> {
        let mut builder = match dns_server {
            Some(server) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], servers),
                    TokioConnectionProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()?,
        };
        // Every address, so that a refused one does not hide an allowed one of the other family.
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(Self {
            policy: Arc::new(policy),
            dns: builder.build(),
        })
    }

    /// Checks one address the caller already has (a literal in a URL or a setting).
    pub(super) fn check(&self, address: IpAddr) -> Result<(), OutboundError> {
        self.policy
            .check(address)
            .map_err(|refused| OutboundError::NotAllowed {
                host: None,
                refused,
            })
    }

    /// `host`'s addresses that the policy allows; an error when there are none.
    pub(super) async fn allowed_addresses(&self, host: &str) -> Result<Vec<IpAddr>, OutboundError> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(address) = literal.parse::<IpAddr>() {
            self.check(address)?;
            return Ok(vec![address]);
        }
        let not_resolved = |reason: String| OutboundError::NotResolved {
            host: host.to_owned(),
            reason,
        };
        let lookup = self.dns.lookup_ip(host).await.map_err(|error| {
            not_resolved(if error.is_nx_domain() || error.is_no_records_found() {
                "no such name".to_owned()
            } else {
                error.to_string()
            })
        })?;
        let mut first_refusal = None;
        let allowed: Vec<IpAddr> = lookup
            .iter()
            .filter(|&address| match self.policy.check(address) {
                Ok(()) => true,
                Err(refused) => {
                    first_refusal.get_or_insert(refused);
                    false
                }
            })
            .collect();
        match first_refusal {
            Some(refused) if allowed.is_empty() => Err(OutboundError::NotAllowed {
                host: Some(host.to_owned()),
                refused,
            }),
            _ if allowed.is_empty() => Err(not_resolved("the name has no address".to_owned())),
            _ => Ok(allowed),
        }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let addresses = resolver.allowed_addresses(name.as_str()).await?;
            // Port 0: reqwest puts the URL's port in.
            let addresses: Addrs = Box::new(addresses.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addresses)
        })
    }
}
