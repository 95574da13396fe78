//! Playbook features on hand-built events: gaps, counts with distinct values, optional stages,
//! "N of M" groups, absence judged on event time, partial findings, suppression, tenant policy
//! and reloads.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chainwatch_config::TenantConfig;
use chainwatch_config::service::ExclusionConfig;
use chainwatch_config::sigma::parse_rule_text;
use chainwatch_correlate::{CompileOptions, Engine, EngineConfig, RuleSet};
use chainwatch_model::{
    Alert, AlertKind, Event, EventId, FieldValue, Fields, Severity, TenantId, Timestamp,
};
use support::{PROCESS_CREATION, rule_set};

/// Stage rules: each matches a process whose image ends with its letter (`a.exe`, ...).
fn stage_rules(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "---\ntitle: Stage {n}\nname: {n}\ntags: [attack.t1059]\nlogsource: {{product: windows, category: process_creation}}\ndetection:\n    sel: {{Image|endswith: '\\{n}.exe'}}\n    condition: sel\n"
            )
        })
        .collect()
}

fn playbook(rules: &[&str], timespan: &str, extra: &str, more: &[&str]) -> String {
    let mut all: Vec<&str> = rules.to_vec();
    all.extend_from_slice(more);
    format!(
        "title: Chain\nid: 00000000-0000-4000-8000-0000000000c1\nname: chain\ncorrelation:\n    type: temporal_ordered\n    rules: [{}]\n    group-by: [Computer]\n    timespan: {timespan}\nlevel: critical\nplaybook:\n    priority: critical\n{extra}\n{}",
        rules.join(", "),
        stage_rules(&all)
    )
}

fn engine(text: &str) -> Engine {
    Engine::new(rule_set(text), EngineConfig::default())
}

fn event_on(tenant: &str, host: &str, image: &str, secs: i64, extra: &[(&str, &str)]) -> Event {
    let mut fields = Fields::new();
    fields.push("EventID", FieldValue::Int(1));
    fields.push("Image", FieldValue::Str(format!("C:\\x\\{image}").into()));
    for (k, v) in extra {
        fields.push(*k, FieldValue::Str((*v).into()));
    }
    support::event(
        tenant,
        host,
        Timestamp::from_millis(1_700_000_000_000 + secs * 1000),
        PROCESS_CREATION,
        fields,
        &format!("{tenant}/{host}/{image}/{secs}/{extra:?}"),
        secs.unsigned_abs(),
    )
}

/// A process creation of `<stage>.exe` on host h1 of tenant acme.
fn ev(stage: &str, secs: i64) -> Event {
    event_on("acme", "h1", &format!("{stage}.exe"), secs, &[])
}

fn feed(e: &mut Engine, events: &[Event]) -> Vec<Alert> {
    events.iter().flat_map(|x| e.observe(x)).collect()
}

