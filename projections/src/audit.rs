//! The audit log: one entry per event, with who, when, from where, a one-line summary and
//! field-level `from → to` changes. Secret fields never reach it: they show as `***`.

use futures::{FutureExt, future::BoxFuture};
use serde_json::{Map, Value, json};
use sqlx::{AnyConnection, Row};
use switchyard_command::{
    account::AccountEvent,
    event_log::{EventCodec, RecordedEvent, decode},
    user::{EmailClaimEvent, UserEvent},
};

use crate::{Projection, ProjectionError};

pub struct AuditProjection;

/// Field names whose values are secrets, wherever they appear.
const SECRET_FIELDS: &[&str] = &[
    "password",
    "password_hash",
    "secret",
    "secret_key",
    "api_key",
    "totp_secret",
    "recovery_codes",
];
pub const REDACTED: &str = "***";

/// What one event means to a person reading the audit log.
struct Described {
    summary: String,
    /// Sections (a named group of fields) the event sets, with their new values.
    sections: Vec<(&'static str, Value)>,
}

fn describe(event: &RecordedEvent) -> Result<Described, serde_json::Error> {
    Ok(match event.stream_type.as_str() {
        AccountEvent::STREAM_TYPE => match decode::<AccountEvent>(event)? {
            AccountEvent::AccountOpened { company, general } => Described {
                summary: format!("Account \"{}\" opened", company.name.as_str()),
                sections: vec![("company", serde_json::to_value(&company)?), ("general", serde_json::to_value(&general)?)],
            },
            AccountEvent::CompanyInformationChanged(company) => Described {
                summary: "Company information changed".into(),
                sections: vec![("company", serde_json::to_value(&company)?)],
            },
            AccountEvent::GeneralInformationChanged(general) => Described {
                summary: "General information changed".into(),
                sections: vec![("general", serde_json::to_value(&general)?)],
            },
        },
        UserEvent::STREAM_TYPE => match decode::<UserEvent>(event)? {
            UserEvent::UserRegistered(registration) => Described {
                summary: format!(
                    "User {} added as {}",
                    registration.email.as_str(),
                    registration.role.as_str()
                ),
                sections: vec![("user", serde_json::to_value(&registration)?)],
            },
        },
        EmailClaimEvent::STREAM_TYPE => match decode::<EmailClaimEvent>(event)? {
            EmailClaimEvent::EmailClaimed { user_id } => Described {
                summary: format!("Email address reserved for user {user_id}"),
                sections: vec![],
            },
        },
        other => Described {
            summary: format!("{} on a {other} stream", event.event_type),
            sections: vec![],
        },
    })
}

/// `{field: {from, to}}` for every field whose value differs, secrets redacted.
pub fn diff(before: &Map<String, Value>, after: &Map<String, Value>) -> Map<String, Value> {
    let mut changes = Map::new();
    let fields = before.keys().chain(after.keys().filter(|k| !before.contains_key(*k)));
    for field in fields {
        let (from, to) = (before.get(field), after.get(field));
        if from == to {
            continue;
        }
        let shown = |value: Option<&Value>| match value {
            None | Some(Value::Null) => Value::Null,
            Some(_) if SECRET_FIELDS.contains(&field.as_str()) => json!(REDACTED),
            Some(value) => value.clone(),
        };
        changes.insert(field.clone(), json!({"from": shown(from), "to": shown(to)}));
    }
    changes
}

impl Projection for AuditProjection {
    fn name(&self) -> &'static str {
        "audit_log"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_log", "audit_sections"]
    }

    fn apply<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        event: &'c RecordedEvent,
    ) -> BoxFuture<'c, Result<(), ProjectionError>> {
        async move {
            let described = describe(event).map_err(ProjectionError::decode(event))?;
            let mut changes = Map::new();
            for (section, value) in described.sections {
                let Value::Object(after) = value else { continue };
                let before = previous_section(conn, &event.stream_id, section).await?;
                changes.extend(diff(&before, &after));
                remember_section(conn, &event.stream_id, section, &after).await?;
            }
            let metadata = &event.metadata;
            sqlx::query(
                "INSERT INTO audit_log (position, account_id, recorded_at, actor_id, client_ip, \
                 user_agent, request_id, event_type, stream_id, summary, changes) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (position) DO NOTHING",
            )
            .bind(event.global_position)
            .bind(metadata.account_id.to_string())
            .bind(event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .bind(metadata.actor.label())
            .bind(metadata.client_ip.as_deref())
            .bind(metadata.user_agent.as_deref())
            .bind(metadata.request_id.as_deref())
            .bind(event.event_type.as_str())
            .bind(event.stream_id.as_str())
            .bind(described.summary)
            .bind(Value::Object(changes).to_string())
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
        .boxed()
    }
}

async fn previous_section(
    conn: &mut AnyConnection,
    stream_id: &str,
    section: &str,
) -> Result<Map<String, Value>, sqlx::Error> {
    let row = sqlx::query("SELECT data FROM audit_sections WHERE stream_id = $1 AND section = $2")
        .bind(stream_id)
        .bind(section)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(row) => serde_json::from_str(&row.try_get::<String, _>(0)?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        None => Map::new(),
    })
}

async fn remember_section(
    conn: &mut AnyConnection,
    stream_id: &str,
    section: &str,
    values: &Map<String, Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_sections (stream_id, section, data) VALUES ($1, $2, $3) \
         ON CONFLICT (stream_id, section) DO UPDATE SET data = excluded.data",
    )
    .bind(stream_id)
    .bind(section)
    .bind(serde_json::to_string(values).expect("JSON map serializes"))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn diff_lists_changed_fields_only() {
        let before = object(json!({"name": "Acme", "city": "Leeds", "country": null}));
        let after = object(json!({"name": "Acme Ltd", "city": "Leeds", "country": "GB"}));
        assert_eq!(
            Value::Object(diff(&before, &after)),
            json!({"name": {"from": "Acme", "to": "Acme Ltd"}, "country": {"from": null, "to": "GB"}})
        );
    }

    #[test]
    fn diff_redacts_secrets() {
        let before = object(json!({"password_hash": "$argon2id$old"}));
        let after = object(json!({"password_hash": "$argon2id$new"}));
        assert_eq!(
            Value::Object(diff(&before, &after)),
            json!({"password_hash": {"from": "***", "to": "***"}})
        );
        let first = diff(&Map::new(), &object(json!({"api_key": "sk_live_123"})));
        assert_eq!(Value::Object(first), json!({"api_key": {"from": null, "to": "***"}}));
    }
}
