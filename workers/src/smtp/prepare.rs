//! Everything decided before connecting: the email as sent, the credentials, the TLS client.
//! What cannot work fails here, at once, before any stage.

use lettre::{
    Address,
    address::Envelope,
    message::{Mailbox, header::ContentType},
    transport::smtp::authentication::Credentials,
};
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::{
    Message, Security, SmtpSettings,
    failure::{Failure, FailureKind},
    tls::TlsClient,
};

pub(super) struct Prepared {
    pub(super) envelope: Envelope,
    pub(super) recipient: Address,
    /// The RFC 5322 message, as sent after DATA.
    pub(super) email: Vec<u8>,
    pub(super) credentials: Option<Credentials>,
    pub(super) transport: Transport,
}

pub(super) enum Transport {
    Plain,
    StartTls(TlsClient),
    ImplicitTls(TlsClient),
}

pub(super) fn prepare(settings: &SmtpSettings, message: &Message) -> Result<Prepared, Failure> {
    let from = mailbox(
        &settings.from,
        "sender (from) address",
        FailureKind::InvalidSettings,
    )?;
    let to = mailbox(
        &message.to,
        "recipient address",
        FailureKind::InvalidMessage,
    )?;
    let email = lettre::Message::builder()
        .from(from.clone())
        .to(to.clone())
        .subject(message.subject.as_str())
        .date_now()
        // The sender's domain rather than lettre's default: ours has no meaningful host name.
        .message_id(Some(format!(
            "<{}@{}>",
            Uuid::new_v4(),
            from.email.domain()
        )))
        .header(ContentType::TEXT_PLAIN)
        .body(message.text_body.clone())
        .map_err(|error| {
            Failure::new(
                FailureKind::InvalidMessage,
                format!("The email cannot be formed: {error}"),
            )
        })?;
    Ok(Prepared {
        envelope: email.envelope().clone(),
        recipient: to.email,
        email: email.formatted(),
        credentials: credentials(settings)?,
        transport: transport(settings)?,
    })
}

fn mailbox(text: &str, what: &str, kind: FailureKind) -> Result<Mailbox, Failure> {
    text.trim().parse().map_err(|error| {
        Failure::new(
            kind,
            format!("The {what} \"{text}\" is not a valid email address ({error})"),
        )
    })
}

/// A username asks for AUTH; a password alone is ignored, there being no one to log in as.
fn credentials(settings: &SmtpSettings) -> Result<Option<Credentials>, Failure> {
    let Some(username) = settings.username.as_deref().filter(|name| !name.is_empty()) else {
        return Ok(None);
    };
    let password = settings.password.as_ref().ok_or_else(|| {
        Failure::new(
            FailureKind::InvalidSettings,
            "The SMTP username is set but the password is not: set the password, or remove \
             the username",
        )
    })?;
    Ok(Some(Credentials::new(
        username.to_owned(),
        password.expose_secret().to_owned(),
    )))
}

fn transport(settings: &SmtpSettings) -> Result<Transport, Failure> {
    let tls = || TlsClient::new(&settings.host, settings.extra_root_certificate.as_deref());
    Ok(match settings.security {
        Security::None => Transport::Plain,
        Security::StartTls => Transport::StartTls(tls()?),
        Security::Tls => Transport::ImplicitTls(tls()?),
    })
}
