//! Event schema evolution. An event keeps its type when only its shape changes: the stored
//! `schema_version` says which shape it has, and upcasters bring old shapes to the current
//! one on every read. A changed meaning is a new event type, never an upcaster.

use serde_json::Value;

struct Upcaster {
    event_type: &'static str,
    /// The version this upcaster reads; it produces `from_version + 1`.
    from_version: i32,
    upcast: fn(Value) -> Value,
}

const UPCASTERS: &[Upcaster] = &[Upcaster {
    // v1 named the login-alert switch after the tutorial's "security add-on".
    event_type: "GeneralInformationChanged",
    from_version: 1,
    upcast: rename_security_addon,
}];

fn rename_security_addon(mut data: Value) -> Value {
    if let Some(object) = data.as_object_mut()
        && let Some(value) = object.remove("security_addon")
    {
        object.insert("login_alerts".into(), value);
    }
    data
}

/// The schema version new events of this type are written with.
pub fn current_schema_version(event_type: &str) -> i32 {
    1 + UPCASTERS
        .iter()
        .filter(|upcaster| upcaster.event_type == event_type)
        .count() as i32
}

/// Brings stored data up to the current schema of its event type.
pub(crate) fn upcast(event_type: &str, mut version: i32, mut data: Value) -> (i32, Value) {
    while let Some(upcaster) = UPCASTERS
        .iter()
        .find(|u| u.event_type == event_type && u.from_version == version)
    {
        data = (upcaster.upcast)(data);
        version += 1;
    }
    (version, data)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn upcasts_general_information_v1_to_v2() {
        let v1 = json!({"currency": "EUR", "date_format": "DD.MM.YYYY", "phone": null,
                        "mobile": null, "security_addon": true});
        let (version, data) = upcast("GeneralInformationChanged", 1, v1);
        assert_eq!(version, 2);
        assert_eq!(data["login_alerts"], json!(true));
        assert!(data.get("security_addon").is_none());
        assert_eq!(current_schema_version("GeneralInformationChanged"), 2);
    }

    #[test]
    fn current_versions_pass_through() {
        let data = json!({"name": "Acme"});
        assert_eq!(upcast("AccountOpened", 1, data.clone()), (1, data));
        assert_eq!(current_schema_version("AccountOpened"), 1);
    }
}
