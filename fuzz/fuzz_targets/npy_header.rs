//! cargo-fuzz target: [`clip_fuzz::npy_header`] on every input libFuzzer makes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clip_fuzz::npy_header(data));
