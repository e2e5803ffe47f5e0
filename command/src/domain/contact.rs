use serde::{Deserialize, Serialize};

use super::InvalidValue;

/// An email address (RFC 5322 addr-spec syntax), stored as typed except the domain is
/// lower-cased; [`EmailAddress::normalized`] is the form used for uniqueness and lookups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub const MAX_LENGTH: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let raw = raw.trim();
        if raw.len() > Self::MAX_LENGTH {
            return Err(InvalidValue(format!(
                "must be at most {} characters",
                Self::MAX_LENGTH
            )));
        }
        let parsed: email_address::EmailAddress = raw
            .parse()
            .map_err(|_| InvalidValue(format!("{raw:?} is not a valid email address")))?;
        if !parsed.domain().contains('.') && parsed.domain() != "localhost" {
            return Err(InvalidValue(format!(
                "{raw:?} is not a valid email address: the domain has no dot"
            )));
        }
        Ok(Self(format!(
            "{}@{}",
            parsed.local_part(),
            parsed.domain().to_ascii_lowercase()
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Case-insensitive identity of the mailbox, for uniqueness and login.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A phone number in E.164: `+`, a country code that does not start with 0, at most 15
/// digits in all. Spaces, dots, dashes and parentheses that people type are removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let compact: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        let digits = compact.strip_prefix('+').ok_or_else(|| {
            InvalidValue(format!(
                "{raw:?} is not in E.164 format: start with + and the country code, e.g. +442071234567"
            ))
        })?;
        let valid = (8..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        if !valid {
            return Err(InvalidValue(format!(
                "{raw:?} is not in E.164 format: + then 8 to 15 digits, the first not 0"
            )));
        }
        Ok(Self(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_syntax() {
        assert_eq!(
            EmailAddress::parse(" Ops@Example.COM ").unwrap().as_str(),
            "Ops@example.com"
        );
        assert_eq!(
            EmailAddress::parse("Ops@Example.COM").unwrap().normalized(),
            "ops@example.com"
        );
        for bad in ["", "plain", "a@", "@b.com", "a b@c.com", "a@nodot"] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(EmailAddress::parse(&long).is_err());
    }

    #[test]
    fn phone_e164() {
        assert_eq!(
            PhoneNumber::parse("+44 20 7123-4567").unwrap().as_str(),
            "+442071234567"
        );
        for bad in [
            "02071234567",
            "+0123456789",
            "+12",
            "+1234567890123456",
            "+44abc1234567",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
