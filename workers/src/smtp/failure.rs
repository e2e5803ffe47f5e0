//! What went wrong, for the job record and for the user: the kind decides retries, the message
//! says what to fix.

use std::{error::Error as _, io, time::Duration};

use lettre::transport::smtp::Error as SmtpError;
use serde::{Deserialize, Serialize};

use super::StageName;
use crate::outbound::excerpt;

/// Why an email was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    #[serde(flatten)]
    pub kind: FailureKind,
    /// What failed and what to check, in words a user can act on.
    pub message: String,
}

impl SendError {
    /// Whether sending the same email again later may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
}

/// The kind of failure. Refusals carry the server's reply code: a 4xx reply means "try again
/// later", a 5xx one "this will not work".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureKind {
    /// The SMTP settings cannot be used (sender address, host name for TLS, trusted root).
    InvalidSettings,
    /// The email cannot be formed (recipient address, headers).
    InvalidMessage,
    /// The host name has no address.
    NameNotResolved,
    /// The host is, or resolves only to, addresses the service may not connect to (private,
    /// loopback, link-local, …): nothing was sent.
    AddressNotAllowed,
    /// Nothing listens on that host and port.
    ConnectionRefused,
    /// The connection could not be made or broke off (unreachable network, reset, closed).
    ConnectionFailed,
    /// The server did not answer within the timeout.
    Timeout,
    /// The server asked for STARTTLS does not offer it.
    TlsNotOffered,
    /// The TLS handshake failed: untrusted or wrong certificate, no TLS on that port, …
    TlsHandshake,
    /// The server refused the session itself (its greeting, EHLO or STARTTLS).
    ServerRefused { code: u16 },
    /// The server offers no password login (AUTH PLAIN or LOGIN) on this connection.
    AuthenticationUnavailable,
    /// The server refused the username or password (535).
    AuthenticationRejected { code: u16 },
    /// MAIL FROM refused.
    SenderRefused { code: u16 },
    /// RCPT TO refused (550: no such mailbox, relaying denied).
    RecipientRefused { code: u16 },
    /// DATA or the message content refused.
    MessageRefused { code: u16 },
    /// The server does not speak SMTP as expected.
    ProtocolError,
}

impl FailureKind {
    /// Whether trying again later may succeed: timeouts, refused or broken connections and 4xx
    /// replies. Everything else is a configuration error that needs fixing first.
    pub fn is_transient(self) -> bool {
        match self.reply_code() {
            Some(code) => (400..500).contains(&code),
            None => matches!(
                self,
                Self::ConnectionRefused | Self::ConnectionFailed | Self::Timeout
            ),
        }
    }

    /// The code of the server's negative reply, for a refusal.
    pub fn reply_code(self) -> Option<u16> {
        match self {
            Self::ServerRefused { code }
            | Self::AuthenticationRejected { code }
            | Self::SenderRefused { code }
            | Self::RecipientRefused { code }
            | Self::MessageRefused { code } => Some(code),
            Self::InvalidSettings
            | Self::InvalidMessage
            | Self::NameNotResolved
            | Self::AddressNotAllowed
            | Self::ConnectionRefused
            | Self::ConnectionFailed
            | Self::Timeout
            | Self::TlsNotOffered
            | Self::TlsHandshake
            | Self::AuthenticationUnavailable
            | Self::ProtocolError => None,
        }
    }

    /// The kind of a negative reply, after the stage that got it.
    fn refusal(stage: StageName, code: u16) -> Self {
        match stage {
            StageName::Connect | StageName::Tls => Self::ServerRefused { code },
            StageName::Auth => Self::AuthenticationRejected { code },
            StageName::MailFrom => Self::SenderRefused { code },
            StageName::RcptTo => Self::RecipientRefused { code },
            StageName::Data => Self::MessageRefused { code },
        }
    }
}

/// A failed step: its kind and what the server said (or, without a reply, what happened). It
/// becomes the failed stage's detail, and a [`SendError`] once explained.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) kind: FailureKind,
    pub(super) detail: String,
}

impl Failure {
    pub(super) fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    pub(super) fn timeout(timeout: Duration, waiting_for: &str) -> Self {
        Self::new(
            FailureKind::Timeout,
            format!("no answer within {timeout:?} {waiting_for}"),
        )
    }

    /// A negative reply ("535 5.7.8 Authentication credentials invalid") at `stage`.
    pub(super) fn refused(stage: StageName, code: u16, reply: String) -> Self {
        Self::new(FailureKind::refusal(stage, code), reply)
    }

