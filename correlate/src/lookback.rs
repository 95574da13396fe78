//! The look-back: per host, the recent notable events (any rule match, whatever its level,
//! standalone or a stage of some chain), so that every alert can carry what else happened on
//! its hosts from a configured period before its first evidence up to its last — the dwell
//! time an analyst asks about first.
//!
//! Bounded three ways, like the correlation state: per host (its oldest entries go first),
//! per tenant and globally (entries of the least recently updated host of the fullest tenant
//! go first, so one noisy tenant drops its own history, not another's). Every entry dropped by
//! a bound is counted, and an alert whose window reaches back past a dropped entry says its
//! look-back is incomplete. Entries older than the retention (the period plus the longest
//! chain and the allowed lateness behind the host's newest entry) age out without counting:
//! no alert can ask for them.
//!
//! Pure: no I/O, no clock. [`LookbackBuffer::snapshot`] and [`LookbackBuffer::restore`] turn
//! it into plain data and back, for whoever persists engine state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chainwatch_model::{
    Alert, Event, EventId, Evidence, HostName, Lookback, Notable, RuleRef, Severity, SharedStr,
    TechniqueId, TenantId, Timestamp,
};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::recency::Recency;
use crate::ruleset::RuleInfo;

/// Bounds and reach of the look-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookbackConfig {
    /// How far before an alert's first evidence its look-back reaches. Zero turns the
    /// look-back off (nothing is kept, alerts carry none).
    pub period: Duration,
    /// Most notable events kept per host.
    pub max_events_per_host: usize,
    /// Most notable events kept per tenant, over its hosts.
    pub max_events_per_tenant: usize,
    /// Most notable events kept over all tenants.
    pub max_events: usize,
    /// Most notable events one alert carries (the lowest levels, then the oldest, are left
    /// out first, and counted in the alert).
    pub max_events_per_alert: usize,
}

impl Default for LookbackConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(24 * 3600),
            max_events_per_host: 256,
            max_events_per_tenant: 100_000,
            max_events: 1_000_000,
            max_events_per_alert: 200,
        }
    }
}

impl From<&chainwatch_config::service::LookbackSettings> for LookbackConfig {
    fn from(s: &chainwatch_config::service::LookbackSettings) -> Self {
        Self {
            period: s.period,
            max_events_per_host: s.max_events_per_host,
            max_events_per_tenant: s.max_events_per_tenant,
            max_events: s.max_events,
            max_events_per_alert: s.max_events_per_alert,
        }
    }
}

impl LookbackConfig {
    /// No look-back.
    pub fn off() -> Self {
        Self {
            period: Duration::ZERO,
            ..Self::default()
        }
    }

    fn enabled(&self) -> bool {
        !self.period.is_zero() && self.max_events_per_host > 0 && self.max_events > 0
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// One notable event as the buffer holds it: its evidence shared with the hits the engine
/// made of the same event and rule, and its rules shared with every entry that matched the
/// same ones. Turned into a [`Notable`] when an alert or a snapshot asks.
#[derive(Debug, Clone)]
struct Entry {
    /// Exactly one evidence (a slice so that it is the same allocation as a hit's).
    evidence: Arc<[Evidence]>,
    rules: Arc<Matched>,
}

/// The rules a notable event matched, highest level first, and their techniques.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Matched {
    rules: Vec<RuleRef>,
    techniques: Vec<TechniqueId>,
}

/// Interned [`Matched`] sets beyond this many are forgotten (entries keep theirs): new
/// entries then start sharing anew. Rule sets hold far fewer combinations.
const MAX_INTERNED: usize = 4096;

impl Entry {
    fn evidence(&self) -> &Evidence {
        &self.evidence[0]
    }

    fn time(&self) -> Timestamp {
        self.evidence().time
    }

    fn id(&self) -> EventId {
        self.evidence().id
    }

    fn level(&self) -> Severity {
        self.rules
            .rules
            .iter()
            .map(|r| r.level)
            .max()
            .unwrap_or(Severity::Informational)
    }

