//! Sending one email over SMTP: the one path every email of the product takes (the "Test"
//! button, login alerts, …), so a test that passes means real mail goes out the same way.
//!
//! [`send`] reports each stage — connect, tls, auth, mail_from, rcpt_to, data — with the
//! server's reply or what went wrong, and an outcome whose [`SendError::is_transient`] tells
//! the job runner whether retrying can help. It never retries itself: each attempt is recorded.
//!
//! lettre builds the message and drives the SMTP dialogue on its `AsyncSmtpConnection`; the
//! connection, TLS and the greeting (which lettre would read without reporting) are ours.

mod connect;
mod failure;
mod opening;
mod prepare;
mod reply;
mod session;
mod tls;

use std::{future::Future, time::Duration};

use lettre::transport::smtp::client::AsyncSmtpConnection;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

pub use self::failure::{FailureKind, SendError};
use self::{
    failure::Failure,
    opening::{Greeted, read_greeting},
    prepare::{Prepared, Transport, prepare},
};
use crate::outbound::Outbound;

/// Passwords at least this long are removed from the recorded delivery.
const MIN_REDACTED_PASSWORD_CHARS: usize = 8;

/// An account's SMTP server, with its password decrypted. `Debug` shows the password redacted.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// When set, the session authenticates (AUTH PLAIN or LOGIN).
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The sender: `user@example.com` or `Name <user@example.com>`.
    pub from: String,
    /// A certificate authority to trust besides the public ones (PEM or DER), for a relay with
    /// a private CA. Certificates are always verified.
    pub extra_root_certificate: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plaintext, then STARTTLS before anything else (usually port 587); refused when the
    /// server does not offer it.
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
    /// No encryption: for a relay on a trusted network only.
    None,
}

/// A plain-text email to one recipient.
#[derive(Debug, Clone)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub text_body: String,
}

/// What happened to one email, as recorded on its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The stages attempted, in order; the last one failed when the outcome is an error.
    pub stages: Vec<Stage>,
    pub outcome: Result<(), SendError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub stage: StageName,
    pub ok: bool,
    /// The server's reply ("250 2.1.0 Ok"), or what went wrong without one.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    /// Resolving, connecting and the greeting (and, without TLS, EHLO).
    Connect,
    /// STARTTLS or the implicit TLS handshake, up to EHLO over TLS.
    Tls,
    Auth,
    MailFrom,
    RcptTo,
    /// DATA and the message itself.
    Data,
}

impl StageName {
    /// The name as recorded on a job (the serialized form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Auth => "auth",
            Self::MailFrom => "mail_from",
            Self::RcptTo => "rcpt_to",
            Self::Data => "data",
        }
    }
}

/// Sends `message` as `settings` say, connecting through `outbound` (so only to addresses its
/// policy allows), bounding every network step (resolving, connecting, the handshake, each
/// command) by `timeout`. Never fails: every outcome is a delivery to record.
pub async fn send(
    outbound: &Outbound,
    settings: &SmtpSettings,
    message: &Message,
    timeout: Duration,
) -> Delivery {
    let mut progress = Progress::default();
    let outcome = match prepare(settings, message) {
        Ok(prepared) => deliver(outbound, settings, &prepared, timeout, &mut progress).await,
        Err(failure) => Err(failure),
    };
    let delivery = Delivery {
        stages: progress.stages,
        outcome: outcome.map_err(|failure| {
            failure.explain(&settings.host, settings.port, &settings.from, &message.to)
        }),
    };
    match &settings.password {
        Some(password) => delivery.redacting(password.expose_secret()),
        None => delivery,
    }
}

