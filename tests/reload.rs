//! Hot reload through a running pipeline: a changed playbook file or SIGHUP reloads the rules,
//! a broken change is rejected with the running rules kept, and partial chains of unchanged
//! playbooks survive every reload.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use std::path::Path;
use std::time::Duration;

use chainwatch_model::Alert;
use support::*;

/// Writes a file atomically (write aside, rename), so the watcher never reads half of it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn findings(topic: &str) -> Vec<Alert> {
    let mut latest: Vec<Alert> = Vec::new();
    for r in read_all(topic) {
        let a: Alert = serde_json::from_slice(&r.payload).unwrap();
        match latest.iter_mut().find(|f| f.id == a.id) {
            Some(f) if a.revision > f.revision => *f = a,
            Some(_) => {}
            None => latest.push(a),
        }
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_keep_partial_chains_and_reject_broken_changes() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    for f in ["exchange-to-ransomware.yml", "proxyshell.yml"] {
        std::fs::copy(repo().join("playbooks").join(f), rules.join(f)).unwrap();
    }
    let config = names.write_config_with(dir.path(), &rules, "reload_interval = \"200ms\"", "");
    let raw = names.raw("acme");
    create_topics(&[&raw], 1).await;
    let cw = Chainwatch::run_logging(&config, &["--stages", "ingest,correlate"], "info");
    let limit = Duration::from_secs(60);

    let stages: Vec<(String, Vec<u8>)> = stages("EXCH01", 0)
        .into_iter()
        .map(|(_, r)| ("k".to_owned(), r))
        .collect();
    produce(&raw, &stages[..2]).await;
    let ingest = format!("{}-ingest", names.groups);
    let correlate = format!("{}-correlate", names.groups);
    await_caught_up(&ingest, &[&raw], limit);
    await_caught_up(&correlate, &[&names.events], limit);
    let partial = findings(&names.alerts);
    assert_eq!(partial.len(), 1);
    assert!(partial[0].partial);

    // Another playbook changes on disk: reloaded.
    let proxyshell = rules.join("proxyshell.yml");
    let text = std::fs::read_to_string(&proxyshell).unwrap();
    replace(&proxyshell, &text.replace("timespan: 1d", "timespan: 2d"));
    cw.await_log(&["rules reloaded", "rule files changed"], limit);

    // A broken file: rejected, every problem named, the running rules stay.
    let broken = rules.join("broken.yml");
    replace(
        &broken,
        "title: Broken\nlogsource: {product: windows, category: process_creation}\ndetection:\n    sel: {Image|endswith2: x}\n    condition: sel\n",
    );
    let line = cw.await_log(&["reload rejected"], limit);
    assert!(
        line.contains("broken.yml:4") && line.contains("endswith2"),
        "{line}"
    );
    std::fs::remove_file(&broken).unwrap();
    cw.await_log(&["rules reloaded", "rule files changed"], limit);

    // SIGHUP reloads even without a change.
    cw.signal("HUP");
    cw.await_log(&["rules reloaded", "SIGHUP"], limit);

    // The rest of the chain: the partial finding of the unchanged playbook completes.
    produce(&raw, &stages[2..]).await;
    await_caught_up(&ingest, &[&raw], limit);
    await_caught_up(&correlate, &[&names.events], limit);
    let done = findings(&names.alerts);
    assert_eq!(done.len(), 1, "{done:#?}");
    assert_eq!(done[0].id, partial[0].id);
    assert!(!done[0].partial);
    assert_eq!(done[0].stages.len(), 4);
    assert!(cw.stop().success());
}
