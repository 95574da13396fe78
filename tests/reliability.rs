//! Reliability end to end, through a real broker: a chain that straddles a `kill -9` of the
//! correlator, two instances sharing the work while one stops and comes back, a broker restart
//! mid-stream, a flood of distinct hosts from one tenant, and a graceful stop.
//!
//! Each test ends on the exact set of alert ids (and revisions) on the alert topic, compared
//! with what `chainwatch replay` finds in the same records: nothing lost, nothing found that
//! should not be, whatever the failures in between.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chainwatch_model::Alert;
use support::http::*;
use support::tansu::Tansu;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);
const LOG: &str = "info,librdkafka=warn,rdkafka=warn";

/// A config for `names` on `brokers`; `extra` goes at the end (sinks, `[shutdown]`, ...),
/// `correlate` into `[correlate]`, `kafka` into `[kafka.options]`.
fn config(
    dir: &Path,
    names: &Names,
    brokers: &str,
    http: u16,
    kafka: &str,
    correlate: &str,
    extra: &str,
) -> PathBuf {
    let options = format!(
        "# Find a restarted broker quickly.\n\"reconnect.backoff.max.ms\" = \"1000\"\n{kafka}"
    );
    let text = names.config_text(&ConfigParts {
        brokers: Some(brokers),
        options: &options,
        correlate,
        http: Some(http),
        extra,
        ..ConfigParts::default()
    });
    let path = dir.join(format!("chainwatch-{http}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// (id, revision) of every finding `chainwatch replay` raises on `records` of each tenant.
fn replayed(tenants: &[(&str, &[Vec<u8>])]) -> BTreeSet<(String, u32)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = BTreeSet::new();
    for (tenant, records) in tenants {
        let file = dir.path().join(format!("{tenant}.jsonl"));
        let mut text = Vec::new();
        for r in *records {
            text.extend_from_slice(r);
            text.push(b'\n');
        }
        std::fs::write(&file, text).unwrap();
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_chainwatch"))
            .args(["replay", "--output", "json", "--allowed-lateness", "2h"])
            .args(["--tenant", tenant])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        for line in String::from_utf8(run.stdout).unwrap().lines() {
            let a: Alert = serde_json::from_str(line).unwrap();
            out.insert((a.id.to_string(), a.revision));
        }
    }
    out
}

/// Every finding on the alert topic: (id, revision) -> how many records carry it.
fn on_topic(brokers: &str, names: &Names) -> BTreeMap<(String, u32), usize> {
    let mut out = BTreeMap::new();
    for r in read_to_end_on(brokers, &names.alerts).0 {
        let a: Alert = serde_json::from_slice(&r.payload).unwrap();
        *out.entry((a.id.to_string(), a.revision)).or_insert(0) += 1;
    }
    out
}

fn ids(versions: impl IntoIterator<Item = (String, u32)>) -> BTreeSet<String> {
    versions.into_iter().map(|(id, _)| id).collect()
}

/// Keyed records of stage `stage` (0-based) of the shipped chain on each host.
fn stage_records(hosts: &[String], stage: usize) -> Vec<(String, Vec<u8>)> {
    hosts
        .iter()
        .map(|h| (h.clone(), stages(h, 0)[stage].1.clone()))
        .collect()
}

fn payloads(records: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    records.iter().map(|(_, p)| p.clone()).collect()
}

/// Waits until ingest and correlate have committed everything produced so far.
async fn caught_up(brokers: &str, names: &Names, raw: &[&str]) {
    let (b, g) = (brokers.to_owned(), names.groups.clone());
    let raw: Vec<String> = raw.iter().map(|s| (*s).to_owned()).collect();
    let events = names.events.clone();
    tokio::task::spawn_blocking(move || {
        let raw: Vec<&str> = raw.iter().map(String::as_str).collect();
        await_caught_up_on(&b, &format!("{g}-ingest"), &raw, LIMIT);
        await_caught_up_on(&b, &format!("{g}-correlate"), &[&events], LIMIT);
    })
    .await
    .unwrap();
}

/// A line saying a partition's state was restored with at least one group.
fn restored_something(line: &str) -> bool {
    line.contains("partition state restored") && !line.contains(" groups=0 ")
}

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("EXCH{i:02}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_straddling_a_kill_9_of_the_correlator_is_found_once() {
    let names = Names::new();
    let brokers = support::brokers();
    let dir = tempfile::tempdir().unwrap();
    // The instance restarted after a crash is the same group member (static membership), as
    // an orchestrator restarting a pod would make it: it gets its partitions back at once.
    // (Without it, Kafka hands the dead member's partitions over after `session.timeout.ms`;
    // Tansu 0.6.0 never does, see ARCHITECTURE.md.)
    let cfg = config(
        dir.path(),
        &names,
        &brokers,
        free_port(),
        &format!("\"group.instance.id\" = \"{}-1\"", names.prefix),
        "",
        "",
    );
    let raw = names.raw("acme");
    create_topics(&[&raw], 2).await;
    let hosts = hosts(6);
    let args = ["--stages", "ingest,correlate"];

    // The first two stages of six chains (over the three events partitions).
    let first = Chainwatch::run_logging(&cfg, &args, LOG);
    let early = [stage_records(&hosts, 0), stage_records(&hosts, 1)].concat();
    produce(&raw, &early).await;
    caught_up(&brokers, &names, &[&raw]).await;
    first.kill();

    // A new instance takes the state over from the changelog. It is killed too, right after
    // the third stages are written, whatever it has processed or committed of them.
    let second = Chainwatch::run_logging(&cfg, &args, LOG);
    let third = stage_records(&hosts, 2);
    produce(&raw, &third[..1]).await;
    second.await_line(
        "restoring a partition with partial chains",
        LIMIT,
        restored_something,
    );
    produce(&raw, &third[1..]).await;
    second.kill();

    let last = Chainwatch::run_logging(&cfg, &args, LOG);
    let fourth = stage_records(&hosts, 3);
    produce(&raw, &fourth).await;
    caught_up(&brokers, &names, &[&raw]).await;
    assert!(last.stop().success());

    let all = payloads(&[early, third, fourth].concat());
    let expected = replayed(&[("acme", &all)]);
    let got = on_topic(&brokers, &names);
    assert_eq!(ids(expected.clone()).len(), 6, "six chains: {expected:?}");
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "every version of every finding, and nothing else"
    );
    let complete: Vec<Alert> = read_all_on(&brokers, &names.alerts)
        .into_iter()
        .filter(|a| !a.partial)
        .collect();
    assert!(
        complete.iter().all(|a| a.stages.len() == 4),
        "each chain has the stages from before and after the kills: {complete:#?}"
    );
    assert_eq!(ids(complete.iter().map(|a| (a.id.to_string(), 0))).len(), 6);
}

fn read_all_on(brokers: &str, topic: &str) -> Vec<Alert> {
    read_to_end_on(brokers, topic)
        .0
        .into_iter()
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_partitions_and_hand_state_over_when_one_stops() {
    let names = Names::new();
    let brokers = support::brokers();
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let cfg_a = config(dir.path(), &names, &brokers, port_a, "", "", "");
    let cfg_b = config(dir.path(), &names, &brokers, port_b, "", "", "");
    let raw = names.raw("acme");
    create_topics(&[&raw], 2).await;
    let hosts = hosts(6);
    let args = ["--stages", "ingest,correlate"];
    let assigned = |port: u16| {
        move || {
            let (_, body) = http_get(port, "/readyz")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let parts: Option<Vec<u64>> = v["consumers"]
                .as_array()?
                .iter()
                .map(|c| c["partitions"].as_u64())
                .collect();
            parts
        }
    };

    let a = Chainwatch::run_logging(&cfg_a, &args, LOG);
    let b = Chainwatch::run_logging(&cfg_b, &args, LOG);
    // Both members hold part of the work, and the rebalance is over: the raw topic's two
    // partitions and the events topic's three are split between them, none held twice.
    // (Tansu can assign a joining member before the others have given their partitions
    // up; work done then is done twice, as at-least-once allows.)
    let split = || {
        let (pa, pb) = (assigned(port_a)()?, assigned(port_b)()?);
        let sums: Vec<u64> = pa.iter().zip(&pb).map(|(a, b)| a + b).collect();
        let each = pa.iter().chain(&pb).all(|p| *p > 0);
        (each && sums == [2, 3]).then_some(())
    };
    wait_for("the partitions split between the two", LIMIT, split);
    let early = [stage_records(&hosts, 0), stage_records(&hosts, 1)].concat();
    produce(&raw, &early).await;
    caught_up(&brokers, &names, &[&raw]).await;

    // B stops: A takes every partition, with the state B's partitions had. The records come
    // once A holds them all: a rebalance (eager, as librdkafka's default assignor is) takes
    // every partition from every member, A's own too, and messages whose records are still
    // unacknowledged then are processed again from the committed offset, their findings
    // written twice, as at-least-once allows (ARCHITECTURE.md, "Delivery").
    assert!(b.stop().success());
    wait_for("A to hold every partition", LIMIT, || {
        (assigned(port_a)()? == [2, 3]).then_some(())
    });
    let third = stage_records(&hosts, 2);
    produce(&raw, &third).await;
    a.await_line("taking over B's partial chains", LIMIT, restored_something);
    caught_up(&brokers, &names, &[&raw]).await;

    // B comes back: the work is split again, and B resumes the chains of its partitions.
    let b = Chainwatch::run_logging(&cfg_b, &args, LOG);
    wait_for("the partitions split again", LIMIT, split);
    let fourth = stage_records(&hosts, 3);
    produce(&raw, &fourth).await;
    b.await_line("B restoring partial chains", LIMIT, restored_something);
    caught_up(&brokers, &names, &[&raw]).await;
    assert!(a.stop().success());
    assert!(b.stop().success());

    let all = payloads(&[early, third, fourth].concat());
    let expected = replayed(&[("acme", &all)]);
    let got = on_topic(&brokers, &names);
    assert_eq!(ids(expected.clone()).len(), 6);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    // Clean hand-overs (a stop, a join, each after the work was committed) repeat nothing.
    let repeated: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "findings written twice: {repeated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing_and_readyz_reports_the_outage() {
    let mut broker = Tansu::start();
    let brokers = broker.brokers();
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), &names, &brokers, port, "", "", "");
    let (acme, globex) = (names.raw("acme"), names.raw("globex"));
    create_topics_on(&brokers, &[&acme, &globex], 2).await;
    let hosts = hosts(3);
    let cw = Chainwatch::run_logging(&cfg, &["--stages", "ingest,correlate"], LOG);
    let ready = |want: u16| {
        move || {
            let (status, body) = http_get(port, "/readyz")?;
            (status == want).then_some(body)
        }
    };
    wait_for("ready", LIMIT, ready(200));

    let early = [stage_records(&hosts, 0), stage_records(&hosts, 1)].concat();
    produce_on(&brokers, &acme, &early).await;
    let other = stage_records(&hosts[..1], 0);
    produce_on(&brokers, &globex, &other).await;
    caught_up(&brokers, &names, &[&acme, &globex]).await;

    broker.stop();
    let body = wait_for("/readyz to report the outage", LIMIT, ready(503));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["broker_reachable"], false, "{v}");
    broker.restart();
    wait_for("ready again", LIMIT, ready(200));

    let late = [stage_records(&hosts, 2), stage_records(&hosts, 3)].concat();
    produce_on(&brokers, &acme, &late).await;
    caught_up(&brokers, &names, &[&acme, &globex]).await;
    assert!(cw.stop().success());

    let all = payloads(&[early, late].concat());
    let expected = replayed(&[("acme", &all), ("globex", &payloads(&other))]);
    let got = on_topic(&brokers, &names);
    assert_eq!(
        ids(expected.clone()).len(),
        4,
        "three chains and one partial: {expected:?}"
    );
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
}

