//! cargo-fuzz target: [`clip_fuzz::image_preprocess`] on every input libFuzzer makes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clip_fuzz::image_preprocess(data));
