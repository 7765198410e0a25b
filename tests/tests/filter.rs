//! `clip-retrieval filter` end to end: the shipped model, an index built by `inference` + `index`, text and image
//! queries, top-k and threshold, images copied from files or extracted from tar shards, and the clear errors.

use clip_retrieval_tests::{cli, python, run, sample_dataset, shipped_model, write_embeddings_folder};
use serde_json::Value;
use std::path::Path;

/// Renders `count` samples as `format`, embeds them and indexes them; returns (dataset, index folder).
fn indexed_dataset(root: &Path, count: u64, format: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = root.join("data");
    sample_dataset(&data, count, 11, format);
    let input = if format == "files" {
        data.display().to_string()
    } else {
        format!("{}/{{00000..{:05}}}.tar", data.display(), count.div_ceil(40) - 1)
    };
    run(
        cli()
            .args(["inference", "--input_dataset", &input, "--input_format", format, "--output_folder"])
            .arg(root.join("emb"))
            .arg("--clip_model")
            .arg(shipped_model())
            .args(["--no_progress", "--batch_size", "32"]),
        true,
    );
    run(
        cli()
            .arg("index")
            .arg("--embeddings_folder")
            .arg(root.join("emb"))
            .arg("--index_folder")
            .arg(root.join("idx"))
            .arg("--no_progress"),
        true,
    );
    (data, root.join("idx"))
}

fn filter(idx: &Path, out: &Path, query: &str, extra: &[&str], expect_ok: bool) -> std::process::Output {
    run(
        cli()
            .args(["filter", "--query", query, "--indice_folder"])
            .arg(idx)
            .arg("--output_folder")
            .arg(out)
            .arg("--clip_model")
            .arg(shipped_model())
            .args(extra),
        expect_ok,
    )
}

/// results.parquet as JSON rows, read by pyarrow.
fn results(out: &Path) -> Vec<Value> {
    let script = "import sys, json, pyarrow.parquet as pq; print(json.dumps(pq.read_table(sys.argv[1]).to_pylist()))";
    let o = run(python().args(["-c", script]).arg(out.join("results.parquet")), true);
    serde_json::from_slice::<Value>(&o.stdout).unwrap().as_array().unwrap().clone()
}

#[test]
fn text_and_image_queries_copy_the_matching_images() {
    let dir = tempfile::tempdir().unwrap();
    let (_, idx) = indexed_dataset(dir.path(), 400, "files");

    // Text, top-k.
    let out = dir.path().join("red-circles");
    filter(&idx, &out, "a red circle", &["--num_results", "10"], true);
    let rows = results(&out);
    assert_eq!(rows.len(), 10);
    let sims: Vec<f64> = rows.iter().map(|r| r["similarity"].as_f64().unwrap()).collect();
    assert!(sims.windows(2).all(|w| w[0] >= w[1]), "best first: {sims:?}");
    for r in &rows[..3] {
        let caption = r["caption"].as_str().unwrap();
        assert!(caption.contains("red") && caption.contains("circle"), "top results describe the query: {caption}");
    }
    for r in &rows {
        let copied = Path::new(r["output_path"].as_str().unwrap());
        assert!(copied.starts_with(&out), "{copied:?}");
        let source = r["image_path"].as_str().unwrap();
        assert_eq!(std::fs::read(copied).unwrap(), std::fs::read(source).unwrap(), "copy of {source}");
    }

    // Threshold: exactly the results of a full top-k with similarity >= t.
    let all = dir.path().join("all");
    filter(&idx, &all, "a red circle", &["--num_results", "400"], true);
    let every = results(&all);
    let t = sims[4] as f32;
    let thresholded = dir.path().join("threshold");
    filter(&idx, &thresholded, "a red circle", &["--threshold", &t.to_string()], true);
    let kept = results(&thresholded);
    let expected = every.iter().filter(|r| r["similarity"].as_f64().unwrap() as f32 >= t).count();
    assert!(kept.len() >= 5 && kept.len() == expected, "{} kept, {expected} expected", kept.len());
    assert!(kept.iter().all(|r| r["similarity"].as_f64().unwrap() as f32 >= t));

    // Image query: the image itself comes first.
    let query_image = rows[0]["image_path"].as_str().unwrap().to_string();
    let by_image = dir.path().join("by-image");
    filter(&idx, &by_image, &query_image, &["--num_results", "5"], true);
    let first = &results(&by_image)[0];
    assert_eq!(first["image_path"].as_str().unwrap(), query_image);
    assert!(first["similarity"].as_f64().unwrap() > 0.99);
    // The same path as text is another query altogether.
    let as_text = dir.path().join("as-text");
    filter(&idx, &as_text, &query_image, &["--num_results", "5", "--query_type", "text"], true);
    assert!(results(&as_text)[0]["similarity"].as_f64().unwrap() < 0.99);
}

#[test]
fn images_of_tar_shards_are_extracted_from_the_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let (data, idx) = indexed_dataset(dir.path(), 80, "webdataset");
    let out = dir.path().join("out");
    let shards = format!("{}/{{00000..00001}}.tar", data.display());
    filter(&idx, &out, "a blue square", &["--num_results", "6", "--input_dataset", &shards], true);
    let rows = results(&out);
    assert_eq!(rows.len(), 6);
    let script = r#"
import sys, tarfile, json, glob
members = {}
for shard in sorted(glob.glob(sys.argv[1] + "/*.tar")):
    with tarfile.open(shard) as t:
        for m in t.getmembers():
            if m.name.endswith(".jpg"):
                members[m.name[:-4]] = t.extractfile(m).read().hex()
print(json.dumps(members))
"#;
    let members: Value = serde_json::from_slice(&run(python().args(["-c", script]).arg(&data), true).stdout).unwrap();
    for r in rows {
        let key = r["image_path"].as_str().unwrap();
        let copied = std::fs::read(r["output_path"].as_str().expect("every image extracted")).unwrap();
        assert_eq!(members[key].as_str().unwrap(), copied.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
}

#[test]
fn missing_index_wrong_model_and_empty_results_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = filter(&dir.path().join("nowhere"), &out, "a red circle", &[], false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("nowhere") && err.contains("image.index"), "{err}");

    // An index of 32-dimensional vectors cannot be searched with the 64-dimensional shipped model.
    let rows: Vec<Vec<f32>> = (0..50).map(|i| (0..32).map(|j| ((i * j) % 7) as f32 + 0.5).collect()).collect();
    write_embeddings_folder(&dir.path().join("emb32"), &rows, 50);
    run(
        cli()
            .arg("index")
            .arg("--embeddings_folder")
            .arg(dir.path().join("emb32"))
            .arg("--index_folder")
            .arg(dir.path().join("idx32"))
            .arg("--no_progress"),
        true,
    );
    let o = filter(&dir.path().join("idx32"), &out, "a red circle", &[], false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("64 dimensions") && err.contains("32-dimensional"), "{err}");

    let (_, idx) = indexed_dataset(&dir.path().join("small"), 40, "files");
    let o = filter(&idx, &out, "a red circle", &["--threshold", "0.999"], false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no result with similarity >= 0.999"), "{err}");
}
