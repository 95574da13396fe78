//! The evidence timeline of one finding, for `chainwatch explain`: the chain's stages with
//! their ATT&CK techniques and tactics and every contributing event, merged in time with the
//! look-back (the hosts' other notable events before and during the chain).
//!
//! - [`text`]: the timeline for a terminal. Every value from telemetry is attacker-controlled:
//!   control characters (escape sequences, line breaks) are written out as `\u{..}`, never
//!   passed to the terminal.
//! - [`html`]: a self-contained page (inline CSS and SVG, no script, no network: a
//!   Content-Security-Policy forbids both), with the chain drawn as a timeline, for a ticket.
//!   It is a MiniJinja template (`sink/templates/timeline.html`) rendered with HTML
//!   auto-escaping: every value is escaped, and only numbers computed here reach attributes.

use std::fmt::Write as _;

use chainwatch_model::{Alert, AlertKind, Evidence, Notable, Severity, TechniqueId, Timestamp};
use serde::Serialize;

use crate::render;

const TEMPLATE: &str = include_str!("../templates/timeline.html");

/// Why a page could not be rendered (a template bug; the template is compiled in).
#[derive(Debug, thiserror::Error)]
#[error("timeline page: {0}")]
pub struct TimelineError(String);

/// One line of the merged timeline.
#[derive(Debug, Clone)]
struct Row<'a> {
    time: Timestamp,
    kind: RowKind,
    evidence: &'a Evidence,
    level: Severity,
    title: String,
    techniques: Vec<TechniqueId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowKind {
    /// Evidence of stage `n` (1-based), or of the detection itself (0).
    Stage(usize),
    /// A look-back event.
    Lookback,
}

fn rows(alert: &Alert) -> Vec<Row<'_>> {
    let mut out: Vec<Row<'_>> = Vec::new();
    for e in &alert.events {
        let stage = alert.stages.iter().position(|s| s.events.contains(&e.id));
        let (kind, level, title, techniques) = match stage {
            Some(i) => {
                let s = &alert.stages[i];
                (
                    RowKind::Stage(i + 1),
                    s.rule.level,
                    s.rule.title.clone(),
                    s.techniques.clone(),
                )
            }
            None => (
                RowKind::Stage(0),
                alert.rule.level,
                alert.rule.title.clone(),
                alert.techniques.clone(),
            ),
        };
        out.push(Row {
            time: e.time,
            kind,
            evidence: e,
            level,
            title,
            techniques,
        });
    }
    if let Some(lb) = &alert.lookback {
        for n in &lb.events {
            out.push(Row {
                time: n.evidence.time,
                kind: RowKind::Lookback,
                evidence: &n.evidence,
                level: n.level(),
                title: titles(n),
                techniques: n.techniques.clone(),
            });
        }
    }
    out.sort_by_key(|r| (r.time, matches!(r.kind, RowKind::Lookback)));
    out
}

