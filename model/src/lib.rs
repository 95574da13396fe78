//! chainwatch's shared vocabulary.
//!
//! Every other crate speaks in these types: the normalized [`Event`] that ingest produces and the
//! correlator consumes, the [`Alert`] (finding) that the correlator produces and sinks deliver,
//! and the small value types both carry: [`TenantId`], [`HostName`], [`Timestamp`],
//! [`Provenance`], [`EventId`]/[`AlertId`] and ATT&CK [`TechniqueId`]s.
//!
//! This crate does no I/O and knows nothing of Kafka, YAML or the clock: it only defines data,
//! its invariants (a host name is compared case-insensitively without its domain; ids are
//! deterministic hashes) and its JSON form.

pub mod alert;
pub mod attack;
pub mod canonical;
pub mod event;
pub mod host;
pub mod id;
pub mod provenance;
pub mod raw;
pub mod severity;
pub mod shared;
pub mod tenant;
pub mod time;
pub mod wire;

pub use alert::{Alert, AlertKind, Evidence, Lookback, Notable, RuleRef, SparseTarget, Stage};
pub use attack::{Tactic, TechniqueId, TechniqueInfo};
pub use canonical::Canonical;
pub use event::{
    Activity, Event, EventClass, FieldValue, Fields, ProcessInfo, SourceFormat, SourceMeta, Target,
};
pub use host::HostName;
pub use id::{AlertId, EventId};
pub use provenance::Provenance;
pub use raw::{FieldOrigins, Origin, RawField, RawKind, RawRecord};
pub use severity::Severity;
pub use shared::SharedStr;
pub use tenant::TenantId;
pub use time::Timestamp;
