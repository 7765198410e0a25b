//! `clip-retrieval index` and `index_combiner` through the real binary and real faiss, on clustered embeddings with
//! float64 brute force as the reference: exact Flat, compressed choices under budgets, merge, Python faiss interop.

use clip_index::{LoadedIndex, Modality, RowStore};
use clip_retrieval_tests::{
    brute_force_ip, build_index, cli, clustered_embeddings, python, recall_at_10, run, write_embeddings_folder,
};
use serde_json::Value;
use std::path::Path;

#[test]
fn flat_index_returns_the_exact_top_10_and_rows_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let all = clustered_embeddings(6_000, 64, 50, 0.6, 1);
    let rows = write_embeddings_folder(&dir.path().join("emb"), &all, 2_500);
    let report = build_index(&dir.path().join("emb"), &dir.path().join("idx"), &[]);
    assert_eq!(report["index_key"], "Flat");
    assert_eq!(report["count"], 6_000);
    assert_eq!(report["recall_at_10"], 1.0);
    for mmap in [false, true] {
        let loaded = LoadedIndex::open(&dir.path().join("idx"), Modality::Image, mmap).unwrap();
        for q in clustered_embeddings(30, 64, 50, 0.6, 99) {
            let exact = brute_force_ip(&rows, &q, 10);
            let found: Vec<(i64, f32)> = loaded.index.search(&q, 10).unwrap().row(0).collect();
            for ((id, s), (fid, fs)) in exact.iter().zip(&found) {
                // Same ids in the same order, except where two scores tie within float32 rounding.
                assert!(id == fid || (s - *fs as f64).abs() < 1e-6, "mmap={mmap}: exact {exact:?}, faiss {found:?}");
            }
        }
    }
    // Row ids are global row numbers across partitions, in partition order.
    let store = RowStore::open(&dir.path().join("idx/metadata.arrow")).unwrap();
    assert_eq!(store.len(), 6_000);
    let got = store.get(&[0, 2_499, 2_500, 5_999], None).unwrap();
    let captions: Vec<&str> = got.iter().map(|r| r.as_ref().unwrap()["caption"].as_str().unwrap()).collect();
    assert_eq!(captions, ["row 0", "row 2499", "row 2500", "row 5999"]);
    assert!(dir.path().join("idx/metadata/metadata_0.parquet").is_file(), "--copy_metadata defaults to true");
}

#[test]
fn compressed_indices_fit_their_budget_and_meet_their_reported_recall() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000;
    // Held-out queries from the same distribution as the collection (the last 100 points).
    let mut all = clustered_embeddings(n + 100, 64, 200, 0.8, 2);
    let queries = all.split_off(n);
    let rows = write_embeddings_folder(&dir.path().join("emb"), &all, 8_000);
    // Budgets between Flat (5.1 MB) and the smallest PQ; each forces a different codec.
    for (budget, codec, min_recall) in
        [("4M", ",SQfp16", 0.9), ("2M", ",SQ8", 0.85), ("1200K", ",SQ6", 0.8), ("800K", "x4fsr", 0.4)]
    {
        let out = dir.path().join(format!("idx-{budget}"));
        let report = build_index(
            &dir.path().join("emb"),
            &out,
            &["--max_index_memory_usage", budget, "--max_index_query_time_ms", "50"],
        );
        let key = report["index_key"].as_str().unwrap();
        assert!(key.starts_with("IVF") || key.starts_with("OPQ"), "{budget}: {key}");
        assert!(key.contains(codec), "{budget}: expected {codec} in {key}");
        let bytes = report["index_bytes"].as_u64().unwrap();
        let limit = clip_index::parse_memory(budget).unwrap();
        assert!(bytes <= limit, "{budget}: {key} is {bytes} bytes");
        assert_eq!(std::fs::metadata(out.join("image.index")).unwrap().len(), bytes);
        assert!(report["index_param"].as_str().unwrap().starts_with("nprobe="), "{report}");
        let reported = report["recall_at_10"].as_f64().unwrap();
        let loaded = LoadedIndex::open(&out, Modality::Image, true).unwrap();
        let measured = recall_at_10(&loaded, &rows, &queries);
        assert!(measured >= min_recall, "{budget} {key}: recall@10 {measured} on fresh queries");
        assert!((measured - reported).abs() < 0.1, "{budget} {key}: reported {reported}, measured {measured}");
    }
}

