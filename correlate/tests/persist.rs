//! The engine's state through the changelog: an engine rebuilt from the records of another
//! continues every kind of correlation as if it had never stopped; idle tenants' clocks move
//! on; a flood of distinct hosts from one tenant stays within the limits and evicts nobody
//! else's chains.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chainwatch_correlate::{Engine, EngineConfig, RuleSet, StateChange};
use chainwatch_model::{Alert, Event, FieldValue, Fields, TenantId, Timestamp};
use support::{PROCESS_CREATION, rule_set};

/// Detection rules `a`..`e` (a process whose image ends with the letter) and one correlation
/// of each kind over them, a playbook with partial findings and suppression among them.
const RULES: &str = r#"
title: Chain
id: 00000000-0000-4000-8000-0000000000c1
name: chain
correlation:
    type: temporal_ordered
    rules: [a, b, c]
    group-by: [Computer]
    timespan: 1h
level: critical
playbook:
    priority: critical
    stages:
        b: {optional: true}
    partial:
        - {after: a, priority: medium}
    suppress: 2h
---
title: Together
id: 00000000-0000-4000-8000-0000000000c2
name: together
correlation:
    type: temporal
    rules: [d, e]
    group-by: [Computer]
    timespan: 10m
level: high
---
title: Burst
id: 00000000-0000-4000-8000-0000000000c3
name: burst
correlation:
    type: event_count
    rules: [d]
    group-by: [Computer]
    timespan: 5m
    condition: {gte: 3}
level: high
---
title: Few
id: 00000000-0000-4000-8000-0000000000c4
name: few
correlation:
    type: event_count
    rules: [e]
    group-by: [Computer]
    timespan: 5m
    condition: {lt: 2}
level: low
---
title: Spread
id: 00000000-0000-4000-8000-0000000000c5
name: spread
correlation:
    type: value_count
    rules: [a]
    group-by: [Computer]
    timespan: 30m
    condition: {field: User, gte: 2}
level: high
"#;

fn detection(name: &str) -> String {
    format!(
        "---\ntitle: Stage {name}\nname: {name}\ntags: [attack.t1059]\nlogsource: {{product: windows, category: process_creation}}\ndetection:\n    sel: {{Image|endswith: '\\{name}.exe'}}\n    condition: sel\n"
    )
}

fn rules() -> Arc<RuleSet> {
    let detections: String = ["a", "b", "c", "d", "e"].map(detection).concat();
    rule_set(&format!("{RULES}{detections}"))
}

fn event(tenant: &str, host: &str, image: &str, secs: i64, user: &str) -> Event {
    let mut fields = Fields::new();
    fields.push("EventID", FieldValue::Int(1));
    fields.push("Image", FieldValue::Str(format!("C:\\x\\{image}").into()));
    fields.push("User", FieldValue::Str(user.into()));
    support::event(
        tenant,
        host,
        Timestamp::from_millis(1_700_000_000_000 + secs * 1000),
        PROCESS_CREATION,
        fields,
        &format!("{tenant}/{host}/{image}/{secs}/{user}"),
        1,
    )
}

/// A deterministic stream: two tenants, hosts sharing names across tenants, every rule, out of
/// order within minutes, with redeliveries.
fn stream() -> Vec<Event> {
    let mut out = Vec::new();
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s % n
    };
    for i in 0..600i64 {
        let tenant = ["acme", "globex"][usize::try_from(next(2)).unwrap()];
        let host = ["h1", "h2", "h3", "h4"][usize::try_from(next(4)).unwrap()];
        let image = ["a.exe", "b.exe", "c.exe", "d.exe", "e.exe", "noise.exe"]
            [usize::try_from(next(6)).unwrap()];
        let user = ["alice", "bob", "carol"][usize::try_from(next(3)).unwrap()];
        // Mostly forward in time, sometimes a few minutes back.
        let secs = i * 20 - i64::try_from(next(4)).unwrap() * 60;
        out.push(event(tenant, host, image, secs, user));
        if next(25) == 0 {
            let again = out[usize::try_from(next(out.len() as u64)).unwrap()].clone();
            out.push(again);
        }
    }
    out
}

/// The latest value of each key, in the order of their last write: what a compacted
/// changelog holds.
#[derive(Default)]
struct Changelog {
    seq: u64,
    latest: HashMap<Vec<u8>, (u64, Vec<u8>)>,
    written: usize,
}

impl Changelog {
    fn write(&mut self, changes: Vec<StateChange>) {
        for c in changes {
            self.written += 1;
            self.seq += 1;
            match c.value {
                Some(v) => {
                    self.latest.insert(c.key, (self.seq, v));
                }
                None => {
                    self.latest.remove(&c.key);
                }
            }
        }
    }

    fn values(&self) -> Vec<&[u8]> {
        let mut v: Vec<&(u64, Vec<u8>)> = self.latest.values().collect();
        v.sort_by_key(|(seq, _)| *seq);
        v.into_iter().map(|(_, value)| value.as_slice()).collect()
    }
}

