//! `chainwatch hunt`: a retro-hunt. Rules or playbooks (new ones, typically) run over the
//! retained events topic for an event-time range, across all tenants, and the findings are
//! reported per tenant and host: "which customers were hit before we had this playbook".
//!
//! The topic is read with [`chainwatch_kafka::scan`]: partitions assigned, never subscribed,
//! nothing committed, so the live consumer groups see nothing of it. The records to read are
//! located by their write time (offset lookups by timestamp) from `--from` less the slack to
//! `--to` plus the slack; within them, events are kept by their own event time. A fresh engine
//! correlates them with an allowed lateness as long as the range, so the order in which
//! partitions interleave does not matter. Records are read with
//! [`chainwatch_model::wire::decode_event`]: `bin1` or JSON, as their header says.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chainwatch_config::parse_duration;
use chainwatch_correlate::{CompileOptions, Engine, EngineConfig};
use chainwatch_kafka::scan::{self, Flow};
use chainwatch_model::{Alert, AlertKind, Severity, TenantId, Timestamp, wire};
use chainwatch_sink::render;
use serde::Serialize;

use crate::cli::{HuntArgs, HuntOutput};
use crate::topic_source;

/// Reads `--from`/`--to`: `now`, a duration before `now` (`30d`), or a time (RFC 3339, or a
/// date or date-time without zone, read as UTC).
pub fn parse_time(text: &str, now: Timestamp) -> Result<Timestamp> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Ok(d) = parse_duration(t) {
        let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        return Ok(now.add_nanos(-nanos));
    }
    let with_time = if t.len() == 10 {
        format!("{t}T00:00:00")
    } else {
        t.to_owned()
    };
    Timestamp::parse_lenient(&with_time, chainwatch_model::time::utc_offset()).map_err(|_| {
        anyhow::anyhow!("{text:?} is not a time (2026-11-01T00:00:00Z, 2026-11-01, 30d or now)")
    })
}

fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_nanos(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
}

/// What one rule (or playbook) found on one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostFinding {
    /// The playbook, or the rule's title for a detection or a plain correlation.
    pub rule: String,
    /// The highest severity of its findings.
    pub severity: Severity,
    /// Complete findings (chains that completed, detections).
    pub findings: usize,
    /// Partial chains (a milestone reached, not complete).
    pub partial: usize,
    /// Earliest evidence.
    pub first_seen: Timestamp,
    /// Latest evidence.
    pub last_seen: Timestamp,
    /// The findings' alert ids (for `chainwatch explain`).
    pub alerts: Vec<String>,
}

/// The `--report` document.
#[derive(Debug, Default, Serialize)]
pub struct HuntReport {
    /// The topic read.
    pub topic: String,
    /// The event-time range hunted.
    pub from: Option<Timestamp>,
    /// The event-time range hunted.
    pub to: Option<Timestamp>,
    /// Records located by time (the offsets read).
    pub records_located: u64,
    /// Records read.
    pub records_read: u64,
    /// Records located but not read: written after the range, past a partition's first
    /// record written after it.
    pub records_skipped: u64,
    /// Records that were not events (skipped).
    pub malformed: u64,
    /// Events within the range (and tenants) hunted.
    pub events_in_range: u64,
    /// Tenant, then host, then what was found.
    pub tenants: BTreeMap<String, BTreeMap<String, Vec<HostFinding>>>,
}

