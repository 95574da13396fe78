//! Bounded per-group state, shared by every correlation kind.
//!
//! A group is a tenant and the correlation's group-by values. Groups beyond the per-tenant
//! limit are evicted from that tenant first (least recently updated), before the global limit
//! applies, so one noisy tenant evicts its own state, not others'. Evictions are counted.
//!
//! With change tracking on ([`Groups::track_changes`]), every group updated, dropped or evicted
//! is remembered until [`Groups::take_changes`]: the engine writes those groups (or their
//! removal) to the state changelog.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chainwatch_model::TenantId;

use crate::recency::Recency;

/// The key of a group: the tenant and the group-by values. Shared (`Arc`): the map and the
/// tenant's recency index hold the same values.
pub(crate) type GroupKey = (TenantId, Arc<[Box<str>]>);

/// State that can tell when it holds nothing worth keeping.
pub(crate) trait GroupState: Default {
    /// True when the group can be dropped.
    fn is_empty(&self) -> bool;
}

/// Limits of one correlation's state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How far behind its group's newest event an event may be and still count.
    pub(crate) lateness_ns: i64,
    /// The correlation's timespan.
    pub(crate) timespan_ns: i64,
    /// Most groups over all tenants.
    pub(crate) max_groups: usize,
    /// Most groups of one tenant.
    pub(crate) max_groups_per_tenant: usize,
    /// Most hits one stage of an ordered chain keeps (counting stages need many).
    pub(crate) max_hits_per_stage: usize,
}

/// The state is boxed: the map keeps spare buckets (up to half of them), and a bucket then
/// costs a pointer, not a whole group.
#[derive(Debug)]
struct Slot<G> {
    state: Box<G>,
    touched: u64,
}

/// Groups of one correlation, bounded, least-recently-updated first out.
#[derive(Debug)]
pub(crate) struct Groups<G> {
    map: HashMap<GroupKey, Slot<G>>,
    /// Per tenant, its groups' group-by values by last update. The least recently updated
    /// group over all tenants is the oldest of the tenants' oldest (a few tenants; only asked
    /// when the global limit is reached), so no second, global index is kept per group.
    per_tenant: HashMap<TenantId, Recency<Arc<[Box<str>]>>>,
    tick: u64,
    /// Groups evicted by the limits so far.
    pub(crate) evicted: u64,
    /// Groups changed (or removed) since the last [`Groups::take_changes`]; `None`: not tracked.
    changed: Option<HashSet<GroupKey>>,
}

impl<G> Default for Groups<G> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            per_tenant: HashMap::new(),
            tick: 0,
            evicted: 0,
            changed: None,
        }
    }
}

impl<G: GroupState> Groups<G> {
    /// Number of groups held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Runs `f` on the group `key` (created empty when missing), marks it recently updated,
    /// drops it when it ends up empty, and applies the limits.
    pub(crate) fn update<R>(
        &mut self,
        key: &GroupKey,
        limits: Limits,
        f: impl FnOnce(&mut G) -> R,
    ) -> R {
        self.tick += 1;
        let tick = self.tick;
        let slot = match self.map.get_mut(key) {
            Some(slot) => {
                let old = std::mem::replace(&mut slot.touched, tick);
                if let Some(t) = self.per_tenant.get_mut(&key.0) {
                    t.remove(old);
                }
                slot
            }
            None => self.map.entry(key.clone()).or_insert(Slot {
                state: Box::default(),
                touched: tick,
            }),
        };
        let out = f(&mut slot.state);
        let empty = slot.state.is_empty();
        self.mark(key);
        self.per_tenant
            .entry(key.0.clone())
            .or_default()
            .push(tick, key.1.clone());
        if empty {
            self.remove(key);
        } else {
            self.enforce(key, limits);
        }
        out
    }

    /// Runs `f` on the group `key` if it exists, without marking it updated; drops it when it
    /// ends up empty.
    pub(crate) fn peek<R>(&mut self, key: &GroupKey, f: impl FnOnce(&mut G) -> R) -> Option<R> {
        let slot = self.map.get_mut(key)?;
        let out = f(&mut slot.state);
        if slot.state.is_empty() {
            self.remove(key);
        }
        self.mark(key);
        Some(out)
    }

