//! How refusals of the domain answer over HTTP.

use switchyard_command::{
    account::AccountError, event_log::AppendError, group::GroupError, handler::CommandError,
    ledger::LedgerError, team::TeamError, user::UserError,
};

use axum::http::StatusCode;

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
            CommandError::Read(error) | CommandError::Append(AppendError::Database(error)) => {
                ApiError::database(&error)
            }
            CommandError::Append(AppendError::BatchFailed(error)) => ApiError::database(&error),
            CommandError::Append(AppendError::KeyTakenOver) => ApiError::conflict(
                "a retry with this Idempotency-Key took this request over; retry to get its answer",
            ),
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
            UserError::PasswordChanged => ApiError::invalid_credentials(),
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
            TeamError::EmailTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, "email_unavailable", self.to_string())
            }
            TeamError::LastAdministrator(_) => ApiError::conflict(self.to_string()),
            TeamError::UnknownGroup(_) => ApiError::invalid_field("groups", self.to_string()),
        }
    }
}

impl DomainError for LedgerError {
    fn into_api_error(self) -> ApiError {
        match self {
            LedgerError::WrongCurrency { .. } | LedgerError::ZeroAmount => {
                ApiError::invalid_field("amount", self.to_string())
            }
            LedgerError::NegativeDebitLimit => {
                ApiError::invalid_field("debit_limit", self.to_string())
            }
            LedgerError::InsufficientFunds { .. } => {
                ApiError::new(StatusCode::CONFLICT, "insufficient_funds", self.to_string())
            }
            LedgerError::Money(_) => ApiError::invalid_field("amount", self.to_string()),
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
            GroupError::AlreadyExists | GroupError::NameTaken(_) => {
                ApiError::conflict(self.to_string())
            }
        }
    }
}
