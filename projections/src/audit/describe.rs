//! What each event means to a person reading the audit log: a one-line summary, and the
//! fields it sets, grouped in named sections so the next change can be diffed against them.

use serde_json::{Value, json};
use switchyard_command::{
    account::AccountEvent,
    channels::ChannelsEvent,
    event_log::{EventCodec, RecordedEvent, decode},
    gateways::{GatewaySettings, GatewaysEvent, Mode, Provider},
    group::{GroupEvent, GroupNameEvent},
    installation::InstallationEvent,
    ledger::{Entry, EntryKind, LedgerEvent},
    roster::RosterEvent,
    user::{EmailClaimEvent, LockoutScope, SecondFactor, UserEvent},
};

/// Every section name `describe` uses.
pub const SECTIONS: &[&str] = &[
    "company",
    "general",
    "user",
    "group",
    "smtp",
    "sms",
    "ledger",
    "gateway_stripe_test",
    "gateway_stripe_live",
    "gateway_paypal_test",
    "gateway_paypal_live",
];

/// A gateway's section: its slot in the account (one gateway per provider and mode), which
/// it keeps for life, on the account's one gateways stream.
fn gateway_section(provider: Provider, mode: Mode) -> &'static str {
    match (provider, mode) {
        (Provider::Stripe, Mode::Test) => "gateway_stripe_test",
        (Provider::Stripe, Mode::Live) => "gateway_stripe_live",
        (Provider::Paypal, Mode::Test) => "gateway_paypal_test",
        (Provider::Paypal, Mode::Live) => "gateway_paypal_live",
    }
}

