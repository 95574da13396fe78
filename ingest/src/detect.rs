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
    json_kind_of(leaves.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The format of a record from its leaves' paths and, for string leaves, their text (the same
/// decision as [`json_kind`], for readers that do not build leaves).
pub fn json_kind_of<'a>(
    leaves: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Option<JsonKind> {
    let mut clues = KindClues::default();
    for (k, v) in leaves {
        clues.note(k.as_bytes(), v.map(str::as_bytes));
    }
    clues.kind()
}

/// What the fields seen so far say of a record's format; [`KindClues::kind`] decides.
#[derive(Debug, Clone, Copy, Default)]
pub struct KindClues {
    nested: bool,
    winlog: bool,
    class_uid: bool,
    ocsf_time: bool,
    metadata: bool,
    streaming: bool,
    timestamp: bool,
    device: bool,
    event_id: bool,
    w3c: bool,
    at_timestamp: bool,
    ecs_event: bool,
}

impl KindClues {
    /// Notes one leaf: its path and, for a string, its text. Dispatched on the first byte, since
    /// most paths are none of the telling ones.
    #[inline]
    pub fn note(&mut self, k: &[u8], v: Option<&[u8]>) {
        const DEVICE: [&[u8]; 4] = [b"DeviceName", b"DeviceId", b"ActionType", b"ReportId"];
        match k.first() {
            Some(b'E') => {
                self.nested |= k.starts_with(b"Event.System.");
                self.event_id |= k == b"EventID";
            }
            Some(b'w') => self.winlog |= k.starts_with(b"winlog."),
            Some(b'e') => {
                self.winlog |= k == b"ecs.version";
                self.ecs_event |=
                    k == b"event.category" || k == b"event.kind" || k == b"event.dataset";
            }
            Some(b'c') => {
                self.class_uid |= k == b"class_uid";
                self.streaming |=
                    k == b"category" && v.is_some_and(|s| s.starts_with(b"AdvancedHunting-"));
                self.w3c |= k == b"cs-uri-stem" || k == b"cs-method";
            }
            Some(b't') => self.ocsf_time |= k == b"time" || k == b"time_dt",
            Some(b'm') => self.metadata |= k.starts_with(b"metadata."),
            Some(b'T') => self.timestamp |= k == b"Timestamp",
            Some(b'p') => {
                self.timestamp |= k == b"properties.Timestamp";
                self.device |= k
                    .strip_prefix(b"properties.")
                    .is_some_and(|rest| DEVICE.contains(&rest));
            }
            Some(b'D' | b'A' | b'R') => self.device |= DEVICE.contains(&k),
            Some(b'@') => self.at_timestamp |= k == b"@timestamp",
            _ => {}
        }
    }

    /// The format the clues point to, or `None`.
    pub fn kind(&self) -> Option<JsonKind> {
        if self.nested {
            Some(JsonKind::WindowsNested)
        } else if self.winlog {
            Some(JsonKind::Ecs)
        } else if self.class_uid && (self.ocsf_time || self.metadata) {
            Some(JsonKind::Ocsf)
        } else if self.streaming || (self.timestamp && self.device) {
            Some(JsonKind::Mde)
        } else if self.event_id {
            Some(JsonKind::WindowsFlat)
        } else if self.w3c {
            Some(JsonKind::W3c)
        } else if self.at_timestamp && self.ecs_event {
            Some(JsonKind::Ecs)
        } else {
            None
        }
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
