//! The `Gateways` aggregate: an account's own payment gateways (the API section), the Stripe
//! and PayPal credentials it takes its customers' payments with.
//!
//! One stream per account (`gateways-<account>`), not one per gateway: "one gateway per
//! provider and mode" is then decided on one stream, with no claim streams, and an account has
//! at most four gateways, so the stream stays short. Each gateway carries its own version (its
//! ETag), so a change to one does not make another's `If-Match` stale. Secrets arrive sealed
//! with the keyring and stay sealed in the events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    account::Versioned,
    domain::{
        AccountId, CurrencyCode, EmailAddress, GatewayId, InvalidValue, Money, Percent, Text,
    },
    event_log::EventCodec,
    handler::{Aggregate, Inconsistent},
    secrets::EncryptedSecret,
    seen::{SeenVersion, Stale, check_seen},
};

pub fn gateways_stream(account_id: AccountId) -> String {
    format!("gateways-{account_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Stripe,
    Paypal,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Paypal => "paypal",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Stripe => "Stripe",
            Self::Paypal => "PayPal",
        }
    }
}

/// Test (Stripe's test mode, PayPal's sandbox) or live money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Test,
    Live,
}

impl Mode {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "test" => Ok(Self::Test),
            "live" => Ok(Self::Live),
            _ => Err(InvalidValue("must be `test` or `live`".into())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Live => "live",
        }
    }
}

/// Which of Stripe's keys a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeKey {
    /// `pk_…`: goes to browsers with Stripe.js.
    Publishable,
    /// `sk_…`, or a restricted key `rk_…`: stays on the server.
    Secret,
}

