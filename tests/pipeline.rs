//! End to end through a real Kafka-API broker: raw tenant topics in, exactly the right chain
//! alert out, malformed records dead-lettered, the file sink written; corrupt records on the
//! events topic dead-lettered by the correlate stage.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use std::time::Duration;

use chainwatch_model::{Alert, AlertKind, wire};
use support::*;

fn shuffled<T>(mut items: Vec<T>, seed: u64) -> Vec<T> {
    // A small deterministic shuffle (xorshift), enough to scramble arrival order.
    let mut s = seed | 1;
    for i in (1..items.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        items.swap(i, (s % (i as u64 + 1)) as usize);
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_one_host_one_chain_alert() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let alerts_file = dir.path().join("alerts.jsonl");
    let config = names.write_config(
        dir.path(),
        &format!(
            "[[sinks]]\nkind = \"file\"\nname = \"archive\"\npath = \"{}\"\n",
            alerts_file.display()
        ),
    );
    let (a, b, c) = (
        names.raw("tenant-a"),
        names.raw("tenant-b"),
        names.raw("tenant-c"),
    );
    create_topics(&[&a, &b, &c], 2).await;

    let cw = Chainwatch::run(&config, &[]);

    // Tenant A: the four stages on EXCH01, shuffled among noise from two hosts.
    let mut a_records: Vec<(String, Vec<u8>)> = stages("EXCH01.contoso.local", 0)
        .into_iter()
        .map(|(_, r)| ("x".to_owned(), r))
        .collect();
    a_records.extend(noise("EXCH01", 60).into_iter().map(|r| ("x".to_owned(), r)));
    a_records.extend(noise("WS-014", 60).into_iter().map(|r| ("y".to_owned(), r)));
    a_records.push(("bad".into(), b"{\"EventID\": 1, truncated".to_vec()));
    let a_records = shuffled(a_records, 7);
    // Tenant B has a host of the same name with stages 1-2; tenant C with stages 3-4.
    let b_records: Vec<_> = stages("EXCH01", 0)[..2]
        .iter()
        .map(|(_, r)| ("x".to_owned(), r.clone()))
        .collect();
    let c_records: Vec<_> = stages("exch01.contoso.local", 0)[2..]
        .iter()
        .map(|(_, r)| ("x".to_owned(), r.clone()))
        .collect();
    produce(&a, &a_records).await;
    produce(&b, &b_records).await;
    produce(&c, &c_records).await;

    // Every record's effect durable: ingest caught up on the raw topics, correlate on events,
    // the sink on alerts.
    let limit = Duration::from_secs(90);
    await_caught_up(&format!("{}-ingest", names.groups), &[&a, &b, &c], limit);
    await_caught_up(
        &format!("{}-correlate", names.groups),
        &[&names.events],
        limit,
    );
    await_caught_up(
        &format!("{}-sink-archive", names.groups),
        &[&names.alerts],
        limit,
    );
    // Committed offsets point just past the last processed record: a restart resumes there,
    // neither repeating nor skipping one.
    assert_committed_exactly(&format!("{}-ingest", names.groups), &[&a, &b, &c]);
    assert_committed_exactly(&format!("{}-correlate", names.groups), &[&names.events]);
    assert_committed_exactly(&format!("{}-sink-archive", names.groups), &[&names.alerts]);

    let alerts: Vec<Alert> = read_all(&names.alerts)
        .into_iter()
        .map(|r| {
            let alert: Alert = serde_json::from_slice(&r.payload).unwrap();
            assert_eq!(
                r.key,
                alert.tenant.as_str().as_bytes(),
                "alerts are keyed by tenant"
            );
            alert
        })
        .collect();
    // Findings are updated in place: the latest revision of each id is the finding.
    let mut findings: Vec<Alert> = Vec::new();
    for a in alerts {
        match findings.iter_mut().find(|f| f.id == a.id) {
            Some(f) if a.revision > f.revision => *f = a,
            Some(_) => {}
            None => findings.push(a),
        }
    }
    let complete: Vec<&Alert> = findings.iter().filter(|a| !a.partial).collect();
    assert_eq!(complete.len(), 1, "{findings:#?}");
    let alert = complete[0];
    assert_eq!(alert.kind, AlertKind::Chain);
    assert_eq!(alert.tenant.as_str(), "tenant-a");
    assert_eq!(alert.host.key(), "exch01");
    let techniques: Vec<String> = alert.techniques.iter().map(ToString::to_string).collect();
    assert_eq!(
        techniques,
        ["T1190", "T1505.003", "T1136", "T1003.001", "T1490", "T1486"]
    );
    let stage_titles: Vec<&str> = alert.stages.iter().map(|s| s.rule.title.as_str()).collect();
    assert_eq!(
        stage_titles,
        [
            "IIS worker process spawns a shell",
            "User account created",
            "LSASS memory read with dumping rights",
            "Shadow copies or backups deleted"
        ]
    );
    for e in &alert.events {
        assert!(
            matches!(&e.provenance, chainwatch_model::Provenance::Kafka { topic, .. } if topic == &a),
            "evidence comes from tenant A's topic: {:?}",
            e.provenance
        );
    }
    // Tenant B's host of the same name had a web shell and an account: a partial finding of its
    // own. Tenant C's stages 3-4, without a web shell before them, raise nothing.
    let others: Vec<(&str, bool, usize)> = findings
        .iter()
        .filter(|f| f.id != alert.id)
        .map(|f| (f.tenant.as_str(), f.partial, f.stages.len()))
        .collect();
    assert_eq!(others, [("tenant-b", true, 1)], "{findings:#?}");

    // Normalized events are keyed by tenant and host.
    let events = read_all(&names.events);
    assert_eq!(
        events.len(),
        4 + 120 + 2 + 2,
        "every good record became one event"
    );
    assert!(events.iter().any(|r| r.key == b"tenant-a/exch01"));
    assert!(events.iter().any(|r| r.key == b"tenant-c/exch01"));
    // Written in bin1, marked by the header, and read back by the one decoder.
    for r in &events {
        assert_eq!(r.header(wire::ENCODING_HEADER).as_deref(), Some("bin1"));
        let e = wire::decode_event(&r.payload, Some(wire::BIN1)).unwrap();
        assert_eq!(r.key, format!("{}/{}", e.tenant, e.host.key()).into_bytes());
    }

    // The malformed record went to the dead-letter topic with its reason and origin.
    let dead = read_all(&names.dead_letter);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].header("chainwatch.reason").as_deref(),
        Some("malformed_json")
    );
    assert_eq!(
        dead[0].header("chainwatch.source.topic").as_deref(),
        Some(a.as_str())
    );
    assert_eq!(dead[0].payload, b"{\"EventID\": 1, truncated");

    // The file sink holds every alert of the topic.
    let lines = std::fs::read_to_string(&alerts_file).unwrap();
    let mut filed: Vec<Alert> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut read: Vec<Alert> = read_all(&names.alerts)
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect();
    filed.sort_by_key(|a| (a.id, a.revision));
    read.sort_by_key(|a| (a.id, a.revision));
    assert_eq!(filed, read);
    assert!(filed.iter().any(|f| f.id == alert.id && !f.partial));

    assert!(cw.stop().success(), "chainwatch exits cleanly on SIGTERM");
}

