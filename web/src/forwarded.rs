//! Where a request really comes from. Behind a reverse proxy the socket peer is the proxy:
//! only a peer among the trusted proxies may say who the client is (`X-Forwarded-For`, or
//! RFC 7239 `Forwarded` when there is no `X-Forwarded-For`) and which scheme and host it
//! asked for (`X-Forwarded-Proto`, `X-Forwarded-Host`, or `proto=` and `host=`). The
//! client is the right-most address of the chain that is not a trusted proxy: whatever
//! stands left of it was written by that client, and may be forged.
//!
//! `X-Forwarded-For` wins over `Forwarded` because nearly every proxy appends to it: a
//! client's own `Forwarded` header, passed through such a proxy unchanged, must not count.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::ConnectInfo,
    http::{HeaderMap, header, request::Parts},
};
use ipnet::IpNet;

/// The networks of the reverse proxies whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    fn trust(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&address))
    }
}

/// What a request says of its origin, as far as it may be believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The client's address; `None` when a trusted proxy named it in a way we cannot read
    /// (`unknown`, an obfuscated name).
    pub client: Option<IpAddr>,
    /// The host the client asked for: the `Host` header, or what a trusted proxy forwarded.
    pub host: Option<String>,
    /// The scheme the client used, when a trusted proxy said it.
    pub proto: Option<String>,
}

/// One step of the chain a request came along, as a proxy recorded it.
#[derive(Debug, Default)]
struct Hop {
    client: Option<IpAddr>,
    host: Option<String>,
    proto: Option<String>,
}

/// The origin of the request of `parts`, from its connection's peer and its headers.
pub fn of_request(parts: &Parts, trusted: &TrustedProxies) -> Origin {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    resolve(peer, &parts.headers, trusted)
}

/// The origin of a request that came from `peer` (the socket's address) with `headers`.
pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> Origin {
    let host = last_value(headers, header::HOST.as_str());
    let peer = peer.map(|ip| ip.to_canonical());
    let direct = Origin {
        client: peer,
        host: host.clone(),
        proto: None,
    };
    if !peer.is_some_and(|peer| trusted.trust(peer)) {
        return direct;
    }
    let hops = match values(headers, "x-forwarded-for") {
        addresses if !addresses.is_empty() => addresses
            .iter()
            .map(|address| Hop {
                client: address_of(address),
                ..Hop::default()
            })
            .collect(),
        _ => forwarded_hops(headers),
    };
    let Some(hop) = hops
        .iter()
        .rev()
        .find(|hop| !hop.client.is_some_and(|ip| trusted.trust(ip)))
        .or(hops.first())
    else {
        return direct;
    };
    Origin {
        client: hop.client,
        host: (hop.host.clone())
            .or_else(|| last_value(headers, "x-forwarded-host"))
            .or(host),
        proto: (hop.proto.clone()).or_else(|| last_value(headers, "x-forwarded-proto")),
    }
}

/// Every comma-separated value of every `name` header, in order.
fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| split_outside_quotes(value, ','))
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .collect()
}

/// The right-most value of `name`: the one the nearest proxy wrote.
fn last_value(headers: &HeaderMap, name: &str) -> Option<String> {
    values(headers, name).pop()
}

