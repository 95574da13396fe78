//! Correlation rules on hand-built events: `event_count`, `value_count`, `temporal`, aliases,
//! correlations of correlations, and the nasty cases (window edges, duplicates, lateness,
//! tenants, eviction). Ordered chains (`temporal_ordered`) have their own file, `chains.rs`.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use std::time::Duration;

use chainwatch_correlate::{Engine, EngineConfig};
use chainwatch_model::{Alert, AlertKind, Event, FieldValue, Fields, Timestamp};
use support::{compile, engine_with, logon};

const LOGONS: &str = r#"
title: Failed logon
id: 00000000-0000-4000-8000-0000000000f1
name: failed_logon
tags: [attack.t1110]
logsource: {product: windows, service: security}
detection:
    sel: {EventID: 4625}
    condition: sel
---
title: Successful logon
id: 00000000-0000-4000-8000-0000000000f2
name: successful_logon
tags: [attack.t1078]
logsource: {product: windows, service: security}
detection:
    sel: {EventID: 4624}
    condition: sel
"#;

fn engine(rules: &str) -> Engine {
    engine_with(rules, EngineConfig::default())
}

/// A Security event `id` on `host` at `seconds`, with extra fields.
fn event(tenant: &str, host: &str, id: u32, seconds: i64, extra: &[(&str, &str)]) -> Event {
    let mut fields = Fields::new();
    fields.push("EventID", FieldValue::Int(i64::from(id)));
    fields.push("Channel", FieldValue::Str("Security".into()));
    fields.push("Computer", FieldValue::Str(host.into()));
    for (k, v) in extra {
        fields.push(*k, FieldValue::Str((*v).into()));
    }
    support::event(
        tenant,
        host,
        Timestamp::from_millis(1_600_000_000_000 + seconds * 1000),
        logon(id),
        fields,
        &format!("{tenant}/{host}/{id}/{seconds}/{extra:?}"),
        seconds.unsigned_abs(),
    )
}

fn failed(host: &str, user: &str, seconds: i64) -> Event {
    event("acme", host, 4625, seconds, &[("TargetUserName", user)])
}

fn success(host: &str, user: &str, seconds: i64) -> Event {
    event("acme", host, 4624, seconds, &[("TargetUserName", user)])
}

fn feed(engine: &mut Engine, events: &[Event]) -> Vec<Alert> {
    events.iter().flat_map(|e| engine.observe(e)).collect()
}

fn with(correlation: &str) -> String {
    format!("{correlation}\n---{LOGONS}")
}

const FIVE_FAILURES: &str = r#"
title: Five failed logons on a host
id: 00000000-0000-4000-8000-0000000000c1
correlation:
    type: event_count
    rules: [failed_logon]
    group-by: [Computer]
    timespan: 10m
    condition: {gte: 5}
level: high
"#;

#[test]
fn event_count_fires_on_a_sliding_window_not_buckets() {
    let mut e = engine(&with(FIVE_FAILURES));
    // 8, 9, 11, 12 and 13 minutes: fixed ten-minute buckets would hold two and three.
    let events: Vec<Event> = [8, 9, 11, 12, 13]
        .iter()
        .map(|m| failed("ws1", "bob", m * 60))
        .collect();
    let alerts = feed(&mut e, &events);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.kind, AlertKind::Chain);
    assert_eq!(a.rule.title, "Five failed logons on a host");
    assert_eq!(a.events.len(), 5);
    assert_eq!(a.stages.len(), 1, "one stage: the one referenced rule");
    assert_eq!(a.stages[0].events.len(), 5);
    assert_eq!(a.group.get("Computer").map(String::as_str), Some("ws1"));
    assert_eq!(
        a.last_seen.nanos_since(a.first_seen),
        5 * 60 * 1_000_000_000
    );
    let techniques: Vec<String> = a.techniques.iter().map(ToString::to_string).collect();
    assert_eq!(techniques, ["T1110"]);
}

#[test]
fn event_count_window_edges_and_reuse() {
    // Five within exactly ten minutes: fires.
    let mut e = engine(&with(FIVE_FAILURES));
    let edge: Vec<Event> = [0, 150, 300, 450, 600]
        .iter()
        .map(|s| failed("ws1", "bob", *s))
        .collect();
    assert_eq!(feed(&mut e, &edge).len(), 1);
    // The same five events again (redelivery): nothing new.
    assert!(feed(&mut e, &edge).is_empty());
    assert_eq!(e.stats().duplicates, 5);
    // Four new ones: not yet (the first five are used up); the fifth fires again.
    let more: Vec<Event> = [610, 620, 630, 640]
        .iter()
        .map(|s| failed("ws1", "bob", *s))
        .collect();
    assert!(feed(&mut e, &more).is_empty());
    assert_eq!(feed(&mut e, &[failed("ws1", "bob", 650)]).len(), 1);

    // One second more than ten minutes: no.
    let mut e = engine(&with(FIVE_FAILURES));
    let over: Vec<Event> = [0, 150, 300, 450, 601]
        .iter()
        .map(|s| failed("ws1", "bob", *s))
        .collect();
    assert!(feed(&mut e, &over).is_empty());
}

