//! Correlation state: what each correlation rule remembers between events, per tenant and
//! group-by key, and when it fires.
//!
//! - [`chain`]: `temporal_ordered`, with what playbooks add (gaps, counts, optional and "N of
//!   M" stages, absence, partial findings, suppression): one hit per stage, in order.
//! - [`temporal`]: `temporal`: hits of the referenced rules within the timespan, in any order.
//! - [`count`]: `event_count` and `value_count`: how many events, or how many distinct values
//!   of a field, within the timespan.
//! - [`groups`]: the bounded group map both use (per-tenant-first eviction, counted).
//!
//! Every kind works on sliding windows in event time: a window may start at any hit, not at
//! fixed bucket boundaries. An input is a detection rule's match (one event) or another
//! correlation's firing (its events), so correlations chain. A hit carries its event id; a
//! group drops a hit it already holds or has used, so a redelivered event never counts twice.

pub(crate) mod chain;
pub(crate) mod count;
pub(crate) mod groups;
pub(crate) mod temporal;
pub(crate) mod values;

use std::sync::Arc;

use chainwatch_config::sigma::Comparison;
use chainwatch_model::{EventId, Evidence, HostName, TenantId, Timestamp};
use serde::{Deserialize, Serialize};

pub(crate) use groups::{GroupKey, Limits};

use crate::persist::{self, StateChange, StateIn, StateOut};

/// One input occurrence: an event that matched a referenced detection rule, or a firing of a
/// referenced correlation. Serializable: it is part of the state written to the changelog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hit {
    /// Event time (for a firing: its last event's time).
    pub(crate) time: Timestamp,
    /// The event's id (for a firing: derived from its alert id). Duplicates are dropped by it.
    pub(crate) id: EventId,
    /// Which of the correlation's `rules` it is a hit of.
    pub(crate) input: usize,
    /// The host of its (last) event.
    pub(crate) host: HostName,
    /// The counted value, for `value_count` (lower-cased); `None` when the field is absent.
    pub(crate) value: Option<Box<str>>,
    /// The events behind it.
    #[serde(with = "shared_slice")]
    pub(crate) evidence: Arc<[Evidence]>,
}

/// Serde for `Arc<[T]>` (as a sequence), without serde's `rc` feature: a restored hit owns its
/// evidence (sharing between hits of one event is an in-memory saving only).
mod shared_slice {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<T: Serialize, S: Serializer>(
        items: &Arc<[T]>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        items.as_ref().serialize(serializer)
    }

    pub(crate) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Arc<[T]>, D::Error> {
        Vec::<T>::deserialize(deserializer).map(Arc::from)
    }
}

/// A correlation that fired: its group and the hits that made it, in event-time order for
/// counts and in input order for temporal kinds.
#[derive(Debug, Clone)]
pub(crate) struct Firing {
    pub(crate) key: GroupKey,
    pub(crate) hits: Vec<Hit>,
}

/// What happened to one hit.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Stored; nothing fired.
    Stored,
    /// Already held or used (a redelivery).
    Duplicate,
    /// Later than the allowed lateness behind its group's newest event.
    Late,
    /// The correlation fired.
    Fired(Firing),
}

/// `correlation.condition`: bounds that must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bounds(pub(crate) Vec<(Comparison, u64)>);

impl Bounds {
    /// Whether `n` satisfies every bound.
    pub(crate) fn holds(&self, n: u64) -> bool {
        self.0.iter().all(|(c, b)| c.holds(n, *b))
    }

    /// True when only lower bounds (`gt`, `gte`): a window that satisfies them keeps doing so
    /// as hits are added, so it may fire at once instead of when the window closes.
    pub(crate) fn is_monotone(&self) -> bool {
        self.0
            .iter()
            .all(|(c, _)| matches!(c, Comparison::Gt | Comparison::Gte))
    }
}

/// The oldest event time that can still join a window, given the group's newest event: older
/// hits and used ids are pruned.
pub(crate) fn horizon(newest: Timestamp, limits: Limits) -> Timestamp {
    newest.add_nanos(-(limits.lateness_ns.saturating_add(limits.timespan_ns)))
}

/// The state of one correlation rule.
#[derive(Debug)]
pub(crate) enum State {
    /// `temporal_ordered` (and playbooks): its own outcomes, see [`chain::Chains`].
    Chain(chain::Chains),
    /// `temporal`.
    Temporal(temporal::Temporal),
    /// `event_count`, `value_count`.
    Count(count::Count),
}

impl State {
    /// Adds a hit to the group `key`.
    pub(crate) fn observe(&mut self, key: GroupKey, hit: Hit, limits: Limits) -> Outcome {
        match self {
            // The engine feeds ordered chains through `Chains::observe`, which also needs the
            // chain's shape and the watermark; nothing comes here for them.
            State::Chain(_) => Outcome::Stored,
            State::Temporal(t) => t.observe(key, hit, limits),
            State::Count(c) => c.observe(key, hit, limits),
        }
    }

