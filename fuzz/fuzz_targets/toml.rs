//! Fuzz target: see `weightlab::fuzzing::toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weightlab::fuzzing::toml(data));
