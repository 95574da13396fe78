//! `chainwatch playbook test`: the shipped playbooks pass their fixtures; a wrong expectation
//! fails with a readable reason, a non-zero exit and a JUnit failure.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::process::Command;

fn playbook_test(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["playbook", "test"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_shipped_playbooks_pass_their_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let (ok, stdout) = playbook_test(&["playbooks/", "--junit", junit.to_str().unwrap()]);
    assert!(ok, "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"0\""), "{xml}");
    let cases = xml.matches("<testcase ").count();
    assert!(cases >= 20, "{cases} test cases");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        cases
    );
    // Every shipped playbook has at least one fixture that raises a finding and one that must not.
    for pb in [
        "exchange_to_ransomware",
        "proxylogon",
        "proxyshell",
        "credential_theft_after_exploitation",
        "lateral_movement_account_creation",
    ] {
        assert!(
            xml.contains(&format!("classname=\"{pb}\"")),
            "no fixtures for {pb}"
        );
    }
}

#[test]
fn a_wrong_expectation_fails_with_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("playbooks/proxylogon.yml")).unwrap();
    // Point the fixtures at the shipped files and expect the wrong host for the exploit.
    let text = text
        .replace(
            "input: fixtures/",
            &format!("input: {}/playbooks/fixtures/", root.display()),
        )
        .replace("host: MXS01", "host: MXS99");
    let file = dir.path().join("proxylogon.yml");
    std::fs::write(&file, text).unwrap();
    let junit = dir.path().join("junit.xml");
    let (ok, stdout) = playbook_test(&[file.to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stdout.contains("FAIL") && stdout.contains("the public exploit, end to end"),
        "{stdout}"
    );
    assert!(
        stdout.contains("MXS99")
            && stdout.contains("raised, not expected: tenant default host MXS01"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("failures=\"1\"") && xml.contains("<failure message="),
        "{xml}"
    );
}
