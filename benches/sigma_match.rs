//! Sigma matching throughput: every rule of a rule folder loaded, events replayed through
//! `Engine::observe` on one thread. Decoding is done up front and timed apart, so the figure is
//! the matching alone (prefilter, rule tests, correlation state).
//!
//! `cargo bench --bench sigma_match -- RULES_DIR DATA...` (DATA: JSON files or folders, as
//! `chainwatch replay` reads them). `scripts/bench-sigma.sh` runs it over the OTRF datasets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: failing loudly is the point.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chainwatch_config::load_rule_paths;
use chainwatch_config::service::InputFormat;
use chainwatch_correlate::{Engine, EngineConfig, RuleSet};
use chainwatch_ingest::{Decoder, DecoderConfig, FileRecord, TenantSource, split_records};
use chainwatch_model::{Event, TenantId};

fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            files(&e, out);
        }
    } else if matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "jsonl" | "ndjson")
    ) {
        out.push(path.to_path_buf());
    }
}

/// CPU time of this thread so far (Linux: the first field of schedstat, in nanoseconds). The
/// machine may be shared: CPU time gives the per-core rate however busy the other cores are.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn main() {
    // `cargo bench` adds `--bench`; everything else is ours. `--verify` also checks, on every
    // event, that the prefilter loses no match (every rule tested; slow).
    let verify = std::env::args().any(|a| a == "--verify");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [rules_dir, data @ ..] = args.as_slice() else {
        eprintln!("usage: sigma_match RULES_DIR DATA...");
        std::process::exit(2);
    };
    let started = Instant::now();
    let loaded = load_rule_paths(&[PathBuf::from(rules_dir)]);
    let (set, diags) = RuleSet::compile(&loaded.docs);
    let summary = set.prefilter_summary();
    println!(
        "rules: {} loaded, {} not ({} parse + compile problems), compiled in {:.2?}",
        set.len(),
        loaded.files - set.len(),
        loaded.diagnostics.len() + diags.len(),
        started.elapsed()
    );
    println!(
        "prefilter: {} rules anchored on {} literals, {} routed by logsource/EventID, {} tested on every event",
        summary.anchored, summary.patterns, summary.routed, summary.unrouted
    );
    let rules = Arc::new(set);

    let mut paths = Vec::new();
    for d in data {
        files(Path::new(d), &mut paths);
    }
    let decoder = Decoder::new(DecoderConfig {
        format: InputFormat::Auto,
        ..DecoderConfig::default()
    })
    .unwrap();
    let tenant = TenantSource::Fixed(TenantId::new("bench").unwrap());
    let mut events: Vec<Event> = Vec::new();
    let mut bytes = 0usize;
    let mut dead = 0usize;
    let decode_started = Instant::now();
    for p in &paths {
        let data = std::fs::read(p).unwrap();
        bytes += data.len();
        let name = p.display().to_string();
        for r in split_records(&name, &data) {
            match r {
                FileRecord::Record { bytes, provenance } => {
                    match decoder.decode(bytes, &tenant, provenance) {
                        Ok(e) => events.push(e),
                        Err(_) => dead += 1,
                    }
                }
                FileRecord::Bad { .. } => dead += 1,
            }
        }
    }
    let decode_time = decode_started.elapsed();
    println!(
        "data: {} files, {:.1} MB, {} events ({} records not decoded), decoded in {:.2?} ({:.0} events/s)",
        paths.len(),
        bytes as f64 / 1e6,
        events.len(),
        dead,
        decode_time,
        events.len() as f64 / decode_time.as_secs_f64()
    );
    assert!(!events.is_empty(), "no events to match");
    if verify {
        let t = Instant::now();
        let mut checked = 0;
        for e in &events {
            assert_eq!(
                rules.matching(e),
                rules.matching_exhaustive(e),
                "the prefilter lost a match on {}",
                e.provenance
            );
            checked += 1;
        }
        println!(
            "verify: the prefilter agrees with testing every rule on {checked} events ({:.2?})",
            t.elapsed()
        );
    }

    // Passes over the whole data until at least five seconds are measured.
    let mut passes = 0u32;
    let mut elapsed = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    let mut alerts = 0usize;
    let mut stats = None;
    while elapsed < Duration::from_secs(5) || passes < 2 {
        let mut engine = Engine::new(Arc::clone(&rules), EngineConfig::default());
        let t = Instant::now();
        let c = thread_cpu();
        alerts = 0;
        for e in &events {
            alerts += engine.observe(e).len();
        }
        elapsed += t.elapsed();
        if let (Some(before), Some(after)) = (c, thread_cpu()) {
            cpu += after - before;
        }
        passes += 1;
        stats = Some(engine.stats());
    }
    let stats = stats.unwrap();
    let total = f64::from(passes) * events.len() as f64;
    let per_second = total / elapsed.as_secs_f64();
    let per_cpu_second = if cpu.is_zero() {
        per_second
    } else {
        total / cpu.as_secs_f64()
    };
    println!(
        "matching: {passes} passes, {per_cpu_second:.0} events per CPU-second on one core \
         ({:.2} µs per event; {per_second:.0} events/s by the wall clock); {alerts} alerts and \
         {} matches per pass; {:.1} candidate rules tested per event",
        1e6 / per_cpu_second,
        stats.matches,
        stats.candidates as f64 / events.len() as f64
    );

    // Where the time goes: per (channel, event id), the ten most frequent kinds.
    let mut kinds: std::collections::BTreeMap<(String, u32), Vec<&Event>> = Default::default();
    for e in &events {
        let key = (
            e.source.channel.clone().unwrap_or_default(),
            e.source.event_id.unwrap_or(0),
        );
        kinds.entry(key).or_default().push(e);
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for ((channel, id), list) in kinds.iter().take(10) {
        let mut engine = Engine::new(Arc::clone(&rules), EngineConfig::default());
        let c = thread_cpu();
        let t = Instant::now();
        for _ in 0..3 {
            for e in list {
                engine.observe(e);
            }
        }
        let spent = match (c, thread_cpu()) {
            (Some(a), Some(b)) => b - a,
            _ => t.elapsed(),
        };
        let s = engine.stats();
        println!(
            "  {channel} {id}: {} events, {:.2} µs per event, {:.1} candidates per event",
            list.len(),
            spent.as_secs_f64() * 1e6 / (3 * list.len()) as f64,
            s.candidates as f64 / s.events as f64
        );
    }
}
