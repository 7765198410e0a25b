//! The command line is a public contract: every clip-retrieval inference flag is accepted, in snake_case and
//! kebab-case. (Also makes `cargo test --workspace` build the binary the end-to-end tests in tests/ run.)

use std::process::Command;

const INFERENCE_FLAGS: [&str; 14] = [
    "input_dataset",
    "output_folder",
    "input_format",
    "batch_size",
    "num_prepro_workers",
    "enable_text",
    "enable_image",
    "enable_metadata",
    "write_batch_size",
    "subset_size",
    "wds_image_key",
    "wds_caption_key",
    "clip_model",
    "output_partition_count",
];

#[test]
fn inference_help_lists_every_clip_retrieval_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_clip-retrieval")).args(["inference", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in INFERENCE_FLAGS {
        assert!(help.contains(&format!("--{flag}")), "--{flag} missing from:\n{help}");
    }
}

#[test]
fn kebab_case_and_python_booleans_parse() {
    // An empty input folder fails after parsing, so reaching that error proves the flags were accepted.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clip-retrieval"))
        .args(["inference", "--input-dataset"])
        .arg(dir.path())
        .args(["--output-folder", "/tmp/unused", "--enable-text", "False", "--enable_metadata", "--batch-size", "3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no image files"), "{err}");
    let bad = Command::new(env!("CARGO_BIN_EXE_clip-retrieval"))
        .args(["inference", "--input_dataset", "x", "--output_folder", "y", "--enable_text", "maybe"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected True or False"));
}
