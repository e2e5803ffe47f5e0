//! One attempt at one job: read the account's channel settings (or gateway), open their
//! secrets, send through the one send path (or ask the provider), and report each stage.

use std::{convert::Infallible, sync::Arc, time::Duration};

use switchyard_command::{
    channels::{self, Channels, SmsProvider, channels_stream},
    domain::{AccountId, GatewayId},
    gateways::{Credentials, Gateways, gateways_stream},
    handler::CommandHandler,
    secrets::{EncryptedSecret, SecretKeyring},
};

use super::{job::Job, notices, store::StageReport};
use crate::{
    gateways::{self, GatewayCredentials, ProviderApis},
    outbound::Outbound,
    sms, smtp,
};

/// What workers need besides the job.
pub struct JobContext {
    /// Loads the account's channel settings.
    pub commands: CommandHandler,
    pub secrets: Arc<SecretKeyring>,
    /// Every connection to a tenant's servers goes through it.
    pub outbound: Outbound,
    /// A certificate authority SMTP connections trust besides the public ones (PEM or DER).
    pub smtp_extra_root: Option<Vec<u8>>,
    /// Where the payment providers' APIs are.
    pub providers: ProviderApis,
}

/// Each network step of an SMTP session (connect, each command) gives up after this long.
const SMTP_STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// An SMS gateway has this long to answer.
const SMS_TIMEOUT: Duration = Duration::from_secs(30);
/// A payment provider has this long to answer.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an attempt failed, in words the user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// Whether trying again later may succeed.
    pub transient: bool,
}

impl Failure {
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }
}

/// What an attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Performed {
    pub stages: Vec<StageReport>,
    pub outcome: Result<(), Failure>,
}

impl From<Failure> for Performed {
    fn from(failure: Failure) -> Self {
        Self {
            stages: vec![],
            outcome: Err(failure),
        }
    }
}

pub async fn perform(context: &JobContext, job: &Job) -> Performed {
    match job {
        Job::SmtpTest { account_id, to } => {
            send_email(context, *account_id, notices::test_email(to)).await
        }
        Job::LoginAlert {
            account_id,
            to,
            context: notice,
        } => send_email(context, *account_id, notices::login_alert(to, notice)).await,
        Job::SecurityNotice {
            account_id,
            to,
            change,
            context: notice,
        } => {
            let message = notices::security_notice(to, change, notice);
            send_email(context, *account_id, message).await
        }
        Job::LowBalanceAlert {
            account_id,
            to,
            name,
            available,
            threshold,
        } => {
            let message = notices::low_balance_alert(to, name, available, threshold);
            send_email(context, *account_id, message).await
        }
        Job::SmsTest { account_id, to } => {
            send_sms(context, *account_id, to, notices::TEST_SMS).await
        }
        Job::GatewayVerify {
            account_id,
            gateway_id,
        } => verify_gateway(context, *account_id, *gateway_id).await,
        Job::Noop { .. } => Performed {
            stages: vec![],
            outcome: Ok(()),
        },
    }
}

async fn channels(context: &JobContext, account: AccountId) -> Result<Channels, Failure> {
    context
        .commands
        .load::<Channels, Infallible>(&channels_stream(account))
        .await
        .map(|loaded| loaded.state)
        .map_err(|error| Failure {
            message: format!("reading the account's settings failed: {error}"),
            transient: true,
        })
}

fn open_secret(
    context: &JobContext,
    account: AccountId,
    secret: &EncryptedSecret,
    what: &str,
) -> Result<secrecy::SecretString, Failure> {
    context.secrets.decrypt(account, secret).map_err(|error| {
        Failure::permanent(format!(
            "the stored {what} cannot be opened with this server's keys ({error}): save it again"
        ))
    })
}

async fn send_email(context: &JobContext, account: AccountId, message: smtp::Message) -> Performed {
    match email_settings(context, account).await {
        Ok(settings) => {
            let delivery =
                smtp::send(&context.outbound, &settings, &message, SMTP_STEP_TIMEOUT).await;
            Performed {
                stages: delivery
                    .stages
                    .into_iter()
                    .map(|stage| StageReport {
                        stage: stage.stage.as_str().to_owned(),
                        ok: stage.ok,
                        detail: stage.detail,
                    })
                    .collect(),
                outcome: delivery.outcome.map_err(|error| Failure {
                    transient: error.is_transient(),
                    message: error.message,
                }),
            }
        }
        Err(failure) => failure.into(),
    }
}

