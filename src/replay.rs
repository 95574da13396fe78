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
use chainwatch_correlate::{CompileOptions, Engine, EngineConfig, Gate, GateStats, Interest};
use chainwatch_ingest::{Decoder, DecoderConfig, Piece, TenantSource};
use chainwatch_model::{Alert, Provenance, RawField, TenantId};
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
    /// Events the fast path proved no rule can match, so never decoded (counted in
    /// `events_normalized`: they are events).
    pub skipped: u64,
    /// What the fast path did (absent with `--full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<FastPathStats>,
    /// CPU time of the replay (reading, decoding, matching; not rule loading), in seconds.
    pub cpu_seconds: f64,
    /// Records read per CPU-second.
    pub records_per_cpu_second: f64,
}

/// Why records took the full path, in `--stats`.
#[derive(Debug, Default, Serialize)]
pub struct FastPathStats {
    /// Records not read raw: not a flat Windows event, or not of the ordinary shape (nested
    /// values, `\u` escapes, ...), or one the decoder refuses.
    pub not_raw: u64,
    /// What the gate decided of the records read raw: skipped (no rule can match them; of
    /// those, `by_route` on their route alone), or decoded because a rule of their route has
    /// no literal anchor (`unanchored`), a rule field may read a synthesized value
    /// (`synthetic`), lower-casing changes their length (`lowering`), or an anchor literal
    /// occurs where its rule reads (`literal`).
    #[serde(flatten)]
    pub gate: GateStats,
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

/// The fast path of a replay: records the gate proves no rule can match are not decoded.
#[derive(Debug)]
pub struct FastPath {
    /// The gate of the engine's rules.
    pub gate: Gate,
    /// Also decode every skipped record and test every rule on it (`--verify`): each mismatch
    /// is recorded in `mismatches`.
    pub check: bool,
    /// Skipped records that did match a rule, or did not decode as the fast path read them.
    pub mismatches: Vec<String>,
    /// Records not read raw.
    pub not_raw: u64,
    scratch: Vec<RawField>,
}

impl FastPath {
    /// The fast path for `engine`'s rules, with `decoder`'s normalization.
    pub fn new(engine: &Engine, decoder: &Decoder, check: bool) -> Self {
        Self {
            gate: Gate::new(
                Arc::clone(engine.rules()),
                &decoder.windows_origins(),
                &interest(engine.rules()),
            ),
            check,
            mismatches: Vec::new(),
            not_raw: 0,
            scratch: Vec::new(),
        }
    }

    /// What it did.
    pub fn stats(&self) -> FastPathStats {
        FastPathStats {
            not_raw: self.not_raw,
            gate: self.gate.stats(),
        }
    }
}

/// What the engine's users besides the rules need decoded: when a playbook is scoped to host
/// roles, the records that may show one (it runs only where the role was inferred, from events
/// no rule need match). Without such a playbook, nothing: roles then change no finding.
fn interest(rules: &chainwatch_correlate::RuleSet) -> Interest {
    if rules.correlations.iter().all(|c| c.roles.is_empty()) {
        return Interest::default();
    }
    let roles = chainwatch_correlate::RoleSignals::builtin().interest();
    Interest {
        routes: roles
            .routes
            .into_iter()
            .map(|(channel, id)| (channel, Some(id)))
            .collect(),
        literals: roles.literals,
    }
}

/// CPU time of the calling thread so far (Linux `schedstat`; zero elsewhere).
pub fn thread_cpu() -> std::time::Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .map(std::time::Duration::from_nanos)
        .unwrap_or_default()
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
    feed_files_with(
        files, decoder, tenant, engine, None, stats, on_alert, on_dead,
    )
}