fn titles(n: &Notable) -> String {
    n.rules
        .iter()
        .map(|r| r.title.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Control characters written out, so telemetry cannot drive the terminal.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// A signed duration, short: `-3m00s`, `+2h49m48s`, `+0s`.
pub fn offset(nanos: i64) -> String {
    let sign = if nanos < 0 { '-' } else { '+' };
    format!("{sign}{}", duration(nanos.unsigned_abs()))
}

/// A duration, short: `3m00s`, `2h49m48s`, `1d04h`, `0.250s`.
pub fn duration(nanos: u64) -> String {
    let ms = nanos / 1_000_000;
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m{sec:02}s")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else if s > 0 || ms == 0 {
        format!("{sec}s")
    } else {
        format!("0.{:03}s", ms % 1000)
    }
}

/// The timeline as plain text for a terminal.
pub fn text(alert: &Alert) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&clean(&s));
        out.push('\n');
    };
    let state = match (alert.kind, alert.partial) {
        (AlertKind::Detection, _) => "detection".to_owned(),
        (AlertKind::Chain, true) => format!("partial chain, revision {}", alert.revision),
        (AlertKind::Chain, false) => format!("complete chain, revision {}", alert.revision),
    };
    line(format!(
        "{}  {}  ({state})",
        alert.severity.as_str().to_uppercase(),
        alert.rule.title
    ));
    let mut who = format!(
        "  alert {}  tenant {}  host {}",
        alert.id, alert.tenant, alert.host
    );
    if let Some(u) = &alert.user {
        let _ = write!(who, "  user {u}");
    }
    line(who);
    let span = alert.last_seen.nanos_since(alert.first_seen).max(0);
    line(format!(
        "  {}{} .. {}  ({})",
        alert
            .playbook
            .as_ref()
            .map(|p| format!("playbook {p}  "))
            .unwrap_or_default(),
        alert.first_seen,
        alert.last_seen,
        duration(span.unsigned_abs())
    ));
    match &alert.lookback {
        Some(lb) => {
            let before = lb
                .events
                .iter()
                .filter(|n| n.evidence.time < alert.first_seen)
                .count();
            let mut s = format!(
                "  look-back from {} ({} before the first evidence): {} notable event(s) before, {} during the chain",
                lb.from,
                duration(alert.first_seen.nanos_since(lb.from).unsigned_abs()),
                before,
                lb.events.len() - before,
            );
            if !lb.complete {
                s.push_str("; INCOMPLETE: the buffer had dropped some of these hosts' events");
            }
            if lb.omitted > 0 {
                let _ = write!(s, "; {} lower-level event(s) left out", lb.omitted);
            }
            line(s);
            if let Some(first) = lb
                .events
                .first()
                .filter(|n| n.evidence.time < alert.first_seen)
            {
                line(format!(
                    "  earliest notable activity {} before the first evidence: {}",
                    duration(
                        alert
                            .first_seen
                            .nanos_since(first.evidence.time)
                            .unsigned_abs()
                    ),
                    titles(first)
                ));
            }
        }
        None => line("  no look-back (the engine kept none)".to_owned()),
    }
    line(String::new());
    for r in rows(alert) {
        let tag = match r.kind {
            RowKind::Stage(0) => "detection".to_owned(),
            RowKind::Stage(n) => format!("stage {n}"),
            RowKind::Lookback => "look-back".to_owned(),
        };
        line(format!(
            "  {}  {:>10}  {:<9}  {:<8}  {}",
            r.time,
            offset(r.time.nanos_since(alert.first_seen)),
            tag,
            r.level.as_str(),
            r.title
        ));
        if !r.techniques.is_empty() {
            line(format!("{:>57}{}", "", render::techniques(&r.techniques)));
        }
        let mut what = render::evidence(r.evidence);
        if let Some(h) = &r.evidence.host
            && *h != alert.host
        {
            what = format!("on {h}: {what}");
        }
        line(format!("{:>57}{what}", ""));
    }
    if !alert.response.is_empty() {
        line(String::new());
        line("  respond:".to_owned());
        for (i, step) in alert.response.iter().enumerate() {
            line(format!("    {}. {step}", i + 1));
        }
    }
    out
}

// ------------------------------------------------------------------------- HTML

/// Page geometry: the charts' width and their left margin (labels).
const WIDTH: f64 = 1100.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 30.0;

#[derive(Debug, Serialize)]
struct Page {
    severity: &'static str,
    title: String,
    kind: &'static str,
    state: String,
    id: String,
    tenant: String,
    host: String,
    user: Option<String>,
    playbook: Option<String>,
    first_seen: String,
    last_seen: String,
    span: String,
    description: Option<String>,
    tactics: Vec<TacticView>,
    stages: Vec<StageView>,
    lookback: Option<LookbackView>,
    charts: Vec<Chart>,
    response: Vec<String>,
    version: &'static str,
}

#[derive(Debug, Serialize)]
struct TacticView {
    name: &'static str,
    id: &'static str,
    techniques: Vec<TechniqueView>,
}

#[derive(Debug, Clone, Serialize)]
struct TechniqueView {
    id: String,
    name: String,
    tactics: String,
}

