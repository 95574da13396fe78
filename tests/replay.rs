//! `chainwatch replay` on the bundled sample telemetry: the embedded default path.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::process::Command;

use chainwatch_model::{Alert, AlertKind, Severity};

fn replay(args: &[&str]) -> (String, String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("replay")
        .args(args)
        .output()
        .expect("run chainwatch replay");
    (
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
        out.status.success(),
    )
}

#[test]
fn the_sample_intrusion_raises_one_finding_that_grows_to_the_whole_chain() {
    let stats = tempfile::NamedTempFile::new().unwrap();
    let (stdout, stderr, ok) = replay(&[
        "--output",
        "json",
        "--tenant",
        "contoso",
        "--stats",
        stats.path().to_str().unwrap(),
        "examples/",
    ]);
    assert!(ok, "{stderr}");
    let alerts: Vec<Alert> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON alert per line"))
        .collect();
    // One finding: raised at the web shell, updated at the dump, complete at the backups.
    assert!(alerts.iter().all(|a| a.id == alerts[0].id), "{stdout}");
    let revisions: Vec<(u32, bool, Severity)> = alerts
        .iter()
        .map(|a| (a.revision, a.partial, a.severity))
        .collect();
    assert_eq!(
        revisions,
        [
            (0, true, Severity::High),
            (1, true, Severity::Critical),
            (2, false, Severity::Critical)
        ]
    );
    let a = alerts.last().unwrap();
    assert_eq!(a.kind, AlertKind::Chain);
    assert_eq!(a.tenant.as_str(), "contoso");
    assert_eq!(a.host.key(), "exch01");
    assert_eq!(a.rule.title, "Exchange exploitation to ransomware");
    let techniques: Vec<String> = a.techniques.iter().map(ToString::to_string).collect();
    assert_eq!(
        techniques,
        ["T1190", "T1505.003", "T1136", "T1003.001", "T1490", "T1486"]
    );
    let stages: Vec<&str> = a.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        stages,
        [
            "iis_worker_spawns_shell",
            "account_created",
            "lsass_memory_dump",
            "recovery_inhibited"
        ]
    );
    assert_eq!(a.events.len(), 4);
    assert!(
        a.events.windows(2).all(|w| w[0].time <= w[1].time),
        "evidence in event-time order"
    );
    assert!(!a.response.is_empty());
    // The same input gives the same ids on every run.
    let (again, _, _) = replay(&["--output", "json", "--tenant", "contoso", "examples/"]);
    assert_eq!(stdout, again);

    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stats.path()).unwrap()).unwrap();
    assert_eq!(stats["alerts"], 3);
    assert_eq!(stats["records_read"], stats["events_normalized"]);
    assert!(stats["records_read"].as_u64().unwrap() > 4000);
}

#[test]
fn tenant_overrides_apply_in_replay() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants.toml");
    // contoso does not run the ransomware playbook; the sample then raises nothing.
    std::fs::write(
        &tenants,
        "[tenants.contoso]\nplaybooks = [\"proxylogon\"]\n",
    )
    .unwrap();
    let (stdout, stderr, ok) = replay(&[
        "--output",
        "json",
        "--tenant",
        "contoso",
        "--tenants",
        tenants.to_str().unwrap(),
        "examples/",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "");
    std::fs::write(
        &tenants,
        "[tenants.contoso]\nplaybooks = [\"no_such_playbook\"]\n",
    )
    .unwrap();
    let (_, stderr, ok) = replay(&[
        "--tenants",
        tenants.to_str().unwrap(),
        "--tenant",
        "contoso",
        "examples/",
    ]);
    assert!(!ok);
    assert!(stderr.contains("no_such_playbook"), "{stderr}");
}

#[test]
fn bad_records_are_counted_by_reason_and_written_to_the_dead_letter_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.jsonl");
    std::fs::write(
        &input,
        "{\"EventID\":1,\"Hostname\":\"h\",\"@timestamp\":\"2026-01-01T00:00:00Z\"}\nnot json\n{\"EventID\":1,\"Hostname\":\"h\"}\n",
    )
    .unwrap();
    let stats = dir.path().join("stats.json");
    let dead = dir.path().join("dead.jsonl");
    let (_, stderr, ok) = replay(&[
        "--output",
        "json",
        "--stats",
        stats.to_str().unwrap(),
        "--dead-letter",
        dead.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(stats["records_read"], 3);
    assert_eq!(stats["events_normalized"], 1);
    assert_eq!(stats["dead_lettered"]["malformed_json"], 1);
    assert_eq!(stats["dead_lettered"]["no_time"], 1);
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["provenance"]["line"], 2);
    assert_eq!(dead[1]["reason"], "no_time");
}

