//! HTTP to tenant-given URLs (SMS gateways) and to payment providers on tenants' behalf.

use std::error::Error as _;

use reqwest::{Client, Method, RequestBuilder, Response, Url, redirect};
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

/// How much of a tenant's server's answer is read: enough for a provider's error, and a
/// server cannot fill our memory. Only an [`excerpt`](super::excerpt) of it is recorded.
const READ_BODY_LIMIT: usize = 4096;

/// The first `READ_BODY_LIMIT` bytes of the answer, or as much as arrived before an error.
pub async fn read_body_start(mut response: Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < READ_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(READ_BODY_LIMIT);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The outbound policy's refusal, when that is why no connection was made (reqwest wraps
/// what its resolver answered).
pub fn outbound_refusal(error: &reqwest::Error) -> Option<&OutboundError> {
    std::iter::successors(error.source(), |&cause| cause.source())
        .find_map(|cause| cause.downcast_ref::<OutboundError>())
        .filter(|refusal| matches!(refusal, OutboundError::NotAllowed { .. }))
}

/// The innermost error ("Connection refused (os error 111)", "invalid peer certificate: …"):
/// the part that says what to fix; reqwest's own wording repeats the full URL.
pub fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
