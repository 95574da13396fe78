//! Fuzz target: payloads of a `format = "ocsf"` source.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::run(chainwatch_config::service::InputFormat::Ocsf, data);
});
