//! Ordered chains (`temporal_ordered`): per tenant and group key, the hits of each stage, and
//! the search for stages in event-time order within the timespan.
//!
//! State is bounded: events older than the group's newest event by more than the allowed
//! lateness are late and dropped; hits older than lateness + timespan behind the newest are
//! pruned; groups beyond the per-tenant or global limit are evicted least-recently-updated
//! first, the per-tenant limit first, so one noisy tenant evicts its own groups, not others'.

use std::collections::{BTreeMap, HashMap};

use chainwatch_model::{EventId, Evidence, HostName, TenantId, Timestamp};

/// The key of a group: the tenant and the group-by values.
pub(crate) type GroupKey = (TenantId, Box<[Box<str>]>);

/// One event that showed one stage.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) time: Timestamp,
    pub(crate) id: EventId,
    pub(crate) host: HostName,
    pub(crate) evidence: Box<Evidence>,
}

#[derive(Debug, Default)]
struct Group {
    /// Per stage, hits sorted by (time, id).
    stages: Vec<Vec<Hit>>,
    /// Events already used by a finding (or seen before it), so redelivery cannot reuse them.
    consumed: Vec<(Timestamp, EventId)>,
    newest: Option<Timestamp>,
    touched: u64,
}

/// What happened to one hit.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Stored; no complete chain yet.
    Stored,
    /// Already held (a redelivery).
    Duplicate,
    /// Too far behind the group's newest event.
    Late,
    /// A chain completed: one hit per stage, in order.
    Complete(Vec<Hit>),
}

/// Limits of one correlation's state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) lateness_ns: i64,
    pub(crate) timespan_ns: i64,
    pub(crate) max_groups: usize,
    pub(crate) max_groups_per_tenant: usize,
}

/// The state of one ordered correlation.
#[derive(Debug, Default)]
pub(crate) struct OrderedChains {
    groups: HashMap<GroupKey, Group>,
    lru: BTreeMap<u64, GroupKey>,
    per_tenant: HashMap<TenantId, BTreeMap<u64, GroupKey>>,
    tick: u64,
    pub(crate) evicted: u64,
}

impl OrderedChains {
    /// Number of tracked groups (partial chains).
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    fn touch(&mut self, key: &GroupKey) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(g) = self.groups.get_mut(key) {
            let old = std::mem::replace(&mut g.touched, tick);
            self.lru.remove(&old);
            if let Some(t) = self.per_tenant.get_mut(&key.0) {
                t.remove(&old);
            }
        }
        self.lru.insert(tick, key.clone());
        self.per_tenant
            .entry(key.0.clone())
            .or_default()
            .insert(tick, key.clone());
    }

    fn remove(&mut self, key: &GroupKey) {
        if let Some(g) = self.groups.remove(key) {
            self.lru.remove(&g.touched);
            if let Some(t) = self.per_tenant.get_mut(&key.0) {
                t.remove(&g.touched);
                if t.is_empty() {
                    self.per_tenant.remove(&key.0);
                }
            }
        }
    }

    fn enforce(&mut self, tenant: &TenantId, keep: &GroupKey, limits: Limits) {
        while self
            .per_tenant
            .get(tenant)
            .is_some_and(|t| t.len() > limits.max_groups_per_tenant)
        {
            let Some(victim) = self.per_tenant[tenant]
                .values()
                .find(|k| *k != keep)
                .cloned()
            else {
                break;
            };
            self.remove(&victim);
            self.evicted += 1;
        }
        while self.groups.len() > limits.max_groups {
            let Some(victim) = self.lru.values().find(|k| *k != keep).cloned() else {
                break;
            };
            self.remove(&victim);
            self.evicted += 1;
        }
    }

    /// Adds a hit for `stage` of the group `key` and looks for a complete chain.
    pub(crate) fn observe(
        &mut self,
        key: GroupKey,
        stage: usize,
        stages: usize,
        hit: Hit,
        limits: Limits,
    ) -> Outcome {
        if !self.groups.contains_key(&key) {
            self.groups.insert(
                key.clone(),
                Group {
                    stages: vec![Vec::new(); stages],
                    ..Group::default()
                },
            );
        }
        self.touch(&key);
        let outcome = {
            let Some(g) = self.groups.get_mut(&key) else {
                return Outcome::Stored;
            };
            observe_in_group(g, stage, hit, limits)
        };
        let empty = self
            .groups
            .get(&key)
            .is_some_and(|g| g.stages.iter().all(Vec::is_empty) && g.consumed.is_empty());
        if empty {
            self.remove(&key);
        } else {
            let tenant = key.0.clone();
            self.enforce(&tenant, &key, limits);
        }
        outcome
    }
}

fn observe_in_group(g: &mut Group, stage: usize, hit: Hit, limits: Limits) -> Outcome {
    if g.consumed.iter().any(|(_, id)| *id == hit.id)
        || g.stages[stage].iter().any(|h| h.id == hit.id)
    {
        return Outcome::Duplicate;
    }
    if let Some(newest) = g.newest
        && hit.time < newest.add_nanos(-limits.lateness_ns)
    {
        return Outcome::Late;
    }
    let newest = g.newest.map_or(hit.time, |n| n.max(hit.time));
    g.newest = Some(newest);
    let list = &mut g.stages[stage];
    let at = list.partition_point(|h| (h.time, h.id) < (hit.time, hit.id));
    list.insert(at, hit);

    // Prune what can no longer join a chain.
    let horizon = newest.add_nanos(-(limits.lateness_ns.saturating_add(limits.timespan_ns)));
    for list in &mut g.stages {
        list.retain(|h| h.time >= horizon);
    }
    g.consumed.retain(|(t, _)| *t >= horizon);

    match find_chain(&g.stages, limits.timespan_ns) {
        Some(picks) => {
            let end = picks.last().map_or(newest, |h| h.time);
            // The window up to the end of the chain is used up: a second finding needs new
            // evidence for every stage.
            for list in &mut g.stages {
                list.retain(|h| {
                    if h.time <= end {
                        g.consumed.push((h.time, h.id));
                        false
                    } else {
                        true
                    }
                });
            }
            Outcome::Complete(picks)
        }
        None => Outcome::Stored,
    }
}

/// The earliest-starting chain: one hit per stage, each at or after the previous one in time,
/// all distinct events, spanning at most `timespan_ns`.
fn find_chain(stages: &[Vec<Hit>], timespan_ns: i64) -> Option<Vec<Hit>> {
    if stages.iter().any(Vec::is_empty) {
        return None;
    }
    'start: for first in &stages[0] {
        let mut picks = vec![first.clone()];
        let mut t = first.time;
        for list in &stages[1..] {
            let from = list.partition_point(|h| h.time < t);
            match list[from..]
                .iter()
                .find(|h| !picks.iter().any(|p| p.id == h.id))
            {
                Some(h) => {
                    t = h.time;
                    picks.push(h.clone());
                }
                // Later starts only make this stage harder to place.
                None => return None,
            }
            if t.nanos_since(first.time) > timespan_ns {
                continue 'start;
            }
        }
        return Some(picks);
    }
    None
}
