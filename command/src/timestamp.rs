//! Times of operational state (sessions, login throttling, idempotency keys) as stored: RFC
//! 3339 UTC with microseconds, so that they compare as text on both backends.

use chrono::{DateTime, SecondsFormat, Utc};

pub fn format(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn parse(text: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
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
}
