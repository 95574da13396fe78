//! `event_count` and `value_count`: how many events, or how many distinct values of a field,
//! fall in a sliding window of the timespan, per tenant and group key.
//!
//! Windows are anchored at events, not at clock boundaries (a window is `[t, t + timespan]` for
//! the time `t` of a hit), so a burst is found wherever it falls. How windows are decided
//! depends on the condition:
//!
//! - only lower bounds (`gt`, `gte`): adding hits can only make a window satisfy them, so
//!   every window containing the new hit is checked, and the correlation fires as soon as one
//!   does. Its hits are used up: the next firing needs new events.
//! - an upper bound (`lt`, `lte`, `eq`): a window can only be decided once no more hits can
//!   join it, when the tenant's event time has passed its end by the allowed lateness (or the
//!   input ends: [`Count::finish`]). Such windows are laid end to end: each starts at the
//!   earliest hit not yet in a decided window, and its hits are done once it is decided,
//!   whether it fired or not. (Checking every window, as for lower bounds, would make "fewer
//!   than 4" hold for the tail of any burst.)
//!
//! Hits and used ids older than lateness + timespan behind the group's newest event are
//! pruned; hits of undecided windows are kept until decided.

use std::collections::{BTreeMap, HashMap};

use chainwatch_model::{EventId, TenantId, Timestamp};
use serde::{Deserialize, Serialize};

use super::groups::{GroupKey, GroupState, Groups, Limits};
use super::{Bounds, Firing, Hit, Outcome, horizon};

/// One group's state (serializable: it is what the changelog holds for the group).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Group {
    /// Hits sorted by (time, id); one per event, whichever rule it matched.
    entries: Vec<Hit>,
    /// Events already used by a firing.
    used: Vec<(Timestamp, EventId)>,
    newest: Option<Timestamp>,
}

impl Group {
    /// The newest event time the group has seen.
    pub(crate) fn newest(&self) -> Option<Timestamp> {
        self.newest
    }
}

impl GroupState for Group {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.used.is_empty()
    }
}

/// What a window measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// `event_count`: the number of events.
    Events,
    /// `value_count`: the number of distinct values of the counted field.
    DistinctValues,
}

/// The state of one count correlation.
#[derive(Debug)]
pub(crate) struct Count {
    groups: Groups<Group>,
    measure: Measure,
    bounds: Bounds,
    /// Upper-bounded conditions: per tenant, window ends and the groups to decide then.
    deadlines: HashMap<TenantId, BTreeMap<Timestamp, Vec<GroupKey>>>,
}

impl Count {
    /// Empty state.
    pub(crate) fn new(measure: Measure, bounds: Bounds) -> Self {
        Self {
            groups: Groups::default(),
            measure,
            bounds,
            deadlines: HashMap::new(),
        }
    }

    /// Groups held.
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    /// Groups evicted so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.groups.evicted
    }

    /// The groups (see [`Groups::track_changes`]).
    pub(crate) fn groups_mut(&mut self) -> &mut Groups<Group> {
        &mut self.groups
    }

    /// Every group now, least recently updated first.
    pub(crate) fn all(&self) -> impl Iterator<Item = (GroupKey, &Group)> {
        self.groups.all()
    }

    /// Puts back a group read from the changelog. Upper-bounded conditions get back a deadline
    /// at the end of each window a held hit starts, as when the hits arrived.
    pub(crate) fn restore(&mut self, key: GroupKey, group: Group, limits: Limits) {
        if !self.bounds.is_monotone() {
            let queue = self.deadlines.entry(key.0.clone()).or_default();
            for e in &group.entries {
                let at = queue
                    .entry(e.time.add_nanos(limits.timespan_ns))
                    .or_default();
                if !at.contains(&key) {
                    at.push(key.clone());
                }
            }
        }
        self.groups.restore(key, group, limits);
    }

    /// Adds a hit to the group `key`; fires when a window satisfies a lower-bounded condition.
    pub(crate) fn observe(&mut self, key: GroupKey, hit: Hit, limits: Limits) -> Outcome {
        if self.measure == Measure::DistinctValues && hit.value.is_none() {
            // An event without the counted field adds no value.
            return Outcome::Stored;
        }
        let (measure, monotone) = (self.measure, self.bounds.is_monotone());
        let bounds = &self.bounds;
        let end = hit.time.add_nanos(limits.timespan_ns);
        let result = self.groups.update(&key, limits, |g| {
            let at = insert(g, hit, limits, monotone)?;
            if !monotone {
                return Ok(None);
            }
            Ok(fire_around(g, at, measure, bounds, limits))
        });
        match result {
            Ok(Some(hits)) => Outcome::Fired(Firing { key, hits }),
            Ok(None) => {
                if !monotone {
                    self.deadlines
                        .entry(key.0.clone())
                        .or_default()
                        .entry(end)
                        .or_default()
                        .push(key);
                }
                Outcome::Stored
            }
            Err(outcome) => outcome,
        }
    }

    /// Decides the windows of `tenant` that ended before `watermark`.
    pub(crate) fn advance(
        &mut self,
        tenant: &TenantId,
        watermark: Timestamp,
        limits: Limits,
    ) -> Vec<Firing> {
        let Some(queue) = self.deadlines.get_mut(tenant) else {
            return Vec::new();
        };
        let mut due: Vec<GroupKey> = Vec::new();
        while let Some(entry) = queue.first_entry() {
            if *entry.key() >= watermark {
                break;
            }
            for k in entry.remove() {
                if !due.contains(&k) {
                    due.push(k);
                }
            }
        }
        if queue.is_empty() {
            self.deadlines.remove(tenant);
        }
        let mut out = Vec::new();
        for key in due {
            self.decide(&key, Some(watermark), limits, &mut out);
        }
        out
    }

    /// Decides every open window (end of input).
    pub(crate) fn finish(&mut self, limits: Limits) -> Vec<Firing> {
        self.deadlines.clear();
        let mut out = Vec::new();
        if !self.bounds.is_monotone() {
            for key in self.groups.keys() {
                self.decide(&key, None, limits, &mut out);
            }
        }
        out
    }

    fn decide(
        &mut self,
        key: &GroupKey,
        watermark: Option<Timestamp>,
        limits: Limits,
        out: &mut Vec<Firing>,
    ) {
        let (measure, bounds) = (self.measure, &self.bounds);
        let fired = self
            .groups
            .peek(key, |g| {
                decide_closed(g, watermark, measure, bounds, limits)
            })
            .unwrap_or_default();
        out.extend(fired.into_iter().map(|hits| Firing {
            key: key.clone(),
            hits,
        }));
    }
}

