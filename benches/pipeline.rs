//! Criterion benches of the three cores a replay runs per event: decode, match, correlate;
//! and of the events topic's encoding.
//!
//! Fixtures are the project's own: the bundled sample intrusion (`examples/`, 4,669 flat
//! Windows events of six shapes) and four-stage chains written below. Rules are the shipped
//! playbooks. Throughput is in events (criterion's `elements`).
//!
//! - `decode/full`: every record decoded into an `Event` (`Decoder::decode_record`).
//! - `decode/fast`: what the replay fast path does instead: read the record raw and ask the
//!   rule gate whether any rule can match it; only records it lets through are decoded.
//! - `match/playbooks`, `match/chain4`: `Engine::observe` over decoded events, with every
//!   shipped playbook, or with the four-stage `exchange_to_ransomware` chain alone.
//! - `correlate/hosts_N`: the four-stage chain completed on N hosts at once (stages
//!   interleaved across hosts): partial-chain state per host, as the host count grows.
//!
//! - `events/{json,bin1}_{encode,decode}`: the sample's events written as the events topic's
//!   payload and read back (`chainwatch_model::wire`), in JSON and in `bin1`; the bytes per
//!   event of each are printed first.
//!
//! `cargo bench --bench pipeline` (add `-- decode` to run one group).
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: failing loudly is the point.

use std::path::PathBuf;
use std::sync::Arc;

use chainwatch_config::load_rule_paths;
use chainwatch_config::service::InputFormat;
use chainwatch_correlate::{Engine, EngineConfig, Gate, Interest, RuleSet};
use chainwatch_ingest::{
    Decoder, DecoderConfig, Piece, Record, SplitOptions, TenantSource, W3cState, split_payload,
};
use chainwatch_model::{Event, Provenance, TenantId, wire};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const SAMPLE: &[u8] = include_bytes!("../examples/exchange-intrusion.jsonl");

fn rules(path: &str) -> Arc<RuleSet> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let loaded = load_rule_paths(&[root.join(path)]);
    let (set, diags) = RuleSet::compile(&loaded.docs);
    assert!(diags.is_empty() && loaded.diagnostics.is_empty(), "{path}");
    Arc::new(set)
}

fn decoder() -> Decoder {
    Decoder::new(DecoderConfig {
        format: InputFormat::Auto,
        ..DecoderConfig::default()
    })
    .unwrap()
}

fn tenant() -> TenantSource {
    TenantSource::Fixed(TenantId::new("bench").unwrap())
}

fn records(data: &[u8]) -> Vec<Record<'static>> {
    let origin = Provenance::File {
        path: "bench.jsonl".into(),
        line: None,
        record: None,
    };
    split_payload(
        data,
        &origin,
        &SplitOptions::default(),
        &mut W3cState::new(),
    )
    .into_iter()
    .filter_map(|p| match p.into_owned() {
        Piece::Record(r) => Some(r),
        _ => None,
    })
    .collect()
}

fn decode_all(decoder: &Decoder, records: &[Record<'_>]) -> Vec<Event> {
    let tenant = tenant();
    records
        .iter()
        .map(|r| decoder.decode_record(r, &tenant, None).unwrap())
        .collect()
}

fn decode(c: &mut Criterion) {
    let decoder = decoder();
    let tenant = tenant();
    let records = records(SAMPLE);
    let playbooks = rules("playbooks");
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("full", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for r in &records {
                n += decoder.decode_record(r, &tenant, None).is_ok() as usize;
            }
            n
        })
    });
    let engine = Engine::new(Arc::clone(&playbooks), EngineConfig::default());
    let mut gate = Gate::new(
        Arc::clone(engine.rules()),
        &decoder.windows_origins(),
        &Interest::default(),
    );
    let mut scratch = Vec::new();
    group.bench_function("fast", |b| {
        b.iter(|| {
            let mut decoded = 0usize;
            for r in &records {
                let skip = decoder
                    .read_raw(r, &tenant, None, &mut scratch)
                    .is_some_and(|raw| !gate.may_match(&raw.record));
                if !skip {
                    decoded += decoder.decode_record(r, &tenant, None).is_ok() as usize;
                }
            }
            decoded
        })
    });
    group.finish();
}

