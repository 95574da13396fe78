//! `chainwatch rules check`: every rule that cannot be loaded is reported with its file, rule
//! id and reason, then a summary; the exit code says whether any failed.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Command;

fn check(args: &[&str]) -> (String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["rules", "check"])
        .args(args)
        .output()
        .expect("run chainwatch rules check");
    (
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        out.status.code().expect("an exit code"),
    )
}

fn rule(id: &str, detection: &str) -> String {
    format!(
        "title: Rule {id}\nid: {id}\nlogsource:\n    category: process_creation\n    product: windows\ndetection:\n{detection}"
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn each_failing_rule_is_reported_with_file_id_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "good.yml",
        &rule(
            "good-1",
            "    sel:\n        Image|endswith: '\\x.exe'\n    condition: sel\n",
        ),
    );
    write(
        d,
        "modifier.yml",
        &rule(
            "bad-modifier",
            "    sel:\n        Image|endswit: '\\x.exe'\n    condition: sel\n",
        ),
    );
    write(
        d,
        "regex.yml",
        &rule(
            "bad-regex",
            "    sel:\n        CommandLine|re: 'a(?=b)'\n    condition: sel\n",
        ),
    );
    write(
        d,
        "placeholder.yml",
        &rule(
            "needs-placeholder",
            "    sel:\n        User|expand: '%Admins%'\n    condition: sel\n",
        ),
    );
    write(d, "broken.yml", "title: [unclosed\n");
    let dir_arg = d.to_str().unwrap();

    let (out, code) = check(&[dir_arg]);
    assert_eq!(code, 1, "{out}");
    let line = |id: &str| {
        out.lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("no line for {id} in:\n{out}"))
            .to_owned()
    };
    let modifier = line("rule bad-modifier");
    assert!(modifier.contains("modifier.yml:"), "{modifier}");
    assert!(
        modifier.contains("unknown value modifier 'endswit'"),
        "{modifier}"
    );
    let regex = line("rule bad-regex");
    assert!(regex.contains("regex.yml:"), "{regex}");
    assert!(regex.contains("look-ahead"), "{regex}");
    let placeholder = line("rule needs-placeholder");
    assert!(placeholder.contains("%Admins%"), "{placeholder}");
    let broken = line("broken.yml");
    assert!(broken.contains("not valid YAML"), "{broken}");
    assert!(!out.contains("good-1"), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .contains("5 file(s), 1 rule(s) loaded (1 detection, 0 correlation), 4 rule(s) failed"),
        "{out}"
    );

    // With the placeholder's values, that rule loads.
    let values = d.join("placeholders.toml");
    std::fs::write(&values, "Admins = [\"admin*\", \"root\"]\n").unwrap();
    let (out, code) = check(&["--placeholders", values.to_str().unwrap(), dir_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("needs-placeholder"), "{out}");
    assert!(out.contains("2 rule(s) loaded"), "{out}");
    assert!(out.contains("3 rule(s) failed"), "{out}");
}

#[test]
fn good_rules_pass_with_exit_code_zero() {
    let (out, code) = check(&["playbooks/"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(", 0 rule(s) failed"), "{out}");
}
