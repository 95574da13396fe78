//! `chainwatch explain` on the sample intrusion, as an analyst runs it: the finding carries its
//! look-back (the web shell written three minutes before the first stage), the terminal
//! timeline shows it in order, and the HTML page renders in a real headless Chromium with
//! every stage. The screenshot is kept at `target/test-artifacts/explain-timeline.png`.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;

use chainwatch_model::{Alert, AlertKind};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chainwatch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

/// The sample's findings as `replay` prints them, written to `dir/findings.jsonl`.
fn replay_sample(dir: &Path) -> (PathBuf, Vec<Alert>) {
    let out = chainwatch(&["replay", "--output", "json", "examples/"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("findings.jsonl");
    std::fs::write(&path, &out.stdout).unwrap();
    let alerts = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (path, alerts)
}

/// The headless browser: `CHAINWATCH_CHROMIUM`, else Debian's `chromium` on the PATH
/// (`scripts/test.sh` installs it when missing). Missing is a failure, never a skip.
fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("CHAINWATCH_CHROMIUM") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for name in ["chromium", "chromium-browser"] {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no chromium found: the HTML timeline test renders the page in headless Chromium. \
         Run the suite with `bash scripts/test.sh` (it installs Debian's chromium), or set \
         CHAINWATCH_CHROMIUM to a Chromium binary."
    )
}

/// Runs headless Chromium on `page` with `args`, bounded in time; returns its stdout.
fn headless(page: &Path, profile: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("timeout")
        .arg("120")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn the_sample_finding_carries_its_look_back_and_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (findings, alerts) = replay_sample(dir.path());
    let chain = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::Chain && !a.partial)
        .max_by_key(|a| a.revision)
        .unwrap();
    assert_eq!(chain.stages.len(), 4);

    // The look-back: the .aspx written by System three minutes before the web shell ran, and
    // the shell's other commands during the chain; never the chain's own evidence.
    let lb = chain
        .lookback
        .as_ref()
        .expect("the finding carries a look-back");
    assert!(lb.complete);
    assert_eq!(lb.from, chain.first_seen.add_nanos(-24 * 3_600_000_000_000));
    let before: Vec<_> = lb
        .events
        .iter()
        .filter(|n| n.evidence.time < chain.first_seen)
        .collect();
    assert_eq!(before.len(), 1, "{before:#?}");
    assert!(
        before[0]
            .evidence
            .target
            .file
            .as_deref()
            .unwrap()
            .ends_with(r"\owa\auth\errorEE.aspx")
    );
    assert_eq!(
        chain.first_seen.nanos_since(before[0].evidence.time),
        180_000_000_000
    );
    assert!(
        lb.events.len() > 1,
        "the shell's other commands are there too"
    );
    assert!(lb.events.iter().all(|n| n.evidence.time <= chain.last_seen));
    let own: Vec<_> = chain.events.iter().map(|e| e.id).collect();
    assert!(lb.events.iter().all(|n| !own.contains(&n.evidence.id)));
    // Every contributing event, with its provenance.
    assert_eq!(chain.events.len(), 4);
    assert!(
        chain
            .events
            .iter()
            .all(|e| e.provenance.to_string().starts_with("examples/"))
    );

    // The terminal timeline, and the page.
    let page = dir.path().join("timeline.html");
    let out = chainwatch(&[
        "explain",
        findings.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let aspx = text.find("errorEE.aspx").unwrap();
    let stage1 = text.find("stage 1").unwrap();
    let stage4 = text.find("stage 4").unwrap();
    assert!(aspx < stage1 && stage1 < stage4, "{text}");
    assert!(text.contains("earliest notable activity 3m00s before the first evidence"));
    assert!(text.contains(&format!("revision {}", chain.revision)));

    // Chromium renders it: every stage and the look-back event are in the rendered document.
    let profile = tempfile::tempdir().unwrap();
    let dom = String::from_utf8(headless(&page, profile.path(), &["--dump-dom"])).unwrap();
    for (i, stage) in chain.stages.iter().enumerate() {
        let heading = format!("Stage {}: {}", i + 1, stage.name);
        assert!(dom.contains(&heading), "{heading} not rendered");
        assert!(dom.contains(&stage.rule.title));
    }
    assert!(dom.contains("errorEE.aspx"));
    assert!(dom.contains("<svg"));
    let shot = dir.path().join("timeline.png");
    headless(
        &page,
        profile.path(),
        &[
            "--window-size=1280,2000",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a near-empty screenshot ({} bytes)",
        png.len()
    );
    let artifacts = repo().join("target").join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("explain-timeline.png"), &png).unwrap();
    std::fs::copy(&page, artifacts.join("explain-timeline.html")).unwrap();
}

#[test]
fn explain_finds_a_finding_by_id_and_names_the_ids_of_a_busy_file() {
    let dir = tempfile::tempdir().unwrap();
    let (findings, alerts) = replay_sample(dir.path());
    let id = alerts[0].id.to_string();
    // Revision 0 by id, from a file given with --in, no page.
    let out = chainwatch(&[
        "explain",
        &id,
        "--in",
        findings.to_str().unwrap(),
        "--revision",
        "0",
        "--no-html",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("partial chain, revision 0"), "{text}");

    // A file with several findings: the ids are listed, and nothing is guessed.
    let mut two = std::fs::read_to_string(&findings).unwrap();
    let mut other: Alert = alerts[0].clone();
    other.id = chainwatch_model::AlertId::from_u128(7);
    two.push_str(&serde_json::to_string(&other).unwrap());
    two.push('\n');
    let busy = dir.path().join("busy.jsonl");
    std::fs::write(&busy, two).unwrap();
    let out = chainwatch(&["explain", busy.to_str().unwrap(), "--no-html"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("holds 2 findings"), "{err}");
    assert!(err.contains(&id), "{err}");

    // Neither a file nor an id.
    let out = chainwatch(&["explain", "no-such-alert"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither a findings file nor an alert id")
    );
}
