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

use chainwatch_model::TenantId;

use super::values::GroupValues;
use crate::recency::Recency;

/// The key of a group: the tenant and the group-by values. Shared: the map and the tenant's
/// recency index hold the same values (a lone value inline, several in one `Arc`). A value is
/// a [`SharedStr`](chainwatch_model::SharedStr): a host key is the host name's own string, not
/// a copy.
pub(crate) type GroupKey = (TenantId, GroupValues);

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

/// The groups of one tenant: keyed by their group-by values alone (the tenant is the outer
/// map's key, held once), with their recency index. One map per tenant also keeps each map's
/// load independent of the others': a map of a million groups over all tenants held two
/// buckets per group.
#[derive(Debug)]
struct TenantGroups<G> {
    map: HashMap<GroupValues, Slot<G>>,
    /// The group-by values by last update.
    lru: Recency<GroupValues>,
}

impl<G> Default for TenantGroups<G> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            lru: Recency::default(),
        }
    }
}

/// Groups of one correlation, bounded, least-recently-updated first out.
#[derive(Debug)]
pub(crate) struct Groups<G> {
    /// Per tenant, its groups. The least recently updated group over all tenants is the
    /// oldest of the tenants' oldest (a few tenants; only asked when the global limit is
    /// reached), so no global index is kept per group.
    tenants: HashMap<TenantId, TenantGroups<G>>,
    /// Groups held over all tenants.
    len: usize,
    tick: u64,
    /// Groups evicted by the limits so far.
    pub(crate) evicted: u64,
    /// Groups changed (or removed) since the last [`Groups::take_changes`]; `None`: not tracked.
    changed: Option<HashSet<GroupKey>>,
}

impl<G> Default for Groups<G> {
    fn default() -> Self {
        Self {
            tenants: HashMap::new(),
            len: 0,
            tick: 0,
            evicted: 0,
            changed: None,
        }
    }
}