/// Runs a hunt; the report goes to `out` in the chosen form.
pub fn hunt(args: &HuntArgs, out: &mut dyn Write) -> Result<HuntReport> {
    let deployment = topic_source::deployment(&args.source)?;
    let kafka = deployment.kafka("hunt")?;
    let topic = args
        .source
        .topic
        .clone()
        .unwrap_or_else(|| deployment.topics.events.clone());
    let placeholders = match &args.placeholders {
        Some(_) => crate::rules::placeholders_from(args.placeholders.as_deref())?,
        None => deployment.placeholders.clone(),
    };
    let options = CompileOptions {
        placeholders,
        tenants: deployment.tenants.clone(),
        tenants_source: args.source.config.clone().unwrap_or_default(),
    };
    let rules = Arc::new(crate::rules::load_rule_set(&args.rules, &options)?);
    let now = now();
    let from = parse_time(&args.from, now).context("--from")?;
    let to = parse_time(&args.to, now).context("--to")?;
    if to < from {
        bail!("--to ({to}) is before --from ({from})");
    }
    let slack = parse_duration(&args.slack).map_err(anyhow::Error::msg)?;
    let slack_ms = i64::try_from(slack.as_millis()).unwrap_or(i64::MAX);
    let tenants: Vec<TenantId> = args
        .tenants
        .iter()
        .map(|t| TenantId::new(t).with_context(|| format!("--tenant {t:?}")))
        .collect::<Result<_>>()?;
    let span = Duration::from_nanos(u64::try_from(to.nanos_since(from)).unwrap_or(0));
    let mut engine = Engine::new(
        rules,
        EngineConfig {
            // Partitions interleave in any order: nothing in the range may count as late.
            allowed_lateness: span + slack,
            ..EngineConfig::default()
        },
    );

    let reader = scan::reader(kafka, "hunt")?;
    let (first_ms, last_ms) = (
        from.as_millis().saturating_sub(slack_ms),
        to.as_millis().saturating_add(slack_ms),
    );
    // The start is located by time; the end is where a partition's records pass the range
    // (below), which is what an offset lookup for the end would say on a topic whose
    // timestamps grow, and stays right on a broker that answers such lookups badly.
    let ranges = reader
        .ranges(&topic, Some(first_ms), None)
        .with_context(|| format!("locating {from} .. {to} on {topic}"))?;
    let ends: BTreeMap<i32, i64> = ranges.iter().map(|r| (r.partition, r.end)).collect();
    let located: u64 = ranges.iter().map(scan::PartitionRange::len).sum();
    let mut report = HuntReport {
        topic: topic.clone(),
        from: Some(from),
        to: Some(to),
        records_located: located,
        ..HuntReport::default()
    };
    let bar = progress(located, &topic);
    let mut latest: BTreeMap<String, Alert> = BTreeMap::new();
    reader.read(&topic, &ranges, Duration::from_secs(60), &mut |r| {
        report.records_read += 1;
        bar.inc(1);
        if let Some(ts) = r.timestamp {
            // Written after the range (and its slack): so is the rest of this partition.
            if ts > last_ms {
                let rest = ends.get(&r.partition).map_or(0, |e| e - r.offset - 1);
                let len = bar.length().unwrap_or(0);
                bar.set_length(len.saturating_sub(u64::try_from(rest).unwrap_or(0)));
                report.records_skipped += u64::try_from(rest).unwrap_or(0);
                return Flow::StopPartition;
            }
            if ts < first_ms {
                return Flow::Continue;
            }
        }
        let encoding = r.headers.get(wire::ENCODING_HEADER);
        let Ok(event) = wire::decode_event(r.payload.unwrap_or_default(), encoding) else {
            report.malformed += 1;
            return Flow::Continue;
        };
        if (!tenants.is_empty() && !tenants.contains(&event.tenant))
            || event.time < from
            || event.time > to
        {
            return Flow::Continue;
        }
        report.events_in_range += 1;
        keep_latest(&mut latest, engine.observe(&event));
        bar.set_message(format!("{} finding(s)", latest.len()));
        Flow::Continue
    })?;
    keep_latest(&mut latest, engine.finish());
    bar.finish_and_clear();
    eprintln!(
        "hunt: read {} of {} records located on {topic} ({} partition(s)), {} event(s) in {from} .. {to}, {} finding(s){}",
        report.records_read,
        located,
        ranges.len(),
        report.events_in_range,
        latest.len(),
        if report.malformed > 0 {
            format!(
                ", {} record(s) that are not events skipped",
                report.malformed
            )
        } else {
            String::new()
        }
    );

    for a in latest.values() {
        let rule = a.playbook.clone().unwrap_or_else(|| a.rule.title.clone());
        let hosts = report.tenants.entry(a.tenant.to_string()).or_default();
        let list = hosts.entry(a.host.to_string()).or_default();
        let entry = match list.iter_mut().position(|f| f.rule == rule) {
            Some(i) => &mut list[i],
            None => {
                list.push(HostFinding {
                    rule,
                    severity: a.severity,
                    findings: 0,
                    partial: 0,
                    first_seen: a.first_seen,
                    last_seen: a.last_seen,
                    alerts: Vec::new(),
                });
                list.last_mut().context("just pushed")?
            }
        };
        if a.kind == AlertKind::Chain && a.partial {
            entry.partial += 1;
        } else {
            entry.findings += 1;
        }
        entry.severity = entry.severity.max(a.severity);
        entry.first_seen = entry.first_seen.min(a.first_seen);
        entry.last_seen = entry.last_seen.max(a.last_seen);
        entry.alerts.push(a.id.to_string());
    }

    match args.output {
        HuntOutput::Json => {
            for a in latest.values() {
                writeln!(out, "{}", render::json_line(a))?;
            }
        }
        HuntOutput::Pretty => {
            for a in latest.values() {
                writeln!(out, "{}", render::pretty(a))?;
            }
        }
        HuntOutput::Summary => summary(&report, out)?,
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}

/// Keeps each finding at its latest revision.
pub fn keep_latest(latest: &mut BTreeMap<String, Alert>, alerts: Vec<Alert>) {
    for a in alerts {
        let id = a.id.to_string();
        if latest.get(&id).is_none_or(|old| a.revision >= old.revision) {
            latest.insert(id, a);
        }
    }
}

fn summary(report: &HuntReport, out: &mut dyn Write) -> Result<()> {
    if report.tenants.is_empty() {
        writeln!(out, "no finding")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<16} {:<28} {:<40} {:<9} {:>8} {:>7}  {:<24}  {:<24}",
        "TENANT", "HOST", "PLAYBOOK / RULE", "SEVERITY", "FINDINGS", "PARTIAL", "FIRST", "LAST"
    )?;
    for (tenant, hosts) in &report.tenants {
        for (host, found) in hosts {
            for f in found {
                writeln!(
                    out,
                    "{:<16} {:<28} {:<40} {:<9} {:>8} {:>7}  {:<24}  {:<24}",
                    tenant,
                    host,
                    f.rule,
                    f.severity.as_str(),
                    f.findings,
                    f.partial,
                    f.first_seen.to_string(),
                    f.last_seen.to_string()
                )?;
            }
        }
    }
    let hit: Vec<&str> = report
        .tenants
        .iter()
        .filter(|(_, hosts)| hosts.values().flatten().any(|f| f.findings > 0))
        .map(|(t, _)| t.as_str())
        .collect();
    writeln!(
        out,
        "{} tenant(s) with complete findings: {}",
        hit.len(),
        hit.join(", ")
    )?;
    Ok(())
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
pub fn progress(total: u64, topic: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:40}] {pos}/{len} records ({percent}%, {eta} left) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("reading {topic}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_absolute_relative_or_now() {
        let now = Timestamp::parse_rfc3339("2026-11-26T12:00:00Z").unwrap();
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(
            parse_time("2d", now).unwrap(),
            Timestamp::parse_rfc3339("2026-11-24T12:00:00Z").unwrap()
        );
        assert_eq!(
            parse_time("2026-11-01", now).unwrap(),
            Timestamp::parse_rfc3339("2026-11-01T00:00:00Z").unwrap()
        );
        assert_eq!(
            parse_time("2026-11-01T05:00:00+01:00", now).unwrap(),
            Timestamp::parse_rfc3339("2026-11-01T04:00:00Z").unwrap()
        );
        assert!(parse_time("last tuesday", now).is_err());
    }
}
