//! Which addresses the service may connect to on a tenant's behalf. A tenant names the mail
//! server, the SMS gateway (and later payment gateways and servers to probe); without a rule,
//! they could make the service reach its own host, the private network behind it or a cloud's
//! metadata service. Every tenant-directed connection asks [`OutboundPolicy::check`] about the
//! address it is about to connect to; the operator opens ranges with an [`AllowList`]
//! (`SWITCHYARD_OUTBOUND_ALLOW`), e.g. for an internal mail relay.
//!
//! This is the pure part: classifying an address. Resolving names and connecting is done by
//! the workers, which check every address they connect to.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::InvalidValue;

/// A range of addresses that is not the public Internet.
#[derive(Debug, PartialEq, Eq)]
pub struct ReservedRange {
    pub net: IpNet,
    /// "a private address", as a sentence about one address says it.
    pub what: &'static str,
    /// Where the range is defined.
    pub rfc: &'static str,
}

const fn v4(
    a: u8,
    b: u8,
    c: u8,
    d: u8,
    prefix: u8,
    what: &'static str,
    rfc: &'static str,
) -> ReservedRange {
    ReservedRange {
        net: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)),
        what,
        rfc,
    }
}

const fn v6(
    segments: [u16; 8],
    prefix: u8,
    what: &'static str,
    rfc: &'static str,
) -> ReservedRange {
    let [a, b, c, d, e, f, g, h] = segments;
    ReservedRange {
        net: IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(a, b, c, d, e, f, g, h),
            prefix,
        )),
        what,
        rfc,
    }
}

/// Every range refused unless the operator allows it: the IANA special-purpose registries'
/// ranges that are not globally reachable, and the multicast and reserved space. The first
/// range that holds an address names it. IPv6 forms that carry an IPv4 address (IPv4-mapped,
/// NAT64, 6to4) are judged by that address too ([`carried_ipv4`]).
pub const REFUSED_RANGES: &[ReservedRange] = &[
    v4(
        0,
        0,
        0,
        0,
        8,
        "an address of \"this network\" (0.0.0.0 reaches the host itself)",
        "RFC 1122",
    ),
    v4(10, 0, 0, 0, 8, "a private address", "RFC 1918"),
    v4(
        100,
        64,
        0,
        0,
        10,
        "a shared (carrier-grade NAT) address",
        "RFC 6598",
    ),
    v4(127, 0, 0, 0, 8, "a loopback address", "RFC 1122"),
    v4(
        169,
        254,
        0,
        0,
        16,
        "a link-local address (where cloud metadata services answer)",
        "RFC 3927",
    ),
    v4(172, 16, 0, 0, 12, "a private address", "RFC 1918"),
    v4(192, 0, 0, 0, 24, "an IETF protocol assignment", "RFC 6890"),
    v4(192, 0, 2, 0, 24, "a documentation address", "RFC 5737"),
    v4(
        192,
        88,
        99,
        0,
        24,
        "a 6to4 relay anycast address",
        "RFC 7526",
    ),
    v4(192, 168, 0, 0, 16, "a private address", "RFC 1918"),
    v4(198, 18, 0, 0, 15, "a benchmarking address", "RFC 2544"),
    v4(198, 51, 100, 0, 24, "a documentation address", "RFC 5737"),
    v4(203, 0, 113, 0, 24, "a documentation address", "RFC 5737"),
    v4(224, 0, 0, 0, 4, "a multicast address", "RFC 5771"),
    v4(
        240,
        0,
        0,
        0,
        4,
        "a reserved address (255.255.255.255 is broadcast)",
        "RFC 1112",
    ),
    v6(
        [0, 0, 0, 0, 0, 0, 0, 0],
        128,
        "the unspecified address (it reaches the host itself)",
        "RFC 4291",
    ),
    v6(
        [0, 0, 0, 0, 0, 0, 0, 1],
        128,
        "the loopback address",
        "RFC 4291",
    ),
    v6(
        [0, 0, 0, 0, 0, 0, 0, 0],
        96,
        "an IPv4-compatible address (deprecated)",
        "RFC 4291",
    ),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "a local-use NAT64 address",
        "RFC 8215",
    ),
    v6(
        [0x100, 0, 0, 0, 0, 0, 0, 0],
        64,
        "a discard-only address",
        "RFC 6666",
    ),
    v6(
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        32,
        "a Teredo tunnel address",
        "RFC 4380",
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "a documentation address",
        "RFC 3849",
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "a documentation address",
        "RFC 9637",
    ),
    v6(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "a unique local (private) address",
        "RFC 4193",
    ),
    v6(
        [0xfe80, 0, 0, 0, 0, 0, 0, 0],
        10,
        "a link-local address",
        "RFC 4291",
    ),
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "a site-local address (deprecated)",
        "RFC 3879",
    ),
    v6(
        [0xff00, 0, 0, 0, 0, 0, 0, 0],
        8,
        "a multicast address",
        "RFC 4291",
    ),
];

