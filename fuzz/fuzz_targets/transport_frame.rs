//! Arbitrary bytes into the transport's frame decoder: no input may panic, allocate without
//! bound or decode to a frame that does not round-trip. See `../frame_harness.rs`.
#![no_main]

#[path = "../frame_harness.rs"]
mod frame_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| frame_harness::check(data));
