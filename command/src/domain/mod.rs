//! Parse-don't-validate value types. Each constructor either returns a value that is valid
//! for the rest of the program or says, in words a user can act on, what is wrong.

mod contact;
mod ids;
mod locale;
mod money;
mod network;
mod outbound;
mod password_policy;
mod text;

pub use contact::{EmailAddress, PhoneNumber};
pub use ids::{AccountId, GatewayId, GroupId, UserId};
pub use locale::{CountryCode, CurrencyCode, DateFormat};
pub use money::{Money, MoneyError, Percent};
pub use network::{BaseUrl, Hostname, Port};
pub use outbound::{
    AddressRefused, AllowList, Carrier, OutboundPolicy, REFUSED_RANGES, ReservedRange, carried_ipv4,
};
pub use password_policy::NewPassword;
pub use text::Text;

/// A value that failed to parse; the caller knows which field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// One field that failed validation, named as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Collects every invalid field of a request, so the client learns all of them at once.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// Parses one field, remembering the error under `field`.
    pub fn field<T>(&mut self, field: &str, parsed: Result<T, InvalidValue>) -> Option<T> {
        parsed
            .map_err(|InvalidValue(message)| {
                self.errors.push(FieldError {
                    field: field.to_owned(),
                    message,
                })
            })
            .ok()
    }

    /// The parsed value once every field was valid, else all the errors.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Vec<FieldError>> {
        match (self.errors.is_empty(), build()) {
            (true, Some(value)) => Ok(value),
            _ => Err(self.errors),
        }
    }
}
