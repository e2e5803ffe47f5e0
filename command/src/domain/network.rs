//! Where the service connects to on a tenant's behalf: mail servers and SMS gateways.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::InvalidValue;

/// A DNS name or an IP address, without a port or a scheme.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hostname(String);

impl Hostname {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let host = raw.trim().to_ascii_lowercase();
        if host.contains("://") {
            return Err(InvalidValue(format!(
                "{raw:?} is a URL: give only the host name, e.g. smtp.example.com"
            )));
        }
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if literal.parse::<IpAddr>().is_ok() {
            return Ok(Self(literal.to_owned()));
        }
        if let Some((_, port)) = host.rsplit_once(':')
            && port.chars().all(|c| c.is_ascii_digit())
        {
            return Err(InvalidValue(format!(
                "{raw:?} includes a port: give the port in `port`"
            )));
        }
        let name = host.strip_suffix('.').unwrap_or(&host);
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(InvalidValue(format!(
                "{raw:?} is not a host name or IP address"
            )));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address, when the host is given as one rather than as a name.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        self.0.parse().ok()
    }
}

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Port(u16);

impl Port {
    pub fn parse(raw: u32) -> Result<Self, InvalidValue> {
        match u16::try_from(raw) {
            Ok(port) if port > 0 => Ok(Self(port)),
            _ => Err(InvalidValue(format!("{raw} is not a port: use 1 to 65535"))),
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

/// An `http` or `https` URL that a gateway is reached at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let url = url::Url::parse(raw.trim())
            .map_err(|e| InvalidValue(format!("{raw:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(InvalidValue(format!(
                "{raw:?} must be an http or https URL with a host"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidValue(
                "must not contain credentials: give them in their own fields".into(),
            ));
        }
        Ok(Self(url.as_str().trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host's address, when the URL gives one rather than a name (in any of the forms a
    /// URL parser reads as an address, such as `http://2130706433/`).
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match url::Url::parse(&self.0).ok()?.host()? {
            url::Host::Ipv4(address) => Some(IpAddr::V4(address)),
            url::Host::Ipv6(address) => Some(IpAddr::V6(address)),
            url::Host::Domain(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_addresses() {
        assert_eq!(
            Hostname::parse(" SMTP.Example.com ").unwrap().as_str(),
            "smtp.example.com"
        );
        assert_eq!(Hostname::parse("127.0.0.1").unwrap().as_str(), "127.0.0.1");
        assert_eq!(Hostname::parse("[::1]").unwrap().as_str(), "::1");
        assert!(
            Hostname::parse("smtp.example.com:587")
                .unwrap_err()
                .0
                .contains("`port`")
        );
        assert!(
            Hostname::parse("smtp://smtp.example.com")
                .unwrap_err()
                .0
                .contains("URL")
        );
        for bad in [
            "",
            "-smtp.example.com",
            "smtp..example.com",
            "smtp_example.com",
            "a b",
        ] {
            assert!(Hostname::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(Port::parse(587).unwrap().get(), 587);
        assert!(Port::parse(0).is_err());
        assert!(Port::parse(65_536).is_err());
    }

    #[test]
    fn base_urls_are_http_without_credentials() {
        assert_eq!(
            BaseUrl::parse("https://api.twilio.com/").unwrap().as_str(),
            "https://api.twilio.com"
        );
        assert!(BaseUrl::parse("ftp://example.com").is_err());
        assert!(BaseUrl::parse("https://user:pw@example.com").is_err());
        assert!(BaseUrl::parse("example.com").is_err());
    }

    #[test]
    fn literal_addresses_are_told_apart_from_names() {
        let ip = |raw: &str| Hostname::parse(raw).unwrap().literal_ip();
        assert_eq!(
            ip("[::ffff:127.0.0.1]"),
            Some("::ffff:127.0.0.1".parse().unwrap())
        );
        assert_eq!(ip("10.0.0.1"), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ip("smtp.example.com"), None);
        let url_ip = |raw: &str| BaseUrl::parse(raw).unwrap().literal_ip();
        assert_eq!(
            url_ip("http://169.254.169.254/latest"),
            Some("169.254.169.254".parse().unwrap())
        );
        assert_eq!(
            url_ip("http://2130706433:8080/sms"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(url_ip("https://[::1]/"), Some("::1".parse().unwrap()));
        assert_eq!(url_ip("https://api.twilio.com"), None);
    }
}
