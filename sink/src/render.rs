//! Alert renderings: chainwatch's JSON (one line per alert, the form scripts and the alert
//! topic use) and a readable form for terminals.

use std::fmt::Write as _;

use chainwatch_model::{Alert, AlertKind, Evidence, TechniqueId};

/// One alert as one line of JSON.
pub fn json_line(alert: &Alert) -> String {
    // Serializing our own plain data types cannot fail (no maps with non-string keys, no
    // custom serializers that error).
    serde_json::to_string(alert)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render alert: {e}\"}}"))
}

/// One alert as a readable block: what happened, where, in which order, on which evidence,
/// and what to do. Plain text (no colour codes), so it reads the same in a ticket.
pub fn pretty(alert: &Alert) -> String {
    let mut out = String::new();
    let kind = match alert.kind {
        AlertKind::Chain => "chain",
        AlertKind::Detection => "detection",
    };
    let _ = writeln!(
        out,
        "{}  {}",
        alert.severity.as_str().to_uppercase(),
        alert.rule.title
    );
    let _ = write!(
        out,
        "  {kind} {}  tenant {}  host {}",
        alert.id, alert.tenant, alert.host
    );
    if let Some(user) = &alert.user {
        let _ = write!(out, "  user {user}");
    }
    out.push('\n');
    if let Some(p) = &alert.playbook {
        let _ = write!(out, "  playbook {p}  ");
    } else {
        out.push_str("  ");
    }
    let _ = writeln!(out, "{} .. {}", alert.first_seen, alert.last_seen);
    if let Some(d) = &alert.description {
        let _ = writeln!(out, "  {}", d.trim());
    }
    if alert.stages.is_empty() {
        let _ = writeln!(out, "  {}", techniques(&alert.techniques));
        for e in &alert.events {
            let _ = writeln!(out, "     {}", evidence(e));
        }
    }
    for (i, stage) in alert.stages.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}  {}", i + 1, stage.time, stage.rule.title);
        if !stage.techniques.is_empty() {
            let _ = writeln!(out, "     {}", techniques(&stage.techniques));
        }
        for e in alert.events.iter().filter(|e| stage.events.contains(&e.id)) {
            let _ = writeln!(out, "     {}", evidence(e));
        }
    }
    if let Some(lb) = alert.lookback.as_ref().filter(|lb| !lb.events.is_empty()) {
        let before = lb
            .events
            .iter()
            .filter(|n| n.evidence.time < alert.first_seen)
            .count();
        let _ = writeln!(
            out,
            "  look-back: {} other notable event(s) on the host since {} ({before} before the first evidence{}); `chainwatch explain {}` shows them",
            lb.events.len(),
            lb.from,
            if lb.complete { "" } else { ", incomplete" },
            alert.id
        );
    }
    if !alert.response.is_empty() {
        out.push_str("  respond:\n");
        for (i, step) in alert.response.iter().enumerate() {
            let _ = writeln!(out, "    {}. {step}", i + 1);
        }
    }
    out
}

/// `T1003.001 LSASS Memory (Credential Access), ...`
pub(crate) fn techniques(ids: &[TechniqueId]) -> String {
    ids.iter()
        .map(|t| match t.info() {
            Some(info) => {
                let tactics: Vec<&str> = info.tactics.iter().map(|x| x.name).collect();
                format!("{t} {} ({})", info.name, tactics.join(", "))
            }
            None => t.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `w3wp.exe > cmd.exe: cmd /c whoami  [file:958]`
pub(crate) fn evidence(e: &Evidence) -> String {
    let mut what = String::new();
    if let Some(parent) = e.parent.as_ref().and_then(|p| p.name()) {
        let _ = write!(what, "{parent} > ");
    }
    if let Some(p) = &e.process {
        match (p.name(), &p.command_line) {
            (_, Some(cmd)) => what.push_str(cmd),
            (Some(name), None) => what.push_str(name),
            (None, None) => {}
        }
    }
    let target = e
        .target
        .account
        .as_ref()
        .map(|a| format!("account {a}"))
        .or_else(|| {
            e.target
                .process
                .as_ref()
                .and_then(|p| p.name())
                .map(|n| format!("process {n}"))
        })
        .or_else(|| e.target.file.as_ref().map(|f| format!("file {f}")))
        .or_else(|| e.target.service.as_ref().map(|s| format!("service {s}")))
        .or_else(|| e.target.url.as_ref().map(|u| format!("url {u}")))
        .or_else(|| e.target.registry.as_ref().map(|r| format!("registry {r}")))
        .or_else(|| e.target.api.as_ref().map(|a| format!("api {a}")));
    if let Some(t) = target {
        if !what.is_empty() {
            what.push_str(" -> ");
        }
        what.push_str(&t);
    }
    if what.is_empty() {
        what = format!("{:?} {:?}", e.class, e.activity);
    }
    if let Some(user) = &e.user {
        let _ = write!(what, "  (by {user})");
    }
    format!("{what}  [{}]", e.provenance)
}
