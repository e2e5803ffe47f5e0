//! How refusals of the domain answer over HTTP.

use switchyard_command::{
    account::AccountError, group::GroupError, handler::CommandError, team::TeamError,
    user::UserError,
};

use crate::error::ApiError;

/// A domain refusal, as the HTTP answer that explains it.
pub trait DomainError: std::fmt::Display {
    fn into_api_error(self) -> ApiError;
}

impl<E: DomainError> From<CommandError<E>> for ApiError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Domain(refusal) => refusal.into_api_error(),
            CommandError::TooMuchContention(_) => {
                ApiError::conflict("this is being changed concurrently; try again")
            }
            other => ApiError::internal(other),
        }
    }
}

impl DomainError for AccountError {
    fn into_api_error(self) -> ApiError {
        match self {
            AccountError::NotFound => ApiError::not_found("account"),
            AccountError::SectionChanged { .. } => {
                ApiError::precondition_failed(format!("If-Match is stale: {self}"))
            }
            AccountError::AlreadyOpened => ApiError::conflict(self.to_string()),
        }
    }
}

impl DomainError for UserError {
    fn into_api_error(self) -> ApiError {
        match self {
            UserError::NotFound => ApiError::not_found("user"),
            UserError::Changed { .. } => {
                ApiError::precondition_failed(format!("If-Match is stale: {self}"))
            }
            UserError::SecondFactorRejected => ApiError::invalid_field("code", self.to_string()),
            UserError::Disabled => {
                ApiError::forbidden("this user is disabled; ask an administrator")
            }
            UserError::AlreadyRegistered
            | UserError::TotpAlreadyOn
            | UserError::TotpNotPending
            | UserError::TotpOff
            | UserError::SecondFactorRequired => ApiError::conflict(self.to_string()),
        }
    }
}

impl DomainError for TeamError {
    fn into_api_error(self) -> ApiError {
        match self {
            TeamError::User(refusal) => refusal.into_api_error(),
            TeamError::EmailTaken(_) | TeamError::LastAdministrator(_) => {
                ApiError::conflict(self.to_string())
            }
            TeamError::UnknownGroup(_) => ApiError::invalid_field("groups", self.to_string()),
        }
    }
}

impl DomainError for GroupError {
    fn into_api_error(self) -> ApiError {
        match self {
            GroupError::NotFound => ApiError::not_found("group"),
            GroupError::Changed { .. } => {
                ApiError::precondition_failed(format!("If-Match is stale: {self}"))
            }
            GroupError::AlreadyExists => ApiError::conflict(self.to_string()),
        }
    }
}
