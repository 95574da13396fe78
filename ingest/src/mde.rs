//! Microsoft Defender for Endpoint (Microsoft 365 Defender) records.
//!
//! Two shapes carry the same columns:
//!
//! - advanced-hunting rows, as the API returns them or a query exports them: the table's
//!   columns at the top level (`Timestamp`, `DeviceName`, `ActionType`, `FolderPath`,
//!   `InitiatingProcessFolderPath`, ...);
//! - streaming-API records (Event Hub, storage): `{"time", "tenantId", "category":
//!   "AdvancedHunting-DeviceProcessEvents", "properties": {columns}}`. The columns are
//!   unwrapped to the top level; the envelope fields stay as they are.
//!
//! The table (`DeviceProcessEvents`, ...) becomes the event's channel when the record names it
//! (`category`, or a `Type`, `Table` or `$table` column). `AdditionalFields`, a JSON object that
//! exports often write as a string, is also flattened into `AdditionalFields.<name>`.
//!
//! Time is `Timestamp`, when the event happened on the device; the envelope's `time` and
//! Sentinel's `TimeGenerated` are ingestion times and are not read. The host is `DeviceName`.
//! Cloud-app records (`CloudAppEvents`) have no device: their host is the cloud service
//! (`Application`, such as "Microsoft Exchange Online"), so each service is one host in
//! correlation.

use chainwatch_model::{FieldValue, Fields};

use crate::json::{Leaf, flatten};
use crate::layout::{Layout, TimeField};

/// Where Defender records keep time and host.
pub const LAYOUT: Layout = Layout {
    time: &[TimeField::Text("Timestamp")],
    time_names: "Timestamp",
    host: &["DeviceName", "Application"],
    host_names: "DeviceName, Application (cloud-app records)",
};

/// The streaming API's category prefix.
const CATEGORY_PREFIX: &str = "AdvancedHunting-";

/// Turns flattened leaves into fields, and names the advanced-hunting table when the record
/// does.
pub fn to_fields(leaves: Vec<Leaf>, max_depth: usize) -> (Fields, Option<String>) {
    let mut fields = Fields::with_capacity(leaves.len() + 8);
    let mut extra = Vec::new();
    for (path, value) in leaves {
        let name = path.strip_prefix("properties.").unwrap_or(&path);
        if name == "AdditionalFields"
            && let FieldValue::Str(text) = &value
            && text.trim_start().starts_with('{')
            && let Ok(inner) = flatten(text, max_depth)
        {
            extra.extend(
                inner
                    .into_iter()
                    .map(|(k, v)| (format!("AdditionalFields.{k}"), v)),
            );
        }
        fields.push(name, value);
    }
    for (k, v) in extra {
        if fields.get(&k).is_none() {
            fields.push(k, v);
        }
    }
    let table = ["Table", "Type", "$table"]
        .iter()
        .find_map(|f| fields.get_str(f))
        .map(str::to_owned)
        .or_else(|| {
            fields
                .get_str("category")
                .and_then(|c| c.strip_prefix(CATEGORY_PREFIX))
                .map(str::to_owned)
        })
        .filter(|t| !t.is_empty());
    (fields, table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_records_are_unwrapped() {
        let leaves = flatten(
            r#"{"time":"2024-05-01T10:00:05Z","category":"AdvancedHunting-DeviceProcessEvents","properties":{"Timestamp":"2024-05-01T10:00:00Z","DeviceName":"ws1.corp.local","ActionType":"ProcessCreated","AdditionalFields":"{\"a\":{\"b\":1}}"}}"#,
            16,
        )
        .unwrap();
        let (f, table) = to_fields(leaves, 16);
        assert_eq!(table.as_deref(), Some("DeviceProcessEvents"));
        assert_eq!(f.get_str("ActionType"), Some("ProcessCreated"));
        assert_eq!(f.get("AdditionalFields.a.b"), Some(&FieldValue::Int(1)));
        assert_eq!(
            LAYOUT
                .time(&f, chainwatch_model::time::utc_offset())
                .unwrap()
                .to_string(),
            "2024-05-01T10:00:00.000Z"
        );
    }

    #[test]
    fn cloud_records_are_hosted_by_their_service() {
        let leaves = flatten(
            r#"{"Timestamp":"2021-08-02T13:32:07Z","DeviceName":"","Application":"Microsoft Exchange Online","AdditionalFields":"not json"}"#,
            16,
        )
        .unwrap();
        let (f, table) = to_fields(leaves, 16);
        assert_eq!(table, None);
        assert_eq!(f.get_str("AdditionalFields"), Some("not json"));
        assert_eq!(LAYOUT.host(&f).unwrap().key(), "microsoft exchange online");
    }
}