#[test]
fn event_count_groups_by_host_and_tenant() {
    let mut e = engine(&with(FIVE_FAILURES));
    let mut events = Vec::new();
    for i in 0..4 {
        events.push(failed("ws1", "bob", i * 10));
        events.push(failed("ws2", "bob", i * 10));
        events.push(event("globex", "ws1", 4625, i * 10, &[]));
    }
    assert!(feed(&mut e, &events).is_empty());
    let alerts = feed(&mut e, &[event("globex", "WS1.corp.local", 4625, 50, &[])]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].tenant.as_str(), "globex");
}

#[test]
fn event_count_in_any_arrival_order() {
    let events: Vec<Event> = (0..5).map(|i| failed("ws1", "bob", i * 60)).collect();
    let mut forward = engine(&with(FIVE_FAILURES));
    let expected = feed(&mut forward, &events);
    assert_eq!(expected.len(), 1);
    let mut e = engine(&with(FIVE_FAILURES));
    let reversed: Vec<Event> = events.iter().rev().cloned().collect();
    let alerts = feed(&mut e, &reversed);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].id, expected[0].id, "same evidence, same id");
}

#[test]
fn event_count_drops_late_events() {
    let config = EngineConfig {
        allowed_lateness: Duration::from_secs(30),
        ..EngineConfig::default()
    };
    let mut e = engine_with(&with(FIVE_FAILURES), config);
    let mut events = vec![failed("ws1", "bob", 500)];
    // Four events 100 to 400 seconds behind the newest: later than 30 s.
    events.extend((1..5).map(|i| failed("ws1", "bob", i * 100)));
    assert!(feed(&mut e, &events).is_empty());
    assert_eq!(e.stats().late, 4);
}

#[test]
fn event_count_with_an_upper_bound_is_decided_when_the_window_closes() {
    let rule = with(
        r#"
title: Few failures
id: 00000000-0000-4000-8000-0000000000c2
correlation:
    type: event_count
    rules: [failed_logon]
    group-by: [Computer]
    timespan: 10m
    condition: {gte: 2, lt: 4}
"#,
    );
    let config = EngineConfig {
        allowed_lateness: Duration::from_secs(60),
        ..EngineConfig::default()
    };
    let mut e = engine_with(&rule, config);
    // ws1: three failures (in range); ws2: four (too many); ws3: one (too few).
    let mut events: Vec<Event> = (0..3).map(|i| failed("ws1", "a", i * 60)).collect();
    events.extend((0..4).map(|i| failed("ws2", "a", i * 60)));
    events.push(failed("ws3", "a", 0));
    assert!(
        feed(&mut e, &events).is_empty(),
        "nothing is decided while the windows are open"
    );
    // The tenant's clock passes the first windows' end (10 min) plus the lateness (1 min).
    let later = feed(&mut e, &[event("acme", "other", 4688, 11 * 60 + 1, &[])]);
    assert_eq!(later.len(), 1, "{later:#?}");
    assert_eq!(later[0].group["Computer"], "ws1");
    assert_eq!(later[0].events.len(), 3);
    assert!(e.finish().is_empty(), "nothing else is in range");
}

#[test]
fn finish_decides_open_windows() {
    let rule = with(
        r#"
title: Exactly two failures
id: 00000000-0000-4000-8000-0000000000c3
correlation:
    type: event_count
    rules: [failed_logon]
    group-by: [Computer]
    timespan: 1h
    condition: {eq: 2}
"#,
    );
    let mut e = engine(&rule);
    assert!(feed(&mut e, &[failed("ws1", "a", 0), failed("ws1", "b", 10)]).is_empty());
    let done = e.finish();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].events.len(), 2);
}

const SPRAY: &str = r#"
title: Password spray
id: 00000000-0000-4000-8000-0000000000c4
correlation:
    type: value_count
    rules: [failed_logon]
    group-by: [Computer]
    timespan: 5m
    condition:
        field: TargetUserName
        gte: 3
"#;