/// An account created on a host of its own, by an account of its own: a group in every
/// playbook that counts account creation, and no finding.
fn account_created(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "@timestamp": format!("2026-11-20T02:{:02}:{:02}.000Z", 10 + (i / 60) % 40, i % 60),
        "Hostname": format!("FLOOD{i:05}"), "Channel": "Security",
        "SourceName": "Microsoft-Windows-Security-Auditing", "EventID": 4720,
        "TargetUserName": format!("svc{i}"), "TargetDomainName": "FLOOD",
        "SubjectUserName": format!("admin{i}"), "SubjectDomainName": "FLOOD"
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_hosts_from_one_tenant_stays_bounded_and_evicts_no_other_tenant_chain() {
    let names = Names::new();
    let brokers = support::brokers();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Per correlation: 30 groups per tenant and 90 in all, over the three partitions.
    let cfg = config(
        dir.path(),
        &names,
        &brokers,
        port,
        "",
        "max_groups = 90\nmax_groups_per_tenant = 30",
        "",
    );
    let (acme, flood) = (names.raw("acme"), names.raw("flood"));
    create_topics(&[&acme, &flood], 2).await;
    let cw = Chainwatch::run_logging(&cfg, &["--stages", "ingest,correlate"], LOG);
    let exch = vec!["EXCH01".to_owned()];
    let early = [stage_records(&exch, 0), stage_records(&exch, 1)].concat();
    produce(&acme, &early).await;
    let flood_records: Vec<(String, Vec<u8>)> = (0..1500)
        .map(|i| (format!("FLOOD{i:05}"), account_created(i)))
        .collect();
    produce(&flood, &flood_records).await;
    let late = [stage_records(&exch, 2), stage_records(&exch, 3)].concat();
    produce(&acme, &late).await;
    caught_up(&brokers, &names, &[&acme, &flood]).await;

    let evicted = metric(port, "chainwatch_correlator_evictions_total").unwrap();
    let held = metric(port, "chainwatch_correlator_partial_chains").unwrap();
    let correlations = metric(port, "chainwatch_rules{kind=\"correlation\"}");
    assert!(cw.stop().success());

    let correlations = correlations.unwrap_or(5.0);
    assert!(evicted > 0.0, "the flood evicted its own groups");
    assert!(
        held <= correlations * 30.0 + 10.0,
        "{held} groups held, over {correlations} correlations limited to 30 per tenant"
    );
    let expected = replayed(&[
        ("acme", &payloads(&[early, late].concat())),
        ("flood", &payloads(&flood_records)),
    ]);
    let got = on_topic(&brokers, &names);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let complete: Vec<Alert> = read_all_on(&brokers, &names.alerts)
        .into_iter()
        .filter(|a| !a.partial)
        .collect();
    assert_eq!(complete.len(), 1, "acme's chain, whole: {complete:#?}");
    assert_eq!(complete[0].tenant.as_str(), "acme");
    assert_eq!(complete[0].stages.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_delivery_in_progress_and_a_stuck_one_waits_for_the_restart() {
    use support::receiver::{Receiver, Step};
    let names = Names::new();
    let brokers = support::brokers();
    create_topics(&[&names.events, &names.alerts, &names.dead_letter], 3).await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[[sinks]]\nkind = \"webhook\"\nname = \"tickets\"\nurl = \"{}\"\ntimeout = \"30s\"\nretry = {{ initial_backoff = \"50ms\", max_backoff = \"200ms\" }}\n\n[shutdown]\ntimeout = \"8s\"\n",
        rx.url()
    );
    let cfg = config(dir.path(), &names, &brokers, free_port(), "", "", &sink);
    let finding = |n: u128| {
        let mut a: Alert =
            serde_json::from_str(include_str!("../sink/tests/fixtures/chain-alert.json")).unwrap();
        a.id = chainwatch_model::AlertId::from_u128(0xfeed_0000 + n);
        a
    };
    let (slow, stuck) = (finding(1), finding(2));
    rx.script(
        &slow.id.to_string(),
        vec![Step::Slow(Duration::from_secs(2))],
    );
    let record = |a: &Alert| (a.tenant.to_string(), serde_json::to_vec(a).unwrap());
    produce(&names.alerts, &[record(&slow)]).await;

    // SIGTERM while the destination takes its time: the answer comes within the shutdown
    // budget, so the finding is delivered and its offset committed before the exit.
    let cw = Chainwatch::run_logging(&cfg, &["--stages", "sink"], LOG);
    rx.wait_for("the slow request", LIMIT, |r| !r.requests().is_empty())
        .await;
    cw.signal("TERM");
    let status = tokio::task::spawn_blocking(move || cw.wait_exit(LIMIT))
        .await
        .unwrap();
    assert!(status.success());
    assert_committed_exactly(&format!("{}-sink-tickets", names.groups), &[&names.alerts]);

    // A destination that is down: SIGTERM abandons the retries at the deadline and exits;
    // the finding's offset is not committed, so the next run delivers it.
    rx.set_down(true);
    produce(&names.alerts, &[record(&stuck)]).await;
    let cw = Chainwatch::run_logging(&cfg, &["--stages", "sink"], LOG);
    let key = stuck.id.to_string();
    rx.wait_for("a retry of the stuck finding", LIMIT, |r| {
        r.attempts(&key).len() >= 2
    })
    .await;
    cw.signal("TERM");
    let status = tokio::task::spawn_blocking(move || cw.wait_exit(LIMIT))
        .await
        .unwrap();
    assert!(
        status.success(),
        "a stop that abandons a delivery is still clean"
    );
    rx.set_down(false);
    let cw = Chainwatch::run_logging(&cfg, &["--stages", "sink"], LOG);
    rx.wait_for("the finding delivered after the restart", LIMIT, |r| {
        r.tickets().get(&key) == Some(&1)
    })
    .await;
    assert!(cw.stop().success());
    let tickets = rx.tickets();
    assert_eq!(tickets.get(&slow.id.to_string()), Some(&1), "{tickets:?}");
    assert_eq!(
        rx.attempts(&slow.id.to_string()).len(),
        1,
        "the finding delivered during the stop is not delivered again"
    );
}

/// A tenant's hostile records, through the broker: each dead-lettered with its reason and
/// counted, the good ones correlated, and a payload that names another tenant changes nothing:
/// the finding is the topic's tenant's, delivered to that tenant's sink only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_records_are_dead_lettered_by_reason_and_a_payload_cannot_change_the_tenant() {
    let names = Names::new();
    let brokers = support::brokers();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (acme_file, globex_file) = (
        dir.path().join("acme.jsonl"),
        dir.path().join("globex.jsonl"),
    );
    let sinks = format!(
        "[[sinks]]\nkind = \"file\"\nname = \"acme\"\npath = \"{}\"\nroute = {{ tenant = \"acme\" }}\n\n[[sinks]]\nkind = \"file\"\nname = \"globex\"\npath = \"{}\"\nroute = {{ tenant = \"globex\" }}\n",
        acme_file.display(),
        globex_file.display()
    );
    let cfg = config(dir.path(), &names, &brokers, port, "", "", &sinks);
    // The source's limits: 4 KiB records, events within a year back and an hour ahead.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "format = \"windows\"",
        "format = \"windows\"\nmax_record_bytes = 4096\nmax_event_age = \"365d\"\nmax_event_ahead = \"1h\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let (acme, globex) = (names.raw("acme"), names.raw("globex"));
    create_topics(&[&acme, &globex], 1).await;
    let cw = Chainwatch::run_logging(&cfg, &[], LOG);

    // The chain's records on acme's topic, each claiming in every way it can to be globex's.
    let claims = |r: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(r).unwrap();
        for k in [
            "tenant",
            "Tenant",
            "TenantId",
            "chainwatch.tenant",
            "organization",
        ] {
            v[k] = serde_json::json!("globex");
        }
        serde_json::to_vec(&v).unwrap()
    };
    let good: Vec<Vec<u8>> = stages("EXCH01", 0).iter().map(|(_, r)| claims(r)).collect();
    let with_time = |t: &str| {
        let mut v: serde_json::Value = serde_json::from_slice(&stages("WS01", 0)[0].1).unwrap();
        v["@timestamp"] = serde_json::json!(t);
        serde_json::to_vec(&v).unwrap()
    };
    let big = {
        let mut v: serde_json::Value = serde_json::from_slice(&stages("WS02", 0)[0].1).unwrap();
        v["CommandLine"] = serde_json::json!("x".repeat(5000));
        serde_json::to_vec(&v).unwrap()
    };
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("too_large", big),
        (
            "too_deep",
            format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200)).into_bytes(),
        ),
        (
            "invalid_utf8",
            b"{\"EventID\": 1, \"Hostname\": \"WS03\", \"Image\": \"\xff\xfe\"}".to_vec(),
        ),
        ("time_out_of_range", with_time("2011-01-01T00:00:00Z")),
        ("time_out_of_range", with_time("2099-01-01T00:00:00Z")),
    ];
    let mut records: Vec<(String, Vec<u8>)> = good[..2]
        .iter()
        .map(|r| ("x".to_owned(), r.clone()))
        .collect();
    records.extend(hostile.iter().map(|(_, r)| ("y".to_owned(), r.clone())));
    records.extend(good[2..].iter().map(|r| ("x".to_owned(), r.clone())));
    produce(&acme, &records).await;
    caught_up(&brokers, &names, &[&acme]).await;
    for sink in ["acme", "globex"] {
        let (b, group, alerts) = (
            brokers.clone(),
            format!("{}-sink-{sink}", names.groups),
            names.alerts.clone(),
        );
        tokio::task::spawn_blocking(move || await_caught_up_on(&b, &group, &[&alerts], LIMIT))
            .await
            .unwrap();
    }
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert!(cw.stop().success());

    // Every hostile record is a dead letter with its reason, counted by reason.
    let mut reasons: Vec<String> = read_to_end_on(&brokers, &names.dead_letter)
        .0
        .iter()
        .map(|r| r.header("chainwatch.reason").unwrap_or_default())
        .collect();
    reasons.sort();
    let mut expected_reasons: Vec<&str> = hostile.iter().map(|(r, _)| *r).collect();
    expected_reasons.sort_unstable();
    assert_eq!(reasons, expected_reasons);
    for (reason, n) in [
        ("too_large", 1),
        ("too_deep", 1),
        ("invalid_utf8", 1),
        ("time_out_of_range", 2),
    ] {
        let line =
            format!("chainwatch_dead_letters_total{{reason=\"{reason}\",stage=\"ingest\"}} {n}");
        assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    }

    // The chain is acme's (the topic's tenant), exactly as a replay of the good records finds
    // it, and only acme's sink has it.
    let expected = replayed(&[("acme", &good)]);
    let got = on_topic(&brokers, &names);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let delivered: Vec<Alert> = std::fs::read_to_string(&acme_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!delivered.is_empty());
    assert!(delivered.iter().all(|a| a.tenant.as_str() == "acme"));
    let globex_got = std::fs::read_to_string(&globex_file).unwrap_or_default();
    assert!(globex_got.is_empty(), "globex's sink got: {globex_got}");
}