/// [`feed_files`], with the fast path when `fast` is given.
#[allow(clippy::too_many_arguments)]
pub fn feed_files_with(
    files: &[PathBuf],
    decoder: &Decoder,
    tenant: &TenantSource,
    engine: &mut Engine,
    mut fast: Option<&mut FastPath>,
    stats: &mut ReplayStats,
    on_alert: &mut dyn FnMut(Alert) -> Result<()>,
    on_dead: &mut dyn FnMut(DeadLetter<'_>) -> Result<()>,
) -> Result<()> {
    let fixed = match tenant {
        TenantSource::Fixed(t) => Some(t.clone()),
        TenantSource::Field(_) => None,
    };
    let mut tenants = TenantIds::default();
    // Nothing here writes host roles out: their changes would only pile up.
    engine.discard_role_changes();
    let options = decoder.split_options();
    let mut buf = Vec::new();
    for file in collect_files(files)? {
        stats.files += 1;
        let origin = Provenance::File {
            path: file.display().to_string().into(),
            line: None,
            record: None,
        };
        crate::chunked::for_each_piece(&file, &origin, &options, &mut buf, &mut |piece| {
            stats.records_read += 1;
            // A record read raw is skipped when the gate proves no rule matches it, and else
            // decoded from the scanner's fields.
            let mut decoded = None;
            if let (Piece::Record(record), Some(fast)) = (&piece, fast.as_deref_mut())
                && let Some(raw) = read_raw(
                    decoder,
                    record,
                    tenant,
                    &mut fast.scratch,
                    &mut fast.not_raw,
                )
            {
                if !fast.gate.may_match(&raw.record)
                    && let Some(t) = fixed.as_ref().or_else(|| tenants.shared(raw.tenant?))
                {
                    let time = raw.time;
                    if fast.check {
                        check_skipped(
                            fast.gate.rules(),
                            decoder,
                            record,
                            tenant,
                            time,
                            &mut fast.mismatches,
                        );
                    }
                    stats.events_normalized += 1;
                    stats.skipped += 1;
                    for alert in engine.observe_unmatched(t, time) {
                        on_alert(alert)?;
                    }
                    return Ok(());
                }
                let event = decoder.decode_raw(record, &raw, tenant, None);
                if fast.check {
                    check_decoded(decoder, record, tenant, &event, &mut fast.mismatches);
                }
                decoded = Some(event);
            }
            let (bytes, provenance, error) = match piece {
                Piece::Record(record) => {
                    match decoded.unwrap_or_else(|| decoder.decode_record(&record, tenant, None)) {
                        Ok(mut event) => {
                            if fixed.is_none()
                                && let Some(t) = tenants.shared(event.tenant.as_str())
                            {
                                // The engine's keys keep the tenant: one shared id per tenant.
                                event.tenant = t.clone();
                            }
                            stats.events_normalized += 1;
                            for alert in engine.observe(&event) {
                                on_alert(alert)?;
                            }
                            return Ok(());
                        }
                        Err(e) => (record.bytes, record.provenance, e),
                    }
                }
                Piece::Bad {
                    bytes,
                    provenance,
                    error,
                } => (bytes, provenance, error),
            };
            *stats.dead_lettered.entry(error.reason()).or_default() += 1;
            tracing::warn!(reason = error.reason(), %provenance, "dead-lettered: {error}");
            on_dead(DeadLetter::new(&error, &provenance, &bytes))
        })?;
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

/// Tenants read from a tenant field, one id made per distinct tenant (the engine's keys keep
/// it, so a copy per event would cost memory per tracked group).
#[derive(Debug, Default)]
struct TenantIds(std::collections::HashMap<Box<str>, TenantId>);

impl TenantIds {
    /// The shared id of tenant `id`; `None` when `id` is not a valid tenant id.
    fn shared(&mut self, id: &str) -> Option<&TenantId> {
        if !self.0.contains_key(id) {
            self.0.insert(id.into(), TenantId::new(id).ok()?);
        }
        self.0.get(id)
    }
}

/// The record read raw, counting those that are not.
fn read_raw<'a>(
    decoder: &Decoder,
    record: &'a chainwatch_ingest::Record<'_>,
    tenant: &TenantSource,
    scratch: &'a mut Vec<RawField>,
    not_raw: &mut u64,
) -> Option<chainwatch_ingest::RawEvent<'a>> {
    let raw = decoder.read_raw(record, tenant, None, scratch);
    if raw.is_none() {
        *not_raw += 1;
    }
    raw
}

/// `--verify`: a record decoded from its raw scan must give what the full decoder gives.
fn check_decoded(
    decoder: &Decoder,
    record: &chainwatch_ingest::Record<'_>,
    tenant: &TenantSource,
    from_raw: &Result<chainwatch_model::Event, chainwatch_ingest::DecodeError>,
    mismatches: &mut Vec<String>,
) {
    let full = decoder.decode_record(record, tenant, None);
    let same = match (from_raw, &full) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    };
    if !same {
        mismatches.push(format!(
            "{}: decoded from the raw scan as {from_raw:?}, by the full decoder as {full:?}",
            record.provenance
        ));
    }
}