/// How an IPv6 address carries an IPv4 one that a connection to it may end up at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// `::ffff:a.b.c.d`: a dual-stack socket connects to a.b.c.d itself (RFC 4291).
    Mapped,
    /// `64:ff9b::a.b.c.d`: a NAT64 gateway connects to a.b.c.d (RFC 6052).
    Nat64,
    /// `2002:aabb:ccdd::/48`: a 6to4 relay tunnels to a.b.c.d (RFC 3056).
    SixToFour,
}

impl fmt::Display for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mapped => "an IPv4-mapped address (RFC 4291)",
            Self::Nat64 => "a NAT64 address (RFC 6052)",
            Self::SixToFour => "a 6to4 address (RFC 3056)",
        })
    }
}

/// The IPv4 address an IPv6 address carries, and how.
pub fn carried_ipv4(address: Ipv6Addr) -> Option<(Carrier, Ipv4Addr)> {
    let segments = address.segments();
    let low32 = Ipv4Addr::from(address.to_bits() as u32);
    match segments {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some((Carrier::Mapped, low32)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some((Carrier::Nat64, low32)),
        [0x2002, high, low, ..] => {
            let [a, b] = high.to_be_bytes();
            let [c, d] = low.to_be_bytes();
            Some((Carrier::SixToFour, Ipv4Addr::new(a, b, c, d)))
        }
        _ => None,
    }
}

/// Ranges the operator opened: `127.0.0.0/8,10.1.0.0/16`. Empty by default: nothing private.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<IpNet>);

impl AllowList {
    /// Comma-separated CIDR ranges; a bare address stands for itself alone. A range with host
    /// bits set (`10.1.2.3/16`) is refused rather than widened: this setting opens the network.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        raw.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                let net = match item.parse::<IpNet>() {
                    Ok(net) => net,
                    Err(_) => item.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                        InvalidValue(format!(
                            "{item:?} is not an address range: write it as e.g. 10.1.0.0/16 or fd00::/8"
                        ))
                    })?,
                };
                if net.trunc() != net {
                    return Err(InvalidValue(format!(
                        "{item:?} has host bits set: did you mean {}?",
                        net.trunc()
                    )));
                }
                Ok(net)
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nets: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&nets.join(","))
    }
}

/// Which addresses tenant-directed connections may reach: any address outside
/// [`REFUSED_RANGES`], and any the operator allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    allowed: AllowList,
}

/// An address the policy refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct AddressRefused {
    pub address: IpAddr,
    /// Set when the range refused is that of the IPv4 address `address` carries.
    pub carried: Option<(Carrier, Ipv4Addr)>,
    pub range: &'static ReservedRange,
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ReservedRange { net, what, rfc } = self.range;
        match self.carried {
            Some((carrier, ipv4)) => write!(
                f,
                "{} is {carrier} of {ipv4}, {what} ({net}, {rfc})",
                self.address
            ),
            None => write!(f, "{} is {what} ({net}, {rfc})", self.address),
        }
    }
}

