//! Beyond one machine, by hand: a distributed build (`index --train_only`, one `--trained_index_folder
//! --partition_ids` part per slice, `index_combiner`) gives the single build's index, and a front `back` over one
//! shard `back` per part answers as one `back` over the merged folder: same ids, order, similarities and
//! metadata, for text, embeddings and every filter; `/metadata` across shards; a killed shard gives a 503 naming it
//! or, when allowed, the others' answer with a header; clip-retrieval's Python ClipClient against the front.

use clip_index::{LoadedIndex, Modality};
use clip_retrieval_tests::{
    build_index, cli, clustered_embeddings, inference_command, python, repo_root, run, sample_dataset, shipped_model,
    write_embeddings_folder, BackServer,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const PARTS: usize = 3;
const ROWS_PER_PARTITION: usize = 200;

/// Embeddings of 600 rendered samples in three partitions, their single build, and the same built in parts.
struct World {
    emb: PathBuf,
    single: PathBuf,
    parts: Vec<PathBuf>,
    merged: PathBuf,
    filters: PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sharding-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dataset = root.join("dataset");
        sample_dataset(&dataset, (PARTS * ROWS_PER_PARTITION) as u64, 23, "files");
        let emb = root.join("emb");
        let per_partition = ROWS_PER_PARTITION.to_string();
        run(
            &mut inference_command(
                &dataset,
                &emb,
                &["--enable_metadata", "True", "--batch_size", "64", "--write_batch_size", &per_partition],
            ),
            true,
        );
        let flat = ["--index_key", "Flat"];
        let single = root.join("single");
        build_index(&emb, &single, &flat);
        let trained = root.join("trained");
        build_index(&emb, &trained, &[&flat[..], &["--train_only"]].concat());
        let parts: Vec<PathBuf> = (0..PARTS)
            .map(|i| {
                let part = root.join(format!("part-{i}"));
                let t = trained.to_str().unwrap();
                build_index(&emb, &part, &["--trained_index_folder", t, "--partition_ids", &i.to_string()]);
                part
            })
            .collect();
        let merged = root.join("merged");
        let inputs: Vec<&str> = parts.iter().map(|p| p.to_str().unwrap()).collect();
        run(cli().args(["index_combiner", "--input_folders", &inputs.join(","), "--output_folder"]).arg(&merged), true);
        let filters = root.join("filters");
        run(python().arg(repo_root().join("tests/python/back_filters.py")).arg(&emb).arg(&filters), true);
        World { emb, single, parts, merged, filters }
    })
}

fn image_rows(emb: &Path) -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    for p in 0..PARTS {
        let bytes = std::fs::read(emb.join(format!("img_emb/img_emb_{p}.npy"))).unwrap();
        let m = clip_data::npy::read_matrix(&bytes, "img_emb").unwrap();
        rows.extend(m.data.chunks(m.cols).map(<[f32]>::to_vec));
    }
    rows
}

#[test]
fn parts_from_one_training_merge_into_the_single_build() {
    let w = world();
    // Flat, on the rendered samples: the parts' reports and row stores, then every search, equal the single build.
    let report: Value = serde_json::from_slice(&std::fs::read(w.parts[1].join("image.json")).unwrap()).unwrap();
    assert_eq!(report["count"], ROWS_PER_PARTITION);
    assert_eq!(report["partitions"][0]["number"], 1, "part 1 holds partition 1 only");
    let caption = |folder: &Path, id: u64| {
        let store = clip_index::RowStore::open(&folder.join("metadata.arrow")).unwrap();
        store.get(&[id], None).unwrap()[0].as_ref().unwrap()["caption"].clone()
    };
    assert_eq!(caption(&w.parts[2], 0), caption(&w.single, 2 * ROWS_PER_PARTITION as u64), "part ids start at 0");
    let rows = image_rows(&w.emb);
    for modality in [Modality::Image, Modality::Text] {
        let single = LoadedIndex::open(&w.single, modality, false).unwrap();
        let merged = LoadedIndex::open(&w.merged, modality, false).unwrap();
        assert_eq!(merged.len(), rows.len() as u64);
        for q in rows.iter().step_by(13) {
            assert_eq!(single.search(q, 50).unwrap(), merged.search(q, 50).unwrap(), "{modality:?}");
        }
    }

    // IVF: the trained-only stage trains exactly as the single build does (same sample, same seed), and the parts
    // built from it, merged, search as the single build.
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let mut all = clustered_embeddings(12_050, 64, 80, 0.8, 7);
    let queries = all.split_off(12_000);
    write_embeddings_folder(&p("emb"), &all, 3_000);
    let ivf = ["--index_key", "IVF64,Flat", "--max_index_query_time_ms", "50"];
    build_index(&p("emb"), &p("single"), &ivf);
    let trained = build_index(&p("emb"), &p("trained"), &[&ivf[..], &["--train_only"]].concat());
    assert_eq!(trained["count"], 0, "trained, empty");
    let t = p("trained");
    for (part, ids) in [("a", "0-1"), ("b", "2,3")] {
        let part =
            build_index(&p("emb"), &p(part), &["--trained_index_folder", t.to_str().unwrap(), "--partition_ids", ids]);
        assert_eq!(part["count"], 6_000);
    }
    let inputs = format!("{},{}", p("a").display(), p("b").display());
    run(cli().args(["index_combiner", "--input_folders", &inputs, "--output_folder"]).arg(p("merged")), true);
    let mut single = LoadedIndex::open(&p("single"), Modality::Image, false).unwrap();
    let mut merged = LoadedIndex::open(&p("merged"), Modality::Image, false).unwrap();
    for l in [&mut single, &mut merged] {
        l.index.set_parameter("nprobe", 6.0).unwrap();
        l.k_factor = 4;
    }
    for q in &queries {
        assert_eq!(single.search(q, 10).unwrap(), merged.search(q, 10).unwrap(), "same ids and scores");
    }

    // A slice the folder does not have is refused by name.
    let out = run(
        cli().arg("index").arg("--embeddings_folder").arg(p("emb")).arg("--index_folder").arg(p("bad")).args([
            "--trained_index_folder",
            t.to_str().unwrap(),
            "--partition_ids",
            "3-5",
            "--no_progress",
        ]),
        false,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("partition(s) 4, 5"), "{err}");
}

