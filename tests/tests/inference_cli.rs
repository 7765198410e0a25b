//! `clip-retrieval inference` end to end through the real binary, the shipped model and real ONNX Runtime:
//! the three input formats, bad inputs skipped and counted, clear errors, and outputs read back by numpy/pyarrow.

use clip_retrieval_tests::{cli, inference_command, python_summary, run, sample_dataset, shipped_model};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn inference(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    run(&mut inference_command(input, output, &[&["--batch_size", "8"], extra].concat()), true)
}

fn stats(output: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(output.join("stats")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()).collect()
}

/// Checks the invariants of every partition: aligned row counts, unit norms, numpy-identical bytes.
fn check_partitions(summary: &Value, image: bool, text: bool) -> (usize, Vec<String>) {
    let mut total = 0;
    let mut paths = Vec::new();
    for (name, p) in summary.as_object().unwrap() {
        let rows = p["metadata_rows"].as_u64().unwrap();
        for (kind, on) in [("img", image), ("text", text)] {
            if !on {
                assert!(p.get(kind).is_none(), "partition {name}: {kind} written although disabled");
                continue;
            }
            let k = &p[kind];
            assert_eq!(k["rows"].as_u64().unwrap(), rows, "partition {name}: {kind} rows differ from metadata rows");
            assert_eq!(k["dtype"], "float16");
            assert_eq!(k["dim"], 64);
            assert_eq!(k["numpy_identical"], true, "partition {name}: {kind} bytes differ from numpy.save");
            if rows > 0 {
                assert!(
                    (k["min_norm"].as_f64().unwrap() - 1.0).abs() < 2e-3
                        && (k["max_norm"].as_f64().unwrap() - 1.0).abs() < 2e-3
                );
            }
        }
        total += rows as usize;
        if let Some(list) = p["image_path"].as_array() {
            paths.extend(list.iter().map(|v| v.as_str().unwrap().to_string()));
        }
    }
    (total, paths)
}

#[test]
fn files_dataset_skips_corrupt_images_and_keeps_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    sample_dataset(&input, 30, 5, "files");
    // A file that is no image, a truncated PNG, an upper-case extension, and an image without caption.
    std::fs::write(input.join("garbage.jpg"), b"this is not an image").unwrap();
    std::fs::write(input.join("garbage.txt"), b"a broken file").unwrap();
    let img = clip_synthetic::render(5, 999).image;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    std::fs::write(input.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(input.join("truncated.txt"), b"half an image").unwrap();
    std::fs::create_dir(input.join("sub")).unwrap();
    std::fs::write(input.join("sub/UPPER.JPG"), clip_synthetic::render(5, 1000).jpeg()).unwrap();
    std::fs::write(input.join("sub/UPPER.txt"), b"a red thing").unwrap();
    std::fs::write(input.join("no_caption.jpg"), clip_synthetic::render(5, 1001).jpeg()).unwrap();

    let output = dir.path().join("out");
    let out = inference(&input, &output, &["--output_partition_count", "2", "--enable_metadata"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("31 samples embedded"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let summary = python_summary(&output);
    assert_eq!(summary.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["0", "1"]);
    let (total, paths) = check_partitions(&summary, true, true);
    assert_eq!(total, 31);
    let unique: BTreeSet<_> = paths.iter().cloned().collect();
    assert_eq!(unique.len(), 31, "duplicate rows");
    assert!(paths.iter().any(|p| p.ends_with("sub/UPPER.JPG")));
    assert!(!paths.iter().any(|p| p.contains("garbage") || p.contains("truncated") || p.contains("no_caption")));
    let columns = summary["0"]["columns"].as_array().unwrap();
    for c in ["image_path", "caption", "color", "shape", "size", "background"] {
        assert!(columns.iter().any(|v| v == c), "column {c} missing: {columns:?}");
    }
    let stats = stats(&output);
    let skipped: u64 = stats.iter().map(|s| s["skipped_count"].as_u64().unwrap()).sum();
    assert_eq!(skipped, 2);
    let reasons: Vec<String> = stats
        .iter()
        .flat_map(|s| s["skipped"].as_array().unwrap().clone())
        .map(|v| v["input"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r.ends_with("garbage.jpg")) && reasons.iter().any(|r| r.ends_with("truncated.png")),
        "{reasons:?}"
    );
    let samples: u64 = stats.iter().map(|s| s["sample_count"].as_u64().unwrap()).sum();
    assert_eq!(samples, 31);
}

#[test]
fn text_only_and_image_only_runs_write_only_what_is_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    sample_dataset(&input, 12, 6, "files");
    let text_only = dir.path().join("text");
    inference(&input, &text_only, &["--enable_image", "False"]);
    let (n, _) = check_partitions(&python_summary(&text_only), false, true);
    assert_eq!(n, 12);
    let image_only = dir.path().join("image");
    inference(&input, &image_only, &["--enable-text=false"]);
    let s = python_summary(&image_only);
    let (n, paths) = check_partitions(&s, true, false);
    assert_eq!((n, paths.len()), (12, 12));
}

#[test]
fn webdataset_shards_stream_and_a_truncated_shard_keeps_its_good_samples() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    sample_dataset(&shards, 160, 7, "webdataset"); // 4 shards of 40
    let last = shards.join("00003.tar");
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() / 2 + 100]).unwrap();
    let output = dir.path().join("out");
    let pattern = format!("{}/{{00000..00003}}.tar", shards.display());
    inference(Path::new(&pattern), &output, &["--input_format", "webdataset", "--enable_metadata", "True"]);
    let summary = python_summary(&output);
    let (total, keys) = check_partitions(&summary, true, true);
    assert!((120..160).contains(&total), "{total} rows");
    let unique: BTreeSet<_> = keys.iter().cloned().collect();
    assert_eq!(unique.len(), total);
    for i in 0..120 {
        assert!(unique.contains(&format!("{i:09}")), "sample {i} of the intact shards is missing");
    }
    let skipped: u64 = stats(&output).iter().map(|s| s["skipped_count"].as_u64().unwrap()).sum();
    assert_eq!(skipped, 1, "the truncated shard counts once");
    let captions = summary["0"]["caption"].as_array().unwrap();
    assert_eq!(captions[0].as_str().unwrap(), clip_synthetic::render(7, 0).caption);
}

