//! Sigma rules through `chainwatch replay`: alerts name the rule by its Sigma id and title (so
//! conformance checks are scriptable from the command line), and windows still open when the
//! input ends are decided then.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Command;

use chainwatch_model::{Alert, AlertKind};

fn replay(args: &[&str]) -> Vec<Alert> {
    let out = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("replay")
        .args(["--output", "json"])
        .args(args)
        .output()
        .expect("run chainwatch replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON alert per line"))
        .collect()
}

#[test]
fn a_sigmahq_rule_alerts_with_its_id_and_title() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/sigma");
    assert!(
        shared.is_dir(),
        "the SigmaHQ data is missing: expected {} (cloned next to the repository)",
        shared.display()
    );
    let rule = shared.join(
        "rules/windows/process_creation/proc_creation_win_reg_system_restore_modification.yml",
    );
    let data = shared.join(
        "regression_data/rules/windows/process_creation/proc_creation_win_reg_system_restore_modification/7c06ab9b-b1d2-4ba9-b06e-09491ded20d9.json",
    );
    let alerts = replay(&["--rules", rule.to_str().unwrap(), data.to_str().unwrap()]);
    assert_eq!(alerts.len(), 4, "the case's match_count");
    for a in &alerts {
        assert_eq!(a.kind, AlertKind::Detection);
        assert_eq!(a.rule.id, "7c06ab9b-b1d2-4ba9-b06e-09491ded20d9");
        assert_eq!(
            a.rule.title,
            "System Restore Registry Modification via CommandLine"
        );
    }
}

#[test]
fn windows_open_at_the_end_of_the_input_are_decided() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        r#"
title: Exactly two failed logons in a day
id: 00000000-0000-4000-8000-00000000c0de
correlation:
    type: event_count
    rules: [failed_logon]
    group-by: [Computer]
    timespan: 1d
    condition: {eq: 2}
---
title: Failed logon
id: 00000000-0000-4000-8000-00000000f00d
name: failed_logon
logsource: {product: windows, service: security}
detection:
    sel: {EventID: 4625}
    condition: sel
"#,
    )
    .unwrap();
    let events = dir.path().join("events.json");
    let line = |t: &str, host: &str| {
        format!(
            "{{\"EventID\": 4625, \"Channel\": \"Security\", \"Hostname\": \"{host}\", \"@timestamp\": \"{t}\"}}\n"
        )
    };
    let mut text = String::new();
    text.push_str(&line("2024-01-01T10:00:00Z", "ws1"));
    text.push_str(&line("2024-01-01T11:00:00Z", "ws1"));
    text.push_str(&line("2024-01-01T10:00:00Z", "ws2"));
    std::fs::write(&events, text).unwrap();
    let alerts = replay(&["--rules", rules.to_str().unwrap(), events.to_str().unwrap()]);
    // The day is not over in the data, but the input is: ws1 had exactly two, ws2 one.
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].rule.title, "Exactly two failed logons in a day");
    assert_eq!(alerts[0].group["Computer"], "ws1");
    assert_eq!(alerts[0].events.len(), 2);
}
