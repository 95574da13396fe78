//! Format detection for `format = "auto"`: which JSON format a record is, from its field names.
//!
//! Each format has fields no other has; they are checked from the most specific to the least:
//!
//! | format | told by |
//! |---|---|
//! | Windows, nested | an `Event.System.*` field |
//! | ECS (Winlogbeat) | a `winlog.*` field, or `ecs.version` |
//! | OCSF | `class_uid` together with `time` / `time_dt` or `metadata.*` |
//! | Defender | a streaming `category` of `AdvancedHunting-*`, or `Timestamp` with `DeviceName`, `DeviceId`, `ActionType` or `ReportId` |
//! | Windows, flat | `EventID` |
//! | W3C as JSON | `cs-uri-stem` or `cs-method` |
//! | ECS (other agents) | `@timestamp` with `event.category`, `event.kind` or `event.dataset` |
//!
//! Anything else is an unknown format. Binary EVTX, gzip and W3C text are told apart before
//! JSON is parsed, by their first bytes (`crate::payload`).

use chainwatch_model::FieldValue;

use crate::json::Leaf;

/// A JSON record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// Windows, EventData at the top level.
    WindowsFlat,
    /// Windows, `Event.System` / `Event.EventData`.
    WindowsNested,
    /// Elastic Common Schema.
    Ecs,
    /// Defender for Endpoint.
    Mde,
    /// W3C fields as JSON.
    W3c,
    /// OCSF.
    Ocsf,
}

/// The format of a flattened JSON record, or `None`.
pub fn json_kind(leaves: &[Leaf]) -> Option<JsonKind> {
    let mut nested = false;
    let mut winlog = false;
    let mut class_uid = false;
    let mut ocsf_time = false;
    let mut metadata = false;
    let mut streaming = false;
    let mut timestamp = false;
    let mut device = false;
    let mut event_id = false;
    let mut w3c = false;
    let mut at_timestamp = false;
    let mut ecs_event = false;
    for (k, v) in leaves {
        let k = k.as_str();
        nested |= k.starts_with("Event.System.");
        winlog |= k.starts_with("winlog.") || k == "ecs.version";
        class_uid |= k == "class_uid";
        ocsf_time |= k == "time" || k == "time_dt";
        metadata |= k.starts_with("metadata.");
        streaming |=
            k == "category" && matches!(v, FieldValue::Str(s) if s.starts_with("AdvancedHunting-"));
        timestamp |= k == "Timestamp" || k == "properties.Timestamp";
        device |= matches!(
            k.strip_prefix("properties.").unwrap_or(k),
            "DeviceName" | "DeviceId" | "ActionType" | "ReportId"
        );
        event_id |= k == "EventID";
        w3c |= k == "cs-uri-stem" || k == "cs-method";
        at_timestamp |= k == "@timestamp";
        ecs_event |= matches!(k, "event.category" | "event.kind" | "event.dataset");
    }
    if nested {
        Some(JsonKind::WindowsNested)
    } else if winlog {
        Some(JsonKind::Ecs)
    } else if class_uid && (ocsf_time || metadata) {
        Some(JsonKind::Ocsf)
    } else if streaming || (timestamp && device) {
        Some(JsonKind::Mde)
    } else if event_id {
        Some(JsonKind::WindowsFlat)
    } else if w3c {
        Some(JsonKind::W3c)
    } else if at_timestamp && ecs_event {
        Some(JsonKind::Ecs)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::flatten;

    fn kind(json: &str) -> Option<JsonKind> {
        json_kind(&flatten(json, 16).unwrap())
    }

    #[test]
    fn each_format_is_told_by_its_own_fields() {
        assert_eq!(
            kind(r#"{"Event":{"System":{"EventID":1}}}"#),
            Some(JsonKind::WindowsNested)
        );
        assert_eq!(
            kind(r#"{"@timestamp":"x","winlog":{"event_id":"1"},"EventID":1}"#),
            Some(JsonKind::Ecs)
        );
        assert_eq!(
            kind(r#"{"class_uid":1007,"time":1,"activity_id":1}"#),
            Some(JsonKind::Ocsf)
        );
        assert_eq!(
            kind(r#"{"Timestamp":"x","DeviceName":"d","ActionType":"ProcessCreated"}"#),
            Some(JsonKind::Mde)
        );
        assert_eq!(
            kind(r#"{"time":"x","category":"AdvancedHunting-DeviceEvents","properties":{}}"#),
            Some(JsonKind::Mde)
        );
        assert_eq!(
            kind(r#"{"EventID":4688,"Channel":"Security"}"#),
            Some(JsonKind::WindowsFlat)
        );
        assert_eq!(
            kind(r#"{"date":"2021-01-01","cs-method":"GET"}"#),
            Some(JsonKind::W3c)
        );
        assert_eq!(
            kind(r#"{"@timestamp":"x","event":{"category":["process"]}}"#),
            Some(JsonKind::Ecs)
        );
        assert_eq!(kind(r#"{"hello":"world"}"#), None);
        assert_eq!(kind(r#"{"class_uid":1}"#), None);
    }
}
