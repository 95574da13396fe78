//! `chainwatch replay`: the embedded pipeline. The same decode, normalize and correlate cores as
//! `run`, wired over files instead of Kafka topics. Used for demos, backtests and rule tests.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chainwatch_config::parse_duration;
use chainwatch_config::service::InputFormat;
use chainwatch_correlate::{Engine, EngineConfig};
use chainwatch_ingest::{Decoder, DecoderConfig, Piece, TenantSource, W3cState, split_payload};
use chainwatch_model::{Alert, Provenance, TenantId};
use chainwatch_sink::render;
use serde::Serialize;

use crate::cli::{Output, ReplayArgs};

/// The `--stats` summary.
#[derive(Debug, Default, Serialize)]
pub struct ReplayStats {
    /// Files read.
    pub files: u64,
    /// Records found in them (good and bad).
    pub records_read: u64,
    /// Records that became events.
    pub events_normalized: u64,
    /// Records dead-lettered, by reason.
    pub dead_lettered: BTreeMap<&'static str, u64>,
    /// Rule matches.
    pub matches: u64,
    /// Alerts printed.
    pub alerts: u64,
    /// Hits dropped as duplicates.
    pub duplicates: u64,
    /// Hits dropped as too late.
    pub late: u64,
    /// Partial chains held at the end.
    pub partial_chains: usize,
}

#[derive(Serialize)]
struct DeadLetter<'a> {
    reason: &'static str,
    error: String,
    provenance: &'a Provenance,
    /// The record, when it is text.
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    /// The record in hex, when it is not text (an EVTX chunk, gzip), so no byte is lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    record_hex: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let nested: Vec<PathBuf> = entries
                .into_iter()
                .filter(|e| {
                    e.is_dir()
                        || matches!(
                            e.extension().and_then(|x| x.to_str()),
                            Some("json" | "jsonl" | "ndjson" | "evtx" | "log" | "gz")
                        )
                })
                .collect();
            out.extend(collect_files(&nested)?);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    Ok(out)
}

/// Runs a replay; alerts go to `out`.
pub fn replay(args: &ReplayArgs, out: &mut dyn Write) -> Result<ReplayStats> {
    let rules = Arc::new(crate::rules::load_rule_set(&args.rules)?);
    let timezone = chainwatch_model::time::parse_offset(&args.timezone).with_context(|| {
        format!(
            "--timezone {:?} is not an offset such as +05:00",
            args.timezone
        )
    })?;
    let lateness = parse_duration(&args.allowed_lateness).map_err(anyhow::Error::msg)?;
    let decoder = Decoder::new(DecoderConfig {
        format: args.format.unwrap_or(InputFormat::Auto),
        timezone,
        w3c_fields: args.w3c_fields.clone(),
        ..DecoderConfig::default()
    })
    .map_err(anyhow::Error::msg)?;
    let tenant = match &args.tenant_field {
        Some(field) => TenantSource::Field(field.clone()),
        None => TenantSource::Fixed(TenantId::new(&args.tenant).context("--tenant")?),
    };
    let mut engine = Engine::new(
        rules,
        EngineConfig {
            allowed_lateness: lateness,
            ..EngineConfig::default()
        },
    );
    let pretty = match args.output {
        Output::Json => false,
        Output::Pretty => true,
        Output::Auto => std::io::stdout().is_terminal(),
    };
    let mut dead = match &args.dead_letter {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let mut stats = ReplayStats::default();
    for file in collect_files(&args.files)? {
        let data =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        stats.files += 1;
        let origin = Provenance::File {
            path: file.display().to_string(),
            line: None,
            record: None,
        };
        // Each file is its own W3C stream: its directives apply to its own lines.
        let mut w3c = W3cState::new();
        for piece in split_payload(&data, &origin, &decoder.split_options(), &mut w3c) {
            stats.records_read += 1;
            let (bytes, provenance, error) = match piece {
                Piece::Record(record) => match decoder.decode_record(&record, &tenant, None) {
                    Ok(event) => {
                        stats.events_normalized += 1;
                        for alert in engine.observe(&event) {
                            emit(out, &alert, pretty)?;
                        }
                        continue;
                    }
                    Err(e) => (record.bytes, record.provenance, e),
                },
                Piece::Bad {
                    bytes,
                    provenance,
                    error,
                } => (bytes, provenance, error),
            };
            *stats.dead_lettered.entry(error.reason()).or_default() += 1;
            tracing::warn!(reason = error.reason(), %provenance, "dead-lettered: {error}");
            if let Some(w) = dead.as_mut() {
                let kept = &bytes[..bytes.len().min(64 * 1024)];
                let (record, record_hex) = match std::str::from_utf8(kept) {
                    Ok(text) => (Some(text.to_owned()), None),
                    Err(_) => (None, Some(hex(kept))),
                };
                let line = DeadLetter {
                    reason: error.reason(),
                    error: error.to_string(),
                    provenance: &provenance,
                    record,
                    record_hex,
                };
                serde_json::to_writer(&mut *w, &line)?;
                w.write_all(b"\n")?;
            }
        }
    }
    if let Some(mut w) = dead {
        w.flush()?;
    }
    let es = engine.stats();
    stats.matches = es.matches;
    stats.alerts = es.alerts;
    stats.duplicates = es.duplicates;
    stats.late = es.late;
    stats.partial_chains = engine.partial_chains();
    Ok(stats)
}

fn emit(out: &mut dyn Write, alert: &Alert, pretty: bool) -> Result<()> {
    if pretty {
        writeln!(out, "{}", render::pretty(alert))?;
    } else {
        writeln!(out, "{}", render::json_line(alert))?;
    }
    Ok(())
}

/// Writes the stats file.
pub fn write_stats(path: &Path, stats: &ReplayStats) -> Result<()> {
    let text = serde_json::to_string_pretty(stats)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
