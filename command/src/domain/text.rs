use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::{BidiControl, BinaryProperty, DefaultIgnorableCodePoint};
use serde::{Deserialize, Serialize};

use super::InvalidValue;

/// Free text with bounded length, trimmed, without control characters, without the
/// bidirectional controls that make text read differently from how it is stored
/// ("Trojan Source"), and not made only of invisible characters.
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
        if trimmed.chars().any(BidiControl::for_char) {
            return Err(InvalidValue(
                "must not contain bidirectional control characters \
                 (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069)"
                    .into(),
            ));
        }
        if !trimmed.is_empty() && trimmed.chars().all(invisible) {
            return Err(InvalidValue(
                "must contain a visible character, not only spaces and invisible ones".into(),
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text as compared for uniqueness: NFC, without invisible characters, in lower
    /// case. Two texts with the same key look the same to a reader.
    pub fn key(&self) -> String {
        let visible: String = self
            .0
            .chars()
            .filter(|c| !DefaultIgnorableCodePoint::for_char(*c))
            .flat_map(char::to_lowercase)
            .collect();
        ComposingNormalizerBorrowed::new_nfc()
            .normalize(&visible)
            .into_owned()
    }
}

/// White space, or a character that renders as nothing (Unicode's Default_Ignorable_Code_Point:
/// zero-width spaces and joiners, fillers, variation selectors, …).
fn invisible(c: char) -> bool {
    c.is_whitespace() || DefaultIgnorableCodePoint::for_char(c)
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

    #[test]
    fn refuses_invisible_only_text_even_where_empty_is_allowed() {
        for invisible in [
            "\u{200B}",          // zero-width space
            " \u{200D}\u{FEFF}", // zero-width joiner, byte-order mark
            "\u{3164}",          // Hangul filler
            "\u{2060}\u{180E}",  // word joiner, Mongolian vowel separator
            "\u{FE0F}",          // variation selector
        ] {
            for min in [0, 1] {
                assert!(Text::parse(invisible, min, 10).is_err(), "{invisible:?}");
            }
        }
        assert!(
            Text::parse("a\u{200D}b", 1, 10).is_ok(),
            "joiners inside text"
        );
        assert!(
            Text::parse("👩\u{200D}💻", 1, 10).is_ok(),
            "emoji sequences"
        );
    }

    #[test]
    fn refuses_bidirectional_controls() {
        for control in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            let text = format!("admin{control}txt.exe");
            assert!(Text::parse(&text, 1, 50).is_err(), "{control:?}");
        }
        assert!(
            Text::parse("שלום Acme", 1, 50).is_ok(),
            "right-to-left letters are fine"
        );
    }

    #[test]
    fn keys_equate_what_reads_the_same() {
        let key = |raw: &str| Text::parse(raw, 1, 50).unwrap().key();
        assert_eq!(key("Support"), key(" SUPPORT "));
        assert_eq!(key("Support"), key("Sup\u{200B}port"));
        assert_eq!(key("Caf\u{E9}"), key("Cafe\u{301}"), "NFC");
        assert_ne!(key("Support"), key("Support 2"));
    }
}