impl OutboundPolicy {
    pub fn new(allowed: AllowList) -> Self {
        Self { allowed }
    }

    /// Whether a connection to `address` may be opened. An address is allowed when it, or
    /// the IPv4 address it carries, is in the allow list; otherwise it is refused when it,
    /// or the IPv4 address it carries, is in a reserved range.
    pub fn check(&self, address: IpAddr) -> Result<(), AddressRefused> {
        let carried = match address {
            IpAddr::V6(v6) => carried_ipv4(v6),
            IpAddr::V4(_) => None,
        };
        let carried_address = carried.map(|(_, ipv4)| IpAddr::V4(ipv4));
        if self.allowed.contains(address)
            || carried_address.is_some_and(|ipv4| self.allowed.contains(ipv4))
        {
            return Ok(());
        }
        if let Some(range) = reserved_range(address) {
            return Err(AddressRefused {
                address,
                carried: None,
                range,
            });
        }
        match carried_address.and_then(reserved_range) {
            Some(range) => Err(AddressRefused {
                address,
                carried,
                range,
            }),
            None => Ok(()),
        }
    }

    /// The check for a setting as it is saved: a literal address the policy refuses is
    /// invalid at once; a name is checked when it is resolved, at each connection.
    pub fn check_literal(&self, literal: Option<IpAddr>) -> Result<(), InvalidValue> {
        match literal.map(|address| self.check(address)) {
            Some(Err(refused)) => Err(InvalidValue(format!(
                "{refused}: the service does not connect to such addresses unless the operator \
                 allows the range"
            ))),
            _ => Ok(()),
        }
    }
}

