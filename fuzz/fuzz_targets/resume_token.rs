//! Arbitrary bytes into the resume-token decoder: no input may panic, allocate without bound
//! or decode to something that does not round-trip. See `../harness.rs`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::check(data));
