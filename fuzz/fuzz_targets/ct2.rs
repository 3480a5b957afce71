//! Fuzz target: see `weightlab::fuzzing::ct2`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weightlab::fuzzing::ct2(data));
