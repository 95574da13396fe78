//! Engine state as changelog records, and back.
//!
//! The correlate stage keeps one engine per partition of `chainwatch.events` and writes every
//! change of its state to a compacted changelog topic, partition for partition (as Kafka
//! Streams does). A record is one group of one correlation: its key names the correlation (by
//! fingerprint), the tenant and the group-by values; its value is the group's whole state (the
//! hits it holds, the events it has used, the finding it is building), or nothing when the
//! group is gone (dropped, evicted, or its correlation removed by a reload). Compaction keeps
//! the latest value per key, so the topic holds the live state and no history.
//!
//! [`Engine::take_changes`](crate::Engine::take_changes) gives the records for the groups
//! changed since the last call; [`Engine::restore`](crate::Engine::restore) rebuilds an engine
//! from the latest value of each key. Records are JSON with a format version: a record of an
//! unknown version or an unknown correlation (its playbook changed while no instance ran it) is
//! skipped and counted, never fatal. The per-tenant event-time clocks are not written: a
//! restored engine takes them from the newest event of its groups, which can only be behind
//! the lost clock, so deadlines are decided later, never earlier.

use chainwatch_model::{SharedStr, TenantId};
use serde::{Deserialize, Serialize};

use crate::correlation::GroupKey;
use crate::correlation::{chain, count, temporal};

/// The version of the record format; records of another version are skipped.
pub const FORMAT_VERSION: u32 = 1;

/// One change of an engine's state: the new value of one group, or `None` when it is gone (a
/// tombstone, which compaction eventually drops with the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The group's changelog key.
    pub key: Vec<u8>,
    /// Its state now.
    pub value: Option<Vec<u8>>,
}

/// What [`Engine::restore`](crate::Engine::restore) did with the records it was given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreStats {
    /// Groups restored.
    pub groups: usize,
    /// Records of correlations the running rules do not have (changed or removed playbooks).
    pub unknown: usize,
    /// Records that could not be read (another format version, damaged).
    pub unreadable: usize,
}

/// A group's state, borrowed for writing.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StateOut<'a> {
    Chain(&'a chain::Group),
    Temporal(&'a temporal::Group),
    Count(&'a count::Group),
}

/// A group's state, read back.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StateIn {
    Chain(chain::Group),
    Temporal(temporal::Group),
    Count(count::Group),
}

#[derive(Serialize)]
struct RecordOut<'a> {
    v: u32,
    correlation: String,
    tenant: &'a TenantId,
    group: &'a [SharedStr],
    state: StateOut<'a>,
}

/// A record read back.
#[derive(Deserialize)]
pub(crate) struct RecordIn {
    v: u32,
    /// The correlation's fingerprint, 32 hex digits.
    pub(crate) correlation: String,
    pub(crate) tenant: TenantId,
    pub(crate) group: Vec<SharedStr>,
    pub(crate) state: StateIn,
}

/// The fingerprint of a correlation as records write it.
pub(crate) fn fingerprint_text(fingerprint: u128) -> String {
    format!("{fingerprint:032x}")
}

/// The changelog key of group `key` of the correlation with `fingerprint`: a JSON array, so
/// distinct groups never share a key whatever their values hold.
pub(crate) fn key(fingerprint: u128, key: &GroupKey) -> Vec<u8> {
    let parts = (fingerprint_text(fingerprint), &key.0, &*key.1);
    serde_json::to_vec(&parts).unwrap_or_default()
}

/// The changelog value of a group.
pub(crate) fn encode(fingerprint: u128, key: &GroupKey, state: StateOut<'_>) -> Vec<u8> {
    let record = RecordOut {
        v: FORMAT_VERSION,
        correlation: fingerprint_text(fingerprint),
        tenant: &key.0,
        group: &key.1,
        state,
    };
    // The state holds strings, numbers and ids only: serializing it cannot fail.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// Reads a changelog value; `None` when it is of another version or damaged.
pub(crate) fn decode(value: &[u8]) -> Option<RecordIn> {
    let record: RecordIn = serde_json::from_slice(value).ok()?;
    (record.v == FORMAT_VERSION).then_some(record)
}
