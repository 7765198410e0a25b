//! The fast tier of the HTTP layer: the real router (every route, limit and error mapping) driven in-process with
//! `tower::ServiceExt::oneshot`, no socket, over a tiny Flat index built in this process from 60 synthetic samples
//! with the shipped model (real ONNX Runtime, real faiss). Seconds, where tests/tests/back.rs spawns the binary.

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use clip_data::dataset_writer::{DatasetWriter, OwnedSample};
use clip_data::{InputFormat, Location, Storage};
use clip_search::{EngineOptions, IndexOptions, SearchEngine};
use clip_server::{router, AppState, HttpOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

fn shipped_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-clip")
}

/// Dataset -> embeddings -> index, once per test process; the folder lives as long as the process.
fn index_folder() -> PathBuf {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        build_index(root.path());
        root
    });
    root.path().join("index")
}

fn build_index(root: &Path) {
    let dataset = root.join("dataset");
    let mut writer = DatasetWriter::files(&Storage::from_env(), Location::Local(dataset.clone()));
    for i in 0..60 {
        let s = clip_synthetic::render(3, i);
        let (caption, metadata) = (s.caption.clone(), s.metadata());
        writer
            .write(OwnedSample { key: s.key.clone(), image: s.jpeg(), image_ext: "jpg".into(), caption, metadata })
            .unwrap();
    }
    writer.finish().unwrap();
    let emb = root.join("emb");
    let opts = clip_inference::InferenceOptions {
        input_dataset: dataset.display().to_string(),
        output_folder: emb.display().to_string(),
        input_format: InputFormat::Files,
        batch_size: 32,
        num_prepro_workers: 2,
        enable_text: true,
        enable_image: true,
        enable_metadata: true,
        write_batch_size: 1_000_000,
        subset_size: None,
        wds_image_key: "jpg".into(),
        wds_caption_key: "txt".into(),
        output_partition_count: None,
        wds_number_file_per_input_file: 10_000,
        partition_ids: None,
        dtype: clip_data::npy::NpyDtype::F16,
        max_sample_bytes: clip_data::DEFAULT_MAX_SAMPLE_BYTES,
        overwrite: false,
    };
    let model = clip_model::ClipModel::load(&shipped_model(), Default::default()).unwrap();
    let (plan, count) = clip_inference::plan(&Storage::from_env(), &opts).unwrap();
    clip_inference::run_plan(&Storage::from_env(), &model, &opts, &plan, count, &clip_inference::NoProgress).unwrap();
    let build = clip_index::FolderBuild {
        embeddings_folder: Location::Local(emb),
        index_folder: Location::Local(root.join("index")),
        image_subfolder: "img_emb".into(),
        text_subfolder: "text_emb".into(),
        modalities: vec![clip_index::Modality::Image, clip_index::Modality::Text],
        copy_metadata: false,
        options: clip_index::BuildOptions { threads: 2, ..Default::default() },
        trained_index_folder: None,
        train_only: false,
        partition_ids: None,
        append: false,
    };
    clip_index::build_folder(&Storage::from_env(), &build, &clip_index::NoProgress).unwrap();
}

fn engine() -> Arc<SearchEngine> {
    static ENGINE: OnceLock<Arc<SearchEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let options = IndexOptions {
                indice_folder: index_folder().display().to_string(),
                clip_model: Some(shipped_model().display().to_string()),
                ..Default::default()
            };
            let engine_options = EngineOptions { max_num_result_ids: 50, ..Default::default() };
            Arc::new(
                SearchEngine::load(&Storage::from_env(), &[("demo".to_string(), options)], engine_options).unwrap(),
            )
        })
        .clone()
}

fn app(http: HttpOptions, loaded: bool) -> axum::Router {
    let state = Arc::new(AppState::new(http));
    if loaded {
        state.set_engine(engine());
    }
    router(state)
}