/// `--verify`: a record the gate skipped must decode, at the time the fast path read, and
/// match no rule when every rule is tested.
fn check_skipped(
    rules: &chainwatch_correlate::RuleSet,
    decoder: &Decoder,
    record: &chainwatch_ingest::Record<'_>,
    tenant: &TenantSource,
    time: chainwatch_model::Timestamp,
    mismatches: &mut Vec<String>,
) {
    match decoder.decode_record(record, tenant, None) {
        Err(e) => mismatches.push(format!(
            "{}: skipped, but the full decoder refuses it: {e}",
            record.provenance
        )),
        Ok(event) => {
            if event.time != time {
                mismatches.push(format!(
                    "{}: skipped at {time}, decoded at {}",
                    record.provenance, event.time
                ));
            }
            let matched = rules.matching_exhaustive(&event);
            if !matched.is_empty() {
                let ids: Vec<&str> = matched
                    .iter()
                    .map(|&r| rules.detections[r].info.rule.id.as_str())
                    .collect();
                mismatches.push(format!(
                    "{}: skipped, but it matches {}",
                    record.provenance,
                    ids.join(", ")
                ));
            }
        }
    }
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
    let config = EngineConfig {
        allowed_lateness: lateness,
        ..EngineConfig::default()
    };
    let new_engine = || -> Result<Engine> { Ok(Engine::new(Arc::clone(&rules), config)) };
    let mut engine = new_engine()?;
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
    if args.verify {
        let reference = collect(args, &decoder, &tenant, &mut new_engine()?, None)?;
        let mut fast = FastPath::new(&engine, &decoder, true);
        let fast_run = collect(args, &decoder, &tenant, &mut engine, Some(&mut fast))?;
        return verdict(reference, fast_run, fast, out);
    }
    let mut fast = (!args.full).then(|| FastPath::new(&engine, &decoder, false));
    let mut stats = ReplayStats::default();
    let cpu = thread_cpu();
    feed_files_with(
        &args.files,
        &decoder,
        &tenant,
        &mut engine,
        fast.as_mut(),
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
    stats.cpu_seconds = (thread_cpu() - cpu).as_secs_f64();
    stats.fast_path = fast.as_ref().map(FastPath::stats);
    if stats.cpu_seconds > 0.0 {
        stats.records_per_cpu_second = stats.records_read as f64 / stats.cpu_seconds;
    }
    Ok(stats)
}

/// What a run produced, for `--verify`.
struct Outputs {
    alerts: Vec<String>,
    dead: Vec<String>,
    stats: ReplayStats,
}

fn collect(
    args: &ReplayArgs,
    decoder: &Decoder,
    tenant: &TenantSource,
    engine: &mut Engine,
    fast: Option<&mut FastPath>,
) -> Result<Outputs> {
    let mut alerts = Vec::new();
    let mut dead = Vec::new();
    let mut stats = ReplayStats::default();
    let cpu = thread_cpu();
    feed_files_with(
        &args.files,
        decoder,
        tenant,
        engine,
        fast,
        &mut stats,
        &mut |alert| {
            alerts.push(render::json_line(&alert));
            Ok(())
        },
        &mut |letter| {
            dead.push(serde_json::to_string(&letter)?);
            Ok(())
        },
    )?;
    stats.cpu_seconds = (thread_cpu() - cpu).as_secs_f64();
    Ok(Outputs {
        alerts,
        dead,
        stats,
    })
}

/// Compares a full run with a fast one: alerts and dead letters must be identical, and every
/// record the fast path skipped must match no rule.
fn verdict(
    reference: Outputs,
    fast_run: Outputs,
    fast: FastPath,
    out: &mut dyn Write,
) -> Result<ReplayStats> {
    let mut problems = fast.mismatches;
    let differ = |what: &str, a: &[String], b: &[String], problems: &mut Vec<String>| {
        if a.len() != b.len() {
            problems.push(format!(
                "{what}: {} in the full run, {} in the fast run",
                a.len(),
                b.len()
            ));
        }
        if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
            problems.push(format!(
                "{what} #{i} differs:\n  full: {}\n  fast: {}",
                a[i], b[i]
            ));
        }
    };
    differ("alerts", &reference.alerts, &fast_run.alerts, &mut problems);
    differ(
        "dead letters",
        &reference.dead,
        &fast_run.dead,
        &mut problems,
    );
    let (r, f) = (&reference.stats, &fast_run.stats);
    if (
        r.records_read,
        r.events_normalized,
        r.matches,
        r.alerts,
        r.partial_chains,
    ) != (
        f.records_read,
        f.events_normalized,
        f.matches,
        f.alerts,
        f.partial_chains,
    ) {
        problems.push(format!("counts differ: full {r:?}, fast {f:?}"));
    }
    writeln!(
        out,
        "verify: {} records, {} events, {} alerts, {} dead letters; the fast path skipped {} \
         events ({} on their route alone), each decoded and tested against every rule",
        f.records_read,
        f.events_normalized,
        fast_run.alerts.len(),
        fast_run.dead.len(),
        f.skipped,
        fast.gate.stats().by_route,
    )?;
    if problems.is_empty() {
        writeln!(
            out,
            "verify: the fast path's results are identical to the full path's"
        )?;
        Ok(fast_run.stats)
    } else {
        for p in problems.iter().take(20) {
            writeln!(out, "verify: {p}")?;
        }
        bail!(
            "the fast path differs from the full path ({} problems)",
            problems.len()
        )
    }
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
