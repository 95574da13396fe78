//! Alert renderings: chainwatch's JSON (one line per alert, the form scripts and the alert
//! topic use) and a readable form for terminals.

use std::fmt::Write as _;

use chainwatch_model::{Alert, AlertKind};

/// One alert as one line of JSON.
pub fn json_line(alert: &Alert) -> String {
    // Serializing our own plain data types cannot fail (no maps with non-string keys, no
    // custom serializers that error).
    serde_json::to_string(alert)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render alert: {e}\"}}"))
}

/// One alert as a readable block: what happened, where, in which order, and what to do.
pub fn pretty(alert: &Alert) -> String {
    let mut out = String::new();
    let kind = match alert.kind {
        AlertKind::Chain => "CHAIN",
        AlertKind::Detection => "DETECTION",
    };
    let _ = writeln!(
        out,
        "[{}] {kind}: {}  ({})",
        alert.severity.as_str().to_uppercase(),
        alert.rule.title,
        alert.id
    );
    let _ = writeln!(out, "  tenant {}  host {}", alert.tenant, alert.host);
    if let Some(user) = &alert.user {
        let _ = writeln!(out, "  user {user}");
    }
    let _ = writeln!(out, "  {} .. {}", alert.first_seen, alert.last_seen);
    if !alert.techniques.is_empty() {
        let names: Vec<String> = alert
            .techniques
            .iter()
            .map(|t| match t.info() {
                Some(info) => format!("{t} {}", info.name),
                None => t.to_string(),
            })
            .collect();
        let _ = writeln!(out, "  techniques: {}", names.join(", "));
    }
    for (i, stage) in alert.stages.iter().enumerate() {
        let techniques: Vec<String> = stage.techniques.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  stage {}  {}  {} [{}]",
            i + 1,
            stage.time,
            stage.rule.title,
            techniques.join(" ")
        );
    }
    for e in &alert.events {
        let what = e
            .process
            .as_ref()
            .and_then(|p| p.command_line.clone().or_else(|| p.image.clone()))
            .or_else(|| e.target.account.clone())
            .or_else(|| e.target.file.clone())
            .unwrap_or_default();
        let _ = writeln!(out, "    {}  {}  {what}", e.time, e.provenance);
    }
    for (i, step) in alert.response.iter().enumerate() {
        let _ = writeln!(out, "  respond {}. {step}", i + 1);
    }
    out
}
