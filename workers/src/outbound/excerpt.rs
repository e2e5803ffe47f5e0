//! What a tenant's server said, as a job report shows it.

use secrecy::{ExposeSecret, SecretString};

/// The most of a server's answer a report shows.
const EXCERPT_CHARS: usize = 200;

/// The start of `answer`, at most [`EXCERPT_CHARS`] characters, on one line: control and
/// bidirectional-formatting characters become spaces (an answer cannot forge lines, colours
/// or reading order in whatever displays the report), runs of spaces one, and a cut says so
/// with "…". Whatever answers on a tenant-given address shows no more than this of itself.
pub fn excerpt(answer: &str) -> String {
    let one_line = answer
        .split(|c: char| c.is_whitespace() || c.is_control() || is_bidi_control(c))
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut shown: String = one_line.chars().take(EXCERPT_CHARS).collect();
    if shown.len() < one_line.len() {
        shown.push('…');
    }
    shown
}

/// The answer without `secret`, should a server echo it back: the answer is the only thing
/// recorded that a secret sent to it could reach.
pub fn without_secret(answer: String, secret: &SecretString) -> String {
    match secret.expose_secret() {
        "" => answer,
        secret => answer.replace(secret, "***"),
    }
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_answers_show_whole_on_one_line() {
        assert_eq!(
            excerpt("  {\"error\": \"bad key\"}\r\n"),
            "{\"error\": \"bad key\"}"
        );
        assert_eq!(excerpt("250-first\r\n250 second"), "250-first 250 second");
        assert_eq!(excerpt(""), "");
    }

    #[test]
    fn control_and_bidi_characters_do_not_pass() {
        let shown = excerpt("ok\u{1b}[31mred\u{7}\u{0}\u{85}x\u{202e}gnp.exe\ty");
        assert_eq!(shown, "ok [31mred x gnp.exe y");
    }

    #[test]
    fn long_answers_are_cut_at_the_limit_and_say_so() {
        let shown = excerpt(&"é".repeat(5000));
        assert_eq!(shown.chars().count(), EXCERPT_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(
            excerpt(&"a".repeat(EXCERPT_CHARS)),
            "a".repeat(EXCERPT_CHARS)
        );
    }
}