fn stage_names(a: &Alert) -> Vec<&str> {
    a.stages.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn a_stage_must_follow_the_previous_one_within_its_gap() {
    let text = playbook(
        &["a", "b"],
        "1d",
        "    stages:\n        b: {max_gap: 10m}",
        &[],
    );
    let mut e = engine(&text);
    assert!(
        feed(&mut e, &[ev("a", 0), ev("b", 601)]).is_empty(),
        "b is 10m01s after a"
    );
    let mut e = engine(&text);
    assert_eq!(feed(&mut e, &[ev("a", 0), ev("b", 600)]).len(), 1);
    // A later first stage brings b within the gap.
    let mut e = engine(&text);
    assert_eq!(
        feed(&mut e, &[ev("a", 0), ev("b", 1000), ev("a", 500)]).len(),
        1
    );
}

#[test]
fn counting_stages_need_distinct_values_inside_their_window() {
    let text = playbook(
        &["a", "r"],
        "1h",
        "    stages:\n        r: {min_count: 5, distinct: TargetFilename, within: 1m}",
        &[],
    );
    let rename =
        |secs, file: &str| event_on("acme", "h1", "r.exe", secs, &[("TargetFilename", file)]);
    let mut e = engine(&text);
    let mut events = vec![ev("a", 0)];
    // Five renames of the same file: one distinct value.
    events.extend((0..5).map(|i| rename(10 + i, "C:\\d\\same.docx")));
    assert!(feed(&mut e, &events).is_empty());
    // Five distinct files, but spread over more than a minute.
    let spread: Vec<Event> = (0..5)
        .map(|i| rename(100 + i * 20, &format!("C:\\d\\f{i}.docx")))
        .collect();
    assert!(feed(&mut e, &spread).is_empty());
    // Inside the last minute of 181 s: f2, f3, f4 and f9 are four.
    assert!(feed(&mut e, &[rename(181, "C:\\d\\f9.docx")]).is_empty());
    // A fifth distinct file inside one minute completes the stage.
    let alerts = feed(&mut e, &[rename(182, "C:\\d\\f10.docx")]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(stage_names(&alerts[0]), ["a", "r"]);
    assert_eq!(
        alerts[0].stages[1].events.len(),
        5,
        "the evidence is the five counted renames"
    );
}

#[test]
fn optional_stages_may_be_skipped_but_are_kept_when_present() {
    let text = playbook(
        &["a", "b", "c"],
        "1h",
        "    stages:\n        b: {optional: true}",
        &[],
    );
    let mut e = engine(&text);
    let alerts = feed(&mut e, &[ev("a", 0), ev("c", 60)]);
    assert_eq!(stage_names(&alerts[0]), ["a", "c"]);
    let mut e = engine(&text);
    let alerts = feed(&mut e, &[ev("a", 0), ev("b", 30), ev("c", 60)]);
    assert_eq!(stage_names(&alerts[0]), ["a", "b", "c"]);
}

#[test]
fn a_group_is_one_stage_met_by_n_of_its_rules_in_any_order() {
    let text = playbook(
        &["a", "x", "y", "z", "d"],
        "1h",
        "    groups:\n        - {name: recon, rules: [x, y, z], min: 2}",
        &[],
    );
    let mut e = engine(&text);
    assert!(
        feed(&mut e, &[ev("a", 0), ev("z", 10), ev("d", 30)]).is_empty(),
        "one of three is not two"
    );
    // x arrives late (event time 20): z and x make the group, complete at 20, before d at 30.
    let alerts = feed(&mut e, &[ev("x", 20)]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(stage_names(&alerts[0]), ["a", "recon", "d"]);
    assert_eq!(alerts[0].stages[1].events.len(), 2);
    assert_eq!(
        alerts[0].stages[1].rule.title, "Stage x + Stage z",
        "rules in the group's order"
    );
}

#[test]
fn absence_is_judged_on_event_time_once_the_deadline_has_passed() {
    let text = playbook(
        &["a", "b"],
        "1h",
        "    absent:\n        - {rule: undo, after: b, within: 10m}",
        &["undo"],
    );
    let config = EngineConfig {
        allowed_lateness: std::time::Duration::from_secs(60),
        ..EngineConfig::default()
    };
    // The chain is complete at 60 s, but the deadline (b + 10 min) has not passed.
    let mut e = Engine::new(rule_set(&text), config);
    assert!(feed(&mut e, &[ev("a", 0), ev("b", 60)]).is_empty());
    // Unrelated events from another host move event time on: deadline 660 s + lateness 60 s.
    assert!(feed(&mut e, &[event_on("acme", "other", "noise.exe", 700, &[])]).is_empty());
    let alerts = feed(&mut e, &[event_on("acme", "other", "noise.exe", 721, &[])]);
    assert_eq!(alerts.len(), 1, "the deadline passed in event time");
    assert_eq!(stage_names(&alerts[0]), ["a", "b"]);

    // The absent rule matching inside the window cancels the chain, even arriving late.
    let mut e = Engine::new(rule_set(&text), config);
    assert!(feed(&mut e, &[ev("a", 0), ev("b", 60), ev("undo", 300)]).is_empty());
    assert!(feed(&mut e, &[event_on("acme", "other", "noise.exe", 5000, &[])]).is_empty());
    // After the window it does not.
    let mut e = Engine::new(rule_set(&text), config);
    assert!(feed(&mut e, &[ev("a", 0), ev("b", 60), ev("undo", 700)]).is_empty());
    assert_eq!(
        feed(&mut e, &[event_on("acme", "other", "noise.exe", 5000, &[])]).len(),
        1
    );
    // The absent rule alone raises nothing.
    let mut e = Engine::new(rule_set(&text), config);
    assert!(
        feed(
            &mut e,
            &[
                ev("undo", 0),
                event_on("acme", "other", "noise.exe", 9000, &[])
            ]
        )
        .is_empty()
    );
}

#[test]
fn absence_deadlines_also_pass_by_advancing_the_watermark() {
    let text = playbook(
        &["a", "b"],
        "1h",
        "    absent:\n        - {rule: undo, after: b, within: 10m}",
        &["undo"],
    );
    let mut e = engine(&text);
    assert!(feed(&mut e, &[ev("a", 0), ev("b", 60)]).is_empty());
    assert!(
        e.advance(Timestamp::from_millis(1_700_000_000_000 + 600_000))
            .is_empty()
    );
    assert_eq!(
        e.advance(Timestamp::from_millis(1_700_000_000_000 + 660_000))
            .len(),
        1
    );
}

#[test]
fn partial_findings_rise_in_priority_and_keep_their_id() {
    let text = playbook(
        &["a", "b", "c"],
        "1d",
        "    partial:\n        - {after: a, priority: medium}\n        - {after: b, priority: high}",
        &[],
    );
    let mut e = engine(&text);
    let first = feed(&mut e, &[ev("a", 0)]);
    assert_eq!(first.len(), 1);
    assert!(first[0].partial);
    assert_eq!(first[0].severity, Severity::Medium);
    assert_eq!((first[0].revision, stage_names(&first[0])), (0, vec!["a"]));
    // A second a.exe is not progress: no new finding.
    assert!(feed(&mut e, &[ev("a", 5)]).is_empty());
    let second = feed(&mut e, &[ev("b", 10)]);
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].severity, second[0].revision),
        (Severity::High, 1)
    );
    assert_eq!(second[0].id, first[0].id);
    let done = feed(&mut e, &[ev("c", 20)]);
    assert_eq!(done.len(), 1);
    assert!(!done[0].partial);
    assert_eq!(
        (done[0].severity, done[0].revision),
        (Severity::Critical, 2)
    );
    assert_eq!(done[0].id, first[0].id);
    assert_eq!(stage_names(&done[0]), ["a", "b", "c"]);
    // Stages arriving together jump straight to the highest milestone reached.
    let mut e = engine(&text);
    let both = feed(&mut e, &[ev("b", 10), ev("a", 0)]);
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].severity, Severity::High);
}

