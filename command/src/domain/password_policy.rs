//! The rules a newly chosen password must meet, after OWASP ASVS 5.0 level 2 (V6.2) and
//! NIST SP 800-63B: 8 to 128 characters, every printable and Unicode character allowed,
//! spaces kept as typed, no composition rules, and none of the most common passwords.
//!
//! Whether a new password differs from the current one needs the stored hash, so it is
//! checked where that hash is at hand, not here.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use super::InvalidValue;

/// The common-password list, one lowercase entry per line; see `command/data/README.md`.
const COMMON_PASSWORDS_FILE: &str = include_str!("../../data/common-passwords.txt");

static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| COMMON_PASSWORDS_FILE.lines().collect());

/// Whether `candidate`, in any letter case, is on the common-password list.
fn is_common_password(candidate: &str) -> bool {
    let lowered = Zeroizing::new(candidate.to_lowercase());
    COMMON_PASSWORDS.contains(lowered.as_str())
}

/// A password a user has just chosen, that meets the policy. The plaintext stays in a
/// [`SecretString`]: it is wiped on drop and never printed by `Debug`; read it through
/// [`ExposeSecret`] only to hash it.
pub struct NewPassword(SecretString);

impl NewPassword {
    pub const MIN_CHARS: usize = 8;
    pub const MAX_CHARS: usize = 128;

    /// Takes the password exactly as typed (not trimmed) and counts characters, not bytes.
    pub fn parse(raw: String) -> Result<Self, InvalidValue> {
        // Wrapped first, so the plaintext is wiped on the error paths too.
        let secret = SecretString::from(raw);
        let plaintext = secret.expose_secret();
        let length = plaintext.chars().count();
        if length < Self::MIN_CHARS {
            return Err(InvalidValue(format!(
                "must be at least {} characters",
                Self::MIN_CHARS
            )));
        }
        if length > Self::MAX_CHARS {
            return Err(InvalidValue(format!(
                "must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if is_common_password(plaintext) {
            return Err(InvalidValue(
                "is one of the most commonly used passwords; choose another".into(),
            ));
        }
        Ok(Self(secret))
    }

    /// The plaintext, still wrapped, e.g. to move into a hashing task.
    pub fn into_secret(self) -> SecretString {
        self.0
    }
}

impl TryFrom<String> for NewPassword {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}

impl ExposeSecret<str> for NewPassword {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FieldError, Validator};
    use super::*;

    fn message(raw: &str) -> String {
        NewPassword::parse(raw.to_owned()).unwrap_err().0
    }

    #[test]
    fn rejects_seven_characters() {
        assert_eq!(message("vQ7#kLm"), "must be at least 8 characters");
        assert_eq!(message(""), "must be at least 8 characters");
    }

    #[test]
    fn accepts_exactly_eight_characters() {
        let password = NewPassword::parse("vQ7#kLmz".to_owned()).unwrap();
        assert_eq!(password.expose_secret(), "vQ7#kLmz");
    }

    #[test]
    fn counts_characters_not_bytes_at_the_limits() {
        // 'é' is 2 bytes and '🦀' 4 bytes in UTF-8: a byte count would reject these.
        let at_max = "é".repeat(64) + &"🦀".repeat(64);
        assert_eq!(at_max.chars().count(), 128);
        assert_eq!(at_max.len(), 384);
        assert!(NewPassword::parse(at_max.clone()).is_ok());

        let over_max = at_max + "é";
        assert_eq!(over_max.chars().count(), 129);
        assert_eq!(
            NewPassword::parse(over_max).unwrap_err().0,
            "must be at most 128 characters"
        );

        // 7 characters but 28 bytes: still too short.
        assert_eq!(message(&"🦀".repeat(7)), "must be at least 8 characters");
        assert!(NewPassword::parse("🦀".repeat(8)).is_ok());
    }

    #[test]
    fn keeps_spaces_and_does_not_trim() {
        let raw = "  violet tram  ";
        let password = NewPassword::parse(raw.to_owned()).unwrap();
        assert_eq!(password.expose_secret(), raw);
        // Spaces count towards the length: 6 letters and 2 spaces make 8.
        assert!(NewPassword::parse("ab cd ef".to_owned()).is_ok());
    }

    #[test]
    fn rejects_common_passwords_in_any_case() {
        for common in [
            "password",
            "PASSWORD",
            "Password123",
            "pAsSwOrD1",
            "iloveyou",
            "ILoveYou",
            "Qwertyuiop",
            "12345678",
            "trustno1",
            "Baseball1",
        ] {
            assert_eq!(
                message(common),
                "is one of the most commonly used passwords; choose another",
                "{common:?} should be rejected"
            );
        }
    }

    #[test]
    fn accepts_uncommon_passphrase_without_composition_rules() {
        for uncommon in [
            "violet tram hums at dawn",
            "lowercaseonlybutlongenough",
            "Ünïcödé pässwörd ✓",
        ] {
            assert!(
                NewPassword::parse(uncommon.to_owned()).is_ok(),
                "{uncommon:?}"
            );
        }
    }

    #[test]
    fn common_list_has_at_least_ten_thousand_relevant_entries() {
        let entries: Vec<&str> = COMMON_PASSWORDS_FILE.lines().collect();
        assert_eq!(COMMON_PASSWORDS.len(), entries.len(), "deduplicated");
        let relevant = entries
            .iter()
            .filter(|entry| (8..=128).contains(&entry.chars().count()))
            .count();
        assert!(
            relevant >= 10_000,
            "only {relevant} entries of 8..=128 chars"
        );
        assert!(entries.is_sorted(), "sorted");
        assert!(
            entries.iter().all(|entry| *entry == entry.to_lowercase()),
            "lowercase"
        );
        assert!(
            entries.iter().all(|entry| !entry.is_empty()),
            "no blank lines"
        );
    }

    #[test]
    fn debug_does_not_print_the_plaintext() {
        let password = NewPassword::parse("violet tram hums at dawn".to_owned()).unwrap();
        let printed = format!("{password:?} {password:#?}");
        assert!(!printed.contains("violet"), "{printed}");
        assert!(printed.contains("REDACTED"), "{printed}");
    }

    #[test]
    fn reports_a_field_error_through_the_validator() {
        let mut validator = Validator::default();
        let password = validator.field("password", NewPassword::parse("Password1".to_owned()));
        assert!(password.is_none());
        assert_eq!(
            validator.finish(|| password).unwrap_err(),
            vec![FieldError {
                field: "password".into(),
                message: "is one of the most commonly used passwords; choose another".into(),
            }]
        );
    }
}
