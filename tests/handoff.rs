//! Ingest and correlate in one process, through a real Kafka-API broker: ingest hands its
//! acknowledged events straight to the correlator (`[correlate] handoff`). The findings and
//! committed offsets are what the events topic alone gives; every event is processed exactly
//! once, whichever path brings it (events another instance wrote come through the consumer
//! only, and handed events behind them wait for it); a restart resumes exactly after what was
//! processed; with the handoff off, every event comes through the consumer.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use chainwatch_model::{Alert, wire};
use support::http::{free_port, http_get};
use support::*;

const LIMIT: Duration = Duration::from_secs(90);

/// The sum of the series of `name` whose labels include `label` on a process's `/metrics`.
fn series(port: u16, name: &str, label: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics").expect("/metrics answers");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.contains(label)).then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

fn handoff(port: u16, outcome: &str) -> f64 {
    series(
        port,
        "chainwatch_kafka_handoff_records_total",
        &format!("outcome=\"{outcome}\""),
    )
}

fn observed(port: u16) -> f64 {
    series(port, "chainwatch_correlator_events_total", "")
}

fn raw_records(
    host: &str,
    stages_of: std::ops::Range<usize>,
    noise_n: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut records: Vec<(String, Vec<u8>)> = stages(host, 0)[stages_of]
        .iter()
        .map(|(_, r)| (host.to_owned(), r.clone()))
        .collect();
    records.extend(
        noise(host, noise_n)
            .into_iter()
            .map(|r| (host.to_owned(), r)),
    );
    records
}

/// The hosts (by key) with a complete chain finding among the alerts on the topic.
fn complete_hosts(names: &Names) -> Vec<String> {
    let mut hosts: Vec<String> = read_all(&names.alerts)
        .into_iter()
        .map(|r| serde_json::from_slice::<Alert>(&r.payload).unwrap())
        .filter(|a| !a.partial)
        .map(|a| a.host.key().to_owned())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

fn config(names: &Names, dir: &std::path::Path, port: u16, correlate: &str) -> PathBuf {
    let text = names.config_text(&ConfigParts {
        http: Some(port),
        correlate,
        ..ConfigParts::default()
    });
    let path = dir.join("chainwatch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn await_all_processed(names: &Names, raw: &str) {
    await_caught_up(&format!("{}-ingest", names.groups), &[raw], LIMIT);
    await_caught_up(
        &format!("{}-correlate", names.groups),
        &[&names.events],
        LIMIT,
    );
    assert_committed_exactly(&format!("{}-correlate", names.groups), &[&names.events]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_events_are_processed_once_and_a_restart_resumes_after_them() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let raw = names.raw("acme");
    create_topics(&[&raw], 2).await;
    let port = free_port();
    let config = config(&names, dir.path(), port, "");
    let cw = Chainwatch::run(&config, &[]);

    // EXCH01's four stages and noise come through ingest, and noise of more hosts until every
    // partition of the events topic has events (its place known to the correlator).
    let mut produced = raw_records("EXCH01.contoso.local", 0..4, 10);
    produce(&raw, &produced).await;
    for k in 0.. {
        await_caught_up(&format!("{}-ingest", names.groups), &[&raw], LIMIT);
        let (_, ends) = read_to_end(&names.events);
        if (0..3).all(|p| ends.get(&p).is_some_and(|&end| end > 0)) {
            break;
        }
        assert!(
            k < 60,
            "the events of 60 hosts all went to fewer than 3 partitions"
        );
        let more = raw_records(&format!("WS-{k:03}"), 0..0, 2);
        produce(&raw, &more).await;
        produced.extend(more);
    }
    await_caught_up(
        &format!("{}-correlate", names.groups),
        &[&names.events],
        LIMIT,
    );
    // Another instance's ingest wrote EXCH02's first two stages straight to the events topic:
    // only the consumer brings them, and EXCH02's last two stages and noise, handed by this
    // process's ingest after them in the same partition, wait for them.
    let elsewhere: Vec<Outgoing> = stage_events("EXCH02", "elsewhere.acme.windows")[..2]
        .iter()
        .map(|e| event_record(e, EventEncoding::Bin1))
        .collect();
    produce_outgoing(&names.events, &elsewhere).await;
    let exch02 = raw_records("EXCH02", 2..4, 20);
    produce(&raw, &exch02).await;
    produced.extend(exch02);
    await_all_processed(&names, &raw);

    let events = read_all(&names.events).len();
    assert_eq!(
        events,
        produced.len() + 2,
        "one event per raw record, and the two written elsewhere"
    );
    let taken = handoff(port, "taken");
    assert!(taken > 0.0, "ingest's events were taken from the handoff");
    assert!(
        taken <= (events - 2) as f64,
        "only this process's ingest hands events ({taken} taken)"
    );
    // Exactly once: every event of the topic observed, none twice, whichever path brought it.
    assert_eq!(observed(port), events as f64);
    assert!(
        handoff(port, "skipped") <= taken,
        "the consumer skips only events taken from the handoff"
    );
    assert_eq!(complete_hosts(&names), ["exch01", "exch02"]);
    assert!(cw.stop().success(), "chainwatch exits cleanly on SIGTERM");

    // Restarted: the committed offsets of handed events are exact, so it processes only what
    // came since, and EXCH03's chain is found with the state read back.
    produce(&raw, &raw_records("EXCH03", 0..4, 10)).await;
    let cw = Chainwatch::run(&config, &[]);
    await_all_processed(&names, &raw);
    let now = read_all(&names.events).len();
    assert_eq!(now, events + 14);
    assert_eq!(
        observed(port),
        14.0,
        "the restarted process observed the new events only"
    );
    assert_eq!(complete_hosts(&names), ["exch01", "exch02", "exch03"]);
    for r in read_all(&names.events) {
        assert_eq!(r.header(wire::ENCODING_HEADER).as_deref(), Some("bin1"));
    }
    assert!(cw.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_handoff_every_event_comes_from_the_consumer() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let raw = names.raw("acme");
    create_topics(&[&raw], 2).await;
    let port = free_port();
    let config = config(&names, dir.path(), port, "handoff = false");
    let cw = Chainwatch::run(&config, &[]);
    produce(&raw, &raw_records("EXCH01.contoso.local", 0..4, 20)).await;
    await_all_processed(&names, &raw);
    let events = read_all(&names.events).len();
    assert_eq!(events, 24);
    assert_eq!(observed(port), events as f64);
    assert_eq!(handoff(port, "handed"), 0.0);
    assert_eq!(handoff(port, "taken"), 0.0);
    assert_eq!(complete_hosts(&names), ["exch01"]);
    assert!(cw.stop().success());
}
