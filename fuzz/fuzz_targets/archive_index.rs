//! Fuzz target: see `weightlab::fuzzing::archive_index`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weightlab::fuzzing::archive_index(data));
