//! Money: whole minor units of an ISO 4217 currency (cents of USD, yen of JPY, fils of KWD),
//! with the currency's own exponent from `iso_currency`'s table. No float touches money: the
//! API speaks decimal strings, events store integers, and the one percentage (a surcharge)
//! rounds once, half to even, in [`Money::percent`].

use std::{fmt, str::FromStr};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::{CurrencyCode, InvalidValue};

/// An amount in a currency, possibly negative (a debit, a signed adjustment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// In the currency's minor unit.
    minor: i64,
    currency: CurrencyCode,
}

/// Why two amounts do not combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amounts in {} and {} do not add up", .0.as_str(), .1.as_str())]
    CurrencyMismatch(CurrencyCode, CurrencyCode),
    #[error("the amount is too large")]
    Overflow,
}

impl Money {
    pub fn from_minor(minor: i64, currency: CurrencyCode) -> Self {
        Self { minor, currency }
    }

    pub fn zero(currency: CurrencyCode) -> Self {
        Self::from_minor(0, currency)
    }

    /// Parses a decimal string such as `"12.50"`, `"-3"` or `"1200"` in `currency`: digits
    /// with an optional leading `-` and at most as many decimals as the currency has.
    pub fn parse(amount: &str, currency: CurrencyCode) -> Result<Self, InvalidValue> {
        let exponent = money_exponent(currency)?;
        let well_formed = {
            let digits = amount.strip_prefix('-').unwrap_or(amount);
            let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
            let all_digits =
                |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            all_digits(whole) && all_digits(fraction)
        };
        if !well_formed {
            return Err(InvalidValue(format!(
                "{amount:?} is not an amount: write it as a decimal string such as \"12.50\""
            )));
        }
        let decimal = Decimal::from_str(amount).map_err(|_| too_large())?;
        if decimal.normalize().scale() > exponent {
            return Err(InvalidValue(match exponent {
                0 => format!("{} has no decimal places", currency.as_str()),
                places => format!("{} has {places} decimal places at most", currency.as_str()),
            }));
        }
        let minor = decimal
            .checked_mul(Decimal::from(10i64.pow(exponent)))
            .and_then(|minor| i64::try_from(minor.trunc()).ok())
            .ok_or_else(too_large)?;
        Ok(Self::from_minor(minor, currency))
    }

    /// A currency money can be held in: an ISO 4217 code with a minor unit (not gold, not
    /// "no currency").
    pub fn parse_currency(raw: &str) -> Result<CurrencyCode, InvalidValue> {
        let currency = CurrencyCode::parse(raw)?;
        money_exponent(currency)?;
        Ok(currency)
    }

    pub fn minor_units(&self) -> i64 {
        self.minor
    }

    pub fn currency(&self) -> CurrencyCode {
        self.currency
    }

    pub fn is_positive(&self) -> bool {
        self.minor > 0
    }

    pub fn is_negative(&self) -> bool {
        self.minor < 0
    }

    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::from_minor(minor, self.currency))
    }

    pub fn checked_sub(self, other: Self) -> Result<Self, MoneyError> {
        self.checked_add(other.checked_neg()?)
    }

    pub fn checked_neg(self) -> Result<Self, MoneyError> {
        let minor = self.minor.checked_neg().ok_or(MoneyError::Overflow)?;
        Ok(Self::from_minor(minor, self.currency))
    }

    /// `quantity` times this amount (a package's cost × quantity).
    pub fn times(self, quantity: u32) -> Result<Self, MoneyError> {
        let minor = self
            .minor
            .checked_mul(i64::from(quantity))
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::from_minor(minor, self.currency))
    }

    /// `rate` percent of this amount in whole minor units, rounded once, half to even: the
    /// one place where money is rounded.
    pub fn percent(self, rate: Percent) -> Result<Self, MoneyError> {
        let exact = Decimal::from(self.minor)
            .checked_mul(rate.0)
            .and_then(|scaled| scaled.checked_div(Decimal::ONE_HUNDRED))
            .ok_or(MoneyError::Overflow)?;
        let rounded = exact.round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven);
        let minor = i64::try_from(rounded).map_err(|_| MoneyError::Overflow)?;
        Ok(Self::from_minor(minor, self.currency))
    }

    fn same_currency(self, other: Self) -> Result<(), MoneyError> {
        match self.currency == other.currency {
            true => Ok(()),
            false => Err(MoneyError::CurrencyMismatch(self.currency, other.currency)),
        }
    }

    /// The amount as the API writes it: every decimal place of the currency, `"12.50"`.
    pub fn decimal_string(&self) -> String {
        let exponent = self.currency.minor_unit_exponent().into();
        Decimal::new(self.minor, exponent).to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.decimal_string(), self.currency.as_str())
    }
}

fn money_exponent(currency: CurrencyCode) -> Result<u32, InvalidValue> {
    currency.money_exponent().map(u32::from).ok_or_else(|| {
        InvalidValue(format!(
            "{} is not a currency money can be held in",
            currency.as_str()
        ))
    })
}

fn too_large() -> InvalidValue {
    InvalidValue("the amount is too large".into())
}

/// A percentage such as a surcharge's `"2.5"`: 0 to 100, at most four decimal places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Percent(Decimal);

