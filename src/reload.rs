//! Hot reload of rules and playbooks: on SIGHUP, and when a rule file changes (polled every
//! couple of seconds by size and modification time, which needs no platform file-watch API).
//! A change that does not load is rejected with every problem logged, and the running rules
//! stay; a good one reaches the correlate stage, which keeps the partial chains of unchanged
//! playbooks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chainwatch_correlate::{CompileOptions, RuleSet};
use tokio::sync::watch;

use crate::telemetry::Metrics;
use crate::telemetry::events::{RulesLoaded, RulesRejected};

type Snapshot = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn snapshot(paths: &[PathBuf]) -> Snapshot {
    fn walk(p: &Path, out: &mut Snapshot) {
        let Ok(meta) = std::fs::metadata(p) else {
            out.push((p.to_path_buf(), None, 0));
            return;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(p) {
                let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                children.sort();
                for c in children {
                    if c.is_dir()
                        || matches!(c.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
                    {
                        walk(&c, out);
                    }
                }
            }
        } else {
            out.push((p.to_path_buf(), meta.modified().ok(), meta.len()));
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}

/// What to watch and where to report.
#[derive(Debug)]
pub struct Watch {
    /// Rule files and folders.
    pub paths: Vec<PathBuf>,
    /// Placeholders and tenant overrides, compiled with each new rule set.
    pub options: CompileOptions,
    /// How often files are checked.
    pub interval: Duration,
    /// Where reloads are counted.
    pub metrics: Arc<Metrics>,
}

/// Watches until `stop` turns true; sends every good reload on `tx`.
pub async fn watch(w: Watch, tx: watch::Sender<Arc<RuleSet>>, mut stop: watch::Receiver<bool>) {
    let Watch {
        paths,
        options,
        interval,
        metrics,
    } = w;
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last = snapshot(&paths);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let hup_signal = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup_signal = std::future::pending::<()>();
        let reason = tokio::select! {
            _ = stop.changed() => return,
            () = hup_signal => "SIGHUP",
            _ = tick.tick() => {
                let now = snapshot(&paths);
                if now == last {
                    continue;
                }
                last = now;
                "rule files changed"
            }
        };
        let (p, o) = (paths.clone(), options.clone());
        match tokio::task::spawn_blocking(move || crate::rules::load_rule_set(&p, &o)).await {
            Ok(Ok(rules)) => {
                RulesLoaded {
                    detections: rules.detections.len(),
                    correlations: rules.correlations.len(),
                    reason,
                }
                .emit(&metrics);
                let _ = tx.send(Arc::new(rules));
            }
            Ok(Err(e)) => RulesRejected {
                error: &format!("{e:#}"),
                reason,
            }
            .emit(&metrics),
            Err(e) => RulesRejected {
                error: &format!("the reload task failed: {e}"),
                reason,
            }
            .emit(&metrics),
        }
    }
}