/// A Stripe key of `kind` for `mode`: Stripe names the mode in the key (`pk_test_…`,
/// `sk_live_…`), so a key of the other mode is refused before anything is saved.
pub fn check_stripe_key(kind: StripeKey, mode: Mode, key: &str) -> Result<(), InvalidValue> {
    let prefixes: &[&str] = match kind {
        StripeKey::Publishable => &["pk"],
        StripeKey::Secret => &["sk", "rk"],
    };
    let expected: Vec<String> = prefixes
        .iter()
        .map(|prefix| format!("{prefix}_{}_", mode.as_str()))
        .collect();
    if key.len() > 500 {
        return Err(InvalidValue("must be at most 500 characters".into()));
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(InvalidValue(
            "is not a Stripe key: letters, digits and `_` only".into(),
        ));
    }
    match expected
        .iter()
        .any(|prefix| key.len() > prefix.len() && key.starts_with(prefix.as_str()))
    {
        true => Ok(()),
        false => Err(InvalidValue(format!(
            "must be a {} mode key, starting with {}",
            mode.as_str(),
            expected
                .iter()
                .map(|prefix| format!("`{prefix}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ))),
    }
}

/// The provider's credentials. Secrets are sealed; the last four characters of Stripe's secret
/// key are kept in the clear, to show which key is saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum Credentials {
    Stripe {
        publishable_key: String,
        secret_key: EncryptedSecret,
        secret_key_last4: String,
        /// Signs the webhooks Stripe sends (`whsec_…`).
        webhook_secret: Option<EncryptedSecret>,
    },
    Paypal {
        client_id: Text,
        client_secret: EncryptedSecret,
        /// The PayPal account's email.
        email: Option<EmailAddress>,
        /// The webhook PayPal verifies its notifications against.
        webhook_id: Option<Text>,
    },
}

impl Credentials {
    pub fn provider(&self) -> Provider {
        match self {
            Self::Stripe { .. } => Provider::Stripe,
            Self::Paypal { .. } => Provider::Paypal,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySettings {
    #[serde(flatten)]
    pub credentials: Credentials,
    pub mode: Mode,
    /// The currencies the gateway takes, each once.
    pub currencies: Vec<CurrencyCode>,
    /// A fixed amount added to each payment, in one of `currencies`.
    pub surcharge: Option<Money>,
    /// A percentage of each payment added to it.
    pub surcharge_percent: Option<Percent>,
}

impl GatewaySettings {
    /// The slot the gateway takes in its account: one per provider and mode.
    pub fn slot(&self) -> (Provider, Mode) {
        (self.credentials.provider(), self.mode)
    }
}

/// A gateway as readers see it: no secret, only whether each is set (Stripe's secret key by
/// its last four characters). The read model stores this, and answers are built from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicGateway {
    pub provider: Provider,
    pub mode: Mode,
    pub publishable_key: Option<String>,
    pub secret_key_last4: Option<String>,
    pub webhook_secret_set: Option<bool>,
    pub client_id: Option<String>,
    pub client_secret_set: Option<bool>,
    pub email: Option<String>,
    pub webhook_id: Option<String>,
    pub currencies: Vec<CurrencyCode>,
    pub surcharge: Option<Money>,
    pub surcharge_percent: Option<Percent>,
}

impl From<&GatewaySettings> for PublicGateway {
    fn from(settings: &GatewaySettings) -> Self {
        let mut public = Self {
            provider: settings.credentials.provider(),
            mode: settings.mode,
            publishable_key: None,
            secret_key_last4: None,
            webhook_secret_set: None,
            client_id: None,
            client_secret_set: None,
            email: None,
            webhook_id: None,
            currencies: settings.currencies.clone(),
            surcharge: settings.surcharge,
            surcharge_percent: settings.surcharge_percent,
        };
        match &settings.credentials {
            Credentials::Stripe {
                publishable_key,
                secret_key_last4,
                webhook_secret,
                ..
            } => {
                public.publishable_key = Some(publishable_key.clone());
                public.secret_key_last4 = Some(secret_key_last4.clone());
                public.webhook_secret_set = Some(webhook_secret.is_some());
            }
            Credentials::Paypal {
                client_id,
                email,
                webhook_id,
                ..
            } => {
                public.client_id = Some(client_id.as_str().to_owned());
                public.client_secret_set = Some(true);
                public.email = email.as_ref().map(|e| e.as_str().to_owned());
                public.webhook_id = webhook_id.as_ref().map(|w| w.as_str().to_owned());
            }
        }
        public
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum GatewaysEvent {
    GatewayAdded {
        gateway_id: GatewayId,
        settings: GatewaySettings,
    },
    GatewayChanged {
        gateway_id: GatewayId,
        settings: GatewaySettings,
    },
    /// `provider` and `mode` say which slot it frees.
    GatewayRemoved {
        gateway_id: GatewayId,
        provider: Provider,
        mode: Mode,
    },
    /// "Verify": ask the provider whether it takes the credentials. `verification_id` names
    /// the job.
    GatewayVerificationRequested {
        gateway_id: GatewayId,
        verification_id: Uuid,
    },
}

impl EventCodec for GatewaysEvent {
    const STREAM_TYPE: &'static str = "gateways";
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewaysCommand {
    Add {
        gateway_id: GatewayId,
        settings: GatewaySettings,
    },
    /// The whole new settings: the caller merges a partial change (and the stored secrets it
    /// keeps) over the current ones.
    Change {
        gateway_id: GatewayId,
        settings: GatewaySettings,
        seen: SeenVersion,
    },
    Remove {
        gateway_id: GatewayId,
        seen: SeenVersion,
    },
    RequestVerification {
        gateway_id: GatewayId,
        verification_id: Uuid,
        seen: SeenVersion,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewaysError {
    #[error("no such gateway")]
    NotFound,
    #[error("the account already has a {} gateway in {} mode", .0.name(), .1.as_str())]
    Duplicate(Provider, Mode),
    #[error("a gateway's provider and mode stay as created: add another gateway instead")]
    SlotChanged,
    #[error("the gateway changed since version {seen}; it is at version {current}")]
    Changed { seen: i64, current: i64 },
}

impl From<Stale> for GatewaysError {
    fn from(Stale { seen, current }: Stale) -> Self {
        Self::Changed { seen, current }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gateways {
    pub gateways: BTreeMap<GatewayId, Versioned<GatewaySettings>>,
}

impl Gateways {
    /// The gateway, if the client's `If-Match` (if any) names its version.
    fn current(
        &self,
        gateway_id: GatewayId,
        seen: SeenVersion,
    ) -> Result<&Versioned<GatewaySettings>, GatewaysError> {
        let current = self
            .gateways
            .get(&gateway_id)
            .ok_or(GatewaysError::NotFound)?;
        check_seen(seen, current.version)?;
        Ok(current)
    }

    /// The account's gateway of `provider` in `mode`, if it has one.
    pub fn of(&self, provider: Provider, mode: Mode) -> Option<(GatewayId, &GatewaySettings)> {
        self.gateways
            .iter()
            .find(|(_, gateway)| gateway.value.slot() == (provider, mode))
            .map(|(id, gateway)| (*id, &gateway.value))
    }
}

impl Aggregate for Gateways {
    type Command = GatewaysCommand;
    type Event = GatewaysEvent;
    type Error = GatewaysError;

    fn decide(&self, command: GatewaysCommand) -> Result<Vec<GatewaysEvent>, GatewaysError> {
        match command {
            GatewaysCommand::Add {
                gateway_id,
                settings,
            } => {
                let (provider, mode) = settings.slot();
                if self.of(provider, mode).is_some() {
                    return Err(GatewaysError::Duplicate(provider, mode));
                }
                Ok(vec![GatewaysEvent::GatewayAdded {
                    gateway_id,
                    settings,
                }])
            }
            GatewaysCommand::Change {
                gateway_id,
                settings,
                seen,
            } => {
                let current = self.current(gateway_id, seen)?;
                if current.value.slot() != settings.slot() {
                    return Err(GatewaysError::SlotChanged);
                }
                Ok(match current.value == settings {
                    true => vec![],
                    false => vec![GatewaysEvent::GatewayChanged {
                        gateway_id,
                        settings,
                    }],
                })
            }
            GatewaysCommand::Remove { gateway_id, seen } => {
                let (provider, mode) = self.current(gateway_id, seen)?.value.slot();
                Ok(vec![GatewaysEvent::GatewayRemoved {
                    gateway_id,
                    provider,
                    mode,
                }])
            }
            GatewaysCommand::RequestVerification {
                gateway_id,
                verification_id,
                seen,
            } => {
                self.current(gateway_id, seen)?;
                Ok(vec![GatewaysEvent::GatewayVerificationRequested {
                    gateway_id,
                    verification_id,
                }])
            }
        }
    }

    fn evolve(&mut self, event: GatewaysEvent, version: i64) -> Result<(), Inconsistent> {
        match event {
            GatewaysEvent::GatewayAdded {
                gateway_id,
                settings,
            }
            | GatewaysEvent::GatewayChanged {
                gateway_id,
                settings,
            } => {
                let value = Versioned {
                    value: settings,
                    version,
                };
                self.gateways.insert(gateway_id, value);
            }
            GatewaysEvent::GatewayRemoved { gateway_id, .. } => {
                self.gateways.remove(&gateway_id);
            }
            GatewaysEvent::GatewayVerificationRequested { .. } => {}
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

    fn stripe(mode: Mode) -> GatewaySettings {
        GatewaySettings {
            credentials: Credentials::Stripe {
                publishable_key: format!("pk_{}_abc", mode.as_str()),
                secret_key: sealed("v1.k1.sealed"),
                secret_key_last4: "wxyz".into(),
                webhook_secret: None,
            },
            mode,
            currencies: vec![CurrencyCode::DEFAULT],
            surcharge: None,
            surcharge_percent: None,
        }
    }

    fn added(gateway_id: GatewayId, settings: GatewaySettings) -> GatewaysEvent {
        GatewaysEvent::GatewayAdded {
            gateway_id,
            settings,
        }
    }

    #[test]
    fn one_gateway_per_provider_and_mode() {
        let first = GatewayId::new();
        let second = GatewayId::new();
        given::<Gateways>(vec![added(first, stripe(Mode::Test))])
            .when(GatewaysCommand::Add {
                gateway_id: second,
                settings: stripe(Mode::Test),
            })
            .then_error(GatewaysError::Duplicate(Provider::Stripe, Mode::Test));
        given::<Gateways>(vec![added(first, stripe(Mode::Test))])
            .when(GatewaysCommand::Add {
                gateway_id: second,
                settings: stripe(Mode::Live),
            })
            .then(vec![added(second, stripe(Mode::Live))]);
        // A removed gateway frees its slot.
        given::<Gateways>(vec![
            added(first, stripe(Mode::Test)),
            GatewaysEvent::GatewayRemoved {
                gateway_id: first,
                provider: Provider::Stripe,
                mode: Mode::Test,
            },
        ])
        .when(GatewaysCommand::Add {
            gateway_id: second,
            settings: stripe(Mode::Test),
        })
        .then(vec![added(second, stripe(Mode::Test))]);
    }

    #[test]
    fn each_gateway_has_its_own_version() {
        let (first, second) = (GatewayId::new(), GatewayId::new());
        let history = vec![
            added(first, stripe(Mode::Test)),
            added(second, stripe(Mode::Live)),
        ];
        let mut changed = stripe(Mode::Test);
        changed.currencies.push(CurrencyCode::parse("EUR").unwrap());
        given::<Gateways>(history.clone())
            .when(GatewaysCommand::Change {
                gateway_id: first,
                settings: changed.clone(),
                seen: Some(1),
            })
            .then(vec![GatewaysEvent::GatewayChanged {
                gateway_id: first,
                settings: changed,
            }]);
        given::<Gateways>(history.clone())
            .when(GatewaysCommand::Remove {
                gateway_id: second,
                seen: Some(1),
            })
            .then_error(GatewaysError::Changed {
                seen: 1,
                current: 2,
            });
        given::<Gateways>(history)
            .when(GatewaysCommand::Change {
                gateway_id: first,
                settings: stripe(Mode::Live),
                seen: None,
            })
            .then_error(GatewaysError::SlotChanged);
    }

    #[test]
    fn unknown_gateways_are_not_found_and_unchanged_settings_record_nothing() {
        let id = GatewayId::new();
        given::<Gateways>(vec![])
            .when(GatewaysCommand::RequestVerification {
                gateway_id: id,
                verification_id: Uuid::now_v7(),
                seen: None,
            })
            .then_error(GatewaysError::NotFound);
        given::<Gateways>(vec![added(id, stripe(Mode::Test))])
            .when(GatewaysCommand::Change {
                gateway_id: id,
                settings: stripe(Mode::Test),
                seen: None,
            })
            .then(vec![]);
    }

    #[test]
    fn stripe_keys_must_name_the_gateways_mode() {
        use StripeKey::{Publishable, Secret};
        assert!(check_stripe_key(Publishable, Mode::Test, "pk_test_51Abc").is_ok());
        assert!(check_stripe_key(Secret, Mode::Test, "sk_test_51Abc").is_ok());
        assert!(check_stripe_key(Secret, Mode::Live, "rk_live_51Abc").is_ok());
        for (kind, mode, key) in [
            (Publishable, Mode::Test, "pk_live_51Abc"),
            (Secret, Mode::Live, "sk_test_51Abc"),
            (Secret, Mode::Test, "pk_test_51Abc"),
            (Publishable, Mode::Test, "pk_test_"),
            (Secret, Mode::Test, "sk_test_ abc"),
            (Secret, Mode::Test, ""),
        ] {
            assert!(check_stripe_key(kind, mode, key).is_err(), "{key:?}");
        }
        let refused = check_stripe_key(Secret, Mode::Live, "sk_test_1").unwrap_err();
        assert_eq!(
            refused.0,
            "must be a live mode key, starting with `sk_live_` or `rk_live_`"
        );
    }
}
