//! Fuzz target: see `weightlab::fuzzing::archive`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weightlab::fuzzing::archive(data));
