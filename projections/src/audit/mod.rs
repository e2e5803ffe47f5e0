//! The audit log: one entry per event, with who, when, from where, a one-line summary and
//! field-level `from → to` changes. Secret fields never reach it: they show as `***`.

use std::collections::{BTreeMap, HashMap};

use futures::{FutureExt, future::BoxFuture};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use switchyard_command::event_log::RecordedEvent;
use switchyard_command::{Backend, db::MAX_PARAMETERS};

use crate::{
    Planner, Projection, ProjectionError,
    bulk::{Param, Rows, write_all},
};

pub struct AuditProjection;

/// Field names whose values are secrets, wherever they appear.
const SECRET_FIELDS: &[&str] = &[
    "password",
    "password_hash",
    "secret",
    "secret_key",
    "api_key",
    "webhook_secret",
    "client_secret",
    "totp_secret",
    "seed",
    "recovery_codes",
];
pub const REDACTED: &str = "***";

mod describe;

use describe::{SECTIONS, describe};

/// How one field changed, as the audit log shows it.
#[derive(Serialize)]
struct Change {
    from: Value,
    to: Value,
}

/// An entry's changes: `{field: {from, to}}`, fields in order.
type Changes = BTreeMap<String, Change>;

/// Sets `after`'s fields in `known`, and adds every field whose value changed to `changes`,
/// secrets redacted.
fn record_changes(
    known: &mut Map<String, Value>,
    after: Map<String, Value>,
    changes: &mut Changes,
) {
    for (field, to) in after {
        let secret = SECRET_FIELDS.contains(&field.as_str());
        // A secret is kept as a fingerprint: enough to tell that it changed, nothing that
        // `audit_sections` could give away.
        let to = if secret { fingerprint(to) } else { to };
        if known.get(&field) == Some(&to) {
            continue;
        }
        let shown = |value: Option<Value>| match value {
            None | Some(Value::Null) => Value::Null,
            Some(_) if secret => Value::from(REDACTED),
            Some(value) => value,
        };
        let shown_to = shown(Some(to.clone()));
        let from = known.insert(field.clone(), to);
        let change = Change {
            from: shown(from),
            to: shown_to,
        };
        changes.insert(field, change);
    }
}

/// `sha256:<hex>` of a secret's stored form; `null` stays `null` (no secret set).
fn fingerprint(secret: Value) -> Value {
    match secret {
        Value::Null => Value::Null,
        value => {
            let digest = Sha256::digest(value.to_string().as_bytes());
            Value::from(format!("sha256:{}", hex::encode(digest)))
        }
    }
}

/// Last known values of each stream's sections.
type Sections = HashMap<String, HashMap<&'static str, Section>>;

#[derive(Default)]
struct Section {
    values: Map<String, Value>,
    /// Set by an event since `take_latest` last wrote it.
    unsaved: bool,
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
        events: &'c [RecordedEvent],
    ) -> BoxFuture<'c, Result<(), ProjectionError>> {
        async move {
            let mut planner = AuditPlanner {
                sections: previous_sections(conn, events).await?,
            };
            Ok(write_all(conn, planner.plan_with_latest(events)?).await?)
        }
        .boxed()
    }

    fn planner(&self) -> Option<Box<dyn Planner>> {
        Some(Box::new(AuditPlanner::default()))
    }
}

/// Diffs each event against the last known values of its sections: read back from
/// `audit_sections` by the live projection, since another process may have moved them;
/// kept from earlier batches by a rebuild, which alone writes its tables.
#[derive(Default)]
struct AuditPlanner {
    sections: Sections,
}

impl Planner for AuditPlanner {
    fn plan(&mut self, events: &[RecordedEvent]) -> Result<Vec<Rows>, ProjectionError> {
        let mut entries = Vec::with_capacity(events.len());
        for event in events {
            let described = describe(event).map_err(ProjectionError::decode(event))?;
            let mut changes = Changes::new();
            for (section, value) in described.sections {
                let Value::Object(after) = value else {
                    continue;
                };
                // Looked up by reference first: the stream id is cloned only on first sight.
                let stream = match self.sections.get_mut(&event.stream_id) {
                    Some(stream) => stream,
                    None => self.sections.entry(event.stream_id.clone()).or_default(),
                };
                let section = stream.entry(section).or_default();
                record_changes(&mut section.values, after, &mut changes);
                section.unsaved = true;
            }
            entries.push(entry(event, described.summary, changes));
        }
        Ok(vec![Rows {
            insert: "INSERT INTO audit_log (position, account_id, recorded_at, actor_id, \
                     client_ip, user_agent, request_id, event_type, stream_id, summary, changes)",
            on_conflict: "ON CONFLICT (position) DO NOTHING",
            rows: entries,
        }])
    }