fn indices_paths(dir: &Path, name: &str, entry: Value) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, json!({ "laion": entry }).to_string()).unwrap();
    path
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

fn post(server: &BackServer, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = client().post(format!("{}{path}", server.url())).body(body.to_string()).send().unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.json().unwrap())
}

/// Equal answers: same ids in the same order, similarities within 1e-6, every other field equal.
fn assert_same_answer(front: &Value, merged: &Value, query: &Value) {
    let (f, m) = (front.as_array().unwrap(), merged.as_array().unwrap());
    assert_eq!(f.len(), m.len(), "{query}");
    for (a, b) in f.iter().zip(m) {
        assert_eq!(a["id"], b["id"], "{query}");
        let (sa, sb) = (a["similarity"].as_f64().unwrap(), b["similarity"].as_f64().unwrap());
        assert!((sa - sb).abs() <= 1e-6, "{query}: similarity {sa} vs {sb}");
        let strip = |v: &Value| {
            let mut o = v.as_object().unwrap().clone();
            o.shift_remove("similarity");
            o
        };
        assert_eq!(strip(a), strip(b), "{query}");
    }
}

/// A hundred queries: text and embeddings, both modalities, with and without dedup, violence, safety, aesthetic.
fn queries(rows: &[Vec<f32>]) -> Vec<Value> {
    let colours = ["red", "green", "blue", "yellow", "purple"];
    let shapes = ["circle", "square", "triangle", "star"];
    (0..100)
        .map(|i| {
            let mut q = if i % 2 == 0 {
                json!({"text": format!("a {} {}", colours[i % 5], shapes[(i / 5) % 4])})
            } else {
                json!({"embedding_input": rows[(i * 37) % rows.len()]})
            };
            let o = q.as_object_mut().unwrap();
            o.insert("indice_name".into(), json!("laion"));
            o.insert("num_images".into(), json!([5, 20, 40][i % 3]));
            o.insert("num_result_ids".into(), json!([20, 100, 300][i % 3]));
            o.insert("deduplicate".into(), json!(i % 4 < 2));
            o.insert("use_violence_detector".into(), json!(i % 7 == 0));
            o.insert("use_safety_model".into(), json!(i % 5 == 1));
            if i % 6 == 3 {
                o.insert("aesthetic_score".into(), json!(9));
                o.insert("aesthetic_weight".into(), json!(0.5));
            }
            if i % 10 == 9 {
                o.insert("modality".into(), json!("text"));
            }
            q
        })
        .collect()
}

