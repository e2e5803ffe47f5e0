//! Domain event enums are serde "adjacently tagged" (`{"type": …, "data": …}`); the log stores
//! the tag as `event_type` and the content as `data`.

use serde::{
    Serialize,
    de::{DeserializeOwned, value::MapDeserializer},
};
use serde_json::Value;
use uuid::Uuid;

use super::{NewEvent, RecordedEvent, current_schema_version};

/// A family of domain events that live in streams of one type.
pub trait EventCodec: Serialize + DeserializeOwned {
    const STREAM_TYPE: &'static str;
}

/// Turns a domain event into a new log entry with a fresh id and its current schema version.
pub fn encode<E: EventCodec>(event: &E) -> NewEvent {
    let Value::Object(mut tagged) =
        serde_json::to_value(event).expect("domain events serialize to JSON")
    else {
        unreachable!("adjacently tagged enums serialize to objects")
    };
    let event_type = match tagged.remove("type") {
        Some(Value::String(event_type)) => event_type,
        _ => unreachable!("adjacently tagged enums carry a string tag"),
    };
    // A unit variant has no content: stored as JSON `null`.
    let data = tagged.remove("data").unwrap_or(Value::Null);
    NewEvent {
        event_id: Uuid::now_v7(),
        schema_version: current_schema_version(&event_type),
        event_type,
        data,
    }
}

/// Reads a stored (already upcast) event back into its domain enum.
///
/// The tag is presented before the content, and the content by reference: serde then
/// decodes the content straight into its variant, without copying or buffering it.
pub fn decode<E: EventCodec>(event: &RecordedEvent) -> Result<E, serde_json::Error> {
    let tag = Value::String(event.event_type.clone());
    let mut fields = vec![("type", &tag)];
    if !event.data.is_null() {
        fields.push(("data", &event.data));
    }
    E::deserialize(MapDeserializer::new(fields.into_iter()))
}