    fn event_tables(&self) -> &'static [&'static str] {
        &["audit_log"]
    }

    fn take_latest(&mut self) -> Vec<Rows> {
        let mut rows = Vec::new();
        for (stream, sections) in &mut self.sections {
            for (name, section) in sections.iter_mut().filter(|(_, s)| s.unsaved) {
                section.unsaved = false;
                let data = serde_json::to_string(&section.values).expect("JSON serializes");
                rows.push(vec![stream.as_str().into(), (*name).into(), data.into()]);
            }
        }
        vec![Rows {
            insert: "INSERT INTO audit_sections (stream_id, section, data)",
            on_conflict: "ON CONFLICT (stream_id, section) DO UPDATE SET data = excluded.data",
            rows,
        }]
    }
}

fn entry(event: &RecordedEvent, summary: String, changes: Changes) -> Vec<Param> {
    let metadata = &event.metadata;
    vec![
        event.global_position.into(),
        metadata.account_id.to_string().into(),
        event.recorded_at.into(),
        metadata.actor.label().into(),
        metadata.client_ip.clone().into(),
        metadata.user_agent.clone().into(),
        metadata.request_id.clone().into(),
        event.event_type.as_str().into(),
        event.stream_id.as_str().into(),
        summary.into(),
        serde_json::to_string(&changes)
            .expect("changes serialize")
            .into(),
    ]
}

/// The stored section values of every stream in the batch.
async fn previous_sections(
    conn: &mut AnyConnection,
    events: &[RecordedEvent],
) -> Result<Sections, sqlx::Error> {
    let mut streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let mut sections = Sections::new();
    for chunk in streams.chunks(MAX_PARAMETERS) {
        let sql = format!(
            "SELECT stream_id, section, data FROM audit_sections WHERE stream_id IN ({})",
            Backend::of(conn).placeholders(chunk.len(), "")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for stream in chunk {
            query = query.bind(*stream);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let section: String = row.try_get(1)?;
            let Some(section) = SECTIONS.iter().find(|s| **s == section) else {
                continue;
            };
            let data: Map<String, Value> = serde_json::from_str(&row.try_get::<String, _>(2)?)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let stream: String = row.try_get(0)?;
            let known = Section {
                values: data,
                unsaved: false,
            };
            sections.entry(stream).or_default().insert(section, known);
        }
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    /// The changes `after` makes to `known`, as the audit log stores them.
    fn diff(known: &mut Map<String, Value>, after: Value) -> Value {
        let mut changes = Changes::new();
        record_changes(known, object(after), &mut changes);
        serde_json::to_value(&changes).unwrap()
    }

    #[test]
    fn changes_list_changed_fields_only_and_are_kept() {
        let mut known = object(json!({"name": "Acme", "city": "Leeds", "country": null}));
        let after = json!({"name": "Acme Ltd", "city": "Leeds", "country": "GB"});
        assert_eq!(
            diff(&mut known, after),
            json!({"name": {"from": "Acme", "to": "Acme Ltd"}, "country": {"from": null, "to": "GB"}})
        );
        assert_eq!(
            Value::Object(known),
            json!({"name": "Acme Ltd", "city": "Leeds", "country": "GB"})
        );
    }

    #[test]
    fn changes_redact_secrets() {
        let mut known = object(json!({"password_hash": "$argon2id$old"}));
        let after = json!({"password_hash": "$argon2id$new"});
        assert_eq!(
            diff(&mut known, after),
            json!({"password_hash": {"from": "***", "to": "***"}})
        );
        assert_eq!(
            diff(&mut Map::new(), json!({"api_key": "sk_live_123"})),
            json!({"api_key": {"from": null, "to": "***"}})
        );
    }

    #[test]
    fn known_values_keep_secrets_as_fingerprints_only() {
        let mut known = Map::new();
        let first = json!({"password": "v1.k1.sealed-one", "host": "smtp.example.com"});
        diff(&mut known, first.clone());
        let kept = Value::Object(known.clone()).to_string();
        assert!(!kept.contains("sealed-one"), "{kept}");
        assert!(known["password"].as_str().unwrap().starts_with("sha256:"));
        // The same secret again is no change; another one is, and a cleared one shows null.
        assert_eq!(diff(&mut known, first), json!({}));
        assert_eq!(
            diff(&mut known, json!({"password": "v1.k1.sealed-two"})),
            json!({"password": {"from": "***", "to": "***"}})
        );
        assert_eq!(
            diff(&mut known, json!({"password": null})),
            json!({"password": {"from": "***", "to": null}})
        );
    }

    #[test]
    fn stored_changes_are_compact_json_in_field_order() {
        let mut changes = Changes::new();
        let after = object(json!({"b": 2, "a": "x \"y\""}));
        record_changes(&mut Map::new(), after, &mut changes);
        assert_eq!(
            serde_json::to_string(&changes).unwrap(),
            r#"{"a":{"from":null,"to":"x \"y\""},"b":{"from":null,"to":2}}"#
        );
    }
}