async fn deliver(
    outbound: &Outbound,
    settings: &SmtpSettings,
    prepared: &Prepared,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<(), Failure> {
    let mut connection = open(outbound, settings, prepared, timeout, progress).await?;
    let outcome = transfer(&mut connection, prepared, timeout, progress).await;
    // A server that answered a refusal is still listening; one that timed out or broke is not.
    let server_answered = match &outcome {
        Ok(()) => true,
        Err(failure) => failure.kind.reply_code().is_some(),
    };
    if server_answered {
        session::quit(&mut connection, timeout).await;
    }
    outcome
}

/// The connect and tls stages: from nothing to a session lettre has said EHLO on.
async fn open(
    outbound: &Outbound,
    settings: &SmtpSettings,
    prepared: &Prepared,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<AsyncSmtpConnection, Failure> {
    let (host, port) = (settings.host.as_str(), settings.port);
    match &prepared.transport {
        Transport::Plain => {
            let opened = async {
                let (greeted, greeting) = connect_and_greet(outbound, host, port, timeout).await?;
                Ok((greeted.into_session(timeout).await?, greeting))
            };
            progress.record(StageName::Connect, opened.await)
        }
        Transport::StartTls(tls) => {
            let connected = connect_and_greet(outbound, host, port, timeout).await;
            let greeted = progress.record(StageName::Connect, connected)?;
            let secured = async {
                let (secured, handshake) = greeted.start_tls(tls, timeout).await?;
                Ok((secured.into_session(timeout).await?, handshake))
            };
            progress.record(StageName::Tls, secured.await)
        }
        Transport::ImplicitTls(tls) => {
            let connected = async {
                let (stream, peer) = connect::connect(outbound, host, port, timeout).await?;
                Ok(((stream, peer), format!("connected to {peer}")))
            };
            let (stream, peer) = progress.record(StageName::Connect, connected.await)?;
            let secured = async {
                let hello = connect::hello_name(&stream);
                let (stream, handshake) = tls.handshake(stream, timeout).await?;
                let greeted = read_greeting(stream, peer, hello, timeout).await?;
                let detail = format!("{handshake}; {}", greeted.greeting);
                Ok((greeted.into_session(timeout).await?, detail))
            };
            progress.record(StageName::Tls, secured.await)
        }
    }
}

/// Connects and reads the greeting, which is the detail to record.
async fn connect_and_greet(
    outbound: &Outbound,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(Greeted<TcpStream>, String), Failure> {
    let (stream, peer) = connect::connect(outbound, host, port, timeout).await?;
    let hello = connect::hello_name(&stream);
    let greeted = read_greeting(stream, peer, hello, timeout).await?;
    let greeting = greeted.greeting.clone();
    Ok((greeted, greeting))
}

/// The auth, mail_from, rcpt_to and data stages.
async fn transfer(
    connection: &mut AsyncSmtpConnection,
    prepared: &Prepared,
    timeout: Duration,
    progress: &mut Progress,
) -> Result<(), Failure> {
    if let Some(credentials) = &prepared.credentials {
        let authenticated = session::authenticate(connection, credentials, timeout).await;
        progress.record_reply(StageName::Auth, authenticated)?;
    }
    let sender = session::mail_from(connection, &prepared.envelope, &prepared.email, timeout);
    progress.record_reply(StageName::MailFrom, sender.await)?;
    let recipient = session::rcpt_to(connection, &prepared.recipient, timeout);
    progress.record_reply(StageName::RcptTo, recipient.await)?;
    let data = session::data(connection, &prepared.email, timeout);
    progress.record_reply(StageName::Data, data.await)
}

/// The stages attempted so far.
#[derive(Default)]
struct Progress {
    stages: Vec<Stage>,
}

impl Progress {
    /// Records how `stage` ended (with the detail given on success) and passes its value on.
    fn record<T>(
        &mut self,
        stage: StageName,
        result: Result<(T, String), Failure>,
    ) -> Result<T, Failure> {
        let (ok, detail, value) = match result {
            Ok((value, detail)) => (true, detail, Ok(value)),
            Err(failure) => (false, failure.detail.clone(), Err(failure)),
        };
        self.stages.push(Stage { stage, ok, detail });
        value
    }

    /// Records a stage whose detail is the server's reply.
    fn record_reply(
        &mut self,
        stage: StageName,
        reply: Result<String, Failure>,
    ) -> Result<(), Failure> {
        self.record(stage, reply.map(|reply| ((), reply)))
    }
}

/// Runs one network step, turning silence past `timeout` into a timeout failure that says what
/// we were waiting for ("waiting for the server's greeting", "to RCPT TO:<…>").
async fn within<T>(
    timeout: Duration,
    waiting_for: &str,
    step: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(timeout, step)
        .await
        .unwrap_or_else(|_| Err(Failure::timeout(timeout, waiting_for)))
}

impl Delivery {
    /// Removes the password from what is recorded, should a server echo it back (ours never
    /// puts it there).
    fn redacting(mut self, password: &str) -> Self {
        // A shorter one would also match ordinary words of the details ("p", "pass").
        if password.chars().count() < MIN_REDACTED_PASSWORD_CHARS {
            return self;
        }
        for stage in &mut self.stages {
            stage.detail = stage.detail.replace(password, "***");
        }
        if let Err(error) = &mut self.outcome {
            error.message = error.message.replace(password, "***");
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(detail: &str) -> Delivery {
        Delivery {
            stages: vec![Stage {
                stage: StageName::Auth,
                ok: false,
                detail: detail.to_owned(),
            }],
            outcome: Err(SendError {
                kind: FailureKind::AuthenticationRejected { code: 535 },
                message: format!("rejected ({detail})"),
            }),
        }
    }

    #[test]
    fn a_password_echoed_by_the_server_is_not_recorded() {
        let redacted = delivery("535 bad password hunter2hunter2").redacting("hunter2hunter2");
        assert_eq!(redacted, delivery("535 bad password ***"));
    }

    #[test]
    fn a_short_password_leaves_the_words_alone() {
        let recorded = delivery("535 bad password").redacting("pass");
        assert_eq!(recorded, delivery("535 bad password"));
    }
}
