//! `chainwatch hunt` through a real Kafka-API broker: an events topic holding two tenants'
//! history, a chain planted in each at different times. A retro-hunt with the ransomware
//! playbook finds exactly the chain of the tenant and time range asked for, and leaves the
//! live consumer group's committed offsets as they were. The topic holds events in both
//! encodings (`bin1` with its header, JSON without), as one written across an upgrade does.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::collections::HashMap;

use chainwatch_config::service::InputFormat;
use chainwatch_ingest::{Decoder, DecoderConfig, TenantSource};
use chainwatch_model::{Alert, Event, Provenance, TenantId, wire};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use support::shared::{self, stdout_of};
use support::*;

/// Normalized events of `records` (flat Windows JSON, their day moved to `day`) for `tenant`.
fn normalize(tenant: &str, day: &str, records: Vec<Vec<u8>>) -> Vec<Event> {
    let decoder = Decoder::new(DecoderConfig {
        format: InputFormat::Windows,
        ..DecoderConfig::default()
    })
    .unwrap();
    let source = TenantSource::Fixed(TenantId::new(tenant).unwrap());
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let text = String::from_utf8(r).unwrap().replace("2026-11-20", day);
            decoder
                .decode(
                    text.as_bytes(),
                    &source,
                    Provenance::Kafka {
                        topic: format!("telemetry.{tenant}.windows"),
                        partition: 0,
                        offset: i as i64,
                        record: None,
                    },
                )
                .unwrap()
        })
        .collect()
}

/// The playbook's four stages on `host`, and some noise, on `day`.
fn history(tenant: &str, host: &str, day: &str, stages_upto: usize) -> Vec<Event> {
    let mut records: Vec<Vec<u8>> = stages(host, 0)
        .into_iter()
        .take(stages_upto)
        .map(|(_, r)| r)
        .collect();
    records.extend(noise(host, 20));
    normalize(tenant, day, records)
}

/// Produces events as the ingest stage writes them: keyed by tenant and host, written a few
/// seconds after they happened (the record timestamp is the write time). Every other event
/// (in time order) is in `bin1`, the rest in JSON without a header, as a topic written before
/// and after the binary encoding holds them: the hunt must read both.
async fn produce_events(topic: &str, events: &[Event]) {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.time);
    let records: Vec<Outgoing> = sorted
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let encoding = if i.is_multiple_of(2) {
                EventEncoding::Bin1
            } else {
                EventEncoding::Json
            };
            Outgoing {
                timestamp: Some(e.time.as_millis() + 3_000),
                ..event_record(e, encoding)
            }
        })
        .collect();
    produce_outgoing(topic, &records).await;
}

