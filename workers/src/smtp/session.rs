//! The stages after the opening, on lettre's connection: each sends its command and returns the
//! server's reply, or the refusal. These are the steps of lettre's own
//! `AsyncSmtpConnection::send`, one at a time so that each reply can be reported.

use std::{fmt::Display, time::Duration};

use lettre::{
    Address,
    address::Envelope,
    transport::smtp::{
        authentication::{Credentials, DEFAULT_MECHANISMS},
        client::AsyncSmtpConnection,
        commands::{Data, Mail, Rcpt},
        extension::{Extension, MailBodyParameter, MailParameter, ServerInfo},
    },
};

use super::{
    StageName,
    failure::{Failure, FailureKind},
    reply::reply_text,
    within,
};

/// AUTH with PLAIN or LOGIN, whichever the server offers (PLAIN first).
pub(super) async fn authenticate(
    connection: &mut AsyncSmtpConnection,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<String, Failure> {
    if connection
        .server_info()
        .get_auth_mechanism(DEFAULT_MECHANISMS)
        .is_none()
    {
        return Err(Failure::new(
            FailureKind::AuthenticationUnavailable,
            "the server's EHLO reply lists neither AUTH PLAIN nor AUTH LOGIN",
        ));
    }
    within(timeout, "to AUTH", async {
        connection
            .auth(DEFAULT_MECHANISMS, credentials)
            .await
            .map(|reply| reply_text(&reply))
            .map_err(|error| Failure::smtp(StageName::Auth, &error))
    })
    .await
}

pub(super) async fn mail_from(
    connection: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    email: &[u8],
    timeout: Duration,
) -> Result<String, Failure> {
    let parameters = mail_parameters(connection.server_info(), envelope, email)?;
    let command = Mail::new(envelope.from().cloned(), parameters);
    exchange(connection, StageName::MailFrom, command, timeout).await
}

pub(super) async fn rcpt_to(
    connection: &mut AsyncSmtpConnection,
    recipient: &Address,
    timeout: Duration,
) -> Result<String, Failure> {
    let command = Rcpt::new(recipient.clone(), Vec::new());
    exchange(connection, StageName::RcptTo, command, timeout).await
}

/// DATA, then the message (dot-stuffed by lettre); the reply is the one to the message.
pub(super) async fn data(
    connection: &mut AsyncSmtpConnection,
    email: &[u8],
    timeout: Duration,
) -> Result<String, Failure> {
    exchange(connection, StageName::Data, Data, timeout).await?;
    within(timeout, "after the message", async {
        connection
            .message(email)
            .await
            .map(|reply| reply_text(&reply))
            .map_err(|error| Failure::smtp(StageName::Data, &error))
    })
    .await
}

/// Says goodbye; the email's fate is already decided, so the answer does not matter.
pub(super) async fn quit(connection: &mut AsyncSmtpConnection, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, connection.quit()).await;
}

async fn exchange(
    connection: &mut AsyncSmtpConnection,
    stage: StageName,
    command: impl Display,
    timeout: Duration,
) -> Result<String, Failure> {
    let waiting_for = format!("to {}", command.to_string().trim_end());
    within(timeout, &waiting_for, async {
        connection
            .command(command)
            .await
            .map(|reply| reply_text(&reply))
            .map_err(|error| Failure::smtp(stage, &error))
    })
    .await
}

/// SMTPUTF8 for international addresses and BODY=8BITMIME for 8-bit content, refusing what
/// the server cannot take, as lettre's `send` does.
fn mail_parameters(
    server: &ServerInfo,
    envelope: &Envelope,
    email: &[u8],
) -> Result<Vec<MailParameter>, Failure> {
    let mut parameters = Vec::new();
    let international = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|address: &Address| !AsRef::<str>::as_ref(address).is_ascii());
    if international {
        if !server.supports_feature(Extension::SmtpUtfEight) {
            return Err(Failure::new(
                FailureKind::InvalidMessage,
                "The SMTP server does not accept addresses with non-ASCII characters \
                 (no SMTPUTF8): use ASCII addresses",
            ));
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !email.is_ascii() {
        if !server.supports_feature(Extension::EightBitMime) {
            return Err(Failure::new(
                FailureKind::InvalidMessage,
                "The SMTP server does not accept 8-bit messages (no 8BITMIME)",
            ));
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    Ok(parameters)
}
