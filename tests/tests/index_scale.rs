//! Indices at LAION scale, through the real binaries, real faiss and (for the folders Python writes) Python faiss
//! and pyarrow: exact re-ranking of compressed indices within the memory budget, checked against float64 brute
//! force and through `back`'s HTTP answers.

use clip_index::{LoadedIndex, Modality};
use clip_retrieval_tests::{brute_force_ip, cli, clustered_embeddings, run, write_embeddings_folder, BackServer};
use serde_json::{json, Value};
use std::path::Path;

fn build(embeddings: &Path, index: &Path, extra: &[&str]) -> Value {
    run(
        cli()
            .arg("index")
            .arg("--embeddings_folder")
            .arg(embeddings)
            .arg("--index_folder")
            .arg(index)
            .args(["--no_progress"])
            .args(extra),
        true,
    );
    serde_json::from_slice(&std::fs::read(index.join("image.json")).unwrap()).unwrap()
}

fn recall(index: &LoadedIndex, rows: &[Vec<f32>], queries: &[Vec<f32>]) -> f64 {
    let mut total = 0.0;
    for q in queries {
        let truth: Vec<i64> = brute_force_ip(rows, q, 10).into_iter().map(|(id, _)| id).collect();
        let found: Vec<i64> = index.search(q, 10).unwrap().row(0).map(|(id, _)| id).collect();
        total += truth.iter().filter(|id| found.contains(id)).count() as f64 / 10.0;
    }
    total / queries.len() as f64
}

fn post_knn(server: &BackServer, body: Value) -> Vec<Value> {
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/knn-service", server.url()))
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json::<Vec<Value>>().unwrap()
}

#[test]
fn rerank_lifts_recall_within_the_budget_and_serves_exact_similarities() {
    let dir = tempfile::tempdir().unwrap();
    let n = 200_000;
    let mut all = clustered_embeddings(n + 100, 64, 1_000, 0.9, 21);
    let queries = all.split_off(n);
    let rows = write_embeddings_folder(&dir.path().join("emb"), &all, 50_000);
    // 6 MB for 200k x 64 (the float32 Flat index would be 51 MB): 4-bit PQ codes plus ids.
    let budget = "6M";
    let limit = clip_index::parse_memory(budget).unwrap();
    let common = ["--max_index_memory_usage", budget, "--max_index_query_time_ms", "20"];
    let off = build(&dir.path().join("emb"), &dir.path().join("off"), &[&common[..], &["--rerank", "off"]].concat());
    let on = build(&dir.path().join("emb"), &dir.path().join("on"), &common);
    for report in [&off, &on] {
        assert!(report["index_bytes"].as_u64().unwrap() <= limit, "over budget: {report}");
    }
    assert!(off.get("rerank").is_none() && off["disk_bytes"] == 0, "{off}");
    assert_eq!(on["rerank"]["vectors_file"], "image_vectors.npy");
    let disk = std::fs::metadata(dir.path().join("on/image_vectors.npy")).unwrap().len();
    assert_eq!(on["disk_bytes"].as_u64(), Some(disk));
    assert!(disk >= (n * 64 * 2) as u64, "float16 vectors of every row: {disk} bytes");
    assert!(on["rerank"]["k_factor"].as_u64().unwrap() > 1, "tuning chose more candidates than results: {on}");

    let loaded_off = LoadedIndex::open(&dir.path().join("off"), Modality::Image, true).unwrap();
    let loaded_on = LoadedIndex::open(&dir.path().join("on"), Modality::Image, true).unwrap();
    let (r_off, r_on) = (recall(&loaded_off, &rows, &queries), recall(&loaded_on, &rows, &queries));
    eprintln!(
        "{budget} for {n} x 64: recall@10 without re-ranking {r_off:.3} ({}), with {r_on:.3} ({}, k_factor {}, {} bytes on disk)",
        off["index_param"], on["index_param"], on["rerank"]["k_factor"], disk
    );
    assert!(r_off < 0.7, "the compressed index alone: recall@10 {r_off}");
    assert!(r_on >= 0.95, "with re-ranking: recall@10 {r_on} (without: {r_off})");
    let reported = on["recall_at_10"].as_f64().unwrap();
    assert!((reported - r_on).abs() < 0.05, "reported {reported}, measured {r_on}");

    // Served similarities are the exact inner products of the stored float16 vectors.
    let paths = dir.path().join("indices.json");
    std::fs::write(&paths, json!({"on": dir.path().join("on")}).to_string()).unwrap();
    let server = BackServer::start(&paths, &[]);
    for q in queries.iter().take(20) {
        let results = post_knn(
            &server,
            json!({"embedding_input": q, "num_images": 10, "num_result_ids": 10, "deduplicate": false}),
        );
        assert_eq!(results.len(), 10);
        for r in &results {
            let id = r["id"].as_u64().unwrap() as usize;
            let exact: f64 =
                all[id].iter().zip(q).map(|(x, y)| half::f16::from_f32(*x).to_f64() * *y as f64).sum::<f64>();
            let served = r["similarity"].as_f64().unwrap();
            assert!((served - exact).abs() < 1e-5, "id {id}: served {served}, exact {exact}");
        }
        let sims: Vec<f64> = results.iter().map(|r| r["similarity"].as_f64().unwrap()).collect();
        assert!(sims.windows(2).all(|w| w[0] >= w[1]), "best first: {sims:?}");
    }
}