#[test]
fn suppression_updates_one_finding_per_window() {
    let text = playbook(&["a", "b"], "1h", "    suppress: 6h", &[]);
    let mut e = engine(&text);
    let one = feed(&mut e, &[ev("a", 0), ev("b", 60)]);
    let two = feed(&mut e, &[ev("a", 3600), ev("b", 3660)]);
    assert_eq!((one.len(), two.len()), (1, 1));
    assert_eq!(two[0].id, one[0].id, "the same finding, updated");
    assert_eq!(two[0].revision, 1);
    // After the window, a new finding.
    let three = feed(&mut e, &[ev("a", 30_000), ev("b", 30_060)]);
    assert_eq!(three.len(), 1);
    assert_ne!(three[0].id, one[0].id);
    assert_eq!(three[0].revision, 0);
    // Without suppression, every chain is its own finding.
    let mut e = engine(&playbook(&["a", "b"], "1h", "", &[]));
    let ids: Vec<_> = feed(
        &mut e,
        &[ev("a", 0), ev("b", 60), ev("a", 3600), ev("b", 3660)],
    )
    .into_iter()
    .map(|a| a.id)
    .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
}

fn tenant_cfg(f: impl FnOnce(&mut TenantConfig)) -> BTreeMap<String, TenantConfig> {
    let mut c = TenantConfig::default();
    f(&mut c);
    BTreeMap::from([("acme".to_owned(), c)])
}

