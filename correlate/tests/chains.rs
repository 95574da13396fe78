//! The chain engine on hand-built events: order, duplicates, window edges, lateness, tenants.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use std::time::Duration;

use chainwatch_correlate::{Engine, EngineConfig};
use chainwatch_model::{Alert, AlertKind, Event, FieldValue, Fields, Timestamp};
use support::{PROCESS_CREATION, engine_with};

const RULES: &str = r#"
title: Three steps
id: 00000000-0000-4000-8000-000000000001
name: three_steps
correlation:
    type: temporal_ordered
    rules: [step_a, step_b, step_c]
    group-by: [Computer]
    timespan: 10m
level: critical
playbook:
    priority: critical
    response: [Isolate the host]
---
title: Step A
id: 00000000-0000-4000-8000-00000000000a
name: step_a
tags: [attack.t1505.003]
logsource: {product: windows, category: process_creation}
detection:
    sel: {Image|endswith: '\a.exe'}
    condition: sel
---
title: Step B
id: 00000000-0000-4000-8000-00000000000b
name: step_b
tags: [attack.t1136]
logsource: {product: windows, category: process_creation}
detection:
    sel: {Image|endswith: '\b.exe'}
    condition: sel
---
title: Step C
id: 00000000-0000-4000-8000-00000000000c
name: step_c
tags: [attack.t1003.001]
logsource: {product: windows, category: process_creation}
detection:
    sel: {Image|endswith: '\c.exe'}
    condition: sel
---
title: Lone rule
id: 00000000-0000-4000-8000-0000000000ff
logsource: {product: windows, category: process_creation}
level: low
detection:
    sel: {Image|endswith: '\lone.exe'}
    condition: sel
"#;

fn engine() -> Engine {
    engine_with(RULES, EngineConfig::default())
}

/// A Sysmon process creation of `image` on `host` at `minute` past an hour.
fn event(tenant: &str, host: &str, image: &str, seconds: i64) -> Event {
    let mut fields = Fields::new();
    fields.push("EventID", FieldValue::Int(1));
    fields.push("Image", FieldValue::Str(format!("C:\\x\\{image}").into()));
    fields.push("Hostname", FieldValue::Str(host.into()));
    support::event(
        tenant,
        host,
        Timestamp::from_millis(1_600_000_000_000 + seconds * 1000),
        PROCESS_CREATION,
        fields,
        &format!("{tenant}/{host}/{image}/{seconds}"),
        seconds as u64,
    )
}

fn feed(engine: &mut Engine, events: &[Event]) -> Vec<Alert> {
    events.iter().flat_map(|e| engine.observe(e)).collect()
}

fn chain(tenant: &str, host: &str, start: i64) -> Vec<Event> {
    vec![
        event(tenant, host, "a.exe", start),
        event(tenant, host, "b.exe", start + 60),
        event(tenant, host, "c.exe", start + 120),
    ]
}

#[test]
fn an_ordered_chain_raises_one_alert_with_its_stages() {
    let mut e = engine();
    let alerts = feed(&mut e, &chain("acme", "WS1", 0));
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a.kind, AlertKind::Chain);
    assert_eq!(a.tenant.as_str(), "acme");
    assert_eq!(a.host.key(), "ws1");
    let techniques: Vec<String> = a.techniques.iter().map(ToString::to_string).collect();
    assert_eq!(techniques, ["T1505.003", "T1136", "T1003.001"]);
    assert_eq!(a.stages.len(), 3);
    assert_eq!(a.events.len(), 3);
    assert_eq!(a.response, ["Isolate the host"]);
    assert_eq!(a.playbook.as_deref(), Some("three_steps"));
    assert_eq!(a.last_seen.nanos_since(a.first_seen), 120_000_000_000);
}

#[test]
fn stage_rules_alert_only_through_the_chain_but_lone_rules_alert_alone() {
    let mut e = engine();
    assert!(feed(&mut e, &[event("acme", "ws1", "a.exe", 0)]).is_empty());
    let lone = feed(&mut e, &[event("acme", "ws1", "lone.exe", 1)]);
    assert_eq!(lone.len(), 1);
    assert_eq!(lone[0].kind, AlertKind::Detection);
    assert_eq!(lone[0].rule.title, "Lone rule");
}

#[test]
fn generate_true_makes_stage_rules_alert_too() {
    let rules = RULES.replace(
        "level: critical\nplaybook:",
        "generate: true\nlevel: critical\nplaybook:",
    );
    let mut e = engine_with(&rules, EngineConfig::default());
    let alerts = feed(&mut e, &chain("acme", "ws1", 0));
    let kinds: Vec<AlertKind> = alerts.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [
            AlertKind::Detection,
            AlertKind::Detection,
            AlertKind::Detection,
            AlertKind::Chain
        ]
    );
}

