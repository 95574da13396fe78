//! Fuzz target `config`: the checks are in `config_check.rs`, shared with the corpus regression
//! test (`tests/fuzz_corpus.rs`).
#![no_main]

#[path = "config_check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::run(data);
});
