//! `--precision int8` and `clip-retrieval evaluate` through the CLI on the shipped model: the gate passes on the
//! shipped int8 towers with their measured margins, fails on a quantization whose scales are shuffled, and a folder
//! without int8 files is refused by name before any sample is read.

use clip_retrieval_tests::{cli, copy_dir, inference_command, python, run, sample_dataset, shipped_model};
use std::path::Path;

fn evaluate(data: &Path, model: &Path, out: &Path) -> std::process::Output {
    cli()
        .args(["evaluate", "--no_progress", "--subset_size", "400", "--input_dataset"])
        .arg(data)
        .arg("--clip_model")
        .arg(model)
        .arg("--output_folder")
        .arg(out)
        .output()
        .unwrap()
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("evaluate.json")).unwrap()).unwrap()
}

#[test]
fn evaluate_passes_the_shipped_int8_towers_and_fails_shuffled_scales() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    sample_dataset(&data, 400, 11, "files");

    let good = evaluate(&data, &shipped_model(), &dir.path().join("good"));
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&good.stderr));
    assert!(stdout.contains("): PASSED"), "{stdout}");
    let r = report(&dir.path().join("good"));
    assert_eq!(r["samples"], 400);
    assert_eq!(r["candidate"]["image"], "visual/model.int8.onnx (int8)");
    assert_eq!(r["reference"]["text"], "textual/model.onnx (fp32)");
    // Measured 0.9999 / 0.9999 and overlap 0.97-0.99 on this model; a broken recipe lands far below.
    assert!(r["image_cosine"]["mean"].as_f64().unwrap() > 0.999, "{r}");
    assert!(r["image_cosine"]["p01"].as_f64().unwrap() > 0.995, "{r}");
    assert!(r["text_cosine"]["mean"].as_f64().unwrap() > 0.999, "{r}");
    assert!(r["text_to_image_overlap"].as_f64().unwrap() >= 0.95, "{r}");
    let (before, after) = (r["reference_recall"].as_f64().unwrap(), r["candidate_recall"].as_f64().unwrap());
    assert!(before > 0.8 && (before - after).abs() < 0.02, "recall@10 {before} -> {after}");

    // The same int8 image tower with its per-channel weight scales permuted: every MatMul still runs, with each
    // output channel scaled by another channel's factor.
    let broken = dir.path().join("broken");
    copy_dir(&shipped_model(), &broken);
    let script = r#"
import sys, onnx, numpy as np
from onnx import numpy_helper
path = sys.argv[1]
m = onnx.load(path)
rng = np.random.default_rng(0)
n = 0
for init in m.graph.initializer:
    a = numpy_helper.to_array(init)
    if init.name.endswith("_scale") and a.ndim == 1 and a.size > 1:
        init.CopyFrom(numpy_helper.from_array(rng.permutation(a), init.name))
        n += 1
assert n > 0, "no per-channel scales found"
onnx.save(m, path)
print(n)
"#;
    let shuffled = run(python().arg("-c").arg(script).arg(broken.join("visual/model.int8.onnx")), true);
    assert!(String::from_utf8_lossy(&shuffled.stdout).trim().parse::<u32>().unwrap() >= 6);
    let bad = evaluate(&data, &broken, &dir.path().join("bad"));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "the gate must fail: {}", String::from_utf8_lossy(&bad.stdout));
    assert!(stderr.contains("the gate failed: image cosine mean"), "{stderr}");
    let r = report(&dir.path().join("bad"));
    assert!(r["image_cosine"]["mean"].as_f64().unwrap() < 0.99, "{r}");
    assert!(r["text_cosine"]["mean"].as_f64().unwrap() > 0.999, "the text tower was not touched: {r}");
}

#[test]
fn int8_inference_names_its_towers_in_stats_and_a_folder_without_them_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    sample_dataset(&data, 30, 2, "files");
    let out = dir.path().join("emb");
    run(&mut inference_command(&data, &out, &["--precision", "int8", "--text_precision", "fp32"]), true);
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stats/0.json")).unwrap()).unwrap();
    assert_eq!(stats["image_model"], "visual/model.int8.onnx (int8)");
    assert_eq!(stats["text_model"], "textual/model.onnx (fp32)");

    let plain = dir.path().join("plain");
    copy_dir(&shipped_model(), &plain);
    std::fs::remove_file(plain.join("visual/model.int8.onnx")).unwrap();
    let refused = cli()
        .args(["inference", "--no_progress", "--precision", "int8", "--input_dataset"])
        .arg(&data)
        .arg("--output_folder")
        .arg(dir.path().join("emb2"))
        .arg("--clip_model")
        .arg(&plain)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("visual/model.int8.onnx is missing") && stderr.contains("quantize.py"), "{stderr}");
    assert!(!dir.path().join("emb2/img_emb").exists(), "nothing was written");
}