/// The correlate stage reads the events topic through the one decoder (`wire::decode_event`):
/// `bin1` and JSON events both count toward a chain; a truncated or corrupt `bin1` payload, or
/// an encoding it does not know, goes to the dead-letter topic with its reason and the error,
/// its bytes intact, and the partition moves on past it (every offset committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_binary_events_are_dead_lettered_and_the_partition_moves_on() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let config = names.write_config(dir.path(), "");
    // One partition: the bad records sit between the good ones of the same partition.
    create_topics(&[&names.events], 1).await;
    let cw = Chainwatch::run(&config, &[]);

    let events = stage_events("EXCH01.acme.local", "telemetry.acme.windows");
    let good = |i: usize| {
        let encoding = if i.is_multiple_of(2) {
            EventEncoding::Bin1
        } else {
            EventEncoding::Json
        };
        event_record(&events[i], encoding)
    };
    let mut truncated = event_record(&events[0], EventEncoding::Bin1);
    truncated.payload.truncate(truncated.payload.len() / 2);
    let mut version = event_record(&events[1], EventEncoding::Bin1);
    version.payload[0] = 9;
    let mut unknown = event_record(&events[2], EventEncoding::Bin1);
    unknown.headers = vec![(wire::ENCODING_HEADER, b"bin9".to_vec())];
    let bad = [truncated.clone(), version.clone(), unknown.clone()];
    let records = [
        truncated,
        good(0),
        version,
        good(1),
        unknown,
        good(2),
        good(3),
    ];
    produce_outgoing(&names.events, &records).await;

    let limit = Duration::from_secs(90);
    let group = format!("{}-correlate", names.groups);
    await_caught_up(&group, &[&names.events], limit);
    assert_committed_exactly(&group, &[&names.events]);

    let dead = read_all(&names.dead_letter);
    assert_eq!(dead.len(), 3, "{dead:#?}");
    let expected = [
        "corrupt bin1 event at byte",
        "unknown bin1 version 9",
        "unknown event encoding \"bin9\"",
    ];
    for ((d, b), error) in dead.iter().zip(&bad).zip(expected) {
        assert_eq!(
            d.header("chainwatch.reason").as_deref(),
            Some("malformed_event")
        );
        assert_eq!(d.header("chainwatch.stage").as_deref(), Some("correlate"));
        let text = d.header("chainwatch.error").unwrap();
        assert!(text.contains(error), "{text}");
        assert_eq!(d.payload, b.payload, "the original bytes are kept");
    }

    // The four good events, two of each encoding, made the complete chain.
    let findings: Vec<Alert> = read_all(&names.alerts)
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect();
    assert!(
        findings
            .iter()
            .any(|f| !f.partial && f.stages.len() == 4 && f.host.key() == "exch01"),
        "{findings:#?}"
    );
    assert!(cw.stop().success(), "chainwatch exits cleanly on SIGTERM");
}