fn matching(c: &mut Criterion) {
    let decoder = decoder();
    let events = decode_all(&decoder, &records(SAMPLE));
    let mut group = c.benchmark_group("match");
    group.throughput(Throughput::Elements(events.len() as u64));
    for (name, path) in [
        ("playbooks", "playbooks"),
        ("chain4", "playbooks/exchange-to-ransomware.yml"),
    ] {
        let set = rules(path);
        group.bench_function(name, |b| {
            b.iter_batched(
                || Engine::new(Arc::clone(&set), EngineConfig::default()),
                |mut engine| {
                    let mut alerts = 0usize;
                    for e in &events {
                        alerts += engine.observe(e).len();
                    }
                    alerts
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// The four stages on each of `hosts` hosts, interleaved: all first stages, then all second
/// stages, and so on, a second apart.
fn chain_records(hosts: usize) -> Vec<u8> {
    let sysmon = "Microsoft-Windows-Sysmon/Operational";
    let mut out = Vec::new();
    let mut second = 0u64;
    for stage in 0..4 {
        for h in 0..hosts {
            second += 1;
            let time = format!(
                "2026-11-20T{:02}:{:02}:{:02}.000Z",
                second / 3600,
                (second / 60) % 60,
                second % 60
            );
            let host = format!("HOST-{h:06}.corp.local");
            let v = match stage {
                0 => serde_json::json!({"Channel": sysmon, "EventID": 1,
                    "Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami",
                    "ParentImage": "C:\\Windows\\System32\\inetsrv\\w3wp.exe"}),
                1 => serde_json::json!({"Channel": "Security", "EventID": 4720,
                    "TargetUserName": "svc_sync", "SubjectUserName": "SYSTEM"}),
                2 => serde_json::json!({"Channel": sysmon, "EventID": 10,
                    "SourceImage": "C:\\Windows\\System32\\rundll32.exe",
                    "TargetImage": "C:\\Windows\\system32\\lsass.exe", "GrantedAccess": "0x1FFFFF"}),
                _ => serde_json::json!({"Channel": sysmon, "EventID": 1,
                    "Image": "C:\\Windows\\System32\\vssadmin.exe",
                    "CommandLine": "vssadmin.exe delete shadows /all /quiet",
                    "ParentImage": "C:\\Windows\\System32\\cmd.exe"}),
            };
            let mut v = v;
            v["@timestamp"] = time.into();
            v["Hostname"] = host.into();
            out.extend_from_slice(&serde_json::to_vec(&v).unwrap());
            out.push(b'\n');
        }
    }
    out
}

fn correlate(c: &mut Criterion) {
    let decoder = decoder();
    let set = rules("playbooks/exchange-to-ransomware.yml");
    let mut group = c.benchmark_group("correlate");
    for hosts in [100usize, 10_000] {
        let events = decode_all(&decoder, &records(&chain_records(hosts)));
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function(format!("hosts_{hosts}"), |b| {
            b.iter_batched(
                || Engine::new(Arc::clone(&set), EngineConfig::default()),
                |mut engine| {
                    let mut complete = 0usize;
                    for e in &events {
                        complete += engine.observe(e).iter().filter(|a| !a.partial).count();
                    }
                    assert_eq!(complete, hosts, "every host completes its chain");
                    complete
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn events(c: &mut Criterion) {
    let events = decode_all(&decoder(), &records(SAMPLE));
    let json: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    let bin: Vec<Vec<u8>> = events.iter().map(|e| wire::to_bin(e, 0)).collect();
    let bytes = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / v.len() as f64;
    eprintln!(
        "events topic payload, {} sample events: JSON {:.0} bytes per event, bin1 {:.0}",
        events.len(),
        bytes(&json),
        bytes(&bin)
    );
    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("json_encode", |b| {
        b.iter(|| {
            events
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap().len())
                .sum::<usize>()
        })
    });
    group.bench_function("bin1_encode", |b| {
        b.iter(|| {
            events
                .iter()
                .map(|e| wire::to_bin(e, 0).len())
                .sum::<usize>()
        })
    });
    group.bench_function("json_decode", |b| {
        b.iter(|| {
            json.iter()
                .map(|p| wire::decode_event(p, None).unwrap().fields.len())
                .sum::<usize>()
        })
    });
    group.bench_function("bin1_decode", |b| {
        b.iter(|| {
            bin.iter()
                .map(|p| {
                    wire::decode_event(p, Some(wire::BIN1))
                        .unwrap()
                        .fields
                        .len()
                })
                .sum::<usize>()
        })
    });
    group.finish();
}

fn config() -> Criterion {
    // A loaded, shared machine: fewer, longer samples than criterion's default.
    Criterion::default()
        .sample_size(10)
        .measurement_time(std::time::Duration::from_secs(3))
        .warm_up_time(std::time::Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, matching, correlate, events
}
criterion_main!(benches);