/// Compiles `text` with tenant overrides; `Err` lists the problems.
fn compile_with(text: &str, cfg: &BTreeMap<String, TenantConfig>) -> Result<Arc<RuleSet>, String> {
    let (docs, diags) = parse_rule_text(Path::new("pb.yml"), text);
    assert!(diags.is_empty(), "{diags}");
    let options = CompileOptions {
        tenants: cfg.clone(),
        tenants_source: "tenants.toml".into(),
        ..CompileOptions::default()
    };
    let (set, diags) = RuleSet::compile_with_options(&docs, &options);
    if diags.is_empty() {
        Ok(Arc::new(set))
    } else {
        Err(diags.to_string())
    }
}

fn with_policy(text: &str, cfg: &BTreeMap<String, TenantConfig>) -> Engine {
    Engine::new(compile_with(text, cfg).unwrap(), EngineConfig::default())
}

#[test]
fn tenant_exclusions_drop_known_good_activity() {
    let text = playbook(&["a", "b"], "1h", "", &[]);
    let cfg = tenant_cfg(|c| {
        c.exclude.push(ExclusionConfig {
            rule: Some("b".into()),
            field: "CommandLine".into(),
            values: vec!["*backup-agent*".into()],
        });
    });
    let mut e = with_policy(&text, &cfg);
    let admin = event_on(
        "acme",
        "h1",
        "b.exe",
        60,
        &[("CommandLine", "b.exe --from Backup-Agent nightly")],
    );
    assert!(feed(&mut e, &[ev("a", 0), admin]).is_empty());
    assert_eq!(e.stats().excluded, 1);
    assert_eq!(feed(&mut e, &[ev("b", 90)]).len(), 1);
    // Another tenant has no such exclusion.
    let other = event_on(
        "globex",
        "h1",
        "b.exe",
        60,
        &[("CommandLine", "b.exe --from Backup-Agent")],
    );
    assert_eq!(
        feed(&mut e, &[event_on("globex", "h1", "a.exe", 0, &[]), other]).len(),
        1
    );
}

#[test]
fn scoped_playbooks_run_only_on_hosts_with_the_role() {
    let text = playbook(&["a", "b"], "1h", "    scope: {roles: [exchange]}", &[]);
    let cfg = tenant_cfg(|c| {
        c.roles
            .insert("exchange".into(), vec!["EXCH01.corp.local".into()]);
    });
    let mut e = with_policy(&text, &cfg);
    let on = |host: &str| {
        vec![
            event_on("acme", host, "a.exe", 0, &[]),
            event_on("acme", host, "b.exe", 60, &[]),
        ]
    };
    assert!(
        feed(&mut e, &on("ws-01")).is_empty(),
        "not an Exchange server"
    );
    assert_eq!(feed(&mut e, &on("exch01")).len(), 1);
    // A tenant that declares no Exchange servers is not restricted.
    let globex = [
        event_on("globex", "ws-07", "a.exe", 0, &[]),
        event_on("globex", "ws-07", "b.exe", 60, &[]),
    ];
    assert_eq!(feed(&mut e, &globex).len(), 1);
}