fn technique_views(ids: &[TechniqueId]) -> Vec<TechniqueView> {
    ids.iter()
        .map(|t| {
            let info = t.info();
            TechniqueView {
                id: t.to_string(),
                name: info.map(|i| i.name.to_owned()).unwrap_or_default(),
                tactics: info
                    .map(|i| {
                        i.tactics
                            .iter()
                            .map(|x| x.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct StageView {
    n: usize,
    name: String,
    title: String,
    level: &'static str,
    time: String,
    offset: String,
    techniques: Vec<TechniqueView>,
    events: Vec<EventView>,
}

#[derive(Debug, Serialize)]
struct EventView {
    time: String,
    offset: String,
    id: String,
    host: String,
    event_id: String,
    class: String,
    user: String,
    process: String,
    parent: String,
    command_line: String,
    target: String,
    provenance: String,
    level: &'static str,
    rules: String,
    techniques: Vec<TechniqueView>,
}

fn event_view(e: &Evidence, first: Timestamp) -> EventView {
    let t = &e.target;
    let target = [
        t.account.as_ref().map(|a| format!("account {a}")),
        t.group.as_ref().map(|g| format!("group {g}")),
        t.process
            .as_ref()
            .and_then(|p| p.image.as_ref())
            .map(|i| format!("process {i}")),
        t.file.as_ref().map(|f| format!("file {f}")),
        t.service.as_ref().map(|s| format!("service {s}")),
        t.url.as_ref().map(|u| format!("url {u}")),
        t.registry.as_ref().map(|r| format!("registry {r}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("; ");
    EventView {
        time: e.time.to_string(),
        offset: offset(e.time.nanos_since(first)),
        id: e.id.to_string(),
        host: e.host.as_ref().map(ToString::to_string).unwrap_or_default(),
        event_id: e.event_id.map(|i| i.to_string()).unwrap_or_default(),
        class: format!("{:?} / {:?}", e.class, e.activity),
        user: e.user.clone().unwrap_or_default(),
        process: e
            .process
            .as_ref()
            .and_then(|p| p.image.clone())
            .unwrap_or_default(),
        parent: e
            .parent
            .as_ref()
            .and_then(|p| p.image.clone())
            .unwrap_or_default(),
        command_line: e
            .process
            .as_ref()
            .and_then(|p| p.command_line.clone())
            .unwrap_or_default(),
        target,
        provenance: e.provenance.to_string(),
        level: "",
        rules: e.rule.to_string(),
        techniques: Vec::new(),
    }
}

#[derive(Debug, Serialize)]
struct LookbackView {
    from: String,
    to: String,
    reach: String,
    complete: bool,
    omitted: u32,
    before: usize,
    during: usize,
    earliest: Option<String>,
    events: Vec<EventView>,
}

/// One SVG timeline: the whole window, or the chain alone.
#[derive(Debug, Serialize)]
struct Chart {
    title: String,
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    lanes: Vec<Lane>,
    ticks: Vec<Tick>,
    marks: Vec<Mark>,
    /// The chain's extent, drawn as a bar on the stage lane: its start and width.
    chain: (f64, f64),
    stage_y: f64,
}

#[derive(Debug, Serialize)]
struct Lane {
    y: f64,
    label: &'static str,
}

#[derive(Debug, Serialize)]
struct Tick {
    x: f64,
    label: String,
}

#[derive(Debug, Serialize)]
struct Mark {
    x: f64,
    y: f64,
    /// `stage` or `lookback`.
    kind: &'static str,
    level: &'static str,
    /// The stage number, for stages.
    n: usize,
    /// Label drawn under a stage.
    label: String,
    label_y: f64,
    /// Tooltip.
    tip: String,
}

fn chart(title: String, alert: &Alert, from: Timestamp, to: Timestamp) -> Chart {
    let (lb_y, stage_y) = (38.0, 92.0);
    let span = to.nanos_since(from).max(1) as f64;
    let x_of = |t: Timestamp| -> f64 {
        let f = (t.nanos_since(from) as f64 / span).clamp(0.0, 1.0);
        LEFT + f * (WIDTH - LEFT - RIGHT)
    };
    let ticks = (0..=5)
        .map(|i| {
            let t = from.add_nanos((span * f64::from(i) / 5.0) as i64);
            let label = if to.nanos_since(from) > 86_400_000_000_000 {
                t.to_chrono().format("%m-%d %H:%M").to_string()
            } else {
                t.to_chrono().format("%H:%M:%S").to_string()
            };
            Tick { x: x_of(t), label }
        })
        .collect();
    let mut marks = Vec::new();
    if let Some(lb) = &alert.lookback {
        for (i, n) in lb
            .events
            .iter()
            .filter(|n| n.evidence.time >= from && n.evidence.time <= to)
            .enumerate()
        {
            marks.push(Mark {
                x: x_of(n.evidence.time),
                // Spread events of the same moment over three rows.
                y: lb_y + [0.0, -9.0, 9.0][i % 3],
                kind: "lookback",
                level: n.level().as_str(),
                n: 0,
                label: String::new(),
                label_y: 0.0,
                tip: format!(
                    "{}  {}  {}",
                    n.evidence.time,
                    titles(n),
                    render::evidence(&n.evidence)
                ),
            });
        }
    }
    for (i, s) in alert.stages.iter().enumerate() {
        marks.push(Mark {
            x: x_of(s.time),
            y: stage_y,
            kind: "stage",
            level: s.rule.level.as_str(),
            n: i + 1,
            label: format!("{}. {}", i + 1, s.name),
            // Alternate label rows so neighbouring stages stay readable.
            label_y: stage_y + 28.0 + 16.0 * (i % 3) as f64,
            tip: format!("stage {}  {}  {}", i + 1, s.time, s.rule.title),
        });
    }
    if alert.stages.is_empty() {
        for e in &alert.events {
            marks.push(Mark {
                x: x_of(e.time),
                y: stage_y,
                kind: "stage",
                level: alert.rule.level.as_str(),
                n: 1,
                label: alert.rule.title.clone(),
                label_y: stage_y + 28.0,
                tip: format!("{}  {}", e.time, render::evidence(e)),
            });
        }
    }
    Chart {
        title,
        width: WIDTH,
        height: stage_y + 80.0,
        left: LEFT,
        right: WIDTH - RIGHT,
        lanes: vec![
            Lane {
                y: lb_y,
                label: "look-back",
            },
            Lane {
                y: stage_y,
                label: "chain",
            },
        ],
        ticks,
        marks,
        chain: (
            x_of(alert.first_seen),
            (x_of(alert.last_seen) - x_of(alert.first_seen)).max(2.0),
        ),
        stage_y,
    }
}

fn tactics(alert: &Alert) -> Vec<TacticView> {
    let mut out: Vec<TacticView> = chainwatch_model::attack::tactics()
        .iter()
        .map(|t| TacticView {
            name: t.name,
            id: t.id,
            techniques: Vec::new(),
        })
        .collect();
    for t in &alert.techniques {
        let Some(info) = t.info() else { continue };
        for tactic in &info.tactics {
            if let Some(v) = out.iter_mut().find(|v| v.id == tactic.id) {
                v.techniques.extend(technique_views(&[*t]));
            }
        }
    }
    out.retain(|v| !v.techniques.is_empty());
    out
}

fn page(alert: &Alert) -> Page {
    let first = alert.first_seen;
    let stages = alert
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| StageView {
            n: i + 1,
            name: s.name.clone(),
            title: s.rule.title.clone(),
            level: s.rule.level.as_str(),
            time: s.time.to_string(),
            offset: offset(s.time.nanos_since(first)),
            techniques: technique_views(&s.techniques),
            events: alert
                .events
                .iter()
                .filter(|e| s.events.contains(&e.id))
                .map(|e| event_view(e, first))
                .collect(),
        })
        .collect::<Vec<_>>();
    let stages = if stages.is_empty() {
        vec![StageView {
            n: 1,
            name: alert.rule.id.to_string(),
            title: alert.rule.title.clone(),
            level: alert.rule.level.as_str(),
            time: first.to_string(),
            offset: offset(0),
            techniques: technique_views(&alert.techniques),
            events: alert.events.iter().map(|e| event_view(e, first)).collect(),
        }]
    } else {
        stages
    };
    let lookback = alert.lookback.as_ref().map(|lb| {
        let before = lb.events.iter().filter(|n| n.evidence.time < first).count();
        LookbackView {
            from: lb.from.to_string(),
            to: lb.to.to_string(),
            reach: duration(first.nanos_since(lb.from).unsigned_abs()),
            complete: lb.complete,
            omitted: lb.omitted,
            before,
            during: lb.events.len() - before,
            earliest: lb
                .events
                .first()
                .filter(|n| n.evidence.time < first)
                .map(|n| duration(first.nanos_since(n.evidence.time).unsigned_abs())),
            events: lb
                .events
                .iter()
                .map(|n| EventView {
                    level: n.level().as_str(),
                    rules: titles(n),
                    techniques: technique_views(&n.techniques),
                    ..event_view(&n.evidence, first)
                })
                .collect(),
        }
    });
    let span = alert.last_seen.nanos_since(first).max(0);
    let mut charts = Vec::new();
    let pad = (span / 20).max(30_000_000_000);
    let chain_from = first.add_nanos(-pad);
    // The dwell time, when notable events came before what the chain's own chart shows: from
    // the earliest of them to the end.
    if let Some(earliest) = alert
        .lookback
        .as_ref()
        .and_then(|lb| lb.events.first())
        .map(|n| n.evidence.time)
        .filter(|t| *t < chain_from)
    {
        let wide = (alert.last_seen.nanos_since(earliest) / 20).max(60_000_000_000);
        charts.push(chart(
            "Look-back and chain".to_owned(),
            alert,
            earliest.add_nanos(-wide),
            alert.last_seen.add_nanos(wide),
        ));
    }
    charts.push(chart(
        match alert.kind {
            AlertKind::Chain => "The chain".to_owned(),
            AlertKind::Detection => "The detection".to_owned(),
        },
        alert,
        chain_from,
        alert.last_seen.add_nanos(pad),
    ));
    Page {
        severity: alert.severity.as_str(),
        title: alert.rule.title.clone(),
        kind: match alert.kind {
            AlertKind::Chain => "chain",
            AlertKind::Detection => "detection",
        },
        state: match (alert.kind, alert.partial) {
            (AlertKind::Detection, _) => "one event".to_owned(),
            (AlertKind::Chain, true) => format!("partial, revision {}", alert.revision),
            (AlertKind::Chain, false) => format!("complete, revision {}", alert.revision),
        },
        id: alert.id.to_string(),
        tenant: alert.tenant.to_string(),
        host: alert.host.to_string(),
        user: alert.user.clone(),
        playbook: alert.playbook.clone(),
        first_seen: first.to_string(),
        last_seen: alert.last_seen.to_string(),
        span: duration(span.unsigned_abs()),
        description: alert.description.clone(),
        tactics: tactics(alert),
        stages,
        lookback,
        charts,
        response: alert.response.clone(),
        version: env!("CARGO_PKG_VERSION"),
    }
}

/// The timeline as a self-contained HTML page.
pub fn html(alert: &Alert) -> Result<String, TimelineError> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // The name's `.html` turns auto-escaping on for every `{{ }}`.
    env.add_template("timeline.html", TEMPLATE)
        .map_err(|e| TimelineError(e.to_string()))?;
    env.get_template("timeline.html")
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(page(alert)))))
        .map_err(|e| TimelineError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_short() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(250_000_000), "0.250s");
        assert_eq!(duration(180_000_000_000), "3m00s");
        assert_eq!(duration(10_188_000_000_000), "2h49m48s");
        assert_eq!(duration(100_800_000_000_000), "1d04h");
        assert_eq!(offset(-180_000_000_000), "-3m00s");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(clean("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\u{a}c");
    }
}
