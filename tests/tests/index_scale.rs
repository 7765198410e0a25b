//! Indices at LAION scale, through the real binaries, real faiss and (for the folders Python writes) Python faiss
//! and pyarrow: exact re-ranking of compressed indices within the memory budget, checked against float64 brute
//! force and through `back`'s HTTP answers; LAION-style on-disk folders and `metadata/*.arrow` served by `back`;
//! `index_combiner`'s on-disk merge read by Python faiss, in bounded memory; `parquet_to_arrow`.

use clip_index::{LoadedIndex, Modality};
use clip_retrieval_tests::{
    build_index, cli, clustered_embeddings, copy_dir, python, recall_at_10, run, write_embeddings_folder, BackServer,
};
use serde_json::{json, Value};

/// The timing test measures this machine's costs then times a build: it runs alone (write lock), the other tests of
/// this file share the machine among themselves (read locks). Cargo runs one test binary at a time.
static MACHINE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn share_machine() -> std::sync::RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(|e| e.into_inner())
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
    let _machine = share_machine();
    let dir = tempfile::tempdir().unwrap();
    let n = 200_000;
    let mut all = clustered_embeddings(n + 100, 64, 1_000, 0.9, 21);
    let queries = all.split_off(n);
    let rows = write_embeddings_folder(&dir.path().join("emb"), &all, 50_000);
    // 6 MB for 200k x 64 (the float32 Flat index would be 51 MB): 4-bit PQ codes plus ids.
    let budget = "6M";
    let limit = clip_index::parse_memory(budget).unwrap();
    let common = ["--max_index_memory_usage", budget, "--max_index_query_time_ms", "20"];
    let off =
        build_index(&dir.path().join("emb"), &dir.path().join("off"), &[&common[..], &["--rerank", "off"]].concat());
    let on = build_index(&dir.path().join("emb"), &dir.path().join("on"), &common);
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
    let (r_off, r_on) = (recall_at_10(&loaded_off, &rows, &queries), recall_at_10(&loaded_on, &rows, &queries));
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

/// Builds, with Python faiss and pyarrow, `blocks` IVF blocks of `block_rows` vectors (ids global, as
/// clip-retrieval's distributed builds store them), their metadata parquet, a LAION-style folder (`image.index/`
/// by `merge_ondisk` + `metadata/0.arrow` as `parquet_to_arrow` writes it), and the in-memory merge's answers.
const LAION_SCRIPT: &str = r#"
import glob, json, os, sys, numpy as np, faiss, pyarrow as pa, pyarrow.parquet as pq
from faiss.contrib.ondisk import merge_ondisk
root, nb, bs, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
centres = np.random.default_rng(0).standard_normal((300, d)).astype("float32")
def vectors(seed, n):
    r = np.random.default_rng(seed)
    x = centres[r.integers(0, len(centres), n)] + 0.8 * r.standard_normal((n, d)).astype("float32") / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype("float32")
for sub in ["blocks", "parquet", "laion/image.index", "laion/metadata"]:
    os.makedirs(f"{root}/{sub}", exist_ok=True)
trained = faiss.index_factory(d, "IVF256,Flat", faiss.METRIC_INNER_PRODUCT)
trained.train(vectors(0, 20000))
trained.nprobe = 16
faiss.write_index(trained, f"{root}/trained.index")
for i in range(nb):
    block = faiss.read_index(f"{root}/trained.index")
    ids = np.arange(i * bs, (i + 1) * bs)
    block.add_with_ids(vectors(100 + i, bs), ids)
    faiss.write_index(block, f"{root}/blocks/{i:03d}.index")
    pq.write_table(pa.table({"url": [f"http://img/{j}.jpg" for j in ids], "caption": [f"row {j}" for j in ids],
                             "width": ids % 1000}), f"{root}/parquet/{i:03d}.parquet")
blocks = sorted(glob.glob(f"{root}/blocks/*.index"))
empty = faiss.read_index(blocks[0], faiss.IO_FLAG_MMAP)
empty.ntotal = 0
merge_ondisk(empty, blocks, f"{root}/laion/image.index/merged_index.ivfdata")
faiss.write_index(empty, f"{root}/laion/image.index/populated.index")
files = sorted(glob.glob(f"{root}/parquet/*.parquet"))
schema = pq.read_table(files[0], columns=["url", "caption"]).schema
with pa.OSFile(f"{root}/laion/metadata/0.arrow", "wb") as sink, pa.ipc.new_file(sink, schema) as w:
    for f in files:
        w.write_table(pq.read_table(f, columns=["url", "caption"]))