#[test]
fn value_count_counts_distinct_values() {
    let mut e = engine(&with(SPRAY));
    // The same user four times, in two spellings: one value.
    let same: Vec<Event> = ["bob", "BOB", "bob", "Bob"]
        .iter()
        .enumerate()
        .map(|(i, u)| failed("dc1", u, i as i64))
        .collect();
    assert!(feed(&mut e, &same).is_empty());
    // Two more users: three distinct values.
    assert!(feed(&mut e, &[failed("dc1", "alice", 10)]).is_empty());
    let alerts = feed(&mut e, &[failed("dc1", "carol", 20)]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule.title, "Password spray");
    // An event without the counted field adds no value.
    let mut e = engine(&with(SPRAY));
    let no_user = event("acme", "dc1", 4625, 0, &[]);
    assert!(
        feed(
            &mut e,
            &[no_user, failed("dc1", "a", 1), failed("dc1", "b", 2)]
        )
        .is_empty()
    );

    // Several fields: their combinations are counted.
    let pairs = SPRAY.replace(
        "field: TargetUserName\n        gte: 3",
        "field: [TargetUserName, IpAddress]\n        gte: 3",
    );
    let mut e = engine(&with(&pairs));
    let from = |user: &str, ip: &str, s: i64| {
        event(
            "acme",
            "dc1",
            4625,
            s,
            &[("TargetUserName", user), ("IpAddress", ip)],
        )
    };
    let events = [
        from("bob", "10.0.0.1", 0),
        from("bob", "10.0.0.1", 1),
        from("bob", "10.0.0.2", 2),
    ];
    assert!(feed(&mut e, &events).is_empty(), "two combinations");
    assert_eq!(feed(&mut e, &[from("alice", "10.0.0.1", 3)]).len(), 1);
}

const RECON: &str = r#"
title: Recon burst
id: 00000000-0000-4000-8000-0000000000d1
correlation:
    type: temporal
    rules: [whoami, net_user, systeminfo]
    group-by: [Computer]
    timespan: 5m
---
title: whoami
id: 00000000-0000-4000-8000-0000000000d2
name: whoami
logsource: {product: windows, service: security}
detection:
    sel: {EventID: 4688, NewProcessName|endswith: '\whoami.exe'}
    condition: sel
---
title: net user
id: 00000000-0000-4000-8000-0000000000d3
name: net_user
logsource: {product: windows, service: security}
detection:
    sel: {EventID: 4688, NewProcessName|endswith: '\net.exe'}
    condition: sel
---
title: systeminfo
id: 00000000-0000-4000-8000-0000000000d4
name: systeminfo
logsource: {product: windows, service: security}
detection:
    sel: {EventID: 4688, NewProcessName|endswith: '\systeminfo.exe'}
    condition: sel
"#;

fn proc(host: &str, image: &str, seconds: i64) -> Event {
    event(
        "acme",
        host,
        4688,
        seconds,
        &[("NewProcessName", &format!("C:\\Windows\\System32\\{image}"))],
    )
}

#[test]
fn temporal_fires_in_any_order_within_the_timespan() {
    let orders = [
        ["whoami.exe", "net.exe", "systeminfo.exe"],
        ["systeminfo.exe", "whoami.exe", "net.exe"],
        ["net.exe", "systeminfo.exe", "whoami.exe"],
    ];
    for order in orders {
        let mut e = engine(RECON);
        let events: Vec<Event> = order
            .iter()
            .enumerate()
            .map(|(i, img)| proc("ws1", img, i as i64 * 60))
            .collect();
        let alerts = feed(&mut e, &events);
        assert_eq!(alerts.len(), 1, "{order:?}");
        // Stages in the rules' order, whatever the events' order.
        let titles: Vec<&str> = alerts[0]
            .stages
            .iter()
            .map(|s| s.rule.title.as_str())
            .collect();
        assert_eq!(titles, ["whoami", "net user", "systeminfo"]);
    }
    // Spread over more than the timespan: nothing.
    let mut e = engine(RECON);
    let slow = [
        proc("ws1", "whoami.exe", 0),
        proc("ws1", "net.exe", 200),
        proc("ws1", "systeminfo.exe", 301),
    ];
    assert!(feed(&mut e, &slow).is_empty());
    // Two of three on one host, the third on another: nothing.
    let mut e = engine(RECON);
    let split = [
        proc("ws1", "whoami.exe", 0),
        proc("ws1", "net.exe", 10),
        proc("ws2", "systeminfo.exe", 20),
    ];
    assert!(feed(&mut e, &split).is_empty());
}

