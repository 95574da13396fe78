//! Alert delivery through a real broker to local HTTP receivers that fail in scripted ways:
//! retries, `Retry-After`, timeouts, dead letters, a crash mid-delivery, a destination that is
//! down, routes per tenant, and the OCSF form on the alert topic.
//!
//! Findings are produced straight to the alert topic (as the correlate stage writes them), and
//! only the sink stage runs (`chainwatch run --stages sink`), so each test controls exactly
//! which findings there are.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chainwatch_model::{Alert, AlertId, Severity, TenantId};
use support::receiver::{Receiver, Step};
use support::*;

const LIMIT: Duration = Duration::from_secs(90);

fn sample() -> Alert {
    serde_json::from_str(include_str!("../sink/tests/fixtures/chain-alert.json")).unwrap()
}

/// `n` distinct findings of `tenant` (distinct ids, otherwise the sample chain).
fn findings(tenant: &str, n: usize, seed: u128) -> Vec<Alert> {
    (0..n)
        .map(|i| {
            let mut a = sample();
            a.tenant = TenantId::new(tenant).unwrap();
            a.id = AlertId::from_u128((seed << 32) + i as u128 + 1);
            a
        })
        .collect()
}

/// Produces findings to the alert topic, keyed by tenant, in chainwatch's JSON.
async fn produce_alerts(names: &Names, alerts: &[Alert]) {
    let records: Vec<(String, Vec<u8>)> = alerts
        .iter()
        .map(|a| (a.tenant.to_string(), serde_json::to_vec(a).unwrap()))
        .collect();
    produce(&names.alerts, &records).await;
}

async fn topics(names: &Names) {
    create_topics(&[&names.events, &names.alerts, &names.dead_letter], 3).await;
}

fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[[sinks]]
kind = "webhook"
name = "{name}"
url = "{url}"
timeout = "500ms"
retry = {{ initial_backoff = "50ms", max_backoff = "200ms" }}
{extra}
"#
    )
}

fn sink_group(names: &Names, sink: &str) -> String {
    format!("{}-sink-{sink}", names.groups)
}

/// Waits until `sink` has stored offsets past every record now on the alert topic.
async fn await_sink(names: &Names, sink: &str) {
    let group = sink_group(names, sink);
    let alerts = names.alerts.clone();
    tokio::task::spawn_blocking(move || await_caught_up(&group, &[&alerts], LIMIT))
        .await
        .unwrap();
}

