//! Fuzz target: see `weightlab::fuzzing::safetensors`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weightlab::fuzzing::safetensors(data));
