//! cargo-fuzz target: [`clip_fuzz::webdataset_tar`] on every input libFuzzer makes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clip_fuzz::webdataset_tar(data));