#[test]
fn impossible_budget_and_missing_embeddings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_embeddings_folder(&dir.path().join("emb"), &clustered_embeddings(5_000, 64, 10, 0.5, 3), 5_000);
    let out = run(
        cli()
            .arg("index")
            .arg("--embeddings_folder")
            .arg(dir.path().join("emb"))
            .arg("--index_folder")
            .arg(dir.path().join("idx"))
            .args(["--max_index_memory_usage", "10K", "--no_progress"]),
        false,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--max_index_memory_usage") && err.contains("needs about"), "{err}");
    let out = run(
        cli()
            .arg("index")
            .arg("--embeddings_folder")
            .arg(dir.path().join("nothing"))
            .arg("--index_folder")
            .arg(dir.path().join("idx")),
        false,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nothing") && err.contains("no embeddings"), "{err}");
}

fn index_ids(folder: &Path, q: &[f32]) -> Vec<i64> {
    let loaded = LoadedIndex::open(folder, Modality::Image, false).unwrap();
    loaded.search(q, 10).unwrap().row(0).map(|(id, _)| id).collect()
}

#[test]
fn parts_merge_into_the_index_of_the_whole_for_flat_and_ivf() {
    let dir = tempfile::tempdir().unwrap();
    let all = clustered_embeddings(9_000, 64, 40, 0.6, 4);
    write_embeddings_folder(&dir.path().join("whole"), &all, 3_000);
    write_embeddings_folder(&dir.path().join("a"), &all[..6_000], 3_000);
    write_embeddings_folder(&dir.path().join("b"), &all[6_000..], 3_000);
    let p = |name: &str| dir.path().join(name);
    // Flat: concatenation is exact.
    build_index(&p("whole"), &p("whole-idx"), &[]);
    build_index(&p("a"), &p("a-idx"), &[]);
    build_index(&p("b"), &p("b-idx"), &[]);
    let parts = format!("{},{}", p("a-idx").display(), p("b-idx").display());
    run(cli().args(["index_combiner", "--input_folders", &parts, "--output_folder"]).arg(p("merged")), true);
    for q in clustered_embeddings(10, 64, 40, 0.6, 5) {
        assert_eq!(index_ids(&p("merged"), &q), index_ids(&p("whole-idx"), &q));
    }
    let store = RowStore::open(&p("merged/metadata.arrow")).unwrap();
    let row = store.get(&[7_000], None).unwrap().remove(0).unwrap();
    assert_eq!(row["caption"], "row 1000", "part b's rows follow part a's (its own numbering restarts at 0)");

    // IVF: part b reuses part a's training; the merge holds every vector under its global id.
    build_index(&p("a"), &p("a-ivf"), &["--index_key", "IVF32,Flat"]);
    build_index(&p("b"), &p("b-ivf"), &["--trained_index_folder", p("a-ivf").to_str().unwrap()]);
    let parts = format!("{},{}", p("a-ivf").display(), p("b-ivf").display());
    run(cli().args(["index_combiner", "--input_folders", &parts, "--output_folder"]).arg(p("merged-ivf")), true);
    assert!(p("merged-ivf/image.index/populated.index").is_file(), "IVF parts with inline lists merge on disk");
    assert!(p("merged-ivf/image.index/merged_index.ivfdata").is_file());
    let mut merged = LoadedIndex::open(&p("merged-ivf"), Modality::Image, true).unwrap();
    assert_eq!(merged.index.len(), 9_000);
    merged.index.set_parameter("nprobe", 32.0).unwrap();
    for id in [10usize, 6_001, 8_999] {
        let found = merged.index.search(&all[id], 1).unwrap();
        assert_eq!(found.ids[0], id as i64, "vector {id} finds itself under its global id");
    }
    // Separately trained IVF parts cannot be merged, and the error says what to do.
    build_index(&p("b"), &p("b-ivf2"), &["--index_key", "IVF32,Flat"]);
    let parts = format!("{},{}", p("a-ivf").display(), p("b-ivf2").display());
    let out = run(cli().args(["index_combiner", "--input_folders", &parts, "--output_folder"]).arg(p("bad")), false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--trained_index"), "{err}");
}

#[test]
fn python_faiss_reads_our_index_and_we_serve_one_python_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let all = clustered_embeddings(4_000, 64, 30, 0.6, 6);
    write_embeddings_folder(&dir.path().join("emb"), &all, 4_000);
    build_index(&dir.path().join("emb"), &dir.path().join("ours"), &["--index_key", "IVF16,SQ8"]);
    let queries = clustered_embeddings(5, 64, 30, 0.6, 7);
    let qjson = serde_json::to_string(&queries).unwrap();
    std::fs::create_dir_all(dir.path().join("theirs")).unwrap();
    let script = r#"
import json, sys, faiss, numpy as np, glob
ours, theirs, emb, queries = sys.argv[1], sys.argv[2], sys.argv[3], np.array(json.loads(sys.argv[4]), dtype="float32")
index = faiss.read_index(ours + "/image.index")
faiss.ParameterSpace().set_index_parameters(index, "nprobe=16")
_, ours_ids = index.search(queries, 10)
x = np.concatenate([np.load(f).astype("float32") for f in sorted(glob.glob(emb + "/img_emb/*.npy"))])
py = faiss.index_factory(x.shape[1], "IVF16,Flat", faiss.METRIC_INNER_PRODUCT)
py.train(x)
py.add(x)
py.nprobe = 16
faiss.write_index(py, theirs + "/image.index")
_, theirs_ids = py.search(queries, 10)
print(json.dumps({"ntotal": index.ntotal, "d": index.d, "ours": ours_ids.tolist(), "theirs": theirs_ids.tolist()}))
"#;
    let out = run(
        python()
            .args(["-c", script])
            .arg(dir.path().join("ours"))
            .arg(dir.path().join("theirs"))
            .arg(dir.path().join("emb"))
            .arg(&qjson),
        true,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["ntotal"].as_u64(), v["d"].as_u64()), (Some(4_000), Some(64)));
    let mut ours = LoadedIndex::open(&dir.path().join("ours"), Modality::Image, true).unwrap();
    ours.index.set_parameter("nprobe", 16.0).unwrap();
    let mut theirs = LoadedIndex::open(&dir.path().join("theirs"), Modality::Image, true).unwrap();
    assert!(theirs.report.is_none());
    theirs.index.set_parameter("nprobe", 16.0).unwrap();
    for (i, q) in queries.iter().enumerate() {
        let ids = |l: &LoadedIndex| l.index.search(q, 10).unwrap().ids;
        let expect = |k: &str| v[k][i].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect::<Vec<_>>();
        assert_eq!(ids(&ours), expect("ours"), "Python faiss searches our index as we do");
        assert_eq!(ids(&theirs), expect("theirs"), "we search Python's index as it does");
    }
}