fn reserved_range(address: IpAddr) -> Option<&'static ReservedRange> {
    REFUSED_RANGES
        .iter()
        .find(|range| range.net.contains(&address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_by(policy: &OutboundPolicy, address: &str) -> Option<String> {
        policy
            .check(address.parse().unwrap())
            .err()
            .map(|refused| refused.to_string())
    }

    #[test]
    fn the_table_is_well_formed() {
        for range in REFUSED_RANGES {
            assert_eq!(range.net.trunc(), range.net, "{range:?}");
            assert!(range.rfc.starts_with("RFC "), "{range:?}");
        }
    }

    #[test]
    fn private_loopback_link_local_and_special_ranges_are_refused_by_default() {
        let policy = OutboundPolicy::default();
        for (address, range) in [
            ("0.0.0.0", "0.0.0.0/8, RFC 1122"),
            ("10.0.0.1", "10.0.0.0/8, RFC 1918"),
            ("100.64.1.2", "100.64.0.0/10, RFC 6598"),
            ("127.0.0.1", "127.0.0.0/8, RFC 1122"),
            ("127.255.0.9", "127.0.0.0/8, RFC 1122"),
            ("169.254.169.254", "169.254.0.0/16, RFC 3927"),
            ("172.31.255.255", "172.16.0.0/12, RFC 1918"),
            ("192.168.1.1", "192.168.0.0/16, RFC 1918"),
            ("192.0.2.10", "192.0.2.0/24, RFC 5737"),
            ("198.51.100.7", "198.51.100.0/24, RFC 5737"),
            ("203.0.113.9", "203.0.113.0/24, RFC 5737"),
            ("198.19.0.1", "198.18.0.0/15, RFC 2544"),
            ("224.0.0.251", "224.0.0.0/4, RFC 5771"),
            ("255.255.255.255", "240.0.0.0/4, RFC 1112"),
            ("::", "::/128, RFC 4291"),
            ("::1", "::1/128, RFC 4291"),
            ("::127.0.0.1", "::/96, RFC 4291"),
            ("fd00::1", "fc00::/7, RFC 4193"),
            ("fe80::1", "fe80::/10, RFC 4291"),
            ("fec0::1", "fec0::/10, RFC 3879"),
            ("ff02::1", "ff00::/8, RFC 4291"),
            ("2001:db8::1", "2001:db8::/32, RFC 3849"),
            ("3fff::1", "3fff::/20, RFC 9637"),
            ("2001:0:4136:e378::1", "2001::/32, RFC 4380"),
            ("64:ff9b:1::1", "64:ff9b:1::/48, RFC 8215"),
            ("100::1", "100::/64, RFC 6666"),
        ] {
            let refused =
                refused_by(&policy, address).unwrap_or_else(|| panic!("{address} allowed"));
            assert!(
                refused.ends_with(&format!("({range})")),
                "{address}: {refused}"
            );
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let policy = OutboundPolicy::default();
        for address in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "223.255.255.255",
            "2a00:1450:4009:80b::200e",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(refused_by(&policy, address), None, "{address}");
        }
    }

    #[test]
    fn ipv6_forms_carrying_a_refused_ipv4_address_are_refused() {
        let policy = OutboundPolicy::default();
        assert_eq!(
            refused_by(&policy, "::ffff:127.0.0.1").as_deref(),
            Some(
                "::ffff:127.0.0.1 is an IPv4-mapped address (RFC 4291) of 127.0.0.1, a loopback \
                 address (127.0.0.0/8, RFC 1122)"
            )
        );
        for (address, carried) in [
            ("::ffff:169.254.169.254", "169.254.169.254"),
            ("::ffff:a00:1", "10.0.0.1"),
            ("64:ff9b::10.0.0.1", "10.0.0.1"),
            ("64:ff9b::7f00:1", "127.0.0.1"),
            ("2002:a9fe:a9fe::1", "169.254.169.254"),
            ("2002:c0a8:101::", "192.168.1.1"),
        ] {
            let refused =
                refused_by(&policy, address).unwrap_or_else(|| panic!("{address} allowed"));
            assert!(
                refused.contains(&format!(" of {carried}, ")),
                "{address}: {refused}"
            );
        }
    }

    #[test]
    fn the_operator_opens_ranges_and_nothing_more() {
        let policy =
            OutboundPolicy::new(AllowList::parse(" 127.0.0.1/32, 10.1.0.0/16,fd12::/16").unwrap());
        for allowed in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.1.200.3",
            "fd12::5",
            "8.8.8.8",
        ] {
            assert_eq!(refused_by(&policy, allowed), None, "{allowed}");
        }
        for refused in ["127.0.0.2", "10.2.0.1", "fd13::5", "::1", "169.254.169.254"] {
            assert!(refused_by(&policy, refused).is_some(), "{refused}");
        }
    }

    #[test]
    fn allow_lists_parse_ranges_and_bare_addresses_and_refuse_the_rest() {
        assert_eq!(AllowList::parse("").unwrap(), AllowList::default());
        assert_eq!(
            AllowList::parse("127.0.0.0/8, ::1,").unwrap().to_string(),
            "127.0.0.0/8,::1/128"
        );
        let wide = AllowList::parse("10.1.2.3/16").unwrap_err();
        assert!(wide.0.contains("did you mean 10.1.0.0/16"), "{wide}");
        for bad in ["10.0.0.0/33", "localhost", "10.0.0/8", "10.0.0.0-10.0.0.9"] {
            assert!(AllowList::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_refused_literal_is_an_invalid_value_a_name_is_checked_later() {
        let policy = OutboundPolicy::default();
        let refusal = policy
            .check_literal(Some("169.254.169.254".parse().unwrap()))
            .unwrap_err();
        assert!(
            refusal
                .0
                .starts_with("169.254.169.254 is a link-local address"),
            "{refusal}"
        );
        assert_eq!(policy.check_literal(None), Ok(()));
        assert_eq!(
            policy.check_literal(Some("93.184.215.14".parse().unwrap())),
            Ok(())
        );
    }
}
