//! Replays every committed corpus file (fuzz/corpus/<target>/*) through its fuzz entry point, so inputs the fuzzer
//! found (crashes once fixed, and the coverage it grew) are regression tests of `cargo test`.

use std::path::Path;

#[test]
fn every_corpus_file_goes_through_its_target_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, run) in clip_fuzz::TARGETS {
        let folder = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 3, "{target}: the seed corpus has {} files", files.len());
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            // A panic names the file: rerun it alone with `cargo fuzz run <target> <file>`.
            eprintln!("{target}: {}", file.display());
            run(&bytes);
        }
    }
}

#[test]
fn the_entry_points_reject_what_they_must() {
    // Not just "no panic": the guards the targets rely on are live.
    let bomb = clip_synthetic::hostile::zero_png(2048, 2048);
    assert!(clip_model::preprocess::decode_rgb(
        &bomb,
        &clip_model::ImageLimits { max_pixels: clip_fuzz::FUZZ_MAX_PIXELS }
    )
    .is_err());
    assert!(clip_server::wire::knn_query(br#"{"embedding_input": [1e300]}"#).is_err());
    assert!(clip_server::wire::knn_query(br#"{"text": "x", "aesthetic_score": 5, "aesthetic_weight": 1e300}"#).is_err());
}