fn hunt(topic: &str, args: &[&str]) -> (Vec<Alert>, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .args(["hunt", "--brokers", &brokers(), "--topic", topic])
        .args(["--rules", "playbooks/exchange-to-ransomware.yml"])
        .args(["--output", "json", "--report", report.to_str().unwrap()])
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let alerts = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let report = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    (alerts, report, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retro_hunt_finds_the_planted_chain_in_the_right_tenant_and_range_only() {
    let names = Names::new();
    let topic = names.events.clone();
    create_topics(&[&topic], 3).await;
    let mut events = Vec::new();
    // acme: the whole chain on EXCH01 on the 20th (in range) and on EXCH02 on the 23rd (after).
    events.extend(history("acme", "EXCH01.acme.local", "2026-11-20", 4));
    events.extend(history("acme", "EXCH02.acme.local", "2026-11-23", 4));
    // globex: the whole chain on its own EXCH01 on the 17th (before), a web shell and an account
    // on WEB7 on the 20th (a partial chain, in range).
    events.extend(history("globex", "EXCH01", "2026-11-17", 4));
    events.extend(history("globex", "WEB7", "2026-11-20", 2));
    produce_events(&topic, &events).await;
    let (records, _) = read_to_end(&topic);
    assert_eq!(records.len(), events.len());
    let binary = records
        .iter()
        .filter(|r| r.header(wire::ENCODING_HEADER).as_deref() == Some("bin1"))
        .count();
    assert_eq!(binary, events.len().div_ceil(2), "half the events are bin1");

    // A live group has committed offsets on the topic: the hunt must leave them alone.
    let group = format!("{}-correlate", names.groups);
    let live: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&topic, p, Offset::Offset(1))
            .unwrap();
    }
    live.commit(&tpl, CommitMode::Sync).unwrap();
    let before = committed(&group, &topic, &[0, 1, 2]);
    assert_eq!(before, HashMap::from([(0, 1), (1, 1), (2, 1)]));

    // Who was hit between the 19th and the 21st?
    let (alerts, report, stderr) = hunt(
        &topic,
        &[
            "--from",
            "2026-11-19T00:00:00Z",
            "--to",
            "2026-11-21T00:00:00Z",
        ],
    );
    let complete: Vec<&Alert> = alerts.iter().filter(|a| !a.partial).collect();
    assert_eq!(complete.len(), 1, "{alerts:#?}");
    let a = complete[0];
    assert_eq!(a.tenant.as_str(), "acme");
    assert_eq!(a.host.key(), "exch01");
    assert_eq!(a.stages.len(), 4);
    assert!(
        a.first_seen.to_string().starts_with("2026-11-20T02:00"),
        "{}",
        a.first_seen
    );
    // globex's partial chain in range is reported as partial, on its host.
    let partial: Vec<&Alert> = alerts.iter().filter(|a| a.partial).collect();
    assert_eq!(partial.len(), 1, "{alerts:#?}");
    assert_eq!(partial[0].tenant.as_str(), "globex");
    assert_eq!(partial[0].host.key(), "web7");
    // Per tenant and host: the report.
    let acme = &report["tenants"]["acme"];
    assert_eq!(acme.as_object().unwrap().len(), 1, "{report}");
    let found = &acme["EXCH01.acme.local"][0];
    assert_eq!(found["rule"], "exchange_to_ransomware");
    assert_eq!(found["findings"], 1);
    assert_eq!(found["partial"], 0);
    assert_eq!(report["tenants"]["globex"]["WEB7"][0]["findings"], 0);
    assert_eq!(report["tenants"]["globex"]["WEB7"][0]["partial"], 1);
    assert!(
        report["tenants"]["globex"].get("EXCH01").is_none(),
        "{report}"
    );
    // Out-of-range history: the 23rd's records were not read past the first one of each
    // partition; the 17th's were skipped by their write time.
    assert!(report["records_skipped"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(
        report["events_in_range"].as_u64().unwrap(),
        (4 + 20) + (2 + 20),
        "{report}"
    );
    assert!(stderr.contains("hunt: read"), "{stderr}");
    // Every record read was an event, binary and JSON alike (events_in_range counts both).
    assert_eq!(report["malformed"].as_u64(), Some(0), "{report}");

    // Only globex, earlier: its own chain of the 17th, and nothing of acme's.
    let (alerts, report, _) = hunt(
        &topic,
        &[
            "--tenant",
            "globex",
            "--from",
            "2026-11-16",
            "--to",
            "2026-11-18",
        ],
    );
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].tenant.as_str(), "globex");
    assert_eq!(alerts[0].host.key(), "exch01");
    assert!(!alerts[0].partial);
    assert!(report["tenants"].get("acme").is_none());

    // The live group's position did not move, and the hunts committed nothing of their own
    // under it.
    assert_eq!(committed(&group, &topic, &[0, 1, 2]), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_names_the_tenants_hit() {
    let names = Names::new();
    let topic = names.events.clone();
    create_topics(&[&topic], 1).await;
    produce_events(&topic, &history("initech", "EXCH9", "2026-11-20", 4)).await;
    let text = stdout_of(
        shared::chainwatch()
            .args(["hunt", "--brokers", &brokers(), "--topic", &topic])
            .args(["--from", "2026-11-19", "--to", "2026-11-21"]),
    );
    assert!(text.contains("initech"), "{text}");
    assert!(text.contains("EXCH9"), "{text}");
    assert!(
        text.contains("1 tenant(s) with complete findings: initech"),
        "{text}"
    );
}