#[test]
fn a_front_over_three_shards_answers_as_one_back_over_the_merged_folder() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let columns = json!(["image_path", "caption", "color", "shape"]);
    let model = shipped_model();
    let filters = json!({
        "violence_detector": w.filters.join("violence.npy"), "safety_model": w.filters.join("safety.onnx"),
        "aesthetic_embeddings": w.filters.join("aesthetic"),
    });
    let with_filters = |mut entry: Value| {
        entry.as_object_mut().unwrap().extend(filters.as_object().unwrap().clone());
        entry
    };
    let mut shards: Vec<BackServer> = w
        .parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let entry = json!({"indice_folder": part, "columns_to_return": columns, "clip_model": model});
            BackServer::start(&indices_paths(dir.path(), &format!("shard-{i}"), entry), &[])
        })
        .collect();
    let merged_entry = json!({"indice_folder": w.merged, "columns_to_return": columns, "clip_model": model});
    let merged = BackServer::start(&indices_paths(dir.path(), "merged", with_filters(merged_entry)), &[]);
    let urls: Vec<String> = shards.iter().map(BackServer::url).collect();
    let front_entry = json!({"shards": urls, "columns_to_return": columns, "clip_model": model});
    let front = BackServer::start(&indices_paths(dir.path(), "front", with_filters(front_entry)), &[]);

    // A shard says how many rows it holds; the front is ready and numbers them in order.
    let (code, body) = clip_retrieval_tests::http_get(shards[1].port, "/readyz").unwrap();
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["rows"]["laion"], ROWS_PER_PARTITION);
    let (code, body) = clip_retrieval_tests::http_get(front.port, "/readyz").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["rows"]["laion"], PARTS * ROWS_PER_PARTITION);

    let rows = image_rows(&w.emb);
    let mut from_later_shards = 0;
    for q in queries(&rows) {
        let (fs, fh, fa) = post(&front, "/knn-service", &q);
        let (ms, mh, ma) = post(&merged, "/knn-service", &q);
        assert_eq!((fs, ms), (200, 200), "{q}: {fa} / {ma}");
        assert_same_answer(&fa, &ma, &q);
        assert_eq!(fh.get("x-clip-retrieval-skipped"), mh.get("x-clip-retrieval-skipped"), "{q}");
        from_later_shards +=
            fa.as_array().unwrap().iter().filter(|r| r["id"].as_i64().unwrap() >= ROWS_PER_PARTITION as i64).count();
    }
    assert!(from_later_shards > 0, "results come from every shard, with shifted ids");

    // /metadata across shards: the rows of ids spread over all three, in the order asked.
    let ids = json!({"indice_name": "laion", "ids": [599, 0, 200, 399, 17, 200, 450]});
    let (fs, _, fm) = post(&front, "/metadata", &ids);
    let (_, _, mm) = post(&merged, "/metadata", &ids);
    assert_eq!(fs, 200, "{fm}");
    assert_eq!(fm, mm);
    let (status, _, err) = post(&front, "/metadata", &json!({"indice_name": "laion", "ids": [600]}));
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("600 rows"), "{err}");

    // clip-retrieval's ClipClient cannot tell the front from the merged back.
    let script = r#"
import importlib.util, json, sys
spec = importlib.util.find_spec("clip_retrieval")
path = spec.submodule_search_locations[0] + "/clip_client.py"
module_spec = importlib.util.spec_from_file_location("clip_client", path)
clip_client = importlib.util.module_from_spec(module_spec)
module_spec.loader.exec_module(clip_client)
answers = [clip_client.ClipClient(url=u + "/knn-service", indice_name="laion", num_images=100).query(text="a red star")
           for u in sys.argv[1:]]
print(json.dumps(answers))
"#;
    let out = run(python().args(["-c", script, &front.url(), &merged.url()]), true);
    let answers: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!answers[0].as_array().unwrap().is_empty());
    assert_same_answer(&answers[0], &answers[1], &json!("ClipClient"));

    // A killed shard: a 503 naming it, or with allow_partial_results the other shards' answer and a header.
    let killed = urls[1].clone();
    shards[1].terminate();
    let q = json!({"text": "a blue circle", "indice_name": "laion", "num_images": 30, "num_result_ids": 100});
    let (status, _, err) = post(&front, "/knn-service", &q);
    assert_eq!(status, 503, "{err}");
    assert!(err["error"].as_str().unwrap().contains(&killed), "{err}");
    let mut partial = q.clone();
    partial["allow_partial_results"] = json!(true);
    let (status, headers, answer) = post(&front, "/knn-service", &partial);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(headers["x-clip-retrieval-partial"], killed.as_str());
    let found: Vec<i64> = answer.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    let shard_1 = ROWS_PER_PARTITION as i64..2 * ROWS_PER_PARTITION as i64;
    assert!(!found.is_empty() && found.iter().all(|id| !shard_1.contains(id)), "{found:?}");
    let (_, _, whole) = post(&merged, "/knn-service", &q);
    let expected: Vec<i64> = whole
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .filter(|id| !shard_1.contains(id))
        .collect();
    assert_eq!(found[..expected.len().min(found.len())], expected[..expected.len().min(found.len())]);
    let (code, body) = clip_retrieval_tests::http_get(front.port, "/readyz").unwrap();
    assert_eq!(code, 503, "not ready while a shard is down");
    assert!(body.contains(&killed), "{body}");
    let metrics = client().get(format!("{}/metrics", front.url())).send().unwrap().text().unwrap();
    let errors = format!(
        "clip_retrieval_shard_requests_total{{call=\"knn\",index=\"laion\",outcome=\"error\",shard=\"{killed}\"}}"
    );
    assert!(metrics.contains(&errors), "{metrics}");
    assert!(metrics.contains("clip_retrieval_partial_answers_total{index=\"laion\"} 1"), "{metrics}");
    assert!(metrics.contains("clip_retrieval_shard_request_duration_seconds_bucket"), "{metrics}");
    drop(front);
    drop(merged);
    drop(shards);
}
