//! Windows events as JSON: the flat shape (EventData members at the top level, as NXLog, WEF
//! collectors and the OTRF recordings write them) and the nested shape (`Event.System` /
//! `Event.EventData`, as evtx tools print them).
//!
//! Both become the same flat field names, the ones Sigma rules use: `EventID`, `Channel`,
//! `Computer`, `Provider_Name`, and every EventData member by its own name.

use chainwatch_model::{FieldValue, Fields};

use crate::json::Leaf;
use crate::layout::{Layout, TimeField};

/// The two JSON shapes of Windows events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// EventData members at the top level.
    Flat,
    /// `Event.System` and `Event.EventData`.
    Nested,
}

/// Tells the shape from the flattened leaves.
pub fn detect_shape(leaves: &[Leaf]) -> Shape {
    if leaves.iter().any(|(k, _)| k.starts_with("Event.System.")) {
        Shape::Nested
    } else {
        Shape::Flat
    }
}

/// The flat field name of a nested-shape path, or `None` for paths that carry nothing
/// (`Event.#attributes.xmlns`).
fn nested_name(path: &str) -> Option<String> {
    let path = path.strip_prefix("Event.").unwrap_or(path);
    if let Some(rest) = path.strip_prefix("System.") {
        // Provider.#attributes.Name -> Provider_Name; EventID.#text -> EventID
        let parts: Vec<&str> = rest
            .split('.')
            .filter(|p| *p != "#attributes" && *p != "#text")
            .collect();
        return Some(parts.join("_"));
    }
    if let Some(rest) = path.strip_prefix("EventData.") {
        // Named data is a member; unnamed <Data> is the `Data` list.
        let name = rest.trim_end_matches(".#text");
        return Some(name.rsplit('.').next().unwrap_or(name).to_owned());
    }
    if let Some(rest) = path.strip_prefix("UserData.") {
        // UserData.<Element>.<Member>: the member's own name.
        return Some(rest.rsplit('.').next().unwrap_or(rest).to_owned());
    }
    if path.starts_with("#attributes") {
        return None;
    }
    Some(path.replace('.', "_"))
}

/// Turns leaves into fields by shape.
pub fn to_fields(leaves: Vec<Leaf>, shape: Shape) -> Fields {
    let mut fields = Fields::with_capacity(leaves.len());
    for (path, value) in leaves {
        match shape {
            Shape::Flat => fields.push(path, value),
            Shape::Nested => {
                if let Some(name) = nested_name(&path) {
                    fields.push(name, value);
                }
            }
        }
    }
    fields
}

/// Where flat Windows JSON keeps time and host. `@timestamp` (the shipper's envelope, present on
/// every channel), else `TimeCreated`, else NXLog's `EventTime` (local time without a zone: read
/// in the source's zone). `Hostname` is the origin in NXLog/WEF data, `host` the collector.
pub const FLAT: Layout = Layout {
    time: &[
        TimeField::Text("@timestamp"),
        TimeField::Text("TimeCreated"),
        TimeField::Text("EventTime"),
    ],
    time_names: "@timestamp, TimeCreated, EventTime",
    host: &["Hostname", "Computer", "ComputerName", "host.name", "host"],
    host_names: "Hostname, Computer, ComputerName, host.name, host",
};

/// Where nested Windows JSON and EVTX records keep time and host: `System.TimeCreated` (UTC,
/// from the record's FILETIME) and `System.Computer`.
pub const NESTED: Layout = Layout {
    time: &[TimeField::Text("TimeCreated_SystemTime")],
    time_names: "Event.System.TimeCreated",
    host: &["Computer"],
    host_names: "Event.System.Computer",
};

/// The layout of a shape.
pub fn layout(shape: Shape) -> &'static Layout {
    match shape {
        Shape::Flat => &FLAT,
        Shape::Nested => &NESTED,
    }
}

/// Provider name fields, in the order they are tried.
pub const PROVIDER_FIELDS: [&str; 3] = ["Provider_Name", "SourceName", "ProviderName"];

/// The event id, from a number or a numeric string.
pub fn event_id(fields: &Fields) -> Option<u32> {
    match fields.get("EventID")? {
        FieldValue::Int(i) => u32::try_from(*i).ok(),
        FieldValue::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_paths_get_sigma_names() {
        assert_eq!(
            nested_name("Event.System.Provider.#attributes.Name").as_deref(),
            Some("Provider_Name")
        );
        assert_eq!(
            nested_name("Event.System.EventID").as_deref(),
            Some("EventID")
        );
        assert_eq!(
            nested_name("Event.System.EventID.#text").as_deref(),
            Some("EventID")
        );
        assert_eq!(
            nested_name("Event.System.TimeCreated.#attributes.SystemTime").as_deref(),
            Some("TimeCreated_SystemTime")
        );
        assert_eq!(
            nested_name("Event.EventData.CommandLine").as_deref(),
            Some("CommandLine")
        );
        assert_eq!(nested_name("Event.EventData.Data").as_deref(), Some("Data"));
        assert_eq!(
            nested_name("Event.UserData.LogFileCleared.SubjectUserName").as_deref(),
            Some("SubjectUserName")
        );
        assert_eq!(nested_name("Event.#attributes.xmlns"), None);
    }
}
