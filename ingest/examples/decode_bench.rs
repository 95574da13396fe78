//! Decoding throughput per format, on one core: records per second through the same path as
//! files and Kafka messages (split the payload, decode and normalize every record).
//!
//! ```sh
//! cargo run --release -p chainwatch-ingest --example decode_bench
//! ```
//!
//! Inputs: the shared datasets where a format has one (`../shared/datasets`: OTRF JSON lines
//! for flat Windows JSON, `security.evtx` for EVTX and, rendered to JSON, for nested Windows
//! JSON, the Defender sample), and the ingest fixtures for the others (ECS, OCSF, W3C),
//! repeated. Each format is measured three times and the fastest run reported. Prints a
//! Markdown table for BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: a failed unwrap ends it.

use std::path::Path;
use std::time::Instant;

use chainwatch_config::service::InputFormat;
use chainwatch_ingest::{
    Decoder, DecoderConfig, Framing, Piece, Record, TenantSource, W3cState, split_payload,
};
use chainwatch_model::{Provenance, TenantId};

fn origin() -> Provenance {
    Provenance::File {
        path: "bench".into(),
        line: None,
        record: None,
    }
}

/// Decodes `data` as a file `rounds` times; returns (records, events, seconds).
fn run(format: InputFormat, data: &[u8], rounds: usize) -> (u64, u64, f64) {
    let d = Decoder::new(DecoderConfig {
        format,
        ..DecoderConfig::default()
    })
    .unwrap();
    let tenant = TenantSource::Fixed(TenantId::new("bench").unwrap());
    let (mut records, mut events) = (0u64, 0u64);
    let start = Instant::now();
    for _ in 0..rounds {
        for piece in split_payload(data, &origin(), &d.split_options(), &mut W3cState::new()) {
            records += 1;
            if let Piece::Record(r) = piece
                && d.decode_record(&r, &tenant, None).is_ok()
            {
                events += 1;
            }
        }
    }
    (records, events, start.elapsed().as_secs_f64())
}

/// Repeats small fixture files until they hold about `n` records.
fn repeat(data: &[u8], n: usize) -> Vec<u8> {
    let lines = data.iter().filter(|b| **b == b'\n').count().max(1);
    let mut out = Vec::with_capacity(data.len() * (n / lines + 1));
    for _ in 0..n / lines + 1 {
        out.extend_from_slice(data);
    }
    out
}

/// The lines of a JSON lines fixture that have a time (fixtures also hold bad records).
fn good_lines(data: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .filter(|l| l.contains("@timestamp"))
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect()
}

/// W3C fixture: the header once, then its data lines repeated.
fn repeat_w3c(data: &[u8], n: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let body: Vec<&str> = text
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .take(2)
        .collect();
    let mut out = header.into_bytes();
    for i in 0..n {
        out.extend_from_slice(body[i % body.len()].as_bytes());
        out.push(b'\n');
    }
    out
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../../shared/datasets");
    assert!(
        shared.is_dir(),
        "the shared datasets are missing at {}",
        shared.display()
    );
    let fixture = |n: &str| std::fs::read(root.join("tests/fixtures").join(n)).unwrap();
    let security = std::fs::read(shared.join("evtx-samples/security.evtx")).unwrap();
    // Nested JSON as evtx tools print it: security.evtx's records rendered, one per line.
    let d = Decoder::new(DecoderConfig::default()).unwrap();
    let mut nested = Vec::new();
    for p in split_payload(
        &security,
        &origin(),
        &d.split_options(),
        &mut W3cState::new(),
    ) {
        if let Piece::Record(Record {
            bytes,
            framing: Framing::Evtx,
            ..
        }) = p
        {
            nested.extend_from_slice(&bytes);
            nested.push(b'\n');
        }
    }
    let inputs: Vec<(&str, &str, InputFormat, Vec<u8>, usize)> = vec![
        (
            "Windows flat JSON",
            "OTRF proxylogon JSON lines (10,487 records)",
            InputFormat::Auto,
            std::fs::read(shared.join("otrf/proxylogon_ssrf_rce_poc_2021-03-14T01401970.json"))
                .unwrap(),
            5,
        ),
        (
            "Windows nested JSON",
            "security.evtx rendered as JSON lines (2,261 records)",
            InputFormat::Auto,
            nested,
            20,
        ),
        (
            "EVTX",
            "security.evtx (2,261 records, 33 chunks)",
            InputFormat::Auto,
            security,
            20,
        ),
        (
            "ECS (Winlogbeat, Elastic Agent)",
            "fixture ecs.jsonl (its 4 good records), repeated",
            InputFormat::Auto,
            repeat(&good_lines(&fixture("ecs.jsonl")), 50_000),
            1,
        ),
        (
            "Defender for Endpoint",
            "GoldenSAML Defender sample (9 rows), repeated",
            InputFormat::Auto,
            repeat(
                &std::fs::read(shared.join("otrf/GoldenSAML_Microsoft365DefenderEvents.json"))
                    .unwrap(),
                50_000,
            ),
            1,
        ),
        (
            "OCSF",
            "fixture ocsf.jsonl, repeated",
            InputFormat::Auto,
            repeat(&fixture("ocsf.jsonl"), 50_000),
            1,
        ),
        (
            "W3C (IIS)",
            "fixture u_ex240501.log lines, repeated",
            InputFormat::Auto,
            repeat_w3c(&fixture("u_ex240501.log"), 200_000),
            1,
        ),
    ];
    println!("| format | input | records | records/s (1 core) | MB/s |");
    println!("|---|---|---:|---:|---:|");
    for (name, what, format, data, rounds) in inputs {
        // One warm-up round, then three measured runs; the fastest is reported, as the one
        // least disturbed by other work on the machine.
        run(format, &data, 1);
        let (records, events, secs) = (0..3)
            .map(|_| run(format, &data, rounds))
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .unwrap();
        assert!(events * 1000 >= records * 999, "{name}: {events}/{records}");
        let mb = (data.len() * rounds) as f64 / 1e6 / secs;
        println!(
            "| {name} | {what} | {records} | {:.0} | {mb:.1} |",
            records as f64 / secs
        );
    }
}