fn tracked(rules: &Arc<RuleSet>, config: EngineConfig) -> Engine {
    let mut e = Engine::new(Arc::clone(rules), config);
    e.track_changes();
    e
}

/// (id, revision, partial) of every alert: what a sink sees.
fn versions(alerts: &[Alert]) -> Vec<(String, u32, bool)> {
    let mut v: Vec<_> = alerts
        .iter()
        .map(|a| (a.id.to_string(), a.revision, a.partial))
        .collect();
    v.sort();
    v
}

fn config() -> EngineConfig {
    EngineConfig {
        allowed_lateness: Duration::from_secs(600),
        ..EngineConfig::default()
    }
}

#[test]
fn a_restored_engine_continues_every_correlation_as_if_it_had_never_stopped() {
    let rules = rules();
    let events = stream();
    let mut whole = Engine::new(Arc::clone(&rules), config());
    let mut expected: Vec<Alert> = events.iter().flat_map(|e| whole.observe(e)).collect();
    expected.extend(whole.finish());
    let kinds: BTreeSet<&str> = expected.iter().map(|a| a.rule.title.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["Burst", "Chain", "Few", "Spread", "Together"]),
        "the stream exercises every kind"
    );
    assert!(expected.iter().any(|a| a.partial) && expected.iter().any(|a| a.revision > 0));

    // Stopped after every 37th event and rebuilt from the changelog each time.
    let mut log = Changelog::default();
    let mut got = Vec::new();
    for chunk in events.chunks(37) {
        let mut e = tracked(&rules, config());
        let stats = e.restore(log.values());
        assert_eq!(stats.unknown + stats.unreadable, 0, "{stats:?}");
        assert_eq!(stats.groups, log.latest.len());
        for ev in chunk {
            got.extend(e.observe(ev));
            log.write(e.take_changes());
        }
        if std::ptr::eq(chunk, events.chunks(37).next_back().unwrap()) {
            got.extend(e.finish());
        }
    }
    assert_eq!(versions(&got), versions(&expected));
    assert!(
        log.written > log.latest.len(),
        "groups are rewritten and dropped"
    );
}

#[test]
fn replaying_events_the_restored_state_holds_raises_nothing_again() {
    let rules = rules();
    let events = stream();
    let mut first = tracked(&rules, config());
    let mut log = Changelog::default();
    let mut raised = 0;
    for ev in &events[..300] {
        raised += first.observe(ev).len();
        log.write(first.take_changes());
    }
    assert!(raised > 0);
    let mut again = tracked(&rules, config());
    again.restore(log.values());
    // The last 100 events were in the state already (a redelivery after a crash that lost
    // the offsets, not the changelog): nothing new.
    let repeated: Vec<Alert> = events[200..300]
        .iter()
        .flat_map(|e| again.observe(e))
        .collect();
    let fresh: Vec<Alert> = events[200..300]
        .iter()
        .flat_map(|e| {
            let mut f = Engine::new(Arc::clone(&rules), config());
            f.observe(e)
        })
        .collect();
    assert!(!fresh.is_empty(), "on their own, they would alert");
    let chain_versions = |a: &[Alert]| -> Vec<_> {
        versions(a)
            .into_iter()
            .filter(|(id, _, _)| {
                a.iter().any(|x| {
                    x.id.to_string() == *id && x.kind == chainwatch_model::AlertKind::Chain
                })
            })
            .collect()
    };
    assert_eq!(chain_versions(&repeated), Vec::<(String, u32, bool)>::new());
}

#[test]
fn records_of_unknown_correlations_and_damaged_records_are_skipped_and_counted() {
    let rules = rules();
    let mut e = tracked(&rules, config());
    let mut log = Changelog::default();
    for ev in stream().iter().take(100) {
        e.observe(ev);
        log.write(e.take_changes());
    }
    let held = log.latest.len();
    assert!(held > 0);
    // A rule set where the chain changed (another timespan): its groups are unknown.
    let changed = rule_set(
        &format!(
            "{RULES}{}",
            ["a", "b", "c", "d", "e"].map(detection).concat()
        )
        .replacen("timespan: 1h", "timespan: 2h", 1),
    );
    let mut other = tracked(&changed, config());
    let mut values = log.values();
    values.push(b"{\"v\": 99}");
    values.push(b"not json");
    let stats = other.restore(values);
    assert_eq!(stats.unreadable, 2);
    assert!(stats.unknown > 0, "{stats:?}");
    assert_eq!(stats.groups + stats.unknown, held);
    assert_eq!(other.partial_chains(), stats.groups);
}

