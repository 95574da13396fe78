//! The yardstick of issue 9's first target: parse every line of JSON-lines files into a generic
//! `serde_json::Value` and nothing else, and report the rate the way `chainwatch replay --stats`
//! does (records per CPU-second of the reading loop, this thread's CPU time from
//! `/proc/thread-self/schedstat`). `scripts/bench.py` runs it over the same files as the replay
//! rows, on the same machine in the same minutes, so the two figures compare.
//!
//! ```sh
//! cargo run --release --example json_baseline -- FILE_OR_DIR...
//! ```
//!
//! Prints one JSON object: `records`, `bad` (lines that did not parse), `cpu_seconds`,
//! `records_per_cpu_second`.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::time::Duration;

/// CPU time of the calling thread so far (Linux `schedstat`; zero elsewhere).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn files(args: impl Iterator<Item = String>) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        let p = PathBuf::from(a);
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(&p)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            inner.retain(|f| f.is_file());
            inner.sort();
            out.extend(inner);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

fn main() -> std::io::Result<()> {
    let files = files(std::env::args().skip(1))?;
    if files.is_empty() {
        eprintln!("usage: json_baseline FILE_OR_DIR...");
        std::process::exit(2);
    }
    let cpu = thread_cpu();
    let (mut records, mut bad, mut fields) = (0u64, 0u64, 0usize);
    let mut line = Vec::with_capacity(1 << 16);
    for path in &files {
        let mut reader = std::io::BufReader::with_capacity(256 << 10, std::fs::File::open(path)?);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            records += 1;
            match serde_json::from_slice::<serde_json::Value>(text) {
                // Touch the result so the parse cannot be optimized away.
                Ok(v) => fields += v.as_object().map_or(1, serde_json::Map::len),
                Err(_) => bad += 1,
            }
        }
    }
    let cpu_seconds = (thread_cpu() - cpu).as_secs_f64();
    let rate = if cpu_seconds > 0.0 {
        records as f64 / cpu_seconds
    } else {
        0.0
    };
    println!(
        "{}",
        serde_json::json!({
            "records": records,
            "bad": bad,
            "fields": fields,
            "cpu_seconds": cpu_seconds,
            "records_per_cpu_second": rate,
        })
    );
    Ok(())
}
