//! Fuzz target: see `weightlab::fuzzing::codec_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weightlab::fuzzing::codec_decode(data));
