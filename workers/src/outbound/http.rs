//! HTTP to tenant-given URLs (SMS gateways today, payment gateways next).

use reqwest::{Client, Method, RequestBuilder, Url, redirect};
use url::Host;

use super::{OutboundError, resolve::PolicyResolver};

/// A reqwest client for URLs a tenant gave. Requests are made through
/// [`TenantHttp::request`] only, which refuses a URL whose host is an address the policy
/// refuses (reqwest does not ask the resolver about those); names resolve through the
/// policy. A redirect is answered as it came (3xx), not followed: it could point anywhere.
/// Proxy environment variables are ignored: a proxy would connect on our behalf, unchecked.
#[derive(Clone)]
pub struct TenantHttp {
    client: Client,
    resolver: PolicyResolver,
}

impl TenantHttp {
    pub(super) fn new(resolver: PolicyResolver) -> reqwest::Result<Self> {
        let client = Client::builder()
            .dns_resolver(std::sync::Arc::new(resolver.clone()))
            .redirect(redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self { client, resolver })
    }

    /// A request to `url`, unless its host is an address the policy refuses.
    pub fn request(&self, method: Method, url: Url) -> Result<RequestBuilder, OutboundError> {
        match url.host() {
            Some(Host::Ipv4(address)) => self.resolver.check(address.into())?,
            Some(Host::Ipv6(address)) => self.resolver.check(address.into())?,
            Some(Host::Domain(_)) | None => {}
        }
        Ok(self.client.request(method, url))
    }
}