mem = faiss.read_index(blocks[0])
for b in blocks[1:]:
    mem.merge_from(faiss.read_index(b), 0)
mem.nprobe = 16
queries = vectors(999, 20)
D, I = mem.search(queries, 10)
laion = faiss.read_index(f"{root}/laion/image.index/populated.index", faiss.IO_FLAG_ONDISK_SAME_DIR)
_, L = laion.search(queries, 10)
print(json.dumps({"queries": queries.tolist(), "mem_ids": I.tolist(), "mem_dist": D.tolist(), "laion_ids": L.tolist(),
                  "ntotal": laion.ntotal}))
"#;

/// Python faiss searching a merged folder as clip-retrieval's back opens it.
const READ_ONDISK_SCRIPT: &str = r#"
import json, sys, numpy as np, faiss
index = faiss.read_index(sys.argv[1] + "/populated.index", faiss.IO_FLAG_ONDISK_SAME_DIR)
index.nprobe = 16
D, I = index.search(np.array(json.loads(open(sys.argv[2]).read()), dtype="float32"), 10)
print(json.dumps({"ids": I.tolist(), "dist": D.tolist(), "ntotal": index.ntotal}))
"#;

/// faiss prints progress on stdout (`resizing ... to N bytes`): the script's JSON is its last line.
fn last_line_json(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn laion_folders_are_served_and_blocks_merge_on_disk_in_bounded_memory() {
    let _machine = share_machine();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (blocks, block_rows) = (10usize, 200_000usize);
    let out = run(
        python().args(["-c", LAION_SCRIPT]).arg(root).args([&blocks.to_string(), &block_rows.to_string(), "64"]),
        true,
    );
    let py = last_line_json(&out.stdout);
    assert_eq!(py["ntotal"].as_u64(), Some((blocks * block_rows) as u64));
    assert_eq!(py["laion_ids"], py["mem_ids"], "Python's on-disk merge answers as its in-memory merge");
    let queries: Vec<Vec<f32>> = serde_json::from_value(py["queries"].clone()).unwrap();

    // back serves the LAION folder: the ids Python faiss finds, with each id's own metadata.
    let paths = root.join("indices.json");
    let laion = json!({"laion": {"indice_folder": root.join("laion"), "columns_to_return": ["url", "caption"]}});
    std::fs::write(&paths, laion.to_string()).unwrap();
    let mut server = BackServer::start(&paths, &[]);
    for (i, q) in queries.iter().enumerate() {
        let results = post_knn(
            &server,
            json!({"embedding_input": q, "num_images": 10, "num_result_ids": 10, "deduplicate": false}),
        );
        let ids: Vec<i64> = results.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        let expected: Vec<i64> = serde_json::from_value(py["laion_ids"][i].clone()).unwrap();
        assert_eq!(ids, expected, "query {i}");
        for r in &results {
            let id = r["id"].as_i64().unwrap();
            assert_eq!(r["caption"], format!("row {id}"));
            assert_eq!(r["url"], format!("http://img/{id}.jpg"));
            assert!(r.get("width").is_none(), "columns_to_return is applied: {r}");
        }
    }
    server.terminate();

    // Our index_combiner on clip-retrieval's input: Python faiss reads it as clip-retrieval's back does and gets the
    // in-memory merge's answers; memory stays bounded though the lists are 528 MB.
    let merged = root.join("ours");
    let out = run(
        cli().args(["index_combiner", "--input_folder"]).arg(root.join("blocks")).arg("--output_folder").arg(&merged),
        true,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let peak_mb: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak RSS: ")?.strip_suffix(" MB")?.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS line: {stdout}"));
    let ivfdata = std::fs::metadata(merged.join("merged_index.ivfdata")).unwrap().len();
    eprintln!(
        "index_combiner over {blocks} x {block_rows} x 64 IVF-Flat: {:.1} MB of lists, peak RSS {peak_mb} MB",
        ivfdata as f64 / 1e6
    );
    assert!(ivfdata as f64 / 1e6 > 500.0, "{ivfdata}");
    assert!(peak_mb < 300.0, "peak RSS {peak_mb} MB");
    let qfile = root.join("queries.json");
    std::fs::write(&qfile, serde_json::to_string(&queries).unwrap()).unwrap();
    let out = run(python().args(["-c", READ_ONDISK_SCRIPT]).arg(&merged).arg(&qfile), true);
    let ours = last_line_json(&out.stdout);
    assert_eq!(ours["ntotal"], py["ntotal"]);
    assert_eq!(ours["ids"], py["mem_ids"]);
    assert_eq!(ours["dist"], py["mem_dist"]);

    // Our parquet_to_arrow writes the rows pyarrow's conversion holds.
    run(
        cli()
            .args(["parquet_to_arrow", "--parquet_folder"])
            .arg(root.join("parquet"))
            .arg("--output_arrow_folder")
            .arg(root.join("arrow"))
            .args(["--columns_to_return", r#"["url", "caption"]"#]),
        true,
    );
    let theirs = clip_index::RowStore::open(&root.join("laion/metadata/0.arrow")).unwrap();
    let ours = clip_index::RowStore::open(&root.join("arrow/0.arrow")).unwrap();
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours.columns(), ["url", "caption"]);
    let ids = [0u64, 199_999, 200_000, 1_999_999];
    assert_eq!(ours.get(&ids, None).unwrap(), theirs.get(&ids, None).unwrap());
}

#[test]
fn append_adds_new_partitions_as_a_build_from_the_same_training_would() {
    let _machine = share_machine();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let mut all = clustered_embeddings(15_100, 64, 100, 0.8, 31);
    let queries = all.split_off(15_000);
    write_embeddings_folder(&p("all"), &all, 3_000);
    // The first three of five partitions, then the other two arrive.
    for sub in ["img_emb", "metadata"] {
        std::fs::create_dir_all(p("grow").join(sub)).unwrap();
    }
    let copy = |n: usize| {
        for (sub, name) in [("img_emb", format!("img_emb_{n}.npy")), ("metadata", format!("metadata_{n}.parquet"))] {
            std::fs::copy(p("all").join(sub).join(&name), p("grow").join(sub).join(&name)).unwrap();
        }
    };
    (0..3).for_each(copy);
    let flags = ["--index_key", "IVF64,SQ8", "--max_index_query_time_ms", "50"];
    build_index(&p("grow"), &p("idx"), &flags);
    copy_dir(&p("idx"), &p("trained"));
    // Nothing new: the folder is unchanged.
    let before = build_index(&p("grow"), &p("idx"), &["--append"]);
    assert_eq!(before["count"], 9_000);
    // A running back (index files memory-mapped) serves the first version while queries keep coming.
    let paths = p("indices.json");
    std::fs::write(&paths, json!({"grow": p("idx")}).to_string()).unwrap();
    let server = BackServer::start(&paths, &["--enable_faiss_memory_mapping", "true"]);
    let new_row = all[12_345].clone();
    let top = |server: &BackServer| post_knn(server, json!({"embedding_input": new_row, "num_images": 1}))[0].clone();
    assert_ne!(top(&server)["id"], 12_345, "not in the first version");
    let version = |server: &BackServer| readyz(server)["indices"]["grow"].as_str().unwrap().to_string();
    let first_version = version(&server);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, url, query) = (stop.clone(), server.url(), queries[0].clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .post(format!("{url}/knn-service"))
                    .body(json!({"embedding_input": query, "num_images": 10}).to_string())
                    .send()
                    .unwrap();
                match r.status().as_u16() {
                    200 => ok += 1,
                    s => failed.push(format!("{s}: {}", r.text().unwrap_or_default())),
                }
            }
            (ok, failed)
        })
    };
    (3..5).for_each(copy);
    let appended = build_index(&p("grow"), &p("idx"), &["--append"]);
    assert_eq!(appended["count"], 15_000);
    let reloaded = reqwest::blocking::Client::new().post(format!("{}/reload", server.url())).send().unwrap();
    assert_eq!(reloaded.status().as_u16(), 200);
    let reloaded: Value = reloaded.json().unwrap();
    assert_eq!(reloaded["indices"]["grow"]["vectors"], 15_000, "{reloaded}");
    assert_eq!(reloaded["indices"]["grow"]["previous"], first_version.as_str());
    assert_ne!(version(&server), first_version, "/readyz shows the new version");
    assert_eq!(reloaded["indices"]["grow"]["version"], version(&server).as_str());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.join().unwrap();
    assert!(ok > 0 && failed.is_empty(), "queries during append and reload: {ok} ok, failed: {failed:?}");
    let found = top(&server);
    assert_eq!(found["id"], 12_345, "the appended rows are served");
    assert_eq!(found["caption"], "row 12345", "with their metadata");
    drop(server);
    let numbers: Vec<u64> =
        appended["partitions"].as_array().unwrap().iter().map(|x| x["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [0, 1, 2, 3, 4]);
    let whole = build_index(&p("all"), &p("whole"), &["--trained_index_folder", p("trained").to_str().unwrap()]);
    assert_eq!(whole["count"], 15_000);
    assert_eq!(
        std::fs::read(p("idx/image_vectors.npy")).unwrap(),
        std::fs::read(p("whole/image_vectors.npy")).unwrap(),
        "the re-rank vectors grew to the whole collection's"
    );
    let mut a = LoadedIndex::open(&p("idx"), Modality::Image, true).unwrap();
    let mut b = LoadedIndex::open(&p("whole"), Modality::Image, true).unwrap();
    for l in [&mut a, &mut b] {
        l.index.set_parameter("nprobe", 8.0).unwrap();
        l.k_factor = 4;
    }
    for q in &queries {
        assert_eq!(a.search(q, 10).unwrap(), b.search(q, 10).unwrap(), "same ids and scores");
    }
    let store = clip_index::RowStore::open(&p("idx/metadata.arrow")).unwrap();
    assert_eq!(store.len(), 15_000);
    assert_eq!(store.get(&[14_999], None).unwrap()[0].as_ref().unwrap()["caption"], "row 14999");
    // A partition that changed under the index is refused.
    write_embeddings_folder(&p("changed"), &all[..8_000], 3_000);
    let out = run(
        cli()
            .arg("index")
            .arg("--embeddings_folder")
            .arg(p("changed"))
            .arg("--index_folder")
            .arg(p("trained"))
            .args(["--append", "--no_progress"]),
        false,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("rebuild instead of appending"), "{err}");
}

fn readyz(server: &BackServer) -> Value {
    reqwest::blocking::get(format!("{}/readyz", server.url())).unwrap().json().unwrap()
}

/// `index --plan` from costs this machine just measured predicts a real build of another size: the same structure,
/// training plus adding time within a factor of two, peak RSS within a factor of two.
#[test]
fn plan_from_measured_costs_predicts_a_real_build() {
    let _alone = MACHINE.write().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let costs = p("costs.json");
    run(
        cli().arg("index").arg("--measure_costs").arg(&costs).args([
            "--count",
            "40000",
            "--dim",
            "64",
            "--nb_cores",
            "2",
        ]),
        true,
    );
    let measured: Value = serde_json::from_slice(&std::fs::read(&costs).unwrap()).unwrap();
    assert!(
        measured["kmeans"].as_f64().unwrap() > 0.0 && measured["measured_on"].as_str().unwrap().contains("threads")
    );
    let (n, budget) = (300_000usize, "8M");
    let common = ["--max_index_memory_usage", budget, "--nb_cores", "2", "--current_memory_available", "2G"];
    let out = run(
        cli().args(["index", "--plan", "--count", &n.to_string(), "--dim", "64", "--costs"]).arg(&costs).args(common),
        true,
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| -> String {
        let line =
            text.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_else(|| panic!("{name}: {text}"));
        line.split_whitespace().next().unwrap().to_string()
    };
    assert!(text.contains(costs.to_str().unwrap()), "names the costs it used: {text}");
    let rows = clustered_embeddings(n, 64, 500, 0.9, 41);
    write_embeddings_folder(&p("emb"), &rows, 100_000);
    let built = build_index(&p("emb"), &p("idx"), &common);
    assert_eq!(field("structure"), built["index_key"].as_str().unwrap(), "{text}");
    let predicted = field("train seconds").parse::<f64>().unwrap() + field("add seconds").parse::<f64>().unwrap();
    let stages = &built["stage_seconds"];
    let actual = stages["train"].as_f64().unwrap() + stages["add"].as_f64().unwrap();
    eprintln!("train+add predicted {predicted:.1} s, measured {actual:.1} s; {text}");
    assert!(
        (0.5..=2.0).contains(&(predicted / actual)),
        "train+add predicted {predicted:.1} s, measured {actual:.1} s\n{text}\n{built}"
    );
    assert!(field("tune seconds").parse::<f64>().unwrap() >= stages["tune"].as_f64().unwrap(), "tuning is bounded");
    let (rss_plan, rss_built) =
        (field("peak rss bytes").parse::<f64>().unwrap(), built["peak_rss_bytes"].as_f64().unwrap());
    assert!((0.5..=2.0).contains(&(rss_plan / rss_built)), "peak RSS predicted {rss_plan}, measured {rss_built}");
    let disk = field("disk bytes").parse::<u64>().unwrap();
    let on_disk = built["index_bytes"].as_u64().unwrap() + built["disk_bytes"].as_u64().unwrap();
    assert!((disk as f64 / on_disk as f64 - 1.0).abs() < 0.2, "disk bytes predicted {disk}, written {on_disk}");
}
