//! cargo-fuzz target: [`clip_fuzz::metadata_arrow`] on every input libFuzzer makes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clip_fuzz::metadata_arrow(data));
