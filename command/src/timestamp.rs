//! Times as the database keeps them, one representation per backend: `timestamptz` on
//! PostgreSQL, and on SQLite RFC 3339 UTC text with microseconds at a fixed width
//! (`2025-03-01T12:00:00.000000Z`), so that comparing and sorting the text compares the
//! times. Every statement that writes, compares or reads a time goes through this module.
//!
//! The Any driver neither binds nor decodes `timestamptz`, so times cross it as that text
//! on both backends: a parameter is the text, cast on PostgreSQL ([`param`], [`cast`]), and
//! a column is read back as the same text ([`read`]).

use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};

use crate::Backend;

/// The length of every stored time text.
pub const WIDTH: usize = "2025-03-01T12:00:00.000000Z".len();

/// The text of `at`, [`WIDTH`] characters. Times outside years 1 to 9999 (a lockout
/// "forever") are clamped to them: both backends keep those, at the same width.
pub fn format(at: DateTime<Utc>) -> String {
    let earliest = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
    let latest = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
        + chrono::TimeDelta::microseconds(999_999);
    let at = if at.year() < 1 {
        earliest
    } else if at.year() > 9999 {
        latest
    } else {
        at
    };
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// What follows a time parameter's placeholder: PostgreSQL casts the text to `timestamptz`,
/// so the column compares as time (and a text column would refuse it).
pub fn cast(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "",
        Backend::Postgres => "::timestamptz",
    }
}

/// The time parameter `$n`, bound as [`format`]'s text.
pub fn param(backend: Backend, n: usize) -> String {
    format!("${n}{}", cast(backend))
}

/// A time column (or expression) read back as [`format`]'s text. Name it with `AS` where
/// rows are read by column name: PostgreSQL calls this expression `to_char`.
pub fn read(backend: Backend, column: &str) -> String {
    match backend {
        Backend::Sqlite => column.to_owned(),
        Backend::Postgres => format!(crate::postgres_time_read!("{}"), column),
    }
}

/// [`read`] on PostgreSQL as a literal, for statements put together at compile time.
#[macro_export]
macro_rules! postgres_time_read {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;

    #[test]
    fn timestamps_sort_as_text() {
        let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        let a = format(t0);
        let b = format(t0 + TimeDelta::microseconds(1));
        let c = format(t0 + TimeDelta::seconds(10));
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a, "2025-03-01T12:00:00.000000Z");
        assert_eq!(parse(&b).unwrap(), t0 + TimeDelta::microseconds(1));
    }

    #[test]
    fn every_time_has_the_same_width() {
        for at in [
            DateTime::<Utc>::MIN_UTC,
            Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + TimeDelta::nanoseconds(1),
            DateTime::<Utc>::MAX_UTC,
        ] {
            assert_eq!(format(at).len(), WIDTH, "{}", format(at));
        }
        assert_eq!(
            format(DateTime::<Utc>::MAX_UTC),
            "9999-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn postgres_casts_and_reads_back_the_text() {
        assert_eq!(param(Backend::Postgres, 2), "$2::timestamptz");
        assert_eq!(param(Backend::Sqlite, 2), "$2");
        assert_eq!(read(Backend::Sqlite, "s.expires_at"), "s.expires_at");
        assert!(read(Backend::Postgres, "s.expires_at").starts_with("to_char(s.expires_at "));
    }
}