#[test]
fn temporal_condition_counts_distinct_rules() {
    let rules = RECON.replace(
        "    timespan: 5m\n",
        "    timespan: 5m\n    condition: {gte: 2}\n",
    );
    let mut e = engine(&rules);
    // The same rule twice is one rule.
    assert!(
        feed(
            &mut e,
            &[proc("ws1", "whoami.exe", 0), proc("ws1", "whoami.exe", 5)]
        )
        .is_empty()
    );
    let alerts = feed(&mut e, &[proc("ws1", "net.exe", 10)]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].stages.len(), 2);
}

#[test]
fn aliases_give_one_group_key_from_different_fields() {
    // The account is the target of a failed logon and the subject of a successful one.
    let rules = r#"
title: Failure then success for one account
id: 00000000-0000-4000-8000-0000000000e1
correlation:
    type: temporal
    rules: [failed_logon, successful_logon]
    group-by: [account]
    timespan: 10m
    aliases:
        account:
            failed_logon: TargetUserName
            successful_logon: SubjectUserName
"#;
    let mut e = engine(&with(rules));
    let events = [
        event("acme", "ws1", 4625, 0, &[("TargetUserName", "bob")]),
        event("acme", "ws2", 4624, 60, &[("SubjectUserName", "alice")]),
    ];
    assert!(feed(&mut e, &events).is_empty(), "different accounts");
    let alerts = feed(
        &mut e,
        &[event(
            "acme",
            "ws3",
            4624,
            120,
            &[("SubjectUserName", "BOB")],
        )],
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].group["account"], "bob");
}

/// The specification's example: many failed logons, then a success, for one user.
const BRUTE_FORCE: &str = r#"
title: Multiple failed logons followed by a successful logon
id: 00000000-0000-4000-8000-0000000000b1
correlation:
    type: temporal_ordered
    rules: [multiple_failed_logons, successful_logon]
    group-by: [TargetUserName]
    timespan: 10m
level: high
---
title: Multiple failed logons
id: 00000000-0000-4000-8000-0000000000b2
name: multiple_failed_logons
correlation:
    type: event_count
    rules: [failed_logon]
    group-by: [TargetUserName]
    timespan: 10m
    condition: {gte: 3}
"#;

#[test]
fn a_correlation_of_correlations() {
    let mut e = engine(&with(BRUTE_FORCE));
    // Two failures and a success: the inner count is not reached.
    let few = [
        failed("ws1", "bob", 0),
        failed("ws1", "bob", 10),
        success("ws1", "bob", 20),
    ];
    assert!(feed(&mut e, &few).is_empty());
    // A third failure, then a success: the inner fires (silently: the outer refers to it
    // without `generate`), then the outer.
    assert!(feed(&mut e, &[failed("ws1", "bob", 30)]).is_empty());
    let alerts = feed(&mut e, &[success("ws1", "bob", 40)]);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(
        a.rule.title,
        "Multiple failed logons followed by a successful logon"
    );
    assert_eq!(a.group["TargetUserName"], "bob");
    let stages: Vec<&str> = a.stages.iter().map(|s| s.rule.title.as_str()).collect();
    assert_eq!(stages, ["Multiple failed logons", "Successful logon"]);
    assert_eq!(
        a.stages[0].events.len(),
        3,
        "the inner stage carries its events"
    );
    assert_eq!(a.events.len(), 4);
    // Another user's failures do not help bob, and a success before the failures is not
    // "followed by".
    let mut e = engine(&with(BRUTE_FORCE));
    let wrong = [
        success("ws1", "bob", 0),
        failed("ws1", "alice", 10),
        failed("ws1", "alice", 11),
        failed("ws1", "bob", 12),
        failed("ws1", "bob", 13),
        failed("ws1", "bob", 14),
    ];
    assert!(feed(&mut e, &wrong).is_empty());
}

#[test]
fn generate_makes_the_inner_correlation_alert_too() {
    let rules = BRUTE_FORCE.replace(
        "    timespan: 10m\nlevel: high",
        "    timespan: 10m\ngenerate: true\nlevel: high",
    );
    let mut e = engine(&with(&rules));
    let events = [
        failed("ws1", "bob", 0),
        failed("ws1", "bob", 10),
        failed("ws1", "bob", 20),
        success("ws1", "bob", 30),
    ];
    let titles: Vec<String> = feed(&mut e, &events)
        .into_iter()
        .map(|a| a.rule.title)
        .collect();
    // `generate` on the outer correlation makes what it refers to alert on its own: the inner
    // correlation and the successful logon. The failed logons are referred to by the inner
    // correlation, without `generate`, so they alert only through it.
    assert_eq!(
        titles,
        [
            "Multiple failed logons",
            "Successful logon",
            "Multiple failed logons followed by a successful logon"
        ]
    );
}

