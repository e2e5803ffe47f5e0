//! The `Channels` aggregate: how an account reaches people — its SMTP server and its SMS
//! gateway. One stream per account (`channels-<account>`), each section versioned on its own
//! (its ETag). Secrets arrive sealed with the keyring and stay sealed in the events.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    account::Versioned,
    domain::{AccountId, BaseUrl, EmailAddress, Hostname, PhoneNumber, Port, Text},
    event_log::EventCodec,
    handler::{Aggregate, Inconsistent},
    secrets::EncryptedSecret,
    seen::{SeenVersion, Stale, check_seen},
};

pub fn channels_stream(account_id: AccountId) -> String {
    format!("channels-{account_id}")
}

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS (usually port 587).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
    /// No encryption: for a relay on a trusted network only.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpSettings {
    pub from_address: EmailAddress,
    pub host: Hostname,
    pub port: Port,
    pub security: Security,
    pub username: Option<Text>,
    pub password: Option<EncryptedSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "provider")]
pub enum SmsProvider {
    /// Twilio's REST API, authenticated as `account_sid:api_key`.
    Twilio { account_sid: Text },
    /// A gateway taking `{from, to, text}` as JSON with a bearer key.
    Http { username: Option<Text> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsSettings {
    #[serde(flatten)]
    pub provider: SmsProvider,
    pub from_number: PhoneNumber,
    pub base_url: BaseUrl,
    pub api_key: Option<EncryptedSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ChannelsEvent {
    SmtpSettingsChanged(SmtpSettings),
    SmsSettingsChanged(SmsSettings),
    /// "Test Email": send one email through the saved settings. `test_id` names the job.
    SmtpTestRequested {
        test_id: Uuid,
        to: EmailAddress,
    },
    /// "Test Mobile": send one text message through the saved settings.
    SmsTestRequested {
        test_id: Uuid,
        to: PhoneNumber,
    },
}

impl EventCodec for ChannelsEvent {
    const STREAM_TYPE: &'static str = "channels";
}

/// What a change does to a write-only secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretChange {
    /// Left out of the request: the stored one stays.
    Keep,
    Clear,
    Set(EncryptedSecret),
}

impl SecretChange {
    fn apply(self, current: Option<&EncryptedSecret>) -> Option<EncryptedSecret> {
        match self {
            Self::Keep => current.cloned(),
            Self::Clear => None,
            Self::Set(secret) => Some(secret),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelsCommand {
    /// `settings.password` is ignored: `password` says what becomes of it.
    ChangeSmtp {
        settings: SmtpSettings,
        password: SecretChange,
        seen: SeenVersion,
    },
    /// `settings.api_key` is ignored: `api_key` says what becomes of it.
    ChangeSms {
        settings: SmsSettings,
        api_key: SecretChange,
        seen: SeenVersion,
    },
    RequestSmtpTest {
        test_id: Uuid,
        to: EmailAddress,
    },
    RequestSmsTest {
        test_id: Uuid,
        to: PhoneNumber,
    },
}

/// The two ways out of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Smtp,
    Sms,
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Smtp => "SMTP",
            Self::Sms => "SMS",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelsError {
    #[error("the settings changed since version {seen}; they are at version {current}")]
    Changed { seen: i64, current: i64 },
    #[error("{0} settings are not saved yet: save them, then test them")]
    NotConfigured(Channel),
}

impl From<Stale> for ChannelsError {
    fn from(Stale { seen, current }: Stale) -> Self {
        Self::Changed { seen, current }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Channels {
    pub smtp: Option<Versioned<SmtpSettings>>,
    pub sms: Option<Versioned<SmsSettings>>,
}

/// A section change: refused when stale (a section never set is at version 0), nothing when
/// nothing changes.
fn change<T: PartialEq>(
    current: Option<&Versioned<T>>,
    new: T,
    seen: SeenVersion,
    event: impl FnOnce(T) -> ChannelsEvent,
) -> Result<Vec<ChannelsEvent>, ChannelsError> {
    check_seen(seen, current.map_or(0, |c| c.version))?;
    Ok(match current {
        Some(current) if current.value == new => vec![],
        _ => vec![event(new)],
    })
}

impl Aggregate for Channels {
    type Command = ChannelsCommand;
    type Event = ChannelsEvent;
    type Error = ChannelsError;

    fn decide(&self, command: ChannelsCommand) -> Result<Vec<ChannelsEvent>, ChannelsError> {
        match command {
            ChannelsCommand::ChangeSmtp {
                mut settings,
                password,
                seen,
            } => {
                let current = self.smtp.as_ref();
                settings.password = password.apply(current.and_then(|c| c.value.password.as_ref()));
                change(current, settings, seen, ChannelsEvent::SmtpSettingsChanged)
            }
            ChannelsCommand::ChangeSms {
                mut settings,
                api_key,
                seen,
            } => {
                let current = self.sms.as_ref();
                settings.api_key = api_key.apply(current.and_then(|c| c.value.api_key.as_ref()));
                change(current, settings, seen, ChannelsEvent::SmsSettingsChanged)
            }
            ChannelsCommand::RequestSmtpTest { test_id, to } => match self.smtp {
                Some(_) => Ok(vec![ChannelsEvent::SmtpTestRequested { test_id, to }]),
                None => Err(ChannelsError::NotConfigured(Channel::Smtp)),
            },
            ChannelsCommand::RequestSmsTest { test_id, to } => match self.sms {
                Some(_) => Ok(vec![ChannelsEvent::SmsTestRequested { test_id, to }]),
                None => Err(ChannelsError::NotConfigured(Channel::Sms)),
            },
        }
    }

    fn evolve(&mut self, event: ChannelsEvent, version: i64) -> Result<(), Inconsistent> {
        match event {
            ChannelsEvent::SmtpSettingsChanged(value) => {
                self.smtp = Some(Versioned { value, version })
            }
            ChannelsEvent::SmsSettingsChanged(value) => {
                self.sms = Some(Versioned { value, version })
            }
            ChannelsEvent::SmtpTestRequested { .. } | ChannelsEvent::SmsTestRequested { .. } => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::testing::given;

    fn sealed(text: &str) -> EncryptedSecret {
        serde_json::from_value(serde_json::json!(text)).unwrap()
    }

    fn smtp(password: Option<&str>) -> SmtpSettings {
        SmtpSettings {
            from_address: EmailAddress::parse("noc@acme.example.com").unwrap(),
            host: Hostname::parse("smtp.example.com").unwrap(),
            port: Port::parse(587).unwrap(),
            security: Security::Starttls,
            username: Some(Text::parse("noc", 0, 200).unwrap()),
            password: password.map(sealed),
        }
    }

    fn change_smtp(password: SecretChange, seen: SeenVersion) -> ChannelsCommand {
        ChannelsCommand::ChangeSmtp {
            settings: smtp(None),
            password,
            seen,
        }
    }

    #[test]
    fn a_left_out_password_is_kept_and_an_unchanged_section_records_nothing() {
        let stored = ChannelsEvent::SmtpSettingsChanged(smtp(Some("v1.k1.old")));
        given::<Channels>(vec![stored.clone()])
            .when(change_smtp(SecretChange::Keep, Some(1)))
            .then(vec![]);
        given::<Channels>(vec![stored.clone()])
            .when(change_smtp(SecretChange::Clear, None))
            .then(vec![ChannelsEvent::SmtpSettingsChanged(smtp(None))]);
        given::<Channels>(vec![stored])
            .when(change_smtp(SecretChange::Set(sealed("v1.k1.new")), None))
            .then(vec![ChannelsEvent::SmtpSettingsChanged(smtp(Some(
                "v1.k1.new",
            )))]);
    }

    #[test]
    fn a_test_needs_saved_settings() {
        let test_id = Uuid::now_v7();
        let to = EmailAddress::parse("ops@acme.example.com").unwrap();
        let request = ChannelsCommand::RequestSmtpTest {
            test_id,
            to: to.clone(),
        };
        given::<Channels>(vec![])
            .when(request.clone())
            .then_error(ChannelsError::NotConfigured(Channel::Smtp));
        given::<Channels>(vec![ChannelsEvent::SmtpSettingsChanged(smtp(None))])
            .when(request)
            .then(vec![ChannelsEvent::SmtpTestRequested { test_id, to }]);
        given::<Channels>(vec![ChannelsEvent::SmtpSettingsChanged(smtp(None))])
            .when(ChannelsCommand::RequestSmsTest {
                test_id,
                to: PhoneNumber::parse("+14155550100").unwrap(),
            })
            .then_error(ChannelsError::NotConfigured(Channel::Sms));
    }

    #[test]
    fn a_section_never_set_is_at_version_zero() {
        given::<Channels>(vec![])
            .when(change_smtp(SecretChange::Keep, Some(0)))
            .then(vec![ChannelsEvent::SmtpSettingsChanged(smtp(None))]);
        given::<Channels>(vec![ChannelsEvent::SmtpSettingsChanged(smtp(None))])
            .when(change_smtp(SecretChange::Clear, Some(0)))
            .then_error(ChannelsError::Changed {
                seen: 0,
                current: 1,
            });
    }
}