/// An event that shows its host is an Exchange server (an MSExchange log) and matches no rule.
fn exchange_log(tenant: &str, host: &str, secs: i64) -> Event {
    let mut e = event_on(tenant, host, "noise.exe", secs, &[]);
    e.source.channel = Some("MSExchange Management".into());
    e.source.provider = Some("MSExchange CmdletLogs".into());
    e
}

#[test]
fn inferred_roles_scope_playbooks_like_declared_ones() {
    let text = playbook(&["a", "b"], "1h", "    scope: {roles: [exchange]}", &[]);
    let mut e = engine(&text);
    let on = |tenant: &str, host: &str, at: i64| {
        vec![
            event_on(tenant, host, "a.exe", at, &[]),
            event_on(tenant, host, "b.exe", at + 60, &[]),
        ]
    };
    // No Exchange server seen yet: not restricted.
    assert_eq!(feed(&mut e, &on("acme", "ws-01", 0)).len(), 1);
    // EXCH01's telemetry shows it is one: from then on only Exchange servers are in scope.
    assert!(feed(&mut e, &[exchange_log("acme", "EXCH01", 100)]).is_empty());
    let acme = TenantId::new("acme").unwrap();
    assert!(e.roles().has(&acme, "exch01", "exchange"));
    assert!(feed(&mut e, &on("acme", "ws-02", 200)).is_empty());
    assert_eq!(feed(&mut e, &on("acme", "exch01.corp.local", 300)).len(), 1);
    // Another tenant's Exchange server does not narrow this one.
    assert_eq!(feed(&mut e, &on("globex", "ws-01", 400)).len(), 1);
    let changes = e.take_role_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].key(), "acme/exch01");

    // A tenant that turns inference off is scoped by its declared roles only.
    let cfg = tenant_cfg(|c| c.infer_roles = Some(false));
    let mut e = with_policy(&text, &cfg);
    feed(&mut e, &[exchange_log("acme", "EXCH01", 100)]);
    assert_eq!(feed(&mut e, &on("acme", "ws-02", 200)).len(), 1);

    // Declared and inferred roles add up.
    let cfg = tenant_cfg(|c| {
        c.roles.insert("exchange".into(), vec!["EXCH02".into()]);
    });
    let mut e = with_policy(&text, &cfg);
    feed(&mut e, &[exchange_log("acme", "EXCH01", 100)]);
    assert_eq!(feed(&mut e, &on("acme", "exch01", 200)).len(), 1);
    assert_eq!(feed(&mut e, &on("acme", "exch02", 300)).len(), 1);
    assert!(feed(&mut e, &on("acme", "ws-03", 400)).is_empty());
}

#[test]
fn alerts_carry_the_notable_events_of_their_host_before_and_during_the_chain() {
    // Stages a, b; rules c and d are standalone detections of other activity.
    let mut text = playbook(&["a", "b"], "1h", "", &[]);
    text.push_str(
        &stage_rules(&["c", "d"]).replace("title: Stage d", "title: Stage d\nlevel: low"),
    );
    let mut e = engine(&text);
    let before = event_on("acme", "h1", "c.exe", -3000, &[]);
    let long_before = event_on("acme", "h1", "d.exe", -200_000, &[]);
    let other_host = event_on("acme", "h2", "c.exe", -100, &[]);
    let during = event_on("acme", "h1", "d.exe", 30, &[]);
    let alerts = feed(
        &mut e,
        &[
            long_before,
            before.clone(),
            other_host,
            ev("a", 0),
            during.clone(),
            ev("b", 60),
        ],
    );
    let chain = alerts.iter().find(|a| a.kind == AlertKind::Chain).unwrap();
    let lb = chain.lookback.as_ref().unwrap();
    let ids: Vec<EventId> = lb.events.iter().map(|n| n.evidence.id).collect();
    assert_eq!(ids, [before.id, during.id]);
    assert!(lb.complete);
    assert_eq!(lb.events[0].rules[0].title, "Stage c");
    // The chain's own evidence is not repeated in it.
    assert!(chain.events.iter().all(|x| !ids.contains(&x.id)));
}

