use serde::{Deserialize, Serialize};

use super::InvalidValue;

/// ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode(isocountry::CountryCode);

impl CountryCode {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        isocountry::CountryCode::for_alpha2_caseless(raw.trim())
            .map(Self)
            .map_err(|_| {
                InvalidValue(format!(
                    "{raw:?} is not an ISO 3166-1 alpha-2 country code (e.g. GB, US, DE)"
                ))
            })
    }

    pub fn as_str(&self) -> &'static str {
        self.0.alpha2()
    }
}

impl TryFrom<String> for CountryCode {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<CountryCode> for String {
    fn from(value: CountryCode) -> Self {
        value.as_str().to_owned()
    }
}

/// ISO 4217 currency code; knows its minor-unit exponent (JPY 0, USD 2, BHD 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CurrencyCode(iso_currency::Currency);

impl CurrencyCode {
    pub const DEFAULT: Self = Self(iso_currency::Currency::USD);

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        iso_currency::Currency::from_code(&raw.trim().to_ascii_uppercase())
            .map(Self)
            .ok_or_else(|| {
                InvalidValue(format!(
                    "{raw:?} is not an ISO 4217 currency code (e.g. USD, EUR, GBP)"
                ))
            })
    }

    pub fn as_str(&self) -> &'static str {
        self.0.code()
    }

    pub fn minor_unit_exponent(&self) -> u16 {
        self.0.exponent().unwrap_or(0)
    }

    /// The exponent of its minor unit, or `None` for what ISO 4217 gives none (gold, the
    /// special drawing right, "no currency"): no money is held in those.
    pub fn money_exponent(&self) -> Option<u16> {
        self.0.exponent()
    }
}

impl TryFrom<String> for CurrencyCode {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<CurrencyCode> for String {
    fn from(value: CurrencyCode) -> Self {
        value.as_str().to_owned()
    }
}

/// The date formats a user may choose for how dates are shown to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DateFormat {
    YearMonthDay,
    DaySlashMonthYear,
    MonthSlashDayYear,
    DayDotMonthYear,
    DayDashMonthYear,
}

impl DateFormat {
    pub const ALL: [Self; 5] = [
        Self::YearMonthDay,
        Self::DaySlashMonthYear,
        Self::MonthSlashDayYear,
        Self::DayDotMonthYear,
        Self::DayDashMonthYear,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::YearMonthDay => "YYYY-MM-DD",
            Self::DaySlashMonthYear => "DD/MM/YYYY",
            Self::MonthSlashDayYear => "MM/DD/YYYY",
            Self::DayDotMonthYear => "DD.MM.YYYY",
            Self::DayDashMonthYear => "DD-MM-YYYY",
        }
    }

    /// The same format for `chrono`'s `format`.
    pub fn strftime(&self) -> &'static str {
        match self {
            Self::YearMonthDay => "%Y-%m-%d",
            Self::DaySlashMonthYear => "%d/%m/%Y",
            Self::MonthSlashDayYear => "%m/%d/%Y",
            Self::DayDotMonthYear => "%d.%m.%Y",
            Self::DayDashMonthYear => "%d-%m-%Y",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::ALL
            .into_iter()
            .find(|format| format.as_str() == raw)
            .ok_or_else(|| {
                let allowed: Vec<_> = Self::ALL.iter().map(DateFormat::as_str).collect();
                InvalidValue(format!("must be one of {}", allowed.join(", ")))
            })
    }
}

impl TryFrom<String> for DateFormat {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DateFormat> for String {
    fn from(value: DateFormat) -> Self {
        value.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes() {
        assert_eq!(CountryCode::parse("gb").unwrap().as_str(), "GB");
        assert!(CountryCode::parse("UK").is_err(), "UK is not ISO 3166-1");
        assert!(CountryCode::parse("GBR").is_err());
    }

    #[test]
    fn currency_codes_know_their_exponent() {
        assert_eq!(CurrencyCode::parse("jpy").unwrap().minor_unit_exponent(), 0);
        assert_eq!(CurrencyCode::parse("USD").unwrap().minor_unit_exponent(), 2);
        assert_eq!(CurrencyCode::parse("BHD").unwrap().minor_unit_exponent(), 3);
        assert!(CurrencyCode::parse("XYZ").is_err());
    }

    #[test]
    fn date_formats_round_trip() {
        for format in DateFormat::ALL {
            assert_eq!(DateFormat::parse(format.as_str()), Ok(format));
        }
        assert!(DateFormat::parse("YYYY/MM/DD").is_err());
    }
}
