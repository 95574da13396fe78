//! `chainwatch explain`: one finding's evidence timeline, in the terminal and as a
//! self-contained HTML page ([`chainwatch_sink::timeline`]).
//!
//! The finding comes from a findings file (what `replay`, the file sink or a dump of the
//! alerts topic hold: JSON lines or concatenated JSON, chainwatch's alerts or OCSF findings),
//! or is looked up by id: in `--in` files, else on the alerts topic, read from the start with
//! [`chainwatch_kafka::scan`] (no consumer group, nothing committed), matching the
//! `chainwatch.alert.id` header before decoding anything. The latest revision wins unless one
//! is asked for.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chainwatch_kafka::scan::{self, Flow};
use chainwatch_model::{Alert, AlertId};
use chainwatch_sink::{decode, timeline};

use crate::cli::ExplainArgs;
use crate::topic_source;

/// The alert id header the correlate stage writes on every finding.
const ALERT_ID_HEADER: &str = "chainwatch.alert.id";

/// Every finding in a findings file, in file order.
pub fn read_findings(path: &Path) -> Result<Vec<Alert>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    let stream =
        serde_json::Deserializer::from_slice(&data).into_iter::<Box<serde_json::value::RawValue>>();
    for (i, doc) in stream.enumerate() {
        let doc = doc.with_context(|| {
            format!(
                "{}: document {} is not JSON (expected findings: JSON lines of alerts)",
                path.display(),
                i + 1
            )
        })?;
        match serde_json::from_str::<serde_json::Value>(doc.get()) {
            // A JSON array of findings.
            Ok(serde_json::Value::Array(items)) => {
                for item in items {
                    let text = item.to_string();
                    out.push(
                        decode::decode(text.as_bytes(), None)
                            .with_context(|| format!("{}: document {}", path.display(), i + 1))?,
                    );
                }
            }
            _ => out.push(
                decode::decode(doc.get().as_bytes(), None)
                    .with_context(|| format!("{}: document {}", path.display(), i + 1))?,
            ),
        }
    }
    Ok(out)
}

/// The finding to explain: `revision`, or the latest, of `id` among `alerts`.
fn pick(alerts: Vec<Alert>, id: AlertId, revision: Option<u32>) -> Option<Alert> {
    alerts
        .into_iter()
        .filter(|a| a.id == id && revision.is_none_or(|r| a.revision == r))
        .max_by_key(|a| a.revision)
}

fn from_topic(args: &ExplainArgs, id: AlertId) -> Result<Option<Alert>> {
    let deployment = topic_source::deployment(&args.source)?;
    let kafka = deployment.kafka("looking an alert id up on the alerts topic")?;
    let topic = args
        .source
        .topic
        .clone()
        .unwrap_or_else(|| deployment.topics.alerts.clone());
    let reader = scan::reader(kafka, "explain")?;
    let ranges = reader.ranges(&topic, None, None)?;
    let total = ranges.iter().map(scan::PartitionRange::len).sum();
    let bar = crate::hunt::progress(total, &topic);
    let wanted = id.to_string();
    let mut found: Vec<Alert> = Vec::new();
    let mut bad = 0u64;
    reader.read(&topic, &ranges, Duration::from_secs(60), &mut |r| {
        bar.inc(1);
        let header = r.headers.get(ALERT_ID_HEADER);
        if header.is_some_and(|h| h != wanted.as_bytes()) {
            return Flow::Continue;
        }
        let format = r
            .headers
            .get(decode::FORMAT_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok());
        match decode::decode(r.payload.unwrap_or_default(), format) {
            Ok(a) if a.id == id => found.push(a),
            Ok(_) => {}
            Err(_) => bad += 1,
        }
        Flow::Continue
    })?;
    bar.finish_and_clear();
    if bad > 0 {
        eprintln!("explain: {bad} record(s) of {topic} are not findings (skipped)");
    }
    Ok(pick(found, id, args.revision))
}

/// Runs `explain`: the timeline to `out`, the page to a file (its path is returned).
pub fn explain(args: &ExplainArgs, out: &mut dyn Write) -> Result<Option<PathBuf>> {
    let target = Path::new(&args.target);
    let alert = if target.is_file() {
        let alerts = read_findings(target)?;
        let mut ids: BTreeMap<AlertId, &Alert> = BTreeMap::new();
        for a in &alerts {
            ids.insert(a.id, a);
        }
        match ids.len() {
            0 => bail!("{} holds no finding", target.display()),
            1 => {
                let id = *ids.keys().next().context("one id")?;
                pick(alerts, id, args.revision)
            }
            n => {
                let mut listing: Vec<String> = ids
                    .values()
                    .take(20)
                    .map(|a| format!("  {}  {}  {}  {}", a.id, a.tenant, a.host, a.rule.title))
                    .collect();
                if n > 20 {
                    listing.push(format!("  ... and {} more", n - 20));
                }
                bail!(
                    "{} holds {n} findings; name one: chainwatch explain ALERT_ID --in {}\n{}",
                    target.display(),
                    target.display(),
                    listing.join("\n")
                );
            }
        }
    } else {
        let Some(id) = AlertId::parse(args.target.trim()) else {
            bail!(
                "{:?} is neither a findings file nor an alert id (32 hex digits)",
                args.target
            );
        };
        if args.files.is_empty() {
            from_topic(args, id)?
        } else {
            let mut all = Vec::new();
            for f in &args.files {
                all.extend(read_findings(f)?);
            }
            pick(all, id, args.revision)
        }
    };
    let Some(alert) = alert else {
        bail!(
            "no finding {}{}",
            args.target,
            args.revision
                .map(|r| format!(" at revision {r}"))
                .unwrap_or_default()
        );
    };
    write!(out, "{}", timeline::text(&alert))?;
    if args.no_html {
        return Ok(None);
    }
    let path = args
        .html
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("chainwatch-{}.html", alert.id)));
    let page = timeline::html(&alert)?;
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(path))
}