#[test]
fn tenants_choose_playbooks_and_priorities() {
    let text = playbook(&["a", "b"], "1h", "", &[]);
    let off = tenant_cfg(|c| c.playbooks = Some(Vec::new()));
    let mut e = with_policy(&text, &off);
    assert!(feed(&mut e, &[ev("a", 0), ev("b", 60)]).is_empty());
    let lower = tenant_cfg(|c| {
        c.priority.insert("chain".into(), Severity::Low);
    });
    let mut e = with_policy(&text, &lower);
    assert_eq!(
        feed(&mut e, &[ev("a", 0), ev("b", 60)])[0].severity,
        Severity::Low
    );
    let unknown = tenant_cfg(|c| c.playbooks = Some(vec!["nope".into()]));
    let err = compile_with(&text, &unknown).unwrap_err();
    assert!(
        err.contains("nope") && err.contains("tenants.toml"),
        "{err}"
    );
}

#[test]
fn a_reload_keeps_the_partial_chains_of_unchanged_playbooks() {
    let chain_ab = playbook(&["a", "b"], "1h", "", &[]);
    let other = "---
title: Other
id: 00000000-0000-4000-8000-0000000000c2
name: other
correlation:
    type: temporal_ordered
    rules: [x, y]
    group-by: [Computer]
    timespan: 1h
playbook:
    priority: high
"
    .to_owned()
        + &stage_rules(&["x", "y"]);
    let mut e = engine(&format!("{chain_ab}{other}"));
    assert!(feed(&mut e, &[ev("a", 0), ev("x", 0)]).is_empty());
    // Reload with "other" changed (a longer timespan) and "chain" unchanged.
    let changed = other.replace("timespan: 1h", "timespan: 2h");
    let kept = e.reload(rule_set(&format!("{chain_ab}{changed}")));
    assert_eq!(kept, 1);
    let alerts = feed(&mut e, &[ev("b", 60), ev("y", 60)]);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule.title, "Chain");
}

#[test]
fn the_same_host_name_in_two_tenants_stays_apart_in_playbooks_too() {
    let text = playbook(
        &["a", "b"],
        "1h",
        "    partial:\n        - {after: a, priority: low}",
        &[],
    );
    let mut e = engine(&text);
    let alerts = feed(
        &mut e,
        &[
            event_on("t1", "exch01", "a.exe", 0, &[]),
            event_on("t2", "EXCH01", "b.exe", 60, &[]),
        ],
    );
    assert!(
        alerts
            .iter()
            .all(|a| a.partial && a.kind == AlertKind::Chain),
        "{alerts:?}"
    );
    assert_eq!(alerts.len(), 1, "only t1's partial finding");
}

#[test]
fn a_complete_chain_grows_while_optional_stages_arrive_in_its_timespan() {
    let text = playbook(
        &["a", "b", "c"],
        "1h",
        "    stages:\n        c: {optional: true}",
        &[],
    );
    let mut e = engine(&text);
    let first = feed(&mut e, &[ev("a", 0), ev("b", 60)]);
    assert_eq!(
        first.len(),
        1,
        "complete once the required stages are there"
    );
    assert_eq!(stage_names(&first[0]), ["a", "b"]);
    let grown = feed(&mut e, &[ev("c", 120)]);
    assert_eq!(grown.len(), 1);
    assert_eq!((grown[0].id, grown[0].revision), (first[0].id, 1));
    assert_eq!(stage_names(&grown[0]), ["a", "b", "c"]);
    // Every stage placed: the chain is closed; another c changes nothing.
    assert!(feed(&mut e, &[ev("c", 180)]).is_empty());
    // An optional stage after the timespan does not join.
    let mut e = engine(&text);
    assert_eq!(feed(&mut e, &[ev("a", 0), ev("b", 60)]).len(), 1);
    assert!(feed(&mut e, &[ev("c", 4000)]).is_empty());
}
