//! Sigma rules see every telemetry format: `chainwatch replay` over the ingest fixtures of each
//! format (ECS, Defender, OCSF, W3C, MSExchange), with rules written for Windows logsources and
//! for web servers, finds the same activity in each. And `replay` reads every file kind:
//! JSON lines, W3C logs, EVTX, and gzip of any of them.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use chainwatch_model::{Alert, Provenance};

const RULES: &str = r#"title: Web server spawns a shell
id: 3d2c9c4e-0000-4000-8000-000000000001
level: high
logsource: {product: windows, category: process_creation}
detection:
    selection:
        ParentImage|endswith: '\w3wp.exe'
        Image|endswith: '\cmd.exe'
    condition: selection
---
title: ASPX file written
id: 3d2c9c4e-0000-4000-8000-000000000002
level: high
logsource: {product: windows, category: file_event}
detection:
    selection:
        TargetFilename|endswith: '.aspx'
    condition: selection
---
title: ProxyShell autodiscover probe
id: 3d2c9c4e-0000-4000-8000-000000000003
level: high
logsource: {category: webserver}
detection:
    selection:
        c-uri|contains: 'autodiscover.json?@'
    condition: selection
---
title: Mailbox export to a web folder
id: 3d2c9c4e-0000-4000-8000-000000000004
level: critical
logsource: {product: windows, service: msexchange-management}
detection:
    selection:
        Cmdlet: New-MailboxExportRequest
        Parameters|contains: '.aspx'
    condition: selection
"#;

fn file_of(p: &Provenance) -> String {
    match p {
        Provenance::File { path, .. } => Path::new(path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
        Provenance::Kafka { topic, .. } => topic.clone(),
    }
}

#[test]
fn windows_and_webserver_rules_match_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("ingest/tests/fixtures");
    let out = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .args(["replay", "--output", "json", "--rules"])
        .arg(&rules)
        .arg(&fixtures)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let alerts: Vec<Alert> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in &alerts {
        for e in &a.events {
            seen.entry(a.rule.title.clone())
                .or_default()
                .push(file_of(&e.provenance));
        }
    }
    for files in seen.values_mut() {
        files.sort();
    }
    let expect = |title: &str, files: &[&str]| {
        assert_eq!(
            seen.get(title)
                .map(|v| v.iter().map(String::as_str).collect::<Vec<_>>()),
            Some(files.to_vec()),
            "{title}: {seen:#?}"
        );
    };
    expect(
        "Web server spawns a shell",
        &["ecs.jsonl", "mde.jsonl", "ocsf.jsonl"],
    );
    expect(
        "ASPX file written",
        &["ecs.jsonl", "mde.jsonl", "ocsf.jsonl"],
    );
    expect(
        "ProxyShell autodiscover probe",
        &["ecs.jsonl", "ocsf.jsonl", "u_ex240501.log"],
    );
    expect(
        "Mailbox export to a web folder",
        &["msexchange.jsonl", "msexchange.jsonl"],
    );
}

#[test]
fn replay_reads_evtx_w3c_and_gzip_files() {
    use std::io::Write;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let evtx = root.join("../shared/datasets/evtx-samples/MSExchange_Management_wec.evtx");
    assert!(
        evtx.is_file(),
        "the shared datasets are missing: expected {} (the repository is checked out next to `shared/`)",
        evtx.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let fixtures = root.join("ingest/tests/fixtures");
    std::fs::copy(
        fixtures.join("u_ex240501.log"),
        dir.path().join("u_ex240501.log"),
    )
    .unwrap();
    std::fs::copy(&evtx, dir.path().join("exchange.evtx")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(dir.path().join("ocsf.jsonl.gz")).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(&std::fs::read(fixtures.join("ocsf.jsonl")).unwrap())
        .unwrap();
    gz.finish().unwrap();
    std::fs::write(dir.path().join("broken.gz"), [0x1f, 0x8b, 0, 1, 2]).unwrap();
    let outputs = tempfile::tempdir().unwrap();
    let stats = outputs.path().join("stats.json");
    let dead = outputs.path().join("dead.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .args(["replay", "--output", "json", "--stats"])
        .arg(&stats)
        .arg("--dead-letter")
        .arg(&dead)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(stats["files"], 4);
    // A broken gzip file, 1 EVTX record, 6 OCSF events, 4 W3C lines (one of them truncated).
    assert_eq!(stats["records_read"], 12);
    assert_eq!(stats["events_normalized"], 10);
    assert_eq!(stats["dead_lettered"]["w3c_field_count"], 1);
    assert_eq!(stats["dead_lettered"]["bad_gzip"], 1);
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Files are read in name order: broken.gz first. Binary bytes are kept, in hex.
    assert_eq!(dead[0]["reason"], "bad_gzip");
    assert_eq!(dead[0]["record_hex"], "1f8b000102");
    let line = &dead[1];
    assert_eq!(line["provenance"]["line"], 7);
    assert!(
        line["record"]
            .as_str()
            .unwrap()
            .starts_with("2024-05-01 10:00:01")
    );
}
