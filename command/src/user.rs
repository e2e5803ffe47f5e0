//! People who log in to an account. The full identity work (groups, 2FA, password changes)
//! builds on this; for now a user is registered when their account is opened.

use serde::{Deserialize, Serialize};

use crate::{
    domain::{AccountId, EmailAddress, Text, UserId},
    event_log::EventCodec,
    handler::Aggregate,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Administrator,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Administrator => "administrator",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::User, Self::Administrator]
            .into_iter()
            .find(|role| role.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub account_id: AccountId,
    pub name: Text,
    pub email: EmailAddress,
    pub role: Role,
    /// Argon2id PHC string; never the password.
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    UserRegistered(Registration),
}

impl EventCodec for UserEvent {
    const STREAM_TYPE: &'static str = "user";
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub registration: Option<Registration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the user already exists")]
    AlreadyRegistered,
}

impl Aggregate for User {
    type Command = Registration;
    type Event = UserEvent;
    type Error = UserError;

    fn decide(&self, registration: Registration) -> Result<Vec<UserEvent>, UserError> {
        match self.registration {
            Some(_) => Err(UserError::AlreadyRegistered),
            None => Ok(vec![UserEvent::UserRegistered(registration)]),
        }
    }

    fn evolve(&mut self, event: UserEvent, _version: i64) {
        match event {
            UserEvent::UserRegistered(registration) => self.registration = Some(registration),
        }
    }
}

/// Email addresses are unique across the installation (they are the login name). Each address
/// is a stream of its own whose first event claims it: appending that event with
/// "stream must not exist" is the uniqueness check, in the same atomic append as the
/// registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EmailClaimEvent {
    EmailClaimed { user_id: UserId },
}

impl EventCodec for EmailClaimEvent {
    const STREAM_TYPE: &'static str = "email_claim";
}

pub fn email_claim_stream(email: &EmailAddress) -> String {
    format!("email-{}", email.normalized())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::testing::given;

    fn registration() -> Registration {
        Registration {
            account_id: AccountId::new(),
            name: Text::parse("Ada", 1, 100).unwrap(),
            email: EmailAddress::parse("ada@example.com").unwrap(),
            role: Role::Administrator,
            password_hash: "$argon2id$…".into(),
        }
    }

    #[test]
    fn registers_once() {
        let registration = registration();
        given::<User>(vec![])
            .when(registration.clone())
            .then(vec![UserEvent::UserRegistered(registration.clone())]);
        given::<User>(vec![UserEvent::UserRegistered(registration.clone())])
            .when(registration)
            .then_error(UserError::AlreadyRegistered);
    }
}