async fn email_settings(
    context: &JobContext,
    account: AccountId,
) -> Result<smtp::SmtpSettings, Failure> {
    let Some(saved) = channels(context, account).await?.smtp else {
        return Err(Failure::permanent(
            "SMTP is not configured for this account: save the SMTP settings so that emails \
             can be sent",
        ));
    };
    let saved = saved.value;
    let password = saved
        .password
        .as_ref()
        .map(|sealed| open_secret(context, account, sealed, "SMTP password"))
        .transpose()?;
    Ok(smtp::SmtpSettings {
        host: saved.host.as_str().to_owned(),
        port: saved.port.get(),
        security: match saved.security {
            channels::Security::Starttls => smtp::Security::StartTls,
            channels::Security::Tls => smtp::Security::Tls,
            channels::Security::None => smtp::Security::None,
        },
        username: saved.username.map(|name| name.as_str().to_owned()),
        password,
        from: saved.from_address.as_str().to_owned(),
        extra_root_certificate: context.smtp_extra_root.clone(),
    })
}

async fn send_sms(context: &JobContext, account: AccountId, to: &str, text: &str) -> Performed {
    let settings = match sms_settings(context, account).await {
        Ok(settings) => settings,
        Err(failure) => return failure.into(),
    };
    let delivery = sms::send(context.outbound.http(), &settings, to, text, SMS_TIMEOUT).await;
    Performed {
        stages: vec![StageReport {
            stage: "request".into(),
            ok: delivery.outcome.is_ok(),
            detail: delivery.detail(),
        }],
        outcome: delivery.outcome.map(|_| ()).map_err(|error| Failure {
            transient: error.is_transient(),
            message: error.message,
        }),
    }
}

async fn sms_settings(
    context: &JobContext,
    account: AccountId,
) -> Result<sms::SmsSettings, Failure> {
    let Some(saved) = channels(context, account).await?.sms else {
        return Err(Failure::permanent(
            "SMS is not configured for this account: save the SMS settings first",
        ));
    };
    let saved = saved.value;
    let Some(sealed) = saved.api_key.as_ref() else {
        return Err(Failure::permanent(
            "the SMS settings have no API key: save one",
        ));
    };
    let api_key = open_secret(context, account, sealed, "SMS API key")?;
    let base_url = saved.base_url.as_str().to_owned();
    let from_number = saved.from_number.as_str().to_owned();
    Ok(match saved.provider {
        SmsProvider::Twilio { account_sid } => sms::SmsSettings::Twilio {
            base_url,
            account_sid: account_sid.as_str().to_owned(),
            from_number,
            api_key,
        },
        SmsProvider::Http { username } => sms::SmsSettings::Http {
            base_url,
            from_number,
            username: username.map(|name| name.as_str().to_owned()),
            api_key,
        },
    })
}

async fn verify_gateway(context: &JobContext, account: AccountId, gateway: GatewayId) -> Performed {
    let loaded = context
        .commands
        .load::<Gateways, Infallible>(&gateways_stream(account))
        .await;
    let gateways = match loaded {
        Ok(loaded) => loaded.state,
        Err(error) => {
            return Failure {
                message: format!("reading the account's gateways failed: {error}"),
                transient: true,
            }
            .into();
        }
    };
    let Some(saved) = gateways.gateways.get(&gateway) else {
        return Failure::permanent("the gateway was deleted before it could be verified").into();
    };
    let settings = &saved.value;
    let credentials = match &settings.credentials {
        Credentials::Stripe { secret_key, .. } => {
            open_secret(context, account, secret_key, "Stripe secret key")
                .map(|secret_key| GatewayCredentials::Stripe { secret_key })
        }
        Credentials::Paypal {
            client_id,
            client_secret,
            ..
        } => open_secret(context, account, client_secret, "PayPal client secret").map(
            |client_secret| GatewayCredentials::Paypal {
                client_id: client_id.as_str().to_owned(),
                client_secret,
            },
        ),
    };
    let credentials = match credentials {
        Ok(credentials) => credentials,
        Err(failure) => return failure.into(),
    };
    let verification = gateways::verify(
        context.outbound.http(),
        &context.providers,
        settings.mode,
        &credentials,
        PROVIDER_TIMEOUT,
    )
    .await;
    Performed {
        stages: verification
            .stages
            .into_iter()
            .map(|stage| StageReport {
                stage: stage.stage.to_owned(),
                ok: stage.ok,
                detail: stage.detail,
            })
            .collect(),
        outcome: verification.outcome.map_err(|refusal| Failure {
            message: refusal.message,
            transient: refusal.transient,
        }),
    }
}