impl Percent {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let invalid = || {
            InvalidValue(format!(
                "{raw:?} is not a percentage from 0 to 100 with at most 4 decimal places, \
                 such as \"2.5\""
            ))
        };
        let plain = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let rate = plain
            .then(|| Decimal::from_str(raw).ok())
            .flatten()
            .ok_or_else(invalid)?
            .normalize();
        match rate.scale() <= 4 && rate <= Decimal::ONE_HUNDRED {
            true => Ok(Self(rate)),
            false => Err(invalid()),
        }
    }
}

impl TryFrom<String> for Percent {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Percent> for String {
    fn from(value: Percent) -> Self {
        value.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn currency(code: &str) -> CurrencyCode {
        CurrencyCode::parse(code).unwrap()
    }

    fn money(amount: &str, code: &str) -> Money {
        Money::parse(amount, currency(code)).unwrap()
    }

    #[test]
    fn amounts_parse_to_minor_units_with_each_currencys_exponent() {
        assert_eq!(money("12.50", "USD").minor_units(), 1250);
        assert_eq!(money("12.5", "USD").minor_units(), 1250);
        assert_eq!(money("12", "USD").minor_units(), 1200);
        assert_eq!(money("-0.01", "USD").minor_units(), -1);
        assert_eq!(money("1200", "JPY").minor_units(), 1200);
        assert_eq!(money("1.234", "KWD").minor_units(), 1234);
        assert_eq!(money("0.100", "KWD").minor_units(), 100);
    }

    #[test]
    fn more_decimals_than_the_currency_has_are_refused() {
        let refused =
            |amount: &str, code: &str| Money::parse(amount, currency(code)).unwrap_err().0;
        assert_eq!(refused("12.505", "USD"), "USD has 2 decimal places at most");
        assert_eq!(refused("1.5", "JPY"), "JPY has no decimal places");
        assert_eq!(refused("1.2345", "KWD"), "KWD has 3 decimal places at most");
        // Trailing zeros are no extra precision.
        assert_eq!(money("1.500", "USD").minor_units(), 150);
    }

    #[test]
    fn only_plain_decimal_strings_are_amounts() {
        for raw in [
            "", "-", ".5", "5.", "1e3", "+5", " 5", "5 ", "1,50", "0x10", "NaN", "--1",
        ] {
            assert!(Money::parse(raw, currency("USD")).is_err(), "{raw:?}");
        }
        assert!(Money::parse("99999999999999999999", currency("USD")).is_err());
        assert!(
            Money::parse("1", currency("XAU")).is_err(),
            "gold has no minor unit"
        );
    }

    #[test]
    fn amounts_write_every_decimal_place() {
        for (amount, code, written) in [
            ("12.5", "USD", "12.50"),
            ("-3", "USD", "-3.00"),
            ("0.01", "USD", "0.01"),
            ("1200", "JPY", "1200"),
            ("1.2", "KWD", "1.200"),
        ] {
            assert_eq!(money(amount, code).decimal_string(), written);
        }
    }

    #[test]
    fn arithmetic_stays_in_one_currency_and_never_overflows_silently() {
        let (usd, eur) = (money("1.25", "USD"), money("1", "EUR"));
        assert_eq!(usd.checked_add(usd).unwrap(), money("2.50", "USD"));
        assert_eq!(
            usd.checked_sub(money("2", "USD")).unwrap(),
            money("-0.75", "USD")
        );
        assert_eq!(
            usd.checked_add(eur),
            Err(MoneyError::CurrencyMismatch(
                currency("USD"),
                currency("EUR")
            ))
        );
        assert_eq!(usd.times(3).unwrap(), money("3.75", "USD"));
        let max = Money::from_minor(i64::MAX, currency("USD"));
        assert_eq!(max.checked_add(usd), Err(MoneyError::Overflow));
        assert_eq!(max.times(2), Err(MoneyError::Overflow));
        assert_eq!(
            Money::from_minor(i64::MIN, currency("USD")).checked_neg(),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn a_percentage_rounds_once_half_to_even() {
        let rate = |raw| Percent::parse(raw).unwrap();
        // 2.5% of 10.10 = 0.2525 → 0.25; of 10.30 = 0.2575 → 0.26.
        assert_eq!(
            money("10.10", "USD").percent(rate("2.5")).unwrap(),
            money("0.25", "USD")
        );
        assert_eq!(
            money("10.30", "USD").percent(rate("2.5")).unwrap(),
            money("0.26", "USD")
        );
        // Exactly half a cent goes to the even cent: 0.125 → 0.12, 0.135 → 0.14.
        assert_eq!(
            money("5.00", "USD").percent(rate("2.5")).unwrap(),
            money("0.12", "USD")
        );
        assert_eq!(
            money("5.40", "USD").percent(rate("2.5")).unwrap(),
            money("0.14", "USD")
        );
        // Whole yen: 3% of 150 = 4.5 → 4.
        assert_eq!(
            money("150", "JPY").percent(rate("3")).unwrap(),
            money("4", "JPY")
        );
        assert_eq!(
            money("1.000", "KWD").percent(rate("0.0125")).unwrap(),
            Money::zero(currency("KWD"))
        );
    }

    #[test]
    fn percentages_are_plain_decimals_from_0_to_100() {
        assert_eq!(String::from(Percent::parse("2.50").unwrap()), "2.5");
        for raw in ["", "-1", "100.01", "2.12345", "1e2", "two"] {
            assert!(Percent::parse(raw).is_err(), "{raw:?}");
        }
    }
}