/// Stores a hit in order; its position, or why it was not stored.
fn insert(g: &mut Group, hit: Hit, limits: Limits, monotone: bool) -> Result<usize, Outcome> {
    if g.used.iter().any(|(_, id)| *id == hit.id) || g.entries.iter().any(|e| e.id == hit.id) {
        return Err(Outcome::Duplicate);
    }
    if let Some(newest) = g.newest
        && hit.time < newest.add_nanos(-limits.lateness_ns)
    {
        return Err(Outcome::Late);
    }
    let newest = g.newest.map_or(hit.time, |n| n.max(hit.time));
    g.newest = Some(newest);
    let key = (hit.time, hit.id);
    let at = g.entries.partition_point(|e| (e.time, e.id) < key);
    g.entries.insert(at, hit);
    // Prune what can no longer join a window; hits of undecided windows (upper-bounded
    // conditions) are kept until decided. The new hit is never pruned: it is not late.
    let oldest = horizon(newest, limits);
    if monotone {
        g.entries.retain(|e| e.time >= oldest);
    }
    g.used.retain(|(t, _)| *t >= oldest);
    Ok(g.entries.partition_point(|e| (e.time, e.id) < key))
}

/// The measure of a run of entries.
fn measure_of(entries: &[Hit], measure: Measure) -> u64 {
    match measure {
        Measure::Events => entries.len() as u64,
        Measure::DistinctValues => {
            let mut values: Vec<&str> = entries.iter().filter_map(|e| e.value.as_deref()).collect();
            values.sort_unstable();
            values.dedup();
            values.len() as u64
        }
    }
}

/// Lower-bounded condition: the earliest window containing `entries[at]` that satisfies the
/// bounds fires; its hits are used up.
fn fire_around(
    g: &mut Group,
    at: usize,
    measure: Measure,
    bounds: &Bounds,
    limits: Limits,
) -> Option<Vec<Hit>> {
    let t = g.entries[at].time;
    let first = g
        .entries
        .partition_point(|e| e.time < t.add_nanos(-limits.timespan_ns));
    let mut hit_window = None;
    // Windows start at each hit from `first` up to the new one (equal times: the first).
    let mut start = first;
    while start <= at {
        let s = g.entries[start].time;
        let end = s.add_nanos(limits.timespan_ns);
        let stop = g.entries.partition_point(|e| e.time <= end);
        if bounds.holds(measure_of(&g.entries[start..stop], measure)) {
            hit_window = Some((start, stop));
            break;
        }
        // Next distinct start time.
        start = g.entries.partition_point(|e| e.time <= s);
    }
    let (start, stop) = hit_window?;
    Some(use_up(g, start, stop))
}

/// Removes `entries[start..stop]`, records them as used, returns them.
fn use_up(g: &mut Group, start: usize, stop: usize) -> Vec<Hit> {
    let taken: Vec<Hit> = g.entries.drain(start..stop).collect();
    g.used.extend(taken.iter().map(|e| (e.time, e.id)));
    taken
}

/// Upper-bounded condition: decides, in order, the windows laid end to end from the earliest
/// hit that ended before the watermark (every one when `None`).
fn decide_closed(
    g: &mut Group,
    watermark: Option<Timestamp>,
    measure: Measure,
    bounds: &Bounds,
    limits: Limits,
) -> Vec<Vec<Hit>> {
    let mut out = Vec::new();
    while let Some(first) = g.entries.first() {
        let end = first.time.add_nanos(limits.timespan_ns);
        if watermark.is_some_and(|w| end >= w) {
            break;
        }
        let stop = g.entries.partition_point(|e| e.time <= end);
        let holds = bounds.holds(measure_of(&g.entries[..stop], measure));
        let hits = use_up(g, 0, stop);
        if holds {
            out.push(hits);
        }
    }
    out
}