#[test]
fn any_arrival_order_finds_the_chain_by_event_time() {
    let events = chain("acme", "ws1", 0);
    let mut forward = engine();
    let expected = feed(&mut forward, &events);
    let orders = [[2, 1, 0], [1, 2, 0], [2, 0, 1], [0, 2, 1], [1, 0, 2]];
    for order in orders {
        let mut e = engine();
        let shuffled: Vec<Event> = order.iter().map(|&i| events[i].clone()).collect();
        let alerts = feed(&mut e, &shuffled);
        assert_eq!(alerts.len(), 1, "order {order:?}");
        assert_eq!(
            alerts[0].id, expected[0].id,
            "same evidence, same id, order {order:?}"
        );
    }
}

#[test]
fn stages_out_of_event_time_order_are_not_a_chain() {
    let mut e = engine();
    let events = [
        event("acme", "ws1", "c.exe", 0),
        event("acme", "ws1", "b.exe", 60),
        event("acme", "ws1", "a.exe", 120),
    ];
    assert!(feed(&mut e, &events).is_empty());
}

#[test]
fn duplicates_count_once() {
    let mut e = engine();
    let events = chain("acme", "ws1", 0);
    let with_dups = [
        events[0].clone(),
        events[0].clone(),
        events[1].clone(),
        events[1].clone(),
        events[2].clone(),
    ];
    assert_eq!(feed(&mut e, &with_dups).len(), 1);
    assert_eq!(e.stats().duplicates, 2);
    // The whole chain delivered again: no second finding.
    assert!(feed(&mut e, &events).is_empty());
}

#[test]
fn window_edges() {
    // Exactly the timespan (10 minutes) from first to last stage: a chain.
    let mut e = engine();
    let edge = [
        event("acme", "ws1", "a.exe", 0),
        event("acme", "ws1", "b.exe", 300),
        event("acme", "ws1", "c.exe", 600),
    ];
    assert_eq!(feed(&mut e, &edge).len(), 1);
    // One second more: not a chain.
    let mut e = engine();
    let over = [
        event("acme", "ws1", "a.exe", 0),
        event("acme", "ws1", "b.exe", 300),
        event("acme", "ws1", "c.exe", 601),
    ];
    assert!(feed(&mut e, &over).is_empty());
    // A later first stage (arriving late) brings the span under the timespan: now a chain.
    let late_start = feed(&mut e, &[event("acme", "ws1", "a.exe", 200)]);
    assert_eq!(late_start.len(), 1);
    assert_eq!(
        late_start[0]
            .last_seen
            .nanos_since(late_start[0].first_seen),
        401_000_000_000
    );
}

#[test]
fn two_tenants_with_the_same_host_name_never_share_state() {
    let mut e = engine();
    let mut events = Vec::new();
    events.extend(chain("tenant-b", "EXCH01", 0)[..2].to_vec());
    events.extend(chain("tenant-c", "exch01.corp.local", 0)[2..].to_vec());
    assert!(feed(&mut e, &events).is_empty());
    // The same host name in one tenant, spelled two ways, is one host.
    let mut e = engine();
    let mixed = [
        event("acme", "EXCH01", "a.exe", 0),
        event("acme", "exch01.corp.local", "b.exe", 60),
        event("acme", "Exch01", "c.exe", 120),
    ];
    assert_eq!(feed(&mut e, &mixed).len(), 1);
}

#[test]
fn events_later_than_the_allowed_lateness_are_dropped() {
    let config = EngineConfig {
        allowed_lateness: Duration::from_secs(30),
        ..EngineConfig::default()
    };
    let mut e = engine_with(RULES, config);
    let events = chain("acme", "ws1", 0);
    // c first, then a (120 s behind c: later than 30 s allowed), then b (60 s behind).
    assert!(
        feed(
            &mut e,
            &[events[2].clone(), events[0].clone(), events[1].clone()]
        )
        .is_empty()
    );
    assert_eq!(e.stats().late, 2);
}

#[test]
fn group_limits_evict_the_noisy_tenant_first() {
    let config = EngineConfig {
        max_groups: 100,
        max_groups_per_tenant: 10,
        ..EngineConfig::default()
    };
    let mut e = engine_with(RULES, config);
    // A quiet tenant's partial chain.
    feed(&mut e, &chain("quiet", "dc01", 0)[..2]);
    // A noisy tenant floods with a thousand hosts.
    let flood: Vec<Event> = (0..1000)
        .map(|i| event("noisy", &format!("h{i}"), "a.exe", i))
        .collect();
    feed(&mut e, &flood);
    assert!(e.partial_chains() <= 11, "{}", e.partial_chains());
    assert_eq!(e.stats().evicted, 990);
    // The quiet tenant's chain survived and completes.
    let done = feed(&mut e, &chain("quiet", "dc01", 0)[2..]);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].tenant.as_str(), "quiet");
}

#[test]
fn alert_ids_are_deterministic_across_runs() {
    let run = || {
        let mut e = engine();
        let mut events = chain("acme", "ws1", 0);
        events.extend(chain("acme", "ws2", 30));
        events.push(event("acme", "ws1", "lone.exe", 5));
        feed(&mut e, &events)
            .into_iter()
            .map(|a| a.id)
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first.len(), 3);
    assert_eq!(first, run());
}