impl<G: GroupState> Groups<G> {
    /// Number of groups held.
    pub(crate) fn len(&self) -> usize {
        self.len
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
        let tenant = self.tenants.entry(key.0.clone()).or_default();
        let slot = match tenant.map.get_mut(&key.1) {
            Some(slot) => {
                let old = std::mem::replace(&mut slot.touched, tick);
                tenant.lru.remove(old);
                slot
            }
            None => {
                self.len += 1;
                tenant.map.entry(key.1.clone()).or_insert(Slot {
                    state: Box::default(),
                    touched: tick,
                })
            }
        };
        let out = f(&mut slot.state);
        let empty = slot.state.is_empty();
        tenant.lru.push(tick, key.1.clone());
        self.mark(key);
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
        let slot = self.tenants.get_mut(&key.0)?.map.get_mut(&key.1)?;
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

    fn get(&self, key: &GroupKey) -> Option<&G> {
        self.tenants
            .get(&key.0)
            .and_then(|t| t.map.get(&key.1))
            .map(|s| &*s.state)
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
                let state = self.get(&k);
                (k, state)
            })
            .collect()
    }

    /// Every group key by last update, least recent first.
    fn by_recency(&self) -> Vec<GroupKey> {
        let mut all: Vec<(u64, GroupKey)> = self
            .tenants
            .iter()
            .flat_map(|(tenant, t)| {
                t.lru
                    .iter()
                    .map(|(tick, values)| (tick, (tenant.clone(), values.clone())))
            })
            .collect();
        all.sort_unstable_by_key(|(tick, _)| *tick);
        all.into_iter().map(|(_, k)| k).collect()
    }

    /// Every group now, least recently updated first.
    pub(crate) fn all(&self) -> impl Iterator<Item = (GroupKey, &G)> {
        self.by_recency()
            .into_iter()
            .filter_map(|k| self.get(&k).map(|g| (k, g)))
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
        let tenant = self.tenants.entry(key.0.clone()).or_default();
        tenant.lru.push(tick, key.1.clone());
        tenant.map.insert(
            key.1.clone(),
            Slot {
                state: Box::new(state),
                touched: tick,
            },
        );
        self.len += 1;
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
        if let Some(t) = self.tenants.get_mut(&key.0)
            && let Some(slot) = t.map.remove(&key.1)
        {
            self.len -= 1;
            t.lru.remove(slot.touched);
            if t.lru.is_empty() {
                self.tenants.remove(&key.0);
            }
        }
    }

    fn enforce(&mut self, keep: &GroupKey, limits: Limits) {
        let tenant = &keep.0;
        while self
            .tenants
            .get(tenant)
            .is_some_and(|t| t.lru.len() > limits.max_groups_per_tenant)
        {
            let Some(victim) = self.tenants[tenant]
                .lru
                .iter()
                .find(|(_, values)| **values != keep.1)
                .map(|(_, values)| (tenant.clone(), values.clone()))
            else {
                break;
            };
            self.remove(&victim);
            self.evicted += 1;
        }
        while self.len > limits.max_groups {
            let victim = self
                .tenants
                .iter()
                .filter_map(|(tenant, t)| {
                    t.lru
                        .iter()
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

#[cfg(test)]
mod tests {
    use chainwatch_model::SharedStr;

    use super::*;

    #[derive(Debug, Default)]
    struct Count(u32);

    impl GroupState for Count {
        fn is_empty(&self) -> bool {
            self.0 == 0
        }
    }

    fn key(tenant: &str, value: &str) -> GroupKey {
        (
            TenantId::new(tenant).unwrap(),
            GroupValues::from(vec![SharedStr::from(value)]),
        )
    }

    fn limits(max_groups: usize, max_groups_per_tenant: usize) -> Limits {
        Limits {
            lateness_ns: 0,
            timespan_ns: 0,
            max_groups,
            max_groups_per_tenant,
            max_hits_per_stage: 1,
        }
    }

    fn held(g: &Groups<Count>) -> Vec<(String, String)> {
        g.keys()
            .into_iter()
            .map(|(t, v)| (t.as_str().to_owned(), v[0].to_string()))
            .collect()
    }

    /// Per tenant, its least recently updated group goes first; over all tenants, the least
    /// recently updated group of any tenant; never the group being updated; every eviction
    /// counted, and a group that ends up empty dropped without counting.
    #[test]
    fn limits_evict_the_least_recently_updated_group() {
        let mut g: Groups<Count> = Groups::default();
        let l = limits(4, 2);
        let bump = |c: &mut Count| c.0 += 1;
        g.update(&key("a", "1"), l, bump);
        g.update(&key("b", "1"), l, bump);
        g.update(&key("a", "2"), l, bump);
        g.update(&key("a", "1"), l, bump);
        // Tenant a is full: its least recently updated group (2) goes.
        g.update(&key("a", "3"), l, bump);
        assert_eq!(g.evicted, 1);
        assert_eq!(
            held(&g),
            [("b", "1"), ("a", "1"), ("a", "3")].map(|(t, v)| (t.to_owned(), v.to_owned()))
        );
        g.update(&key("c", "1"), l, bump);
        // Five would be over the global limit: the oldest of all (b/1) goes.
        g.update(&key("c", "2"), l, bump);
        assert_eq!(g.evicted, 2);
        assert_eq!(g.len(), 4);
        assert_eq!(
            held(&g),
            [("a", "1"), ("a", "3"), ("c", "1"), ("c", "2")]
                .map(|(t, v)| (t.to_owned(), v.to_owned()))
        );
        // A group emptied by its update is dropped, not evicted.
        g.update(&key("a", "1"), l, |c| c.0 = 0);
        assert_eq!(g.len(), 3);
        assert_eq!(g.evicted, 2);
        assert_eq!(g.peek(&key("a", "1"), |c| c.0), None);
        assert_eq!(g.peek(&key("a", "3"), |c| c.0), Some(1));
    }
}