    /// A read or write on an open connection that failed.
    pub(super) fn io(error: &io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::UnexpectedEof => Self::closed(),
            _ => Self::new(FailureKind::ConnectionFailed, error.to_string()),
        }
    }

    pub(super) fn closed() -> Self {
        Self::new(
            FailureKind::ConnectionFailed,
            "the server closed the connection",
        )
    }

    /// An error from lettre's SMTP connection during `stage`.
    pub(super) fn smtp(stage: StageName, error: &SmtpError) -> Self {
        if let Some(code) = error.status() {
            // lettre keeps a negative reply's text (all its lines) as the error's source.
            let text = error.source().map(ToString::to_string).unwrap_or_default();
            return Self::refused(stage, code.into(), excerpt(&format!("{code} {text}")));
        }
        let cause = root_cause(error);
        if error.is_response() {
            // lettre's words for a connection closed before a complete reply.
            if cause == "incomplete response" {
                return Self::closed();
            }
            return Self::new(
                FailureKind::ProtocolError,
                format!("unexpected reply: {}", excerpt(&cause)),
            );
        }
        if error.is_client() {
            return Self::new(FailureKind::ProtocolError, cause);
        }
        // lettre's network and connection errors (no predicate of their own).
        Self::new(FailureKind::ConnectionFailed, cause)
    }

    /// Explains the failure to the user, naming the server and the addresses.
    pub(super) fn explain(self, host: &str, port: u16, from: &str, to: &str) -> SendError {
        let server = format!("{host}:{port}");
        let detail = &self.detail;
        let retry_later = self.kind.is_transient();
        let message = match self.kind {
            FailureKind::InvalidSettings | FailureKind::InvalidMessage => detail.clone(),
            FailureKind::NameNotResolved => format!(
                "The SMTP host name \"{host}\" could not be resolved ({detail}): check the host \
                 name"
            ),
            FailureKind::AddressNotAllowed => format!(
                "The SMTP host \"{host}\" was not contacted ({detail}): give the mail server's \
                 public name or address, or ask the operator to allow the range"
            ),
            FailureKind::ConnectionRefused => format!(
                "{server} refused the connection: check the host and port, and that the mail \
                 server is running"
            ),
            FailureKind::ConnectionFailed => format!(
                "The connection to {server} failed ({detail}): check the host and port, or try \
                 again later"
            ),
            FailureKind::Timeout => format!(
                "{server} did not answer in time ({detail}): check the host, port and security \
                 setting (a firewall may be dropping the connection), or try again later"
            ),
            FailureKind::TlsNotOffered => format!(
                "{server} does not offer STARTTLS: choose TLS (usually port 465), or check the port"
            ),
            FailureKind::TlsHandshake => format!(
                "The TLS handshake with {server} failed ({detail}): check the security setting \
                 (STARTTLS is usually port 587, TLS port 465) and the server's certificate"
            ),
            FailureKind::AuthenticationUnavailable => format!(
                "{server} offers no password login (AUTH PLAIN or LOGIN) on this connection: \
                 choose STARTTLS or TLS, or remove the username"
            ),
            FailureKind::ProtocolError => format!(
                "{server} did not answer as an SMTP server ({detail}): check the port and \
                 security setting"
            ),
            FailureKind::ServerRefused { .. } => refusal(
                format!("{server} refused the session ({detail})"),
                retry_later,
                "check the host and port",
            ),
            FailureKind::AuthenticationRejected { .. } => refusal(
                format!("{server} rejected the username or password ({detail})"),
                retry_later,
                "check the SMTP username and password",
            ),
            FailureKind::SenderRefused { .. } => refusal(
                format!("{server} refused the sender {from} ({detail})"),
                retry_later,
                "use a from address this SMTP account may send as",
            ),
            FailureKind::RecipientRefused { .. } => refusal(
                format!("{server} refused the recipient {to} ({detail})"),
                retry_later,
                "check the recipient address",
            ),
            FailureKind::MessageRefused { .. } => refusal(
                format!("{server} refused the message ({detail})"),
                retry_later,
                "check the message and the server's limits",
            ),
        };
        SendError {
            kind: self.kind,
            message,
        }
    }
}

fn refusal(headline: String, retry_later: bool, advice: &str) -> String {
    if retry_later {
        format!("{headline}: the server asks to try again later")
    } else {
        format!("{headline}: {advice}")
    }
}

/// The innermost error: the part that says what happened ("Connection reset by peer").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_hundreds_are_transient_five_hundreds_are_not() {
        assert!(FailureKind::RecipientRefused { code: 450 }.is_transient());
        assert!(!FailureKind::RecipientRefused { code: 550 }.is_transient());
        assert!(!FailureKind::AuthenticationRejected { code: 535 }.is_transient());
        assert!(FailureKind::Timeout.is_transient());
        assert!(!FailureKind::TlsHandshake.is_transient());
        assert!(!FailureKind::NameNotResolved.is_transient());
    }

    #[test]
    fn the_kind_is_stored_flat_beside_the_message() {
        let error = Failure::refused(StageName::RcptTo, 550, "550 5.1.1 no such user".into())
            .explain("smtp.example.com", 587, "a@example.com", "b@example.com");
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(json["kind"], "recipient_refused");
        assert_eq!(json["code"], 550);
        assert_eq!(
            json["message"],
            "smtp.example.com:587 refused the recipient b@example.com (550 5.1.1 no such user): \
             check the recipient address"
        );
        assert_eq!(serde_json::from_value::<SendError>(json).unwrap(), error);
    }
}