#[test]
fn bad_rules_refuse_to_start_with_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.yml");
    std::fs::write(
        &rules,
        "title: A\nlogsource: {product: windows, category: process_creation}\ndetection:\n    sel: {Image|endswith2: x}\n    condition: sel\n---\ntitle: B\nlogsource: {product: windows, category: nope}\ndetection:\n    sel: {Image: x}\n    condition: sel\n",
    )
    .unwrap();
    let (_, stderr, ok) = replay(&["--rules", rules.to_str().unwrap(), "examples/"]);
    assert!(!ok);
    assert!(stderr.contains("bad.yml:4"), "{stderr}");
    assert!(stderr.contains("endswith2"), "{stderr}");
    assert!(
        stderr.contains("unsupported logsource category \"nope\""),
        "{stderr}"
    );
}

/// The fast path proves rules out from the raw text beyond their literals: a `not` filter whose
/// string comparisons hold on a field the record has once (and whose escapes cannot split a
/// match), and a number's digits missing from the field it is compared with. What it cannot
/// prove (a value with a `\n` escape, a number written in hexadecimal) is decoded, and the
/// results equal the full decode's.
#[test]
fn the_gate_proves_negated_filters_and_numbers_from_the_raw_text() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        r#"title: DLL side-loading outside System32
id: 5d0f6a2e-2f7c-4a51-9a52-1b0e54a2d001
logsource: {product: windows, category: image_load}
detection:
    selection:
        ImageLoaded|endswith: '\version.dll'
    filter:
        ImageLoaded|contains: 'C:\Windows\System32\'
    condition: selection and not filter
level: high
---
title: Connection to AD web services
id: 5d0f6a2e-2f7c-4a51-9a52-1b0e54a2d002
logsource: {product: windows, category: network_connection}
detection:
    selection:
        DestinationPort: 9389
    condition: selection
level: medium
"#,
    )
    .unwrap();
    let record = |id: u32, fields: &str| {
        format!(
            r#"{{"@timestamp":"2026-11-20T01:00:0{id}.000Z","Hostname":"WS-{id}.contoso.local","Channel":"Microsoft-Windows-Sysmon/Operational","EventID":{},"Image":"C:\\Tools\\app.exe",{fields}}}"#,
            if fields.contains("ImageLoaded") { 7 } else { 3 }
        )
    };
    let lines = [
        // Proved out: the filter holds.
        record(1, r#""ImageLoaded":"C:\\Windows\\System32\\version.dll""#),
        // May match (and does).
        record(2, r#""ImageLoaded":"C:\\Users\\x\\version.dll""#),
        // Cannot be proved: a `\n` escape in the value; decoded, and matches nothing.
        record(3, r#""ImageLoaded":"C:\\Windows\\System32\\version.dll\n""#),
        // Proved out: 443 holds neither 9389 nor 24ad.
        record(4, r#""DestinationPort":443"#),
        // Matches, as a number and as a hexadecimal string.
        record(5, r#""DestinationPort":9389"#),
        record(6, r#""DestinationPort":"0x24AD""#),
    ];
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let run = |extra: &[&str]| {
        let (stdout, stderr, ok) = replay(
            &[
                &["--tenant", "acme", "--rules", rules.to_str().unwrap()],
                extra,
                &[events.to_str().unwrap()],
            ]
            .concat(),
        );
        assert!(ok, "{stderr}");
        stdout
    };
    let verified = run(&["--verify"]);
    assert!(
        verified.contains("the fast path skipped 2 events")
            && verified.contains("the fast path's results are identical"),
        "{verified}"
    );
    let stats = dir.path().join("stats.json");
    let alerts = run(&["--output", "json", "--stats", stats.to_str().unwrap()]);
    let hosts: Vec<String> = alerts
        .lines()
        .map(|l| serde_json::from_str::<Alert>(l).unwrap().host.to_string())
        .collect();
    assert_eq!(
        hosts,
        [
            "WS-2.contoso.local",
            "WS-5.contoso.local",
            "WS-6.contoso.local"
        ],
        "{alerts}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(stats["fast_path"]["skipped"], 2, "{stats}");
}