async fn call(app: &axum::Router, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder().method(method).uri(path).body(Body::from(body.to_string())).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 64 << 20).await.unwrap();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_clip_retrieval_does() {
    let app = app(HttpOptions::default(), true);
    assert_eq!(call(&app, "GET", "/indices-list", "").await, (StatusCode::OK, json!(["demo"])));
    let query = r#"{"text": "a red circle", "num_images": 5, "indice_name": "demo"}"#;
    let (status, results) = call(&app, "POST", "/knn-service", query).await;
    assert_eq!(status, StatusCode::OK, "{results}");
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 5);
    assert!(results.windows(2).all(|w| w[0]["similarity"].as_f64() >= w[1]["similarity"].as_f64()), "best first");
    assert!(results[0]["caption"].as_str().unwrap().contains("circle"), "{}", results[0]);
    let (status, rows) = call(&app, "POST", "/metadata", r#"{"indice_name": "demo", "ids": [0, 1]}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows[1]["id"], 1);
    assert!(rows[0]["metadata"]["caption"].is_string(), "{rows}");
    let (_, repeated) = call(&app, "POST", "/metadata", r#"{"indice_name": "demo", "ids": [3, 0, 3, 3]}"#).await;
    let ids: Vec<i64> = repeated.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [3, 0], "repeated ids are answered once, in first-seen order");
    let (status, config) = call(&app, "GET", "/config.json", "").await;
    assert_eq!((status, config["urlColumn"].clone()), (StatusCode::OK, json!("url")));
    assert_eq!(call(&app, "GET", "/healthz", "").await, (StatusCode::OK, json!("ok")));
    assert_eq!(call(&app, "GET", "/readyz", "").await.0, StatusCode::OK);
    let (status, metrics) = call(&app, "GET", "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap();
    let counted = r#"clip_retrieval_http_requests_total{endpoint="/knn-service",status="200"} 1"#;
    assert!(metrics.contains(counted), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_json_4xx_naming_the_problem() {
    let app = app(HttpOptions { max_body_bytes: 4096, ..Default::default() }, true);
    let too_many_ids = format!(r#"{{"ids": [{}]}}"#, vec!["1"; 51].join(","));
    let too_big = format!(r#"{{"text": "{}"}}"#, "a".repeat(5000));
    let cases = [
        ("POST", "/knn-service", "not json", StatusCode::BAD_REQUEST, "JSON"),
        ("POST", "/knn-service", r#"{"text": "x", "indice_name": "nope"}"#, StatusCode::BAD_REQUEST, "nope"),
        ("POST", "/knn-service", r#"{"image": "%%%"}"#, StatusCode::BAD_REQUEST, "image"),
        ("POST", "/knn-service", r#"{"embedding_input": [1, 2]}"#, StatusCode::BAD_REQUEST, "embedding_input"),
        ("POST", "/metadata", too_many_ids.as_str(), StatusCode::BAD_REQUEST, "51"),
        ("POST", "/knn-service", too_big.as_str(), StatusCode::PAYLOAD_TOO_LARGE, ""),
        ("GET", "/no-such-path", "", StatusCode::NOT_FOUND, "no such endpoint"),
    ];
    for (method, path, body, expected, message) in cases {
        let (status, answer) = call(&app, method, path, body).await;
        assert_eq!(status, expected, "{path} {body:.60}: {answer}");
        if !message.is_empty() {
            let error = answer["error"].as_str().unwrap_or_else(|| panic!("{path}: no JSON error in {answer}"));
            assert!(error.contains(message), "{path}: {error:?} should contain {message:?}");
        }
    }
}

#[tokio::test]
async fn queries_wait_for_the_indices_with_503() {
    let app = app(HttpOptions::default(), false);
    let (status, answer) = call(&app, "POST", "/knn-service", r#"{"text": "x"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer["error"].as_str().unwrap().contains("loading"));
    let (status, ready) = call(&app, "GET", "/readyz", "").await;
    assert_eq!((status, ready["ready"].clone()), (StatusCode::SERVICE_UNAVAILABLE, json!(false)));
    assert_eq!(call(&app, "GET", "/healthz", "").await.0, StatusCode::OK, "alive while loading");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_the_folder_again_and_waits_for_the_first_load() {
    let (status, body) = call(&app(HttpOptions::default(), false), "POST", "/reload", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let app = app(HttpOptions::default(), true);
    let (_, ready) = call(&app, "GET", "/readyz", "").await;
    let (status, reloaded) = call(&app, "POST", "/reload", "").await;
    assert_eq!(status, StatusCode::OK, "{reloaded}");
    let demo = &reloaded["indices"]["demo"];
    assert_eq!(demo["previous"], ready["indices"]["demo"], "{reloaded}");
    assert_eq!(demo["version"], demo["previous"], "an unchanged folder keeps its version");
    assert!(demo["vectors"].as_u64().unwrap() > 0);
    let (status, results) = call(&app, "POST", "/knn-service", r#"{"text": "a red circle", "num_images": 3}"#).await;
    assert_eq!((status, results.as_array().map(Vec::len)), (StatusCode::OK, Some(3)), "served after the swap");
    let (_, metrics) = call(&app, "GET", "/metrics", "").await;
    assert!(metrics.as_str().unwrap().contains(r#"clip_retrieval_reloads_total{outcome="reloaded"} 1"#));
}

/// An index whose model runs at int8 (`"precision": "int8"`), in an engine of its own so that the text cache's
/// counts are this test's alone: a repeated query is a hit, answered with the same results, and int8 answers as
/// fp32 does on this data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_int8_index_answers_like_fp32_and_repeated_texts_come_from_the_cache() {
    let entry = json!({"int8demo": {
        "indice_folder": index_folder().display().to_string(),
        "clip_model": shipped_model().display().to_string(),
        "precision": "int8",
    }});
    let indices = clip_search::parse_indices_paths(&entry.to_string(), &IndexOptions::default()).unwrap();
    assert_eq!(indices[0].1.precision, clip_model::TowerPrecisions::both(clip_model::Precision::Int8));
    let engine = SearchEngine::load(&Storage::from_env(), &indices, EngineOptions::default()).unwrap();
    let state = Arc::new(AppState::new(HttpOptions::default()));
    state.set_engine(Arc::new(engine));
    let int8 = router(state);
    let fp32 = app(HttpOptions::default(), true);
    let ids = |v: &Value| -> Vec<i64> { v.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect() };
    let query =
        |index: &str| format!(r#"{{"text": "a large blue square", "num_images": 5, "indice_name": "{index}"}}"#);
    let (status, first) = call(&int8, "POST", "/knn-service", &query("int8demo")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (_, again) = call(&int8, "POST", "/knn-service", &query("int8demo")).await;
    assert_eq!(ids(&first), ids(&again));
    let (_, reference) = call(&fp32, "POST", "/knn-service", &query("demo")).await;
    let shared = ids(&first).iter().filter(|i| ids(&reference).contains(i)).count();
    assert!(shared >= 4, "int8 top-5 {:?} vs fp32 {:?}", ids(&first), ids(&reference));
    let (_, metrics) = call(&int8, "GET", "/metrics", "").await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains(r#"clip_retrieval_text_cache{index="int8demo",outcome="hit"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"clip_retrieval_text_cache{index="int8demo",outcome="miss"} 1"#), "{metrics}");
}

#[test]
fn an_unknown_precision_in_the_indices_file_is_refused_by_name() {
    let err =
        clip_search::parse_indices_paths(r#"{"x": {"indice_folder": "i", "precision": "int4"}}"#, &Default::default())
            .unwrap_err();
    assert!(err.contains(r#"index "x", key "precision""#) && err.contains("int4"), "{err}");
}
