//! `chainwatch replay`: the embedded pipeline. The same decode, normalize and correlate cores as
//! `run`, wired over files instead of Kafka topics. Used for demos, backtests and rule tests.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chainwatch_config::TenantsFile;
use chainwatch_config::parse_duration;
use chainwatch_config::service::InputFormat;
use chainwatch_correlate::{CompileOptions, Engine, EngineConfig};
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

/// A record that could not become an event, as the dead-letter file writes it.
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    /// The reason label.
    pub reason: &'static str,
    /// The message.
    pub error: String,
    /// Where the record was.
    pub provenance: &'a Provenance,
    /// The record (up to 64 KiB), when it is text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// The record in hex, when it is not text (an EVTX chunk, gzip), so no byte is lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_hex: Option<String>,
}

impl<'a> DeadLetter<'a> {
    fn new(
        error: &chainwatch_ingest::DecodeError,
        provenance: &'a Provenance,
        bytes: &[u8],
    ) -> Self {
        let kept = &bytes[..bytes.len().min(64 * 1024)];
        let (record, record_hex) = match std::str::from_utf8(kept) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(hex(kept))),
        };
        Self {
            reason: error.reason(),
            error: error.to_string(),
            provenance,
            record,
            record_hex,
        }
    }
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

/// The telemetry files of `paths`: files as given, folders walked for `.json`, `.jsonl`,
/// `.ndjson`, `.evtx`, `.log` and `.gz` files, in name order.
pub(crate) fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
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

/// Compile options from `--placeholders FILE` and `--tenants FILE` (each optional).
pub fn compile_options(
    placeholders: Option<&Path>,
    tenants: Option<&Path>,
) -> Result<CompileOptions> {
    let mut options = crate::rules::options(&crate::rules::placeholders_from(placeholders)?);
    if let Some(path) = tenants {
        let file =
            TenantsFile::load(path).map_err(|d| anyhow::anyhow!("tenants file refused, {d}"))?;
        options.tenants = file.tenants;
        options.tenants_source = path.to_path_buf();
    }
    Ok(options)
}

/// Feeds every record of `files` through `decoder` and `engine`: alerts go to `on_alert`, dead
/// letters to `on_dead`, counts to `stats`. This is the whole embedded pipeline; `replay` and
/// `playbook test` both run it.
pub fn feed_files(
    files: &[PathBuf],
    decoder: &Decoder,
    tenant: &TenantSource,
    engine: &mut Engine,
    stats: &mut ReplayStats,
    on_alert: &mut dyn FnMut(Alert) -> Result<()>,
    on_dead: &mut dyn FnMut(DeadLetter<'_>) -> Result<()>,
) -> Result<()> {
    for file in collect_files(files)? {
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
                Piece::Record(record) => match decoder.decode_record(&record, tenant, None) {
                    Ok(event) => {
                        stats.events_normalized += 1;
                        for alert in engine.observe(&event) {
                            on_alert(alert)?;
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
            on_dead(DeadLetter::new(&error, &provenance, &bytes))?;
        }
    }
    // The input has ended: windows still open (count conditions with an upper bound) are
    // decided now.
    for alert in engine.finish() {
        on_alert(alert)?;
    }
    let es = engine.stats();
    stats.matches = es.matches;
    stats.alerts = es.alerts;
    stats.duplicates = es.duplicates;
    stats.late = es.late;
    stats.partial_chains = engine.partial_chains();
    Ok(())
}

/// A decoder for files of `format` (told per file and record when `None`) in zone
/// `timezone`; `w3c_fields` are the columns of W3C lines before any `#Fields:` header.
pub fn file_decoder(
    timezone: &str,
    format: Option<InputFormat>,
    w3c_fields: Option<String>,
) -> Result<Decoder> {
    let timezone = chainwatch_model::time::parse_offset(timezone)
        .with_context(|| format!("--timezone {timezone:?} is not an offset such as +05:00"))?;
    Decoder::new(DecoderConfig {
        format: format.unwrap_or(InputFormat::Auto),
        timezone,
        w3c_fields,
        ..DecoderConfig::default()
    })
    .map_err(anyhow::Error::msg)
}

/// Runs a replay; alerts go to `out`.
pub fn replay(args: &ReplayArgs, out: &mut dyn Write) -> Result<ReplayStats> {
    let options = compile_options(args.placeholders.as_deref(), args.tenants.as_deref())?;
    let rules = Arc::new(crate::rules::load_rule_set(&args.rules, &options)?);
    let lateness = parse_duration(&args.allowed_lateness).map_err(anyhow::Error::msg)?;
    let decoder = file_decoder(&args.timezone, args.format, args.w3c_fields.clone())?;
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
    // On a pipe, one JSON alert per line (scripts depend on it); readable on a terminal.
    let output = match args.output {
        Output::Auto if std::io::stdout().is_terminal() => Output::Pretty,
        Output::Auto => Output::Json,
        other => other,
    };
    let mut dead = match &args.dead_letter {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let mut stats = ReplayStats::default();
    feed_files(
        &args.files,
        &decoder,
        &tenant,
        &mut engine,
        &mut stats,
        &mut |alert| emit(out, &alert, output),
        &mut |letter| {
            if let Some(w) = dead.as_mut() {
                serde_json::to_writer(&mut *w, &letter)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        },
    )?;
    if let Some(mut w) = dead {
        w.flush()?;
    }
    Ok(stats)
}

fn emit(out: &mut dyn Write, alert: &Alert, output: Output) -> Result<()> {
    match output {
        Output::Pretty => writeln!(out, "{}", render::pretty(alert))?,
        Output::Ocsf => writeln!(out, "{}", chainwatch_sink::ocsf::line(alert))?,
        Output::Json | Output::Auto => writeln!(out, "{}", render::json_line(alert))?,
    }
    Ok(())
}

/// Writes the stats file.
pub fn write_stats(path: &Path, stats: &ReplayStats) -> Result<()> {
    let text = serde_json::to_string_pretty(stats)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