#[test]
fn correlation_alert_ids_are_deterministic() {
    let run = || {
        let mut e = engine(&with(BRUTE_FORCE));
        let events = [
            failed("ws1", "bob", 0),
            failed("ws1", "bob", 10),
            failed("ws1", "bob", 20),
            success("ws1", "bob", 30),
        ];
        feed(&mut e, &events)
            .into_iter()
            .map(|a| a.id)
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first.len(), 1);
    assert_eq!(first, run());
}

#[test]
fn count_state_is_bounded_per_tenant_first() {
    let config = EngineConfig {
        max_groups: 100,
        max_groups_per_tenant: 10,
        ..EngineConfig::default()
    };
    let mut e = engine_with(&with(FIVE_FAILURES), config);
    let quiet: Vec<Event> = (0..4)
        .map(|i| event("quiet", "dc1", 4625, i, &[]))
        .collect();
    feed(&mut e, &quiet);
    let flood: Vec<Event> = (0..500)
        .map(|i| event("noisy", &format!("h{i}"), 4625, i, &[]))
        .collect();
    feed(&mut e, &flood);
    assert!(e.partial_chains() <= 11, "{}", e.partial_chains());
    assert_eq!(e.stats().evicted, 490);
    let done = feed(&mut e, &[event("quiet", "dc1", 4625, 10, &[])]);
    assert_eq!(done.len(), 1, "the quiet tenant's count survived");
}

#[test]
fn reference_problems_are_reported_with_a_reason() {
    let cycle = r#"
title: A
id: 00000000-0000-4000-8000-0000000000a1
name: a
correlation: {type: temporal, rules: [b, failed_logon], group-by: [Computer], timespan: 1m}
---
title: B
id: 00000000-0000-4000-8000-0000000000a2
name: b
correlation: {type: temporal, rules: [a, failed_logon], group-by: [Computer], timespan: 1m}
"#;
    let err = compile(&with(cycle)).unwrap_err();
    assert!(err.contains("cycle"), "{err}");

    let missing_group = r#"
title: Outer
id: 00000000-0000-4000-8000-0000000000a3
correlation: {type: temporal, rules: [inner, failed_logon], group-by: [User], timespan: 1m}
---
title: Inner
id: 00000000-0000-4000-8000-0000000000a4
name: inner
correlation: {type: event_count, rules: [failed_logon], group-by: [Computer], timespan: 1m, condition: {gte: 2}}
"#;
    let err = compile(&with(missing_group)).unwrap_err();
    assert!(err.contains("does not group by \"User\""), "{err}");

    let subset_ordered = r#"
title: Ordered subset
id: 00000000-0000-4000-8000-0000000000a5
correlation:
    type: temporal_ordered
    rules: [failed_logon, successful_logon]
    group-by: [Computer]
    timespan: 1m
    condition: {gte: 1}
"#;
    let err = compile(&with(subset_ordered)).unwrap_err();
    assert!(err.contains("unsupported feature"), "{err}");

    let unknown = r#"
title: Unknown
id: 00000000-0000-4000-8000-0000000000a6
correlation: {type: temporal, rules: [nope], group-by: [Computer], timespan: 1m}
"#;
    let err = compile(&with(unknown)).unwrap_err();
    assert!(err.contains("\"nope\", which is not loaded"), "{err}");

    let broken_stage = r#"
title: Refers to a broken rule
id: 00000000-0000-4000-8000-0000000000a8
correlation: {type: temporal, rules: [broken, failed_logon], group-by: [Computer], timespan: 1m}
---
title: Broken
id: 00000000-0000-4000-8000-0000000000a9
name: broken
logsource: {product: windows, service: security}
detection:
    sel: {CommandLine|re: 'a(?=b)'}
    condition: sel
"#;
    let err = compile(&with(broken_stage)).unwrap_err();
    assert!(err.contains("look-ahead"), "{err}");
    assert!(
        err.contains("\"broken\", which could not be loaded"),
        "{err}"
    );

    let alias = r#"
title: Alias without a field for a rule
id: 00000000-0000-4000-8000-0000000000a7
correlation:
    type: temporal
    rules: [failed_logon, successful_logon]
    group-by: [account]
    timespan: 1m
    aliases:
        account:
            failed_logon: TargetUserName
"#;
    let err = compile(&with(alias)).unwrap_err();
    assert!(
        err.contains("gives no field for rule \"successful_logon\""),
        "{err}"
    );
}