/// The hops of RFC 7239 `Forwarded`: `for=…;proto=…;host=…` elements, comma-separated.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Hop> {
    values(headers, "forwarded")
        .iter()
        .map(|element| {
            let mut hop = Hop::default();
            for pair in split_outside_quotes(element, ';') {
                let Some((key, value)) = pair.split_once('=') else {
                    continue;
                };
                let value = unquote(value.trim());
                match key.trim().to_ascii_lowercase().as_str() {
                    "for" => hop.client = address_of(&value),
                    "host" => hop.host = Some(value),
                    "proto" => hop.proto = Some(value),
                    _ => {}
                }
            }
            hop
        })
        .collect()
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (index, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(&text[start..index]);
            start = index + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => value.to_owned(),
    }
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`; `None` for anything else (`unknown`, `_hidden`).
fn address_of(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    let address = node
        .parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| node.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const PROXY: &str = "10.0.0.5";

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/24".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
        ])
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn client(peer: &str, pairs: &[(&'static str, &str)]) -> Option<IpAddr> {
        resolve(Some(ip(peer)), &headers(pairs), &trusted()).client
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let said = [
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-host", "evil.example"),
            ("host", "api.example.com"),
        ];
        let origin = resolve(Some(ip("203.0.113.9")), &headers(&said), &trusted());
        assert_eq!(
            origin,
            Origin {
                client: Some(ip("203.0.113.9")),
                host: Some("api.example.com".into()),
                proto: None,
            }
        );
    }

    #[test]
    fn the_client_is_the_rightmost_address_that_is_not_a_trusted_proxy() {
        // The client forged the first entry; our proxies appended the rest.
        let chain = [("x-forwarded-for", "192.0.2.66, 203.0.113.9, 10.0.0.7")];
        assert_eq!(client(PROXY, &chain), Some(ip("203.0.113.9")));
        // The same, over several header lines.
        let lines = [
            ("x-forwarded-for", "192.0.2.66"),
            ("x-forwarded-for", "203.0.113.9,10.0.0.7"),
        ];
        assert_eq!(client(PROXY, &lines), Some(ip("203.0.113.9")));
        // Only proxies: the left-most is as far as anyone can tell.
        let proxies = [("x-forwarded-for", "10.0.0.8, 10.0.0.7")];
        assert_eq!(client(PROXY, &proxies), Some(ip("10.0.0.8")));
        // A trusted proxy that says nothing is the client itself.
        assert_eq!(client(PROXY, &[]), Some(ip(PROXY)));
        // A name we cannot read: the client is not known.
        let hidden = [("x-forwarded-for", "unknown, 10.0.0.7")];
        assert_eq!(client(PROXY, &hidden), None);
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let rfc = [
            (
                "forwarded",
                "for=192.0.2.66;proto=http, for=\"[2001:db8:cafe::17]:4711\";proto=https;host=console.example.com",
            ),
            ("forwarded", "for=10.0.0.7;proto=http;host=internal"),
            ("host", "10.0.0.9:8080"),
        ];
        let origin = resolve(Some(ip(PROXY)), &headers(&rfc), &trusted());
        assert_eq!(
            origin,
            Origin {
                client: Some(ip("2001:db8:cafe::17")),
                host: Some("console.example.com".into()),
                proto: Some("https".into()),
            }
        );
        // A client's own `Forwarded`, passed through a proxy that appends X-Forwarded-For.
        let forged = [
            ("forwarded", "for=198.51.100.7"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(client(PROXY, &forged), Some(ip("203.0.113.9")));
    }

    #[test]
    fn x_forwarded_host_and_proto_count_from_trusted_proxies_only() {
        let said = [
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-host", "console.example.com"),
            ("x-forwarded-proto", "https"),
            ("host", "10.0.0.9:8080"),
        ];
        let through_proxy = resolve(Some(ip(PROXY)), &headers(&said), &trusted());
        assert_eq!(through_proxy.host.as_deref(), Some("console.example.com"));
        assert_eq!(through_proxy.proto.as_deref(), Some("https"));
        let direct = resolve(Some(ip("203.0.113.9")), &headers(&said), &trusted());
        assert_eq!(direct.host.as_deref(), Some("10.0.0.9:8080"));
        assert_eq!(direct.proto, None);
    }

    #[test]
    fn addresses_are_read_in_every_form_proxies_write() {
        for (node, expected) in [
            ("192.0.2.1", "192.0.2.1"),
            ("192.0.2.1:4711", "192.0.2.1"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:4711", "2001:db8::1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
        ] {
            assert_eq!(address_of(node), Some(ip(expected)), "{node}");
        }
        assert_eq!(address_of("unknown"), None);
        assert_eq!(address_of("_hidden"), None);
        // An IPv4 peer on a dual-stack socket is trusted by its IPv4 network.
        let mapped = ip("::ffff:10.0.0.5");
        let forwarded = [("x-forwarded-for", "203.0.113.9")];
        let origin = resolve(Some(mapped), &headers(&forwarded), &trusted());
        assert_eq!(origin.client, Some(ip("203.0.113.9")));
    }
}
