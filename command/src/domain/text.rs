use serde::{Deserialize, Serialize};

use super::InvalidValue;

/// Free text with bounded length, trimmed, without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    /// `min` of 1 makes the field required.
    pub fn parse(raw: &str, min: usize, max: usize) -> Result<Self, InvalidValue> {
        let trimmed = raw.trim();
        let length = trimmed.chars().count();
        if length < min {
            return Err(InvalidValue(if min == 1 {
                "must not be empty".into()
            } else {
                format!("must be at least {min} characters")
            }));
        }
        if length > max {
            return Err(InvalidValue(format!("must be at most {max} characters")));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(InvalidValue("must not contain control characters".into()));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_bounds() {
        assert_eq!(Text::parse("  Acme  ", 1, 10).unwrap().as_str(), "Acme");
        assert!(Text::parse("   ", 1, 10).is_err());
        assert!(Text::parse("", 0, 10).is_ok());
        assert!(
            Text::parse("ééééé", 0, 5).is_ok(),
            "counts characters, not bytes"
        );
        assert!(Text::parse("123456", 0, 5).is_err());
        assert!(Text::parse("a\u{7}b", 0, 5).is_err());
    }
}