    fn to_notable(&self) -> Notable {
        Notable {
            evidence: self.evidence().clone(),
            rules: self.rules.rules.clone(),
            techniques: self.rules.techniques.clone(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct HostBuffer {
    /// Sorted by (time, event id). The last is the newest entry seen on this host (the clock
    /// its retention runs on): every bound drops the oldest first and never the last one (a
    /// host whose last entry goes is dropped), so no separate field keeps that time. The first
    /// entry is held inline: most hosts have one, and it then costs no allocation.
    entries: SmallVec<[Entry; 1]>,
    touched: u64,
}

/// The notable events of every host, bounded.
#[derive(Debug, Clone, Default)]
pub struct LookbackBuffer {
    config: LookbackConfig,
    retention_ns: i64,
    /// Per tenant: its hosts' buffers, entries held, and its hosts by last update.
    tenants: HashMap<TenantId, TenantIndex>,
    total: usize,
    tick: u64,
    evicted: u64,
    /// Rule sets of entries, shared.
    matched: HashSet<Arc<Matched>>,
}

#[derive(Debug, Clone, Default)]
struct TenantIndex {
    /// Keyed by host key (the host name's own string: 16 bytes, not a host name of 32; the
    /// snapshot writes the key alone, so the name as first seen is not needed), without the
    /// tenant: one map per tenant holds the tenant once and keeps each map's load independent
    /// of the others' (one map of a million hosts over all tenants held two buckets per host).
    /// Boxed: the map keeps spare buckets (up to half of them), a bucket then costs a pointer.
    hosts: HashMap<SharedStr, Box<HostBuffer>>,
    entries: usize,
    /// Host keys (the host names' own strings, 16 bytes, not whole host names of 32).
    lru: Recency<SharedStr>,
    /// Per host still held, the newest time among its entries a bound dropped. Few hosts
    /// have one (a bound dropped some of their entries but not all), so it is kept here and
    /// not in every buffer: a buffer is 40 bytes (a 48-B malloc chunk) instead of 56 (64).
    host_dropped: HashMap<SharedStr, Timestamp>,
    /// The newest time among entries dropped with their whole host (the host is gone, so a
    /// later alert on it cannot tell; this says so for every host of the tenant).
    dropped_until: Option<Timestamp>,
}

/// The look-back as plain data: what a snapshot of engine state holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LookbackSnapshot {
    /// Every host's entries.
    pub hosts: Vec<HostSnapshot>,
    /// Per tenant, the newest time among entries dropped with their host.
    #[serde(default)]
    pub dropped: Vec<(TenantId, Timestamp)>,
    /// Entries dropped by the bounds so far.
    #[serde(default)]
    pub evicted: u64,
}

/// One host's part of a [`LookbackSnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// The tenant.
    pub tenant: TenantId,
    /// The host key.
    pub host: String,
    /// Its notable events, oldest first.
    pub events: Vec<Notable>,
    /// The newest time among its entries a bound dropped.
    #[serde(default)]
    pub dropped_until: Option<Timestamp>,
}

impl LookbackBuffer {
    /// An empty buffer. `retention` is how far behind a host's newest entry an entry can
    /// still be asked for (the period, the longest chain and the allowed lateness).
    pub fn new(config: LookbackConfig, retention: Duration) -> Self {
        Self {
            config,
            retention_ns: nanos(retention.max(config.period)),
            ..Self::default()
        }
    }

    /// Changes the retention (after a reload changed the longest chain).
    pub fn set_retention(&mut self, retention: Duration) {
        self.retention_ns = nanos(retention.max(self.config.period));
    }

    /// The configuration.
    pub fn config(&self) -> &LookbackConfig {
        &self.config
    }

    /// Notable events held.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Entries dropped by the bounds so far (not counting those that aged out).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Records `event` as notable: it matched `rules` (after the tenant's exclusions).
    pub fn record(&mut self, event: &Event, rules: &[&RuleInfo]) {
        self.record_sharing(event, rules, &[]);
    }

    /// [`LookbackBuffer::record`], sharing the evidence with `known` (evidence of the same
    /// event the caller already made, one per slice) when one is for the rule the entry names.
    pub fn record_sharing(
        &mut self,
        event: &Event,
        rules: &[&RuleInfo],
        known: &[Arc<[Evidence]>],
    ) {
        if !self.config.enabled() || rules.is_empty() || event.host.is_empty() {
            return;
        }
        let mut refs: Vec<RuleRef> = rules.iter().map(|r| r.rule.clone()).collect();
        refs.sort_by(|a, b| b.level.cmp(&a.level).then_with(|| a.id.cmp(&b.id)));
        refs.dedup_by(|a, b| a.id == b.id);
        let mut techniques: Vec<TechniqueId> = Vec::new();
        for t in rules.iter().flat_map(|r| r.techniques.iter()) {
            if !techniques.contains(t) {
                techniques.push(*t);
            }
        }
        let evidence = known
            .iter()
            .find(|e| e.len() == 1 && e[0].rule == refs[0].id && e[0].id == event.id)
            .cloned()
            .unwrap_or_else(|| Arc::from([Evidence::of(event, &refs[0].id)]));
        let notable = Entry {
            evidence,
            rules: self.intern(Matched {
                rules: refs,
                techniques,
            }),
        };
        self.tick += 1;
        let tick = self.tick;
        let tenant = self.tenants.entry(event.tenant.clone()).or_default();
        let host = tenant.hosts.entry(event.host.shared_key()).or_default();
        let host_dropped = &mut tenant.host_dropped;
        tenant.lru.remove(host.touched);
        host.touched = tick;
        tenant.lru.push(tick, event.host.shared_key());
        let at = host
            .entries
            .binary_search_by_key(&(event.time, event.id), |n| (n.time(), n.id()));
        if let Err(at) = at {
            host.entries.insert(at, notable);
            tenant.entries += 1;
            self.total += 1;
        } else {
            // A redelivered event: already held.
            return;
        }
        let newest = host.entries.last().map_or(event.time, Entry::time);
        // Age: nothing older than the retention behind the host's newest entry is asked for.
        let horizon = newest.add_nanos(-self.retention_ns);
        let aged = host.entries.partition_point(|n| n.time() < horizon);
        if aged > 0 {
            host.entries.drain(..aged);
            tenant.entries -= aged;
            self.total -= aged;
        }
        // Per host: its oldest first.
        while host.entries.len() > self.config.max_events_per_host {
            let gone = host.entries.remove(0).time();
            raise_dropped(host_dropped, event.host.shared_key(), gone);
            tenant.entries -= 1;
            self.total -= 1;
            self.evicted += 1;
        }
        // Per tenant, then globally: the least recently updated host of the fullest tenant.
        while self
            .tenants
            .get(&event.tenant)
            .is_some_and(|t| t.entries > self.config.max_events_per_tenant)
        {
            if !self.drop_one(&event.tenant) {
                break;
            }
        }
        while self.total > self.config.max_events {
            let Some(fullest) = self
                .tenants
                .iter()
                .max_by(|a, b| a.1.entries.cmp(&b.1.entries).then_with(|| b.0.cmp(a.0)))
                .map(|(t, _)| t.clone())
            else {
                break;
            };
            if !self.drop_one(&fullest) {
                break;
            }
        }
    }

    /// The shared copy of `m`.
    fn intern(&mut self, m: Matched) -> Arc<Matched> {
        if let Some(known) = self.matched.get(&m) {
            return Arc::clone(known);
        }
        if self.matched.len() >= MAX_INTERNED {
            self.matched.clear();
        }
        let m = Arc::new(m);
        self.matched.insert(Arc::clone(&m));
        m
    }

    /// Drops the oldest entry of the least recently updated host of `tenant`.
    fn drop_one(&mut self, tenant: &TenantId) -> bool {
        let Some(index) = self.tenants.get_mut(tenant) else {
            return false;
        };
        let Some((touched, host)) = index.lru.first() else {
            return false;
        };
        let host = host.clone();
        let Some(buffer) = index.hosts.get_mut(host.as_str()) else {
            index.lru.remove(touched);
            return true;
        };
        if buffer.entries.is_empty() {
            index.lru.remove(touched);
            index.hosts.remove(host.as_str());
            index.host_dropped.remove(host.as_str());
            return true;
        }
        let time = buffer.entries.remove(0).time();
        index.entries -= 1;
        self.total -= 1;
        self.evicted += 1;
        if buffer.entries.is_empty() {
            // The host goes with its last entry: what was dropped of it joins the tenant's.
            let until = index
                .host_dropped
                .remove(host.as_str())
                .map_or(time, |d| d.max(time));
            index.lru.remove(touched);
            index.hosts.remove(host.as_str());
            index.dropped_until = index.dropped_until.max(Some(until));
        } else {
            raise_dropped(&mut index.host_dropped, host, time);
        }
        if index.entries == 0 && index.lru.is_empty() && index.dropped_until.is_none() {
            self.tenants.remove(tenant);
        }
        true
    }

    /// Sets `alert.lookback`: the notable events of the alert's hosts (its host and the hosts
    /// of its evidence) from the period before its first evidence up to its last, without the
    /// alert's own evidence. Does nothing when the look-back is off.
    pub fn attach(&self, alert: &mut Alert) {
        if !self.config.enabled() {
            return;
        }
        let from = alert.first_seen.add_nanos(-nanos(self.config.period));
        let to = alert.last_seen;
        let own: HashSet<EventId> = alert.events.iter().map(|e| e.id).collect();
        let mut hosts: Vec<&HostName> = Vec::new();
        if !alert.host.is_empty() {
            hosts.push(&alert.host);
        }
        for h in alert.events.iter().filter_map(|e| e.host.as_ref()) {
            if !h.is_empty() && !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        let mut events: Vec<&Entry> = Vec::new();
        let index = self.tenants.get(&alert.tenant);
        let tenant_dropped = index.and_then(|t| t.dropped_until);
        let mut complete = tenant_dropped.is_none_or(|d| d < from);
        for host in hosts {
            let Some(buffer) = index.and_then(|t| t.hosts.get(host.key())) else {
                continue;
            };
            if index
                .and_then(|t| t.host_dropped.get(host.key()))
                .is_some_and(|d| *d >= from)
            {
                complete = false;
            }
            let start = buffer.entries.partition_point(|n| n.time() < from);
            events.extend(
                buffer.entries[start..]
                    .iter()
                    .take_while(|n| n.time() <= to)
                    .filter(|n| !own.contains(&n.id())),
            );
        }
        let mut omitted = 0;
        if events.len() > self.config.max_events_per_alert {
            // Keep the highest levels, then the newest.
            events.sort_by(|a, b| {
                b.level()
                    .cmp(&a.level())
                    .then_with(|| b.time().cmp(&a.time()))
            });
            omitted = events.len() - self.config.max_events_per_alert;
            events.truncate(self.config.max_events_per_alert);
        }
        events.sort_by_key(|n| (n.time(), n.id()));
        alert.lookback = Some(Lookback {
            from,
            to,
            events: events.into_iter().map(Entry::to_notable).collect(),
            complete,
            omitted: u32::try_from(omitted).unwrap_or(u32::MAX),
        });
    }

    /// The buffer as plain data.
    pub fn snapshot(&self) -> LookbackSnapshot {
        let mut hosts: Vec<HostSnapshot> = self
            .tenants
            .iter()
            .flat_map(|(tenant, t)| {
                t.hosts.iter().map(move |(host, b)| HostSnapshot {
                    tenant: tenant.clone(),
                    host: host.to_string(),
                    events: b.entries.iter().map(Entry::to_notable).collect(),
                    dropped_until: t.host_dropped.get(host.as_str()).copied(),
                })
            })
            .collect();
        hosts.sort_by(|a, b| (&a.tenant, &a.host).cmp(&(&b.tenant, &b.host)));
        let mut dropped: Vec<(TenantId, Timestamp)> = self
            .tenants
            .iter()
            .filter_map(|(t, i)| i.dropped_until.map(|d| (t.clone(), d)))
            .collect();
        dropped.sort();
        LookbackSnapshot {
            hosts,
            dropped,
            evicted: self.evicted,
        }
    }

    /// A buffer holding `snapshot` under `config` (its bounds apply as entries are added).
    pub fn restore(
        config: LookbackConfig,
        retention: Duration,
        snapshot: LookbackSnapshot,
    ) -> Self {
        let mut b = Self::new(config, retention);
        b.evicted = snapshot.evicted;
        for (tenant, until) in snapshot.dropped {
            b.tenants.entry(tenant).or_default().dropped_until = Some(until);
        }
        for h in snapshot.hosts {
            b.tick += 1;
            let mut events = h.events;
            events.sort_by_key(|n| (n.evidence.time, n.evidence.id));
            events.dedup_by_key(|n| n.evidence.id);
            let mut entries = SmallVec::with_capacity(events.len());
            for n in events {
                let rules = b.intern(Matched {
                    rules: n.rules,
                    techniques: n.techniques,
                });
                entries.push(Entry {
                    evidence: Arc::from([n.evidence]),
                    rules,
                });
            }
            let index = b.tenants.entry(h.tenant.clone()).or_default();
            index.entries += entries.len();
            // The snapshot keeps the host key: a host name of it is the key again.
            let host = HostName::new(&h.host).shared_key();
            index.lru.push(b.tick, host.clone());
            b.total += entries.len();
            match h.dropped_until {
                Some(until) => index.host_dropped.insert(host.clone(), until),
                None => index.host_dropped.remove(host.as_str()),
            };
            index.hosts.insert(
                host,
                Box::new(HostBuffer {
                    entries,
                    touched: b.tick,
                }),
            );
        }
        b
    }
}

/// Records that an entry of `host` from `time` was dropped while the host stays held: its
/// newest dropped time.
fn raise_dropped(
    host_dropped: &mut HashMap<SharedStr, Timestamp>,
    host: SharedStr,
    time: Timestamp,
) {
    host_dropped
        .entry(host)
        .and_modify(|d| *d = (*d).max(time))
        .or_insert(time);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// What every host with a notable event holds besides the evidence (BENCHMARKS.md,
    /// memory): its boxed buffer (a 64-byte malloc chunk) holding its first entry inline.
    /// Guards against a field that makes every tracked host bigger.
    #[test]
    fn per_host_state_stays_small() {
        use std::mem::size_of;
        // 56 bytes and malloc's 8-byte header: one 64-byte chunk.
        assert!(size_of::<HostBuffer>() <= 40);
        assert!(size_of::<Entry>() <= 24);
        assert!(size_of::<SmallVec<[Entry; 1]>>() <= 32);
    }
    use chainwatch_model::{
        Activity, AlertId, AlertKind, EventClass, HostName, Provenance, Severity, SourceFormat,
        SourceMeta,
    };

    fn event(tenant: &str, host: &str, n: u32, secs: i64) -> Event {
        Event {
            class: EventClass::ProcessActivity,
            activity: Activity::Launch,
            source: SourceMeta {
                format: SourceFormat::WindowsFlat,
                channel: None,
                provider: None,
                event_id: Some(1),
            },
            provenance: Provenance::File {
                path: "f".into(),
                line: Some(u64::from(n)),
                record: None,
            },
            ..Event::bare(
                EventId::from_u128(u128::from(n)),
                TenantId::new(tenant).unwrap(),
                Timestamp::from_nanos(secs * 1_000_000_000),
                HostName::new(host),
            )
        }
    }

    fn rule(id: &str, level: Severity) -> RuleInfo {
        RuleInfo {
            rule: RuleRef {
                id: id.into(),
                title: format!("rule {id}"),
                level,
            },
            name: None,
            description: None,
            techniques: vec![TechniqueId::parse("T1059").unwrap()],
        }
    }

    fn alert(tenant: &str, host: &str, evidence: &[&Event]) -> Alert {
        let events: Vec<Evidence> = evidence.iter().map(|e| Evidence::of(e, "x")).collect();
        Alert {
            id: AlertId::from_u128(1),
            tenant: TenantId::new(tenant).unwrap(),
            host: HostName::new(host),
            user: None,
            kind: AlertKind::Chain,
            revision: 0,
            partial: false,
            rule: rule("c", Severity::High).rule,
            severity: Severity::High,
            playbook: None,
            techniques: Vec::new(),
            first_seen: events.first().unwrap().time,
            last_seen: events.last().unwrap().time,
            group: BTreeMap::new(),
            stages: Vec::new(),
            events,
            response: Vec::new(),
            description: None,
            lookback: None,
        }
    }

    fn config() -> LookbackConfig {
        LookbackConfig {
            period: Duration::from_secs(3600),
            max_events_per_host: 4,
            max_events_per_tenant: 6,
            max_events: 8,
            max_events_per_alert: 10,
        }
    }

    const DAY: Duration = Duration::from_secs(86400);

    #[test]
    fn an_alert_carries_its_hosts_notable_events_in_the_window() {
        let roomy = LookbackConfig {
            max_events_per_host: 10,
            max_events_per_tenant: 20,
            max_events: 20,
            ..config()
        };
        let mut b = LookbackBuffer::new(roomy, DAY);
        let low = rule("low", Severity::Low);
        let high = rule("high", Severity::High);
        let old = event("acme", "EXCH01", 1, 1000);
        let recent = event("acme", "exch01.contoso.local", 2, 5000);
        let other_host = event("acme", "WS1", 3, 5100);
        let other_tenant = event("globex", "EXCH01", 4, 5200);
        let stage = event("acme", "EXCH01", 5, 6000);
        let during = event("acme", "EXCH01", 6, 6500);
        let stage2 = event("acme", "EXCH01", 7, 7000);
        let after = event("acme", "EXCH01", 8, 7100);
        for e in [&old, &recent, &other_host, &other_tenant, &during, &after] {
            b.record(e, &[&low]);
        }
        b.record(&stage, &[&low, &high]);
        b.record(&stage2, &[&high]);
        let mut a = alert("acme", "EXCH01", &[&stage, &stage2]);
        b.attach(&mut a);
        let lb = a.lookback.unwrap();
        let ids: Vec<u128> = lb.events.iter().map(|n| n.evidence.id.as_u128()).collect();
        // 1000 is before the hour; the evidence itself, other hosts, other tenants and what
        // came after the last evidence are not in it.
        assert_eq!(ids, [2, 6]);
        assert!(lb.complete);
        assert_eq!(lb.from, Timestamp::from_nanos(2400 * 1_000_000_000));
        assert_eq!(lb.events[0].rules[0].id, "low");
    }

    #[test]
    fn a_notable_event_lists_its_rules_highest_level_first_once() {
        let mut b = LookbackBuffer::new(config(), DAY);
        let e = event("acme", "H", 1, 100);
        b.record(
            &e,
            &[&rule("a", Severity::Low), &rule("b", Severity::Critical)],
        );
        b.record(&e, &[&rule("a", Severity::Low)]);
        assert_eq!(b.len(), 1, "a redelivered event is held once");
        let mut a = alert("acme", "H", &[&event("acme", "H", 9, 200)]);
        b.attach(&mut a);
        let n = &a.lookback.unwrap().events[0];
        assert_eq!(n.evidence.rule, "b");
        assert_eq!(n.level(), Severity::Critical);
        assert_eq!(n.techniques.len(), 1);
    }

    #[test]
    fn bounds_drop_oldest_first_count_it_and_mark_the_look_back_incomplete() {
        let mut b = LookbackBuffer::new(config(), DAY);
        let r = rule("r", Severity::Low);
        for i in 0..6 {
            b.record(&event("acme", "H", i, 3000 + i64::from(i)), &[&r]);
        }
        assert_eq!(b.len(), 4);
        assert_eq!(b.evicted(), 2);
        let mut a = alert("acme", "H", &[&event("acme", "H", 99, 3500)]);
        b.attach(&mut a);
        let lb = a.lookback.unwrap();
        assert_eq!(lb.events.len(), 4);
        assert!(!lb.complete, "entries inside the window were dropped");
        // A window that starts after the dropped entries is complete.
        let mut late = alert("acme", "H", &[&event("acme", "H", 98, 3002 + 3601)]);
        b.attach(&mut late);
        assert!(late.lookback.unwrap().complete);
    }

    #[test]
    fn a_noisy_tenant_drops_its_own_history_first() {
        let mut b = LookbackBuffer::new(
            LookbackConfig {
                max_events: 7,
                ..config()
            },
            DAY,
        );
        let r = rule("r", Severity::Low);
        b.record(&event("quiet", "Q1", 100, 10), &[&r]);
        b.record(&event("quiet", "Q1", 101, 11), &[&r]);
        for i in 0..20 {
            let host = format!("N{}", i % 5);
            b.record(&event("noisy", &host, i, 20 + i64::from(i)), &[&r]);
        }
        // Per tenant: at most 6 of noisy's; globally at most 7, taken from the fullest
        // tenant: quiet keeps both of its own.
        let snap = b.snapshot();
        let quiet: usize = snap
            .hosts
            .iter()
            .filter(|h| h.tenant.as_str() == "quiet")
            .map(|h| h.events.len())
            .sum();
        let noisy: usize = snap
            .hosts
            .iter()
            .filter(|h| h.tenant.as_str() == "noisy")
            .map(|h| h.events.len())
            .sum();
        assert_eq!(quiet, 2);
        assert_eq!(noisy, 5);
        assert_eq!(b.len(), 7);
        assert_eq!(b.evicted(), 15);
        // A noisy host emptied by eviction: its tenant's later alerts say incomplete.
        let mut a = alert("noisy", "N0", &[&event("noisy", "N0", 500, 60)]);
        b.attach(&mut a);
        assert!(!a.lookback.unwrap().complete);
    }

    #[test]
    fn entries_age_out_without_counting_as_evictions() {
        let mut b = LookbackBuffer::new(config(), Duration::from_secs(7200));
        let r = rule("r", Severity::Low);
        b.record(&event("acme", "H", 1, 0), &[&r]);
        b.record(&event("acme", "H", 2, 10_000), &[&r]);
        assert_eq!(b.len(), 1);
        assert_eq!(b.evicted(), 0);
    }

    #[test]
    fn an_alert_carries_at_most_its_bound_keeping_the_highest_levels() {
        let mut b = LookbackBuffer::new(
            LookbackConfig {
                max_events_per_alert: 2,
                ..config()
            },
            DAY,
        );
        b.record(&event("acme", "H", 1, 100), &[&rule("a", Severity::High)]);
        b.record(&event("acme", "H", 2, 200), &[&rule("b", Severity::Low)]);
        b.record(&event("acme", "H", 3, 300), &[&rule("c", Severity::Low)]);
        let mut a = alert("acme", "H", &[&event("acme", "H", 9, 400)]);
        b.attach(&mut a);
        let lb = a.lookback.unwrap();
        let ids: Vec<u128> = lb.events.iter().map(|n| n.evidence.id.as_u128()).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(lb.omitted, 1);
    }

    #[test]
    fn off_keeps_nothing_and_attaches_nothing() {
        let mut b = LookbackBuffer::new(LookbackConfig::off(), DAY);
        b.record(&event("acme", "H", 1, 100), &[&rule("a", Severity::High)]);
        assert!(b.is_empty());
        let mut a = alert("acme", "H", &[&event("acme", "H", 9, 400)]);
        b.attach(&mut a);
        assert!(a.lookback.is_none());
    }

    #[test]
    fn a_snapshot_restores_the_same_look_back() {
        let mut b = LookbackBuffer::new(config(), DAY);
        for i in 0..3 {
            b.record(
                &event("acme", "H", i, 100 + i64::from(i)),
                &[&rule("a", Severity::Low)],
            );
        }
        let text = serde_json::to_string(&b.snapshot()).unwrap();
        let restored = LookbackBuffer::restore(config(), DAY, serde_json::from_str(&text).unwrap());
        let mut x = alert("acme", "H", &[&event("acme", "H", 9, 400)]);
        let mut y = x.clone();
        b.attach(&mut x);
        restored.attach(&mut y);
        assert_eq!(x.lookback, y.lookback);
        assert_eq!(restored.len(), 3);
    }
}
