//! OCSF events, as normalizing pipelines write them (Amazon Security Lake, Tenzir, Vector).
//!
//! An OCSF event already has a class (`class_uid`) and an activity (`activity_id`); the OCSF
//! table maps those numbers to chainwatch's classes and activities and fills the canonical
//! fields from OCSF attribute paths. Attributes keep their dotted OCSF paths as field names
//! (`actor.process.file.path`).
//!
//! Time is `time` (OCSF `timestamp_t`: milliseconds since the Unix epoch), or `time_dt` where a
//! pipeline writes only the date-time form. The host is the `device` the event is about.

use chainwatch_model::Fields;

use crate::json::Leaf;
use crate::layout::{Layout, TimeField};

/// Where OCSF events keep time and host.
pub const LAYOUT: Layout = Layout {
    time: &[TimeField::EpochMillis("time"), TimeField::Text("time_dt")],
    time_names: "time, time_dt",
    host: &["device.hostname", "device.name", "device.ip"],
    host_names: "device.hostname, device.name, device.ip",
};

/// The field naming the product that produced the event.
pub const PRODUCT_FIELD: &str = "metadata.product.name";

/// Turns flattened leaves into fields: OCSF paths are kept as they are.
pub fn to_fields(leaves: Vec<Leaf>) -> Fields {
    let mut fields = Fields::with_capacity(leaves.len());
    for (path, value) in leaves {
        fields.push(path, value);
    }
    fields
}
