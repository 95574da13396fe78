//! `chainwatch gen` writes a workload whose replay finds exactly the chains it injected, and
//! whose fast path equals the full decode.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chainwatch_model::{Alert, AlertKind, host::host_key};

mod support;

fn chainwatch(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run chainwatch");
    assert!(
        out.status.success(),
        "chainwatch {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn generate(dir: &Path) -> serde_json::Value {
    generate_with(dir, &[])
}

fn generate_with(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "gen",
        "--out",
        dir.to_str().unwrap(),
        "--tenants",
        "3",
        "--hosts",
        "40",
        "--events",
        "30000",
        "--chains",
        "8",
        "--partials",
        "4",
        "--late",
        "0.05",
        "--duration",
        "3h",
        "--seed",
        "7",
    ];
    args.extend_from_slice(extra);
    chainwatch(&args);
    let answers = std::fs::read(dir.join("answers.json")).unwrap();
    serde_json::from_slice(&answers).unwrap()
}

#[test]
fn replaying_generated_telemetry_finds_exactly_the_injected_chains() {
    let dir = tempfile::tempdir().unwrap();
    let answers = generate(dir.path());
    let chains = answers["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 8);
    assert!(chains.iter().any(|c| c["out_of_order"] == true));
    let expected: BTreeSet<(String, String)> = chains
        .iter()
        .map(|c| {
            (
                c["tenant"].as_str().unwrap().to_owned(),
                host_key(c["host"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(expected.len(), 8, "one chain per host");

    let mut found: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut partial_hosts = BTreeSet::new();
    let mut lines = 0;
    let mut out_of_order = 0;
    for tenant in answers["tenants"].as_array().unwrap() {
        let tenant = tenant.as_str().unwrap();
        let file = dir.path().join(format!("telemetry.{tenant}.windows.jsonl"));
        let text = std::fs::read_to_string(&file).unwrap();
        let mut newest = String::new();
        for line in text.lines() {
            lines += 1;
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let time = v["@timestamp"].as_str().unwrap().to_owned();
            if time < newest {
                out_of_order += 1;
            }
            newest = newest.max(time);
        }
        let stdout = chainwatch(&[
            "replay",
            "--output",
            "json",
            "--tenant",
            tenant,
            "--rules",
            "playbooks/exchange-to-ransomware.yml",
            file.to_str().unwrap(),
        ]);
        for line in stdout.lines() {
            let a: Alert = serde_json::from_str(line).unwrap();
            assert_eq!(a.tenant.as_str(), tenant);
            let key = (tenant.to_owned(), a.host.key().to_owned());
            if a.kind == AlertKind::Chain && !a.partial {
                assert_eq!(a.stages.len(), 4, "{line}");
                *found.entry(key).or_default() += 1;
            } else {
                partial_hosts.insert(key);
            }
        }
    }
    assert_eq!(lines, answers["events"].as_u64().unwrap());
    assert!(out_of_order > 0, "some events are delivered late");
    let found_hosts: BTreeSet<_> = found.keys().cloned().collect();
    assert_eq!(found_hosts, expected, "complete chains");
    assert!(
        found.values().all(|&n| n == 1),
        "one complete alert per chain: {found:?}"
    );
    // Every injected chain and every partial host raised a partial finding first; nothing else.
    assert_eq!(partial_hosts.len(), 8 + 3 * 4, "{partial_hosts:?}");
    assert!(expected.is_subset(&partial_hosts));
}

#[test]
fn the_fast_path_equals_the_full_decode_on_generated_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let summary = chainwatch(&["replay", "--verify", dir.path().to_str().unwrap()]);
    assert!(summary.starts_with("verify:"), "{summary}");
}

/// With each event's tenant in a field, the fast path reads the tenant raw too: it skips
/// records, and its results equal the full decode's.
#[test]
fn the_fast_path_reads_tenant_fields_as_the_full_decode_does() {
    let dir = tempfile::tempdir().unwrap();
    generate_with(dir.path(), &["--tenant-field", "customer"]);
    let summary = chainwatch(&[
        "replay",
        "--verify",
        "--tenant-field",
        "customer",
        dir.path().to_str().unwrap(),
    ]);
    let skipped: u64 = summary
        .split("the fast path skipped ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no skipped count in {summary}"));
    assert!(
        skipped > 20_000,
        "the fast path skipped only {skipped}: {summary}"
    );
}

#[test]
fn the_same_seed_writes_the_same_workload() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_eq!(generate(a.path()), generate(b.path()));
    let name = "telemetry.tenant0001.windows.jsonl";
    assert!(
        std::fs::read(a.path().join(name)).unwrap() == std::fs::read(b.path().join(name)).unwrap()
    );
}

/// `gen --brokers` produces each tenant's lines to its topic, one record per line: the same
/// records, in the same order, as the files the same seed writes.
#[tokio::test(flavor = "multi_thread")]
async fn generated_telemetry_goes_to_kafka_as_the_files_hold_it() {
    let prefix = support::unique("gen");
    let topics: Vec<String> = (0..3).map(|t| format!("{prefix}.tenant{t:04}")).collect();
    let (files, kafka) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from_files = generate(files.path());
    let brokers = support::brokers();
    let template = format!("{prefix}.{{tenant}}");
    let from_kafka = tokio::task::spawn_blocking({
        let dir = kafka.path().to_owned();
        // gen creates the topics; one partition each, so the order read is the order produced.
        move || {
            generate_with(
                &dir,
                &[
                    "--brokers",
                    &brokers,
                    "--topic",
                    &template,
                    "--partitions",
                    "1",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(from_files, from_kafka, "same answers");
    assert!(
        !kafka
            .path()
            .join("telemetry.tenant0000.windows.jsonl")
            .exists(),
        "no files written with --brokers"
    );
    let mut total = 0;
    for (t, topic) in topics.iter().enumerate() {
        let file = files
            .path()
            .join(format!("telemetry.tenant{t:04}.windows.jsonl"));
        let text = std::fs::read(&file).unwrap();
        let lines: Vec<&[u8]> = text
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let (topic, n) = (topic.clone(), lines.len());
        let records = tokio::task::spawn_blocking(move || {
            support::read_first(&topic, n, Duration::from_secs(120))
        })
        .await
        .unwrap();
        let payloads: Vec<&[u8]> = records.iter().map(|r| r.payload.as_slice()).collect();
        assert!(
            payloads == lines,
            "tenant{t:04}: records differ from the file's lines"
        );
        total += payloads.len();
    }
    assert_eq!(total as u64, from_kafka["events"].as_u64().unwrap());
}