#[test]
fn parquet_input_reads_img2dataset_style_files_and_skips_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pq");
    sample_dataset(&input, 60, 8, "parquet"); // 2 files
    std::fs::write(input.join("00009.parquet"), b"PAR1 not really").unwrap();
    let output = dir.path().join("out");
    inference(&input, &output, &["--input_format", "parquet", "--enable_metadata", "--output_partition_count", "3"]);
    let (total, keys) = check_partitions(&python_summary(&output), true, true);
    assert_eq!(total, 60);
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), 60);
    let skipped: u64 = stats(&output).iter().map(|s| s["skipped_count"].as_u64().unwrap()).sum();
    assert_eq!(skipped, 1);
}

fn failing(args: &[&str]) -> String {
    let out = run(cli().args(args).args(["--no_progress"]), false);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_invocations_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = dir.path().join("out");
    let (e, o) = (empty.to_str().unwrap(), out.to_str().unwrap());
    let msg = failing(&["inference", "--input_dataset", e, "--output_folder", o]);
    assert!(msg.contains(e) && msg.contains("no image files"), "{msg}");
    let missing = dir.path().join("does-not-exist");
    let msg = failing(&["inference", "--input_dataset", missing.to_str().unwrap(), "--output_folder", o]);
    assert!(msg.contains("does-not-exist"), "{msg}");
    let msg = failing(&["inference", "--input_dataset", e, "--output_folder", o, "--input_format", "csv"]);
    assert!(msg.contains("csv") && msg.contains("webdataset"), "{msg}");

    sample_dataset(&dir.path().join("ds"), 2, 1, "files");
    let broken_model = dir.path().join("model");
    std::fs::create_dir_all(&broken_model).unwrap();
    std::fs::copy(shipped_model().join("config.json"), broken_model.join("config.json")).unwrap();
    let msg = failing(&[
        "inference",
        "--input_dataset",
        dir.path().join("ds").to_str().unwrap(),
        "--output_folder",
        o,
        "--clip_model",
        broken_model.to_str().unwrap(),
    ]);
    assert!(msg.contains("visual/model.onnx") && msg.contains("missing"), "{msg}");
    assert!(!out.join("stats").exists(), "a failed run must not mark partitions finished");
}
