//! What a job asks for: the payload the dispatcher queues and a worker runs, the queue it
//! waits in, and how hard the worker tries.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchyard_command::domain::{AccountId, DateFormat, GatewayId, Money};

/// One side effect to carry out. Everything a worker needs is in the payload, decided from
/// the state the event saw, except the channel settings, which are read when it runs (so a
/// retry after fixing them uses the fix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// "Test Email": one email through the account's SMTP settings.
    SmtpTest { account_id: AccountId, to: String },
    /// "Test Mobile": one text message through the account's SMS gateway.
    SmsTest { account_id: AccountId, to: String },
    /// "Verify": ask the provider whether it takes the gateway's credentials, in its mode.
    GatewayVerify {
        account_id: AccountId,
        gateway_id: GatewayId,
    },
    /// The account's login alerts are on and the user logged in.
    LoginAlert {
        account_id: AccountId,
        to: String,
        context: NoticeContext,
    },
    /// How the user logs in changed.
    SecurityNotice {
        account_id: AccountId,
        to: String,
        change: SecurityChange,
        context: NoticeContext,
    },
    /// The account's available balance fell below its alert threshold: one administrator
    /// is told.
    LowBalanceAlert {
        account_id: AccountId,
        to: String,
        name: String,
        available: Money,
        threshold: Money,
    },
    /// Does nothing: measures the queue itself (`switchyard bench jobs`).
    Noop { account_id: AccountId },
}

/// Who, when and from where, as the email tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeContext {
    pub name: String,
    pub at: DateTime<Utc>,
    /// The account's date format, for `at`.
    pub date_format: DateFormat,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum SecurityChange {
    PasswordChanged,
    /// Sent to the old address: the one an attacker would want to silence.
    EmailChanged {
        new_email: String,
    },
    TotpEnabled,
    TotpDisabled,
    /// An administrator turned off two-factor login for the user.
    TotpReset,
}

/// Where jobs wait; each queue has its own workers, so a slow SMS gateway does not hold up
/// email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Email,
    Sms,
    /// Calls to payment providers.
    Payments,
    Noop,
}

impl Queue {
    pub const ALL: [Self; 4] = [Self::Email, Self::Sms, Self::Payments, Self::Noop];

    /// The name apalis stores as `job_type`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "switchyard.email",
            Self::Sms => "switchyard.sms",
            Self::Payments => "switchyard.payments",
            Self::Noop => "switchyard.noop",
        }
    }
}

/// How hard a worker tries one kind of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// One attempt is cut off after this long and counts as a transient failure.
    pub timeout: Duration,
}

impl Job {
    /// The kind, as `GET /v1/jobs` shows it and filters by it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SmtpTest { .. } => "smtp_test",
            Self::SmsTest { .. } => "sms_test",
            Self::GatewayVerify { .. } => "gateway_verify",
            Self::LoginAlert { .. } => "login_alert",
            Self::SecurityNotice { .. } => "security_notice",
            Self::LowBalanceAlert { .. } => "low_balance_alert",
            Self::Noop { .. } => "noop",
        }
    }

    pub fn account_id(&self) -> AccountId {
        match self {
            Self::SmtpTest { account_id, .. }
            | Self::SmsTest { account_id, .. }
            | Self::GatewayVerify { account_id, .. }
            | Self::LoginAlert { account_id, .. }
            | Self::SecurityNotice { account_id, .. }
            | Self::LowBalanceAlert { account_id, .. }
            | Self::Noop { account_id } => *account_id,
        }
    }

    pub fn queue(&self) -> Queue {
        match self {
            Self::SmtpTest { .. }
            | Self::LoginAlert { .. }
            | Self::SecurityNotice { .. }
            | Self::LowBalanceAlert { .. } => Queue::Email,
            Self::SmsTest { .. } => Queue::Sms,
            Self::GatewayVerify { .. } => Queue::Payments,
            Self::Noop { .. } => Queue::Noop,
        }
    }

    pub fn persistence(&self) -> Persistence {
        match self {
            // Someone pressed "Test" and waits for the verdict: one attempt and one quick
            // retry (after about 5 s, see `backoff`) for a passing glitch, then the report
            // says what failed.
            Self::SmtpTest { .. } => Persistence {
                max_attempts: 2,
                timeout: Duration::from_secs(120),
            },
            Self::SmsTest { .. } | Self::GatewayVerify { .. } => Persistence {
                max_attempts: 2,
                timeout: Duration::from_secs(45),
            },
            // Nobody waits for these: six attempts over about five minutes ride out a mail
            // server restart.
            Self::LoginAlert { .. }
            | Self::SecurityNotice { .. }
            | Self::LowBalanceAlert { .. } => Persistence {
                max_attempts: 6,
                timeout: Duration::from_secs(120),
            },
            Self::Noop { .. } => Persistence {
                max_attempts: 1,
                timeout: Duration::from_secs(5),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serialized_tag_is_the_kind() {
        let job = Job::SmtpTest {
            account_id: AccountId::new(),
            to: "ops@example.com".into(),
        };
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["kind"], job.kind());
        assert!(switchyard_projections::queries::JOB_KINDS.contains(&job.kind()));
        assert_eq!(serde_json::from_value::<Job>(json).unwrap(), job);
    }

    #[test]
    fn tests_retry_once_and_notices_keep_trying() {
        let account_id = AccountId::new();
        let to = "ops@example.com".to_owned();
        let context = NoticeContext {
            name: "Ops".into(),
            at: Utc::now(),
            date_format: DateFormat::YearMonthDay,
            ip: None,
            user_agent: None,
        };
        for test in [
            Job::SmtpTest {
                account_id,
                to: to.clone(),
            },
            Job::SmsTest {
                account_id,
                to: to.clone(),
            },
        ] {
            assert_eq!(test.persistence().max_attempts, 2, "{test:?}");
        }
        for notice in [
            Job::LoginAlert {
                account_id,
                to: to.clone(),
                context: context.clone(),
            },
            Job::SecurityNotice {
                account_id,
                to,
                change: SecurityChange::PasswordChanged,
                context,
            },
        ] {
            assert_eq!(notice.persistence().max_attempts, 6, "{notice:?}");
        }
    }
}