fn ids(alerts: &[Alert]) -> Vec<String> {
    alerts.iter().map(|a| a.id.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_failures_are_retried_once_per_alert_or_dead_lettered_with_the_reason() {
    let names = Names::new();
    topics(&names).await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cr3t-token\n").unwrap();
    let config = names.write_config(
        dir.path(),
        &webhook(
            "tickets",
            &rx.url(),
            "auth = { bearer = { file = \"token\" } }",
        ),
    );
    let alerts = findings("acme", 6, 1);
    let k = ids(&alerts);
    rx.script(&k[0], vec![Step::Fail(500, "boom"); 3]);
    rx.script(&k[1], vec![Step::Slow(Duration::from_secs(2))]);
    rx.script(&k[2], vec![Step::TooMany(2)]);
    rx.script(
        &k[3],
        vec![Step::Fail(400, "{\"error\":\"summary is required\"}")],
    );
    rx.script(
        &k[4],
        vec![Step::Fail(503, "busy"), Step::Fail(502, "gateway")],
    );
    produce_alerts(&names, &alerts).await;
    produce(&names.alerts, &[("acme".into(), b"not a finding".to_vec())]).await;

    let log = dir.path().join("chainwatch.log");
    let cw = Chainwatch::run_logged(&config, &["--stages", "sink"], &log, "debug");
    await_sink(&names, "tickets").await;

    let tickets = rx.tickets();
    for (i, key) in k.iter().enumerate() {
        let expected = if i == 3 { 0 } else { 1 };
        assert_eq!(
            tickets.get(key).copied().unwrap_or(0),
            expected,
            "alert {i}: one ticket per alert id (0 for the rejected one): {tickets:?}"
        );
    }
    assert_eq!(rx.attempts(&k[0]).len(), 4, "three 500s, then the ticket");
    assert!(
        rx.attempts(&k[1]).len() >= 2,
        "the slow answer timed out and was retried; the receiver's idempotency kept one ticket"
    );
    let throttled = rx.attempts(&k[2]);
    assert_eq!(throttled.len(), 2);
    // Retry-After is a floor the sink must respect: a lower bound, not a speed measurement.
    assert!(
        throttled[1].at.duration_since(throttled[0].at) >= Duration::from_secs(2),
        "retried before Retry-After: {:?}",
        throttled[1].at.duration_since(throttled[0].at)
    );
    assert_eq!(rx.attempts(&k[3]).len(), 1, "a 400 is not retried");
    assert_eq!(rx.attempts(&k[4]).len(), 3);
    for r in rx.requests() {
        assert!(r.key.is_some(), "every request carries the idempotency key");
        assert_eq!(r.authorization.as_deref(), Some("Bearer s3cr3t-token"));
        let posted: Alert = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(Some(posted.id.to_string()), r.key);
    }

    // The rejected alert and the record that is no finding are dead letters, with the reason.
    let dead = read_all(&names.dead_letter);
    assert_eq!(dead.len(), 2, "{dead:?}");
    let rejected = dead
        .iter()
        .find(|d| d.header("chainwatch.reason").as_deref() == Some("rejected"))
        .unwrap();
    assert_eq!(rejected.header("chainwatch.alert.id"), Some(k[3].clone()));
    assert_eq!(
        rejected.header("chainwatch.sink").as_deref(),
        Some("tickets")
    );
    assert_eq!(
        rejected.header("chainwatch.response.status").as_deref(),
        Some("400")
    );
    assert!(
        rejected
            .header("chainwatch.response.body")
            .unwrap()
            .contains("summary is required")
    );
    let kept: Alert = serde_json::from_slice(&rejected.payload).unwrap();
    assert_eq!(
        kept.id.to_string(),
        k[3],
        "the dead letter keeps the finding"
    );
    let malformed = dead
        .iter()
        .find(|d| d.header("chainwatch.reason").as_deref() == Some("malformed_alert"))
        .unwrap();
    assert_eq!(malformed.payload, b"not a finding");

    assert!(cw.stop().success());
    // The token went out on every request, and never into the log, even at debug level.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("dead-lettered"), "the log was captured");
    assert!(!log.contains("s3cr3t"), "the secret leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_retried_past_retry_for_is_dead_lettered_not_dropped() {
    let names = Names::new();
    topics(&names).await;
    let rx = Receiver::start().await;
    rx.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let config = names.write_config(
        dir.path(),
        &webhook("tickets", &rx.url(), "").replace(
            "max_backoff = \"200ms\"",
            "max_backoff = \"200ms\", retry_for = \"1s\"",
        ),
    );
    let alerts = findings("acme", 2, 8);
    produce_alerts(&names, &alerts).await;
    let cw = Chainwatch::run(&config, &["--stages", "sink"]);
    await_sink(&names, "tickets").await;
    assert!(cw.stop().success());

    assert!(rx.tickets().is_empty());
    let dead = read_all(&names.dead_letter);
    assert_eq!(dead.len(), 2, "both findings given up, both kept: {dead:?}");
    for (d, a) in dead.iter().zip(&alerts) {
        assert_eq!(
            d.header("chainwatch.reason").as_deref(),
            Some("retries_exhausted")
        );
        assert_eq!(d.header("chainwatch.alert.id"), Some(a.id.to_string()));
        assert!(d.header("chainwatch.error").unwrap().contains("HTTP 503"));
        assert!(
            rx.attempts(&a.id.to_string()).len() >= 2,
            "retried before giving up"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_killed_mid_delivery_delivers_everything_without_a_second_ticket() {
    let names = Names::new();
    topics(&names).await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = names.write_config(dir.path(), &webhook("tickets", &rx.url(), ""));
    // One tenant: one partition, delivered in order. The sixth request opens its ticket and
    // never gets an answer: the sink is killed while it waits.
    let alerts = findings("acme", 12, 2);
    let k = ids(&alerts);
    rx.script(&k[5], vec![Step::Hang]);
    produce_alerts(&names, &alerts).await;

    let cw = Chainwatch::run(&config, &["--stages", "sink"]);
    rx.wait_for("holding the sixth request", LIMIT, |r| {
        !r.attempts(&k[5]).is_empty()
    })
    .await;
    cw.kill();
    assert!(
        rx.attempts(&k[6]).is_empty(),
        "one finding at a time: the seventh was not sent before the crash"
    );

    let cw = Chainwatch::run(&config, &["--stages", "sink"]);
    await_sink(&names, "tickets").await;
    let tickets = rx.tickets();
    for key in &k {
        assert_eq!(tickets.get(key), Some(&1), "{key}: {tickets:?}");
    }
    assert_eq!(tickets.len(), 12);
    assert!(
        rx.attempts(&k[5]).len() >= 2,
        "the unanswered finding was sent again after the restart"
    );
    assert!(cw.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_is_down_does_not_hold_up_another() {
    let names = Names::new();
    topics(&names).await;
    let down = Receiver::start().await;
    let up = Receiver::start().await;
    down.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let sinks = webhook("down", &down.url(), "") + &webhook("up", &up.url(), "");
    let config = names.write_config(dir.path(), &sinks);
    let (first_batch, second_batch) = (findings("acme", 5, 3), findings("globex", 5, 4));
    produce_alerts(&names, &first_batch).await;

    let cw = Chainwatch::run(&config, &["--stages", "sink"]);
    // Ordering, not timing: once the down destination is seen stuck retrying its first
    // finding, more findings arrive, and all of them reach the healthy destination while the
    // other is still stuck on that first one.
    down.wait_for("retried", LIMIT, |r| r.requests().len() >= 2)
        .await;
    up.wait_for("holding the first five tickets", LIMIT, |r| {
        r.tickets().len() == 5
    })
    .await;
    produce_alerts(&names, &second_batch).await;
    up.wait_for("holding all ten tickets", LIMIT, |r| {
        r.tickets().len() == 10
    })
    .await;
    assert!(down.tickets().is_empty());
    let first = down.requests()[0].key.clone();
    assert!(
        down.requests().iter().all(|r| r.key == first),
        "the down sink is still on its first finding"
    );

    down.set_down(false);
    await_sink(&names, "down").await;
    let t = down.tickets();
    assert_eq!(t.len(), 10, "nothing lost while it was down: {t:?}");
    assert!(t.values().all(|&n| n == 1));
    assert!(cw.stop().success());
}

fn lines(path: &Path) -> Vec<Alert> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| chainwatch_sink::decode::decode(l.as_bytes(), None).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_send_each_tenant_its_own_findings_from_an_ocsf_topic() {
    let names = Names::new();
    topics(&names).await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, route: &str, format: &str| {
        format!(
            "[[sinks]]\nkind = \"file\"\nname = \"{name}\"\npath = \"{name}.jsonl\"\nformat = \"{format}\"\nroute = {route}\n"
        )
    };
    let sinks = [
        file("acme", "{ tenant = \"acme\" }", "json"),
        file(
            "globex",
            "{ tenant = \"globex\", min_severity = \"critical\" }",
            "json",
        ),
        file("msp", "{ default = true }", "json"),
        file("archive", "{}", "ocsf"),
    ]
    .concat();
    let config = names.write_config(dir.path(), &sinks);
    let mut alerts = findings("acme", 2, 5);
    let mut globex = findings("globex", 2, 6);
    globex[1].severity = Severity::Medium;
    alerts.extend(globex);
    alerts.extend(findings("initech", 1, 7));
    // The topic carries OCSF findings (as with `alerts_format = "ocsf"`), without the header.
    let records: Vec<(String, Vec<u8>)> = alerts
        .iter()
        .map(|a| {
            (
                a.tenant.to_string(),
                chainwatch_sink::ocsf::line(a).into_bytes(),
            )
        })
        .collect();
    produce(&names.alerts, &records).await;

    let cw = Chainwatch::run(&config, &["--stages", "sink"]);
    for sink in ["acme", "globex", "msp", "archive"] {
        await_sink(&names, sink).await;
    }
    assert!(cw.stop().success());

    let got: HashMap<&str, Vec<String>> = ["acme", "globex", "msp", "archive"]
        .into_iter()
        .map(|s| {
            let mut v: Vec<String> = lines(&dir.path().join(format!("{s}.jsonl")))
                .iter()
                .map(|a| format!("{}/{}", a.tenant, a.id))
                .collect();
            v.sort();
            (s, v)
        })
        .collect();
    let tag = |a: &Alert| format!("{}/{}", a.tenant, a.id);
    let mut want_acme = vec![tag(&alerts[0]), tag(&alerts[1])];
    want_acme.sort();
    assert_eq!(got["acme"], want_acme);
    assert_eq!(
        got["globex"],
        vec![tag(&alerts[2])],
        "the medium one is filtered out"
    );
    let mut want_msp = vec![tag(&alerts[3]), tag(&alerts[4])];
    want_msp.sort();
    assert_eq!(
        got["msp"], want_msp,
        "the default takes what no tenant destination took"
    );
    assert_eq!(got["archive"].len(), 5);
    let archived = std::fs::read_to_string(dir.path().join("archive.jsonl")).unwrap();
    for l in archived.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["class_uid"], 2004, "the archive writes OCSF");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correlate_stage_writes_ocsf_findings_when_configured() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alerts.jsonl");
    let config = names.write_config(
        dir.path(),
        &format!(
            "[[sinks]]\nkind = \"file\"\nname = \"archive\"\npath = \"{}\"\n",
            out.display()
        ),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[topics]\n", "[topics]\nalerts_format = \"ocsf\"\n");
    std::fs::write(&config, text).unwrap();
    let raw = names.raw("contoso");
    create_topics(&[&raw], 1).await;
    let cw = Chainwatch::run(&config, &[]);
    let records: Vec<(String, Vec<u8>)> = stages("EXCH01", 0)
        .into_iter()
        .map(|(_, r)| ("x".to_owned(), r))
        .collect();
    produce(&raw, &records).await;
    let (raw2, events, alerts_topic) = (raw.clone(), names.events.clone(), names.alerts.clone());
    let groups = names.groups.clone();
    tokio::task::spawn_blocking(move || {
        await_caught_up(&format!("{groups}-ingest"), &[&raw2], LIMIT);
        await_caught_up(&format!("{groups}-correlate"), &[&events], LIMIT);
        await_caught_up(&format!("{groups}-sink-archive"), &[&alerts_topic], LIMIT);
    })
    .await
    .unwrap();
    assert!(cw.stop().success());

    // One finding in three revisions (web shell, dump, complete), all as OCSF.
    let records = read_all(&names.alerts);
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|r| r.header("chainwatch.format").as_deref() == Some("ocsf"))
    );
    let finding: serde_json::Value = serde_json::from_slice(&records[0].payload).unwrap();
    assert_eq!(finding["class_uid"], 2004);
    assert_eq!(finding["metadata"]["tenant_uid"], "contoso");
    // The file sink read the OCSF records and wrote chainwatch's JSON: the same finding.
    let filed = lines(&out);
    assert_eq!(filed.len(), 3);
    assert!(
        filed
            .iter()
            .all(|a| finding["finding_info"]["uid"].as_str() == Some(a.id.to_string().as_str()))
    );
}