#[test]
fn a_reload_writes_tombstones_for_the_state_it_drops() {
    let rules = rules();
    let mut e = tracked(&rules, config());
    let mut log = Changelog::default();
    for ev in stream().iter().take(200) {
        e.observe(ev);
        log.write(e.take_changes());
    }
    let chain_groups = e.partial_chains();
    assert!(chain_groups > 0);
    let changed = rule_set(
        &format!(
            "{RULES}{}",
            ["a", "b", "c", "d", "e"].map(detection).concat()
        )
        .replacen("timespan: 1h", "timespan: 2h", 1),
    );
    let kept = e.reload(changed);
    assert_eq!(kept, 4, "only the chain changed");
    let tombstones = e.take_changes();
    assert!(!tombstones.is_empty());
    assert!(tombstones.iter().all(|c| c.value.is_none()));
    log.write(tombstones);
    // What is left restores completely under the new rules.
    let mut fresh = tracked(&e.rules().clone(), config());
    let stats = fresh.restore(log.values());
    assert_eq!(stats.unknown, 0, "{stats:?}");
    assert_eq!(fresh.partial_chains(), e.partial_chains());
}

#[test]
fn an_idle_tenant_clock_moves_only_that_tenant() {
    let text = format!(
        "title: Undone\nid: 00000000-0000-4000-8000-0000000000d1\nname: undone\ncorrelation:\n    type: temporal_ordered\n    rules: [a, b]\n    group-by: [Computer]\n    timespan: 1h\nlevel: high\nplaybook:\n    absent:\n        - {{rule: c, after: b, within: 10m}}\n{}",
        ["a", "b", "c"].map(detection).concat()
    );
    let rules = rule_set(&text);
    let at = |secs: i64| Timestamp::from_millis(1_700_000_000_000 + secs * 1000);
    let mut e = tracked(&rules, config());
    let mut log = Changelog::default();
    assert!(e.is_clocked());
    for tenant in ["acme", "globex"] {
        assert!(e.observe(&event(tenant, "h1", "a.exe", 0, "x")).is_empty());
        assert!(e.observe(&event(tenant, "h1", "b.exe", 60, "x")).is_empty());
        log.write(e.take_changes());
    }
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    // Deadline: b + 10 min = 660 s; the watermark is the clock less 600 s of lateness.
    assert!(e.advance_tenant(&acme, at(1200)).is_empty());
    let alerts = e.advance_tenant(&acme, at(1261));
    log.write(e.take_changes());
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].tenant, acme);
    assert!(e.advance_tenant(&acme, at(9000)).is_empty(), "decided once");
    assert!(
        e.advance_tenant(&TenantId::new("initech").unwrap(), at(9000))
            .is_empty(),
        "a tenant never seen has nothing to decide"
    );
    // The decision is in the changelog: a restored engine does not raise it again, and
    // globex's chain, whose clock did not move, still waits for its deadline.
    let mut restored = tracked(&rules, config());
    restored.restore(log.values());
    assert!(restored.advance_tenant(&acme, at(9000)).is_empty());
    let late = restored.advance_tenant(&globex, at(1261));
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].id, {
        let mut again = Engine::new(Arc::clone(&rules), config());
        again.observe(&event("globex", "h1", "a.exe", 0, "x"));
        again.observe(&event("globex", "h1", "b.exe", 60, "x"));
        again.advance_tenant(&globex, at(1261))[0].id
    });
}

/// One tenant sends 100,000 distinct hosts, each matching the first stage of a chain; the
/// other tenant's chain, started before the flood and finished after it, is still found. (A
/// million, in release mode and with the memory it takes: `correlate/examples/flood.rs`,
/// figures in BENCHMARKS.md; here the debug build would take minutes.)
#[test]
fn a_flood_of_distinct_hosts_stays_within_the_limits_and_evicts_only_its_tenant() {
    let text = format!(
        "title: Walk\nid: 00000000-0000-4000-8000-0000000000e1\nname: walk\ncorrelation:\n    type: temporal_ordered\n    rules: [a, b]\n    group-by: [Computer]\n    timespan: 1d\nlevel: high\n{}",
        ["a", "b"].map(detection).concat()
    );
    let rules = rule_set(&text);
    let config = EngineConfig {
        allowed_lateness: Duration::from_secs(3600),
        max_groups: 10_000,
        max_groups_per_tenant: 5_000,
        max_hits_per_stage: 16,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(rules, config);
    assert!(
        e.observe(&event("acme", "exch01", "a.exe", 0, "x"))
            .is_empty()
    );
    let mut peak = 0;
    for i in 0..100_000i64 {
        let host = format!("ws-{i}");
        let alerts = e.observe(&event("flood", &host, "a.exe", 1 + i / 1000, "x"));
        assert!(alerts.is_empty());
        if i % 1_000 == 0 {
            peak = peak.max(e.partial_chains());
        }
    }
    peak = peak.max(e.partial_chains());
    assert!(peak <= 5_001, "held {peak} groups");
    assert_eq!(e.stats().evicted, 100_000 - 5_000);
    let alerts = e.observe(&event("acme", "exch01", "b.exe", 2000, "x"));
    assert_eq!(alerts.len(), 1, "acme's chain survived the flood");
    assert_eq!(alerts[0].tenant.as_str(), "acme");
}