    /// Decides windows of `tenant` that closed before `watermark` (conditions with an upper
    /// bound can only be decided once no more hits can arrive).
    pub(crate) fn advance(
        &mut self,
        tenant: &TenantId,
        watermark: Timestamp,
        limits: Limits,
    ) -> Vec<Firing> {
        match self {
            State::Chain(_) | State::Temporal(_) => Vec::new(),
            State::Count(c) => c.advance(tenant, watermark, limits),
        }
    }

    /// Decides every open window: the input has ended.
    pub(crate) fn finish(&mut self, limits: Limits) -> Vec<Firing> {
        match self {
            State::Chain(_) | State::Temporal(_) => Vec::new(),
            State::Count(c) => c.finish(limits),
        }
    }

    /// Groups held.
    pub(crate) fn len(&self) -> usize {
        match self {
            State::Chain(c) => c.len(),
            State::Temporal(t) => t.len(),
            State::Count(c) => c.len(),
        }
    }

    /// Groups evicted so far.
    pub(crate) fn evicted(&self) -> u64 {
        match self {
            State::Chain(c) => c.evicted(),
            State::Temporal(t) => t.evicted(),
            State::Count(c) => c.evicted(),
        }
    }

    /// Starts remembering which groups change (for the changelog).
    pub(crate) fn track_changes(&mut self) {
        match self {
            State::Chain(c) => c.groups_mut().track_changes(),
            State::Temporal(t) => t.groups_mut().track_changes(),
            State::Count(c) => c.groups_mut().track_changes(),
        }
    }

    /// The changelog records of the groups changed since the last call, for the correlation
    /// with `fingerprint`.
    pub(crate) fn take_changes(&mut self, fingerprint: u128, out: &mut Vec<StateChange>) {
        fn push(out: &mut Vec<StateChange>, fp: u128, key: &GroupKey, s: Option<StateOut<'_>>) {
            out.push(StateChange {
                key: persist::key(fp, key),
                value: s.map(|s| persist::encode(fp, key, s)),
            });
        }
        match self {
            State::Chain(c) => {
                for (k, g) in c.groups_mut().take_changes() {
                    push(out, fingerprint, &k, g.map(StateOut::Chain));
                }
            }
            State::Temporal(t) => {
                for (k, g) in t.groups_mut().take_changes() {
                    push(out, fingerprint, &k, g.map(StateOut::Temporal));
                }
            }
            State::Count(c) => {
                for (k, g) in c.groups_mut().take_changes() {
                    push(out, fingerprint, &k, g.map(StateOut::Count));
                }
            }
        }
    }

    /// Tombstones for every group held (the correlation is gone).
    pub(crate) fn tombstones(&self, fingerprint: u128, out: &mut Vec<StateChange>) {
        let keys: Vec<GroupKey> = match self {
            State::Chain(c) => c.all().map(|(k, _)| k).collect(),
            State::Temporal(t) => t.all().map(|(k, _)| k).collect(),
            State::Count(c) => c.all().map(|(k, _)| k).collect(),
        };
        out.extend(keys.into_iter().map(|k| StateChange {
            key: persist::key(fingerprint, &k),
            value: None,
        }));
    }

    /// Puts back a group read from the changelog; its newest event time, or `None` when the
    /// record is of another kind than this correlation's.
    pub(crate) fn restore(
        &mut self,
        key: GroupKey,
        state: StateIn,
        limits: Limits,
    ) -> Option<Option<Timestamp>> {
        match (self, state) {
            (State::Chain(c), StateIn::Chain(g)) => {
                let newest = g.newest();
                c.restore(key, g, limits);
                Some(newest)
            }
            (State::Temporal(t), StateIn::Temporal(g)) => {
                let newest = g.newest();
                t.restore(key, g, limits);
                Some(newest)
            }
            (State::Count(c), StateIn::Count(g)) => {
                let newest = g.newest();
                c.restore(key, g, limits);
                Some(newest)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    /// What one partial chain holds besides its evidence (BENCHMARKS.md, memory): a hit, the
    /// group's state (boxed in the group map) and its key. Guards against a field that makes
    /// every tracked chain bigger.
    #[test]
    fn per_chain_state_stays_small() {
        let key: GroupKey = (
            chainwatch_model::TenantId::new("acme").unwrap(),
            vec![chainwatch_model::SharedStr::from("ws1")].into(),
        );
        let one_value_heap = match &key.1 {
            values::GroupValues::One(_) => 0,
            values::GroupValues::Many(v) => 16 + size_of_val(&**v),
        };
        let sizes = [
            ("Hit", size_of::<Hit>(), 96),
            // With its first stage list and that list's first hit inline: was 96 B plus a
            // 24-B list of stage lists and a 96-B hit list, three allocations; now one.
            ("chain::Group", size_of::<chain::Group>(), 184),
            // A group-by-host key, with what it allocates: the tenant and the values, a lone
            // value inline (it was 32 B and a 32-B one-value slice of its own).
            ("GroupKey", size_of::<GroupKey>() + one_value_heap, 40),
            ("Evidence", size_of::<Evidence>(), 352),
        ];
        for (name, size, bound) in sizes {
            eprintln!("{name}: {size} bytes");
            assert!(size <= bound, "{name} is {size} bytes, more than {bound}");
        }
    }
}
