//! Account configuration: one JSON document per account and section, with the stream version
//! that last set it (the section's ETag). Sections come from the account stream (company,
//! general) and the channels stream (smtp, sms); secrets are not copied here, only whether
//! one is set. The installation stream marks its operator account (section `operator`).

use std::collections::HashMap;

use futures::future::BoxFuture;
use serde::Serialize;
use sqlx::AnyConnection;
use switchyard_command::{
    account::AccountEvent,
    channels::ChannelsEvent,
    domain::AccountId,
    event_log::{EventCodec, RecordedEvent, decode},
    installation::InstallationEvent,
};

use crate::{Planner, Projection, ProjectionError, bulk::Rows, write_planned};

pub struct ConfigProjection;

/// Section names, shared with the web layer that reads them.
pub const COMPANY_SECTION: &str = "company";
pub const GENERAL_SECTION: &str = "general";
pub const SMTP_SECTION: &str = "smtp";
pub const SMS_SECTION: &str = "sms";
/// Present for the one account that runs the platform (`installation` stream).
pub const OPERATOR_SECTION: &str = "operator";

/// The section as readers see it: a write-only secret becomes `<name>_set: bool`.
pub fn without_secret(value: &impl Serialize, secret: &str) -> serde_json::Value {
    let mut value = serde_json::to_value(value).expect("settings serialize");
    if let Some(fields) = value.as_object_mut() {
        let set = fields.remove(secret).is_some_and(|v| !v.is_null());
        fields.insert(format!("{secret}_set"), set.into());
    }
    value
}

/// The newest value of each (account, section), with the version that set it. Earlier
/// ones are overwritten unserialized: a rebuild serializes each section once, not once per
/// event.
type Latest = HashMap<(AccountId, &'static str), (i64, Box<dyn SectionValue>)>;

/// A section's value, serialized when it is written.
trait SectionValue: Send {
    fn to_json(&self) -> String;
}

impl<T: Serialize + Send> SectionValue for T {
    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("configuration serializes")
    }
}

fn keep(
    latest: &mut Latest,
    event: &RecordedEvent,
    section: &'static str,
    value: impl SectionValue + 'static,
) {
    let account = event.metadata.account_id;
    latest.insert((account, section), (event.version, Box::new(value)));
}

impl Projection for ConfigProjection {
    fn name(&self) -> &'static str {
        "account_config"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["account_config"]
    }

    fn apply<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        events: &'c [RecordedEvent],
    ) -> BoxFuture<'c, Result<(), ProjectionError>> {
        write_planned(ConfigPlanner::default(), conn, events)
    }

    fn planner(&self) -> Option<Box<dyn Planner>> {
        Some(Box::<ConfigPlanner>::default())
    }
}

/// Configuration rows depend on the events alone: the newest value of each section
/// overwrites the stored one.
#[derive(Default)]
struct ConfigPlanner {
    latest: Latest,
}

impl Planner for ConfigPlanner {
    fn plan(&mut self, events: &[RecordedEvent]) -> Result<Vec<Rows>, ProjectionError> {
        let latest = &mut self.latest;
        for event in events
            .iter()
            .filter(|e| e.stream_type == ChannelsEvent::STREAM_TYPE)
        {
            match decode::<ChannelsEvent>(event).map_err(ProjectionError::decode(event))? {
                ChannelsEvent::SmtpSettingsChanged(smtp) => keep(
                    latest,
                    event,
                    SMTP_SECTION,
                    without_secret(&smtp, "password"),
                ),
                ChannelsEvent::SmsSettingsChanged(sms) => {
                    keep(latest, event, SMS_SECTION, without_secret(&sms, "api_key"))
                }
                ChannelsEvent::SmtpTestRequested { .. }
                | ChannelsEvent::SmsTestRequested { .. } => {}
            }
        }
        for event in events
            .iter()
            .filter(|e| e.stream_type == AccountEvent::STREAM_TYPE)
        {
            match decode::<AccountEvent>(event).map_err(ProjectionError::decode(event))? {
                AccountEvent::AccountOpened { company, general } => {
                    keep(latest, event, COMPANY_SECTION, company);
                    keep(latest, event, GENERAL_SECTION, general);
                }
                AccountEvent::CompanyInformationChanged(company) => {
                    keep(latest, event, COMPANY_SECTION, company)
                }
                AccountEvent::GeneralInformationChanged(general) => {
                    keep(latest, event, GENERAL_SECTION, general)
                }
            }
        }
        for event in events
            .iter()
            .filter(|e| e.stream_type == InstallationEvent::STREAM_TYPE)
        {
            match decode::<InstallationEvent>(event).map_err(ProjectionError::decode(event))? {
                InstallationEvent::OperatorDesignated { account_id } => {
                    let value = serde_json::json!({"operator": true});
                    latest.insert(
                        (account_id, OPERATOR_SECTION),
                        (event.version, Box::new(value)),
                    );
                }
            }
        }
        Ok(vec![])
    }

    fn event_tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn take_latest(&mut self) -> Vec<Rows> {
        let rows = self
            .latest
            .drain()
            .map(|((account, section), (version, data))| {
                let data = data.to_json();
                vec![
                    account.to_string().into(),
                    section.into(),
                    version.into(),
                    data.into(),
                ]
            })
            .collect();
        vec![Rows {
            insert: "INSERT INTO account_config (account_id, section, version, data)",
            on_conflict: "ON CONFLICT (account_id, section) DO UPDATE \
                          SET version = excluded.version, data = excluded.data",
            rows,
        }]
    }
}
