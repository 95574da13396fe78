//! Fuzz target: EVTX files. Inputs get the EVTX file magic when they lack it, so the fuzzer
//! spends its time in the chunk and record parsers rather than on the first eight bytes.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"ElfFile\0") {
        common::run(chainwatch_config::service::InputFormat::Evtx, data);
    } else {
        let mut file = b"ElfFile\0".to_vec();
        file.extend_from_slice(data);
        common::run(chainwatch_config::service::InputFormat::Evtx, &file);
    }
});