    /// Starts remembering which groups change, for [`Groups::take_changes`].
    pub(crate) fn track_changes(&mut self) {
        self.changed.get_or_insert_with(HashSet::new);
    }

    fn mark(&mut self, key: &GroupKey) {
        if let Some(changed) = &mut self.changed {
            changed.insert(key.clone());
        }
    }

    /// The groups changed since the last call, each with its state now (`None`: dropped or
    /// evicted), in a stable order.
    pub(crate) fn take_changes(&mut self) -> Vec<(GroupKey, Option<&G>)> {
        let Some(changed) = self.changed.as_mut() else {
            return Vec::new();
        };
        let mut keys: Vec<GroupKey> = changed.drain().collect();
        keys.sort_unstable();
        keys.into_iter()
            .map(|k| {
                let state = self.map.get(&k).map(|s| &*s.state);
                (k, state)
            })
            .collect()
    }

    /// Every group key by last update, least recent first.
    fn by_recency(&self) -> Vec<GroupKey> {
        let mut all: Vec<(u64, GroupKey)> = self
            .per_tenant
            .iter()
            .flat_map(|(tenant, t)| {
                t.iter()
                    .map(|(tick, values)| (tick, (tenant.clone(), values.clone())))
            })
            .collect();
        all.sort_unstable_by_key(|(tick, _)| *tick);
        all.into_iter().map(|(_, k)| k).collect()
    }

    /// Every group now, least recently updated first.
    pub(crate) fn all(&self) -> impl Iterator<Item = (&GroupKey, &G)> {
        self.by_recency()
            .into_iter()
            .filter_map(|k| self.map.get_key_value(&k).map(|(k, s)| (k, &*s.state)))
    }

    /// Puts back a group read from the changelog, as the most recently updated; the limits
    /// apply as for any update. Not a change: the changelog already holds it.
    pub(crate) fn restore(&mut self, key: GroupKey, state: G, limits: Limits) {
        if state.is_empty() {
            return;
        }
        self.remove(&key);
        self.tick += 1;
        let tick = self.tick;
        self.per_tenant
            .entry(key.0.clone())
            .or_default()
            .push(tick, key.1.clone());
        self.map.insert(
            key.clone(),
            Slot {
                state: Box::new(state),
                touched: tick,
            },
        );
        if let Some(changed) = &mut self.changed {
            changed.remove(&key);
        }
        self.enforce(&key, limits);
    }

    /// Every group key, in a stable order (for end-of-input flushing).
    pub(crate) fn keys(&self) -> Vec<GroupKey> {
        self.by_recency()
    }

    fn remove(&mut self, key: &GroupKey) {
        self.mark(key);
        if let Some(slot) = self.map.remove(key)
            && let Some(t) = self.per_tenant.get_mut(&key.0)
        {
            t.remove(slot.touched);
            if t.is_empty() {
                self.per_tenant.remove(&key.0);
            }
        }
    }

    fn enforce(&mut self, keep: &GroupKey, limits: Limits) {
        let tenant = &keep.0;
        while self
            .per_tenant
            .get(tenant)
            .is_some_and(|t| t.len() > limits.max_groups_per_tenant)
        {
            let Some(victim) = self.per_tenant[tenant]
                .iter()
                .find(|(_, values)| **values != keep.1)
                .map(|(_, values)| (tenant.clone(), values.clone()))
            else {
                break;
            };
            self.remove(&victim);
            self.evicted += 1;
        }
        while self.map.len() > limits.max_groups {
            let victim = self
                .per_tenant
                .iter()
                .filter_map(|(tenant, t)| {
                    t.iter()
                        .find(|(_, values)| *tenant != keep.0 || **values != keep.1)
                        .map(|(tick, values)| (tick, tenant, values))
                })
                .min_by_key(|(tick, _, _)| *tick)
                .map(|(_, tenant, values)| (tenant.clone(), values.clone()));
            let Some(victim) = victim else {
                break;
            };
            self.remove(&victim);
            self.evicted += 1;
        }
    }
}
