//! Fuzz target `sigma`: the checks are in `sigma_check.rs`, shared with the corpus regression
//! test (`tests/fuzz_corpus.rs`).
#![no_main]

#[path = "sigma_check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::run(data);
});
