//! The fuzzers' committed corpora, run through the same checks as the fuzz targets
//! (`ingest/fuzz`, `config/fuzz`) on every test run: every decoder format, the Sigma rule
//! loader and the service config loader. `scripts/fuzz.sh` searches for new inputs (it needs
//! an instrumented build, minutes long, so it is a separate bounded command); this keeps what
//! it found, and the seeds, from breaking again.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.
#![allow(dead_code)] // The fuzz targets' helpers are used in part here.

#[path = "../ingest/fuzz/fuzz_targets/common.rs"]
mod decoders;
#[path = "../config/fuzz/fuzz_targets/config_check.rs"]
mod service_config;
#[path = "../config/fuzz/fuzz_targets/sigma_check.rs"]
mod sigma;

use std::path::{Path, PathBuf};

use chainwatch_config::service::InputFormat;

/// Every file of one target's corpus; at least one (an empty corpus tests nothing).
fn corpus(krate: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(krate)
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

/// Runs `check` on every input, naming the input that broke an invariant.
fn each(inputs: Vec<(PathBuf, Vec<u8>)>, check: impl Fn(&[u8])) {
    for (path, data) in inputs {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(outcome.is_ok(), "{} breaks an invariant", path.display());
    }
}

#[test]
fn the_decoder_corpora_decode_within_their_invariants() {
    for (target, format) in [
        ("auto", InputFormat::Auto),
        ("windows", InputFormat::Windows),
        ("evtx", InputFormat::Evtx),
        ("ecs", InputFormat::Ecs),
        ("mde", InputFormat::Mde),
        ("w3c", InputFormat::W3c),
        ("ocsf", InputFormat::Ocsf),
    ] {
        each(corpus("ingest", target), |data| decoders::run(format, data));
    }
}

#[test]
fn the_sigma_corpus_loads_within_its_invariants() {
    each(corpus("config", "sigma"), sigma::run);
}

#[test]
fn the_service_config_corpus_loads_within_its_invariants() {
    each(corpus("config", "config"), service_config::run);
}
