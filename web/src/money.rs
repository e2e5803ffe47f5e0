//! Money over HTTP: `{"amount": "12.50", "currency": "USD"}`, the amount a decimal string
//! with the currency's own number of decimals, never a float.

use serde::{Deserialize, Serialize};
use switchyard_command::domain::{CurrencyCode, Money, Validator};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};

/// An amount of money as the API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MoneyView {
    /// A decimal string with every decimal place of the currency, e.g. `"12.50"`, `"1200"`
    /// (JPY), `"1.250"` (KWD); negative for debits.
    #[schema(example = "12.50", pattern = r"^-?\d+(\.\d+)?$")]
    pub amount: String,
    /// ISO 4217.
    #[schema(example = "USD", min_length = 3, max_length = 3)]
    pub currency: String,
}

impl MoneyView {
    pub fn of(money: Money) -> Self {
        Self {
            amount: money.decimal_string(),
            currency: money.currency().as_str().to_owned(),
        }
    }

    /// Minor units of a currency as a read model stores them.
    pub fn of_minor(minor: i64, currency: &str) -> ApiResult<Self> {
        let currency = CurrencyCode::parse(currency).map_err(ApiError::internal)?;
        Ok(Self::of(Money::from_minor(minor, currency)))
    }
}

/// An amount of money as a client sends it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    /// A decimal string, at most as many decimals as the currency has: `"12.50"`.
    #[schema(example = "12.50", pattern = r"^-?\d+(\.\d+)?$")]
    pub amount: String,
    /// ISO 4217.
    #[schema(example = "USD", min_length = 3, max_length = 3)]
    pub currency: String,
}

impl MoneyBody {
    /// The amount, or errors naming `{field}.amount` and `{field}.currency`.
    pub fn parse(&self, v: &mut Validator, field: &str) -> Option<Money> {
        let currency = v.field(
            &format!("{field}.currency"),
            Money::parse_currency(&self.currency),
        )?;
        v.field(
            &format!("{field}.amount"),
            Money::parse(&self.amount, currency),
        )
    }
}