pub struct Described {
    pub summary: String,
    /// Sections the event sets fields of, with those fields' new values.
    pub sections: Vec<(&'static str, Value)>,
}

fn summary(summary: impl Into<String>) -> Described {
    Described {
        summary: summary.into(),
        sections: vec![],
    }
}

fn setting(summary: impl Into<String>, section: &'static str, fields: Value) -> Described {
    Described {
        summary: summary.into(),
        sections: vec![(section, fields)],
    }
}

pub fn describe(event: &RecordedEvent) -> Result<Described, serde_json::Error> {
    Ok(match event.stream_type.as_str() {
        AccountEvent::STREAM_TYPE => describe_account(decode(event)?)?,
        UserEvent::STREAM_TYPE => describe_user(decode(event)?)?,
        GroupEvent::STREAM_TYPE => describe_group(decode(event)?)?,
        ChannelsEvent::STREAM_TYPE => match decode(event)? {
            ChannelsEvent::SmtpSettingsChanged(smtp) => setting(
                "SMTP settings changed",
                "smtp",
                serde_json::to_value(&smtp)?,
            ),
            ChannelsEvent::SmsSettingsChanged(sms) => {
                setting("SMS settings changed", "sms", serde_json::to_value(&sms)?)
            }
            ChannelsEvent::SmtpTestRequested { to, .. } => {
                summary(format!("Test email to {} requested", to.as_str()))
            }
            ChannelsEvent::SmsTestRequested { to, .. } => {
                summary(format!("Test SMS to {} requested", to.as_str()))
            }
        },
        RosterEvent::STREAM_TYPE => describe_roster(decode(event)?),
        EmailClaimEvent::STREAM_TYPE => match decode(event)? {
            EmailClaimEvent::EmailClaimed { user_id } => {
                summary(format!("Email address reserved for user {user_id}"))
            }
            EmailClaimEvent::EmailReleased { user_id } => {
                summary(format!("Email address released by user {user_id}"))
            }
        },
        GroupNameEvent::STREAM_TYPE => match decode(event)? {
            GroupNameEvent::GroupNameClaimed { group_id } => {
                summary(format!("Group name reserved for group {group_id}"))
            }
            GroupNameEvent::GroupNameReleased { group_id } => {
                summary(format!("Group name released by group {group_id}"))
            }
        },
        InstallationEvent::STREAM_TYPE => match decode(event)? {
            InstallationEvent::OperatorDesignated { account_id } => summary(format!(
                "Account {account_id} designated the operator of the installation"
            )),
        },
        LedgerEvent::STREAM_TYPE => describe_ledger(decode(event)?),
        GatewaysEvent::STREAM_TYPE => describe_gateways(decode(event)?)?,
        other => summary(format!("{} on a {other} stream", event.event_type)),
    })
}

fn describe_ledger(event: LedgerEvent) -> Described {
    let ledger = |summary: String, field: &str, value: Value| {
        setting(summary, "ledger", json!({ field: value }))
    };
    match event {
        LedgerEvent::EntryRecorded(Entry {
            kind,
            amount,
            balance_after,
            description,
            ..
        }) => {
            let what = match kind {
                EntryKind::Payment { .. } => format!("Payment of {amount} credited"),
                EntryKind::Refund { .. } => format!("Refund of {amount} debited"),
                EntryKind::PackageCharge { .. } => format!("Package charge of {amount}"),
                EntryKind::UsageCharge { .. } => format!("Usage charge of {amount}"),
                EntryKind::Adjustment => format!("Balance adjusted by {amount}"),
            };
            let summary = format!("{what}: {description}");
            ledger(summary, "balance", balance_after.to_string().into())
        }
        LedgerEvent::DebitLimitSet { debit_limit } => ledger(
            format!("Debit limit set to {debit_limit}"),
            "debit_limit",
            debit_limit.to_string().into(),
        ),
        LedgerEvent::LowBalanceThresholdSet { threshold } => ledger(
            match threshold {
                Some(threshold) => format!("Low-balance alert set below {threshold}"),
                None => "Low-balance alert turned off".into(),
            },
            "low_balance_threshold",
            threshold.map(|t| t.to_string()).into(),
        ),
        LedgerEvent::BalanceFellBelowThreshold {
            available,
            threshold,
        } => summary(format!(
            "Available balance {available} fell below the alert threshold {threshold}"
        )),
        LedgerEvent::BalanceRecovered { available } => summary(format!(
            "Available balance {available} is back above the alert threshold"
        )),
    }
}

fn describe_gateways(event: GatewaysEvent) -> Result<Described, serde_json::Error> {
    let gateway = |provider: Provider, mode: Mode| {
        format!("{} gateway ({} mode)", provider.name(), mode.as_str())
    };
    // The sealed secrets are in `fields` as stored: the audit keeps them as fingerprints
    // and shows them as `***` (their field names are secret ones).
    let fields = |gateway_id, settings: &GatewaySettings| {
        let mut fields = serde_json::to_value(settings)?;
        fields["id"] = json!(gateway_id);
        fields["surcharge"] = json!(settings.surcharge.map(|money| money.to_string()));
        Ok::<_, serde_json::Error>(fields)
    };
    Ok(match event {
        GatewaysEvent::GatewayAdded {
            gateway_id,
            settings,
        } => {
            let (provider, mode) = settings.slot();
            setting(
                format!("{} added", gateway(provider, mode)),
                gateway_section(provider, mode),
                fields(gateway_id, &settings)?,
            )
        }
        GatewaysEvent::GatewayChanged {
            gateway_id,
            settings,
        } => {
            let (provider, mode) = settings.slot();
            setting(
                format!("{} changed", gateway(provider, mode)),
                gateway_section(provider, mode),
                fields(gateway_id, &settings)?,
            )
        }
        GatewaysEvent::GatewayRemoved {
            gateway_id,
            provider,
            mode,
        } => setting(
            format!("{} {gateway_id} removed", gateway(provider, mode)),
            gateway_section(provider, mode),
            json!({ "id": null }),
        ),
        GatewaysEvent::GatewayVerificationRequested { gateway_id, .. } => {
            summary(format!("Verification of gateway {gateway_id} requested"))
        }
    })
}

fn describe_account(event: AccountEvent) -> Result<Described, serde_json::Error> {
    Ok(match event {
        AccountEvent::AccountOpened { company, general } => Described {
            summary: format!("Account \"{}\" opened", company.name.as_str()),
            sections: vec![
                ("company", serde_json::to_value(&company)?),
                ("general", serde_json::to_value(&general)?),
            ],
        },
        AccountEvent::CompanyInformationChanged(company) => setting(
            "Company information changed",
            "company",
            serde_json::to_value(&company)?,
        ),
        AccountEvent::GeneralInformationChanged(general) => setting(
            "General information changed",
            "general",
            serde_json::to_value(&general)?,
        ),
    })
}

fn describe_user(event: UserEvent) -> Result<Described, serde_json::Error> {
    Ok(match event {
        UserEvent::UserRegistered(registration) => setting(
            format!(
                "User {} added as {}",
                registration.email.as_str(),
                registration.role.as_str()
            ),
            "user",
            serde_json::to_value(&registration)?,
        ),
        UserEvent::ProfileChanged(profile) => {
            setting("Profile changed", "user", serde_json::to_value(&profile)?)
        }
        UserEvent::EmailChanged { email } => setting(
            format!("Email changed to {}", email.as_str()),
            "user",
            json!({ "email": email }),
        ),
        UserEvent::RoleChanged { role } => setting(
            format!("Role changed to {}", role.as_str()),
            "user",
            json!({ "role": role }),
        ),
        UserEvent::GroupsChanged { groups } => {
            setting("Groups changed", "user", json!({ "groups": groups }))
        }
        UserEvent::PasswordChanged { password_hash } => setting(
            "Password changed; other sessions ended",
            "user",
            json!({ "password_hash": password_hash }),
        ),
        UserEvent::UserDeleted => summary("User deleted; their sessions ended"),
        UserEvent::UserDisabled => setting(
            "User disabled; their sessions ended",
            "user",
            json!({ "enabled": false }),
        ),
        UserEvent::UserEnabled => setting("User enabled", "user", json!({ "enabled": true })),
        UserEvent::TotpSetupStarted { .. } => summary("Two-factor login setup started"),
        UserEvent::TotpEnabled { .. } => setting(
            "Two-factor login turned on; recovery codes issued",
            "user",
            json!({ "totp_enabled": true }),
        ),
        UserEvent::TotpDisabled {
            reset_by_administrator,
        } => setting(
            match reset_by_administrator {
                true => "Two-factor login reset by an administrator",
                false => "Two-factor login turned off",
            },
            "user",
            json!({ "totp_enabled": false }),
        ),
        UserEvent::LoggedIn { second_factor } => summary(match second_factor {
            SecondFactor::None => "Logged in with a password",
            SecondFactor::Totp { .. } => "Logged in with a password and an authenticator code",
            SecondFactor::RecoveryCode { .. } => "Logged in with a password and a recovery code",
        }),
        UserEvent::LoginLockedOut { scope, until } => summary(format!(
            "Login locked out {} until {} after repeated failures",
            match scope {
                LockoutScope::Client => "for this client",
                LockoutScope::Account => "for every client not used lately",
            },
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
    })
}

fn describe_group(event: GroupEvent) -> Result<Described, serde_json::Error> {
    Ok(match event {
        GroupEvent::GroupCreated { settings, .. } => setting(
            format!("Group \"{}\" created", settings.name.as_str()),
            "group",
            serde_json::to_value(&settings)?,
        ),
        GroupEvent::GroupChanged(settings) => setting(
            format!("Group \"{}\" changed", settings.name.as_str()),
            "group",
            serde_json::to_value(&settings)?,
        ),
        GroupEvent::GroupDeleted => summary("Group deleted"),
    })
}

fn describe_roster(event: RosterEvent) -> Described {
    summary(match event {
        RosterEvent::MemberJoined { user_id, role } => {
            format!("User {user_id} joined the account as {}", role.as_str())
        }
        RosterEvent::MemberRoleChanged { user_id, role } => {
            format!("User {user_id} is now {}", role.as_str())
        }
        RosterEvent::MemberLeft { user_id } => format!("User {user_id} left the account"),
        RosterEvent::MemberDisabled { user_id } => format!("User {user_id} disabled"),
        RosterEvent::MemberEnabled { user_id } => format!("User {user_id} enabled"),
    })
}
