//! `temporal`: per tenant and group key, the hits of each referenced rule, and the search for
//! hits of enough distinct rules within the timespan, in any order. (`temporal_ordered` is
//! [`super::chain`].)
//!
//! Arrival order does not matter: hits are kept sorted by event time, and an event may arrive
//! in any order within the allowed lateness (measured against its group's newest event). When a
//! correlation fires, every hit up to its last one is used up, so a second firing needs new
//! evidence for every rule. Hits older than lateness + timespan behind the newest are pruned.

use chainwatch_model::{EventId, Timestamp};
use serde::{Deserialize, Serialize};

use super::groups::{GroupKey, GroupState, Groups, Limits};
use super::{Firing, Hit, Outcome, horizon};

/// One group's state (serializable: it is what the changelog holds for the group).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Group {
    /// Per input, hits sorted by (time, id).
    inputs: Vec<Vec<Hit>>,
    /// Events already used by a firing, so redelivery cannot reuse them.
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
        self.inputs.iter().all(Vec::is_empty) && self.used.is_empty()
    }
}

/// The state of one temporal correlation.
#[derive(Debug)]
pub(crate) struct Temporal {
    groups: Groups<Group>,
    inputs: usize,
    /// How many distinct rules must be seen.
    min: usize,
}

impl Temporal {
    /// Empty state for a correlation of `inputs` rules, `min` of which must be seen.
    pub(crate) fn new(inputs: usize, min: usize) -> Self {
        Self {
            groups: Groups::default(),
            inputs,
            min,
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

    /// Puts back a group read from the changelog.
    pub(crate) fn restore(&mut self, key: GroupKey, group: Group, limits: Limits) {
        self.groups.restore(key, group, limits);
    }

    /// Adds a hit to the group `key` and looks for a complete set.
    pub(crate) fn observe(&mut self, key: GroupKey, hit: Hit, limits: Limits) -> Outcome {
        let (inputs, min) = (self.inputs, self.min);
        let found = self.groups.update(&key, limits, |g| {
            if g.inputs.len() < inputs {
                g.inputs.resize_with(inputs, Vec::new);
            }
            observe_in_group(g, hit, limits, min)
        });
        match found {
            Ok(Some(hits)) => Outcome::Fired(Firing { key, hits }),
            Ok(None) => Outcome::Stored,
            Err(outcome) => outcome,
        }
    }
}

fn observe_in_group(
    g: &mut Group,
    hit: Hit,
    limits: Limits,
    min: usize,
) -> Result<Option<Vec<Hit>>, Outcome> {
    let input = hit.input;
    if g.used.iter().any(|(_, id)| *id == hit.id) || g.inputs[input].iter().any(|h| h.id == hit.id)
    {
        return Err(Outcome::Duplicate);
    }
    if let Some(newest) = g.newest
        && hit.time < newest.add_nanos(-limits.lateness_ns)
    {
        return Err(Outcome::Late);
    }
    let newest = g.newest.map_or(hit.time, |n| n.max(hit.time));
    g.newest = Some(newest);
    let list = &mut g.inputs[input];
    let at = list.partition_point(|h| (h.time, h.id) < (hit.time, hit.id));
    list.insert(at, hit);

    // Prune what can no longer join a window.
    let oldest = horizon(newest, limits);
    for list in &mut g.inputs {
        list.retain(|h| h.time >= oldest);
    }
    g.used.retain(|(t, _)| *t >= oldest);

    let Some(picks) = find_set(&g.inputs, limits.timespan_ns, min) else {
        return Ok(None);
    };
    let end = picks.iter().map(|h| h.time).max().unwrap_or(newest);
    // Everything up to the end of the window is used up: a second firing needs new evidence
    // for every rule.
    for list in &mut g.inputs {
        list.retain(|h| {
            if h.time <= end {
                g.used.push((h.time, h.id));
                false
            } else {
                true
            }
        });
    }
    Ok(Some(picks))
}

/// The earliest-starting window of at most `timespan_ns` holding hits of at least `min`
/// distinct inputs (distinct events); the earliest hit of each input in it, in input order.
fn find_set(inputs: &[Vec<Hit>], timespan_ns: i64, min: usize) -> Option<Vec<Hit>> {
    if inputs.iter().filter(|l| !l.is_empty()).count() < min {
        return None;
    }
    let mut starts: Vec<Timestamp> = inputs.iter().flatten().map(|h| h.time).collect();
    starts.sort_unstable();
    starts.dedup();
    for start in starts {
        let end = start.add_nanos(timespan_ns);
        let mut picks: Vec<Hit> = Vec::new();
        for list in inputs {
            let from = list.partition_point(|h| h.time < start);
            if let Some(h) = list[from..]
                .iter()
                .take_while(|h| h.time <= end)
                .find(|h| !picks.iter().any(|p| p.id == h.id))
            {
                picks.push(h.clone());
            }
        }
        if picks.len() >= min {
            return Some(picks);
        }
    }
    None
}
