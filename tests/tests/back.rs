//! `clip-retrieval back` as users meet it: a real server on 127.0.0.1 over an index built by `inference` + `index`
//! from the shipped model; clip-retrieval's JSON for every endpoint and option, its post-processing rules, every
//! bad input refused with a JSON 4xx, image_url rules, metrics, graceful shutdown, and clip-retrieval's own
//! Python ClipClient querying ours unchanged.

use base64::Engine;
use clip_retrieval_tests::{cli, python, repo_root, run, sample_dataset, shipped_model, BackServer};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A dataset, its embeddings, an index and filter files, built once per test run.
struct Fixture {
    dataset: PathBuf,
    emb: PathBuf,
    index: PathBuf,
    filters: PathBuf,
    /// Image embeddings (f32) by id, as stored.
    embeddings: Vec<Vec<f32>>,
    /// Ids the fixture's violence prompts flag.
    violent: HashSet<i64>,
    /// Ids the fixture's safety model flags.
    unsafe_ids: HashSet<i64>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // One folder per test process (concurrent `cargo test` runs share the target dir); folders of processes
        // that are gone are removed.
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("back-fixture-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let root = tmp.join(format!("back-fixture-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dataset = root.join("dataset");
        sample_dataset(&dataset, 400, 11, "files");
        let emb = root.join("emb");
        run(
            cli()
                .args(["inference", "--input_dataset"])
                .arg(&dataset)
                .arg("--output_folder")
                .arg(&emb)
                .arg("--clip_model")
                .arg(shipped_model())
                .args(["--no_progress", "--batch_size", "64", "--enable_metadata", "True"]),
            true,
        );
        let index = root.join("index");
        run(
            cli()
                .arg("index")
                .arg("--embeddings_folder")
                .arg(&emb)
                .arg("--index_folder")
                .arg(&index)
                .arg("--no_progress"),
            true,
        );
        let filters = root.join("filters");
        let script = repo_root().join("tests/python/back_filters.py");
        let out = run(python().arg(script).arg(&emb).arg(&filters), true);
        let facts: Value = serde_json::from_slice(&out.stdout).expect("filter facts JSON");
        let ids = |k: &str| facts[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect::<HashSet<_>>();
        let npy = std::fs::read(emb.join("img_emb/img_emb_0.npy")).unwrap();
        let m = clip_data::npy::read_matrix(&npy, "img_emb_0.npy").unwrap();
        let embeddings = m.data.chunks(m.cols).map(<[f32]>::to_vec).collect();
        Fixture { dataset, emb, index, filters, embeddings, violent: ids("violent"), unsafe_ids: ids("unsafe") }
    })
}

/// Writes an indices_paths.json into `dir`.
fn indices_paths(dir: &Path, config: Value) -> PathBuf {
    let path = dir.join("indices_paths.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    path
}

/// The plain configuration: index "demo" (all columns the tests look at) and "small" (captions only).
fn plain_server(dir: &Path, extra: &[&str]) -> BackServer {
    let f = fixture();
    let paths = indices_paths(
        dir,
        json!({
            "demo": {"indice_folder": f.index, "columns_to_return": ["image_path", "caption", "color", "shape"],
                     "clip_model": shipped_model()},
            "small": {"indice_folder": f.index, "columns_to_return": ["caption"]},
        }),
    );
    BackServer::start(&paths, extra)
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// POSTs raw bytes without a Content-Type header, as ClipClient does.
fn post(server: &BackServer, path: &str, body: impl Into<Vec<u8>>) -> Reply {
    let r = client().post(format!("{}{path}", server.url())).body(body.into()).send().unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} answered non-JSON ({status}): {e}: {text}"));
    Reply { status, headers, body }
}

fn knn(server: &BackServer, query: Value) -> Vec<Value> {
    let r = post(server, "/knn-service", query.to_string());
    assert_eq!(r.status, 200, "{query}: {}", r.body);
    r.body.as_array().unwrap().clone()
}

fn ids(results: &[Value]) -> Vec<i64> {
    results.iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sample_image(i: usize) -> PathBuf {
    fixture().dataset.join(format!("{i:09}.jpg"))
}

#[test]
fn knn_service_and_metadata_answer_like_clip_retrieval() {
    let dir = tempfile::tempdir().unwrap();
    let server = plain_server(dir.path(), &[]);
    let list: Value = client().get(format!("{}/indices-list", server.url())).send().unwrap().json().unwrap();
    assert_eq!(list, json!(["demo", "small"]));

    // Text query: best first, first num_images with metadata and the image, the rest ids only.
    let results = knn(
        &server,
        json!({"text": "a red circle", "modality": "image", "num_images": 5,
                                      "num_result_ids": 20, "indice_name": "demo"}),
    );
    assert_eq!(results.len(), 20);
    let sims: Vec<f64> = results.iter().map(|r| r["similarity"].as_f64().unwrap()).collect();
    assert!(sims.windows(2).all(|w| w[0] >= w[1]), "{sims:?}");
    for r in &results[..3] {
        assert_eq!((r["color"].as_str(), r["shape"].as_str()), (Some("red"), Some("circle")), "{r}");
    }
    for r in &results[..5] {
        let path = r["image_path"].as_str().unwrap();
        let image = base64::engine::general_purpose::STANDARD.decode(r["image"].as_str().unwrap()).unwrap();
        assert_eq!(image, std::fs::read(path).unwrap(), "image of {path} is the JPEG file");
        assert!(r["caption"].as_str().unwrap().contains("circle"));
    }
    for r in &results[5..] {
        let keys: HashSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, HashSet::from(["id", "similarity"]), "{r}");
    }

    // Columns follow the index's columns_to_return.
    let small = knn(&server, json!({"text": "a red circle", "num_images": 2, "indice_name": "small"}));
    let keys: HashSet<&str> = small[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["caption", "id", "similarity"]));

    // The text index answers text modality.
    let texts =
        knn(&server, json!({"text": "a red circle", "modality": "text", "num_images": 3, "indice_name": "demo"}));
    assert!(texts[0]["caption"].as_str().unwrap().contains("red circle"), "{}", texts[0]);

    // Image query (base64) and embedding_input find sample 17 itself.
    let by_image = knn(&server, json!({"image": b64(&std::fs::read(sample_image(17)).unwrap()), "num_images": 3}));
    assert!(by_image[0]["similarity"].as_f64().unwrap() > 0.999, "{}", by_image[0]);
    assert!(ids(&by_image).contains(&17), "{:?}", ids(&by_image));
    let e17: Vec<f64> = fixture().embeddings[17].iter().map(|&x| x as f64).collect();
    let by_embedding = knn(&server, json!({"embedding_input": e17, "num_images": 1, "num_result_ids": 1}));
    assert_eq!(ids(&by_embedding), vec![17]);
    assert!((by_embedding[0]["similarity"].as_f64().unwrap() - 1.0).abs() < 0.01);

    // /metadata returns the same rows as the knn results.
    let wanted = ids(&results[..5]);
    let meta = post(&server, "/metadata", json!({"indice_name": "demo", "ids": wanted}).to_string());
    assert_eq!(meta.status, 200);
    for (m, r) in meta.body.as_array().unwrap().iter().zip(&results) {
        assert_eq!(m["id"], r["id"]);
        for k in ["image_path", "caption", "color", "shape", "image"] {
            assert_eq!(m["metadata"][k], r[k], "{k}");
        }
    }

    // A ClipClient-shaped body: no Content-Type, nulls, "" numbers, extra fields; CORS for clip-front.
    let body = json!({"text": "a red circle", "image": null, "image_url": null, "embedding_input": null,
        "deduplicate": true, "use_safety_model": false, "use_violence_detector": false, "indice_name": "demo",
        "use_mclip": false, "aesthetic_score": "", "aesthetic_weight": "", "modality": "image", "num_images": 4,
        "num_result_ids": 4, "verbose": false});
    let r = client()
        .post(format!("{}/knn-service", server.url()))
        .header("Origin", "http://example.com")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    // Dedup may drop some of the 4 (the data has near-duplicates).
    let n = r.json::<Value>().unwrap().as_array().unwrap().len();
    assert!((1..=4).contains(&n), "{n}");
}

#[test]
fn post_processing_follows_clip_retrieval_rules() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let paths = indices_paths(
        dir.path(),
        json!({
            "filtered": {"indice_folder": f.index, "columns_to_return": ["caption", "color", "shape"],
                         "violence_detector": f.filters.join("violence.npy"),
                         "safety_model": f.filters.join("safety.onnx"),
                         "aesthetic_embeddings": f.filters.join("aesthetic")},
            "bare": {"indice_folder": f.index, "columns_to_return": ["caption", "color", "shape"],
                     "provide_aesthetic_embeddings": false},
        }),
    );
    let server = BackServer::start(&paths, &[]);
    let query = |extra: Value| {
        let mut q = json!({"text": "a red circle", "num_images": 60, "num_result_ids": 60, "indice_name": "filtered"});
        q.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        knn(&server, q)
    };
    let near_pairs = |results: &[Value]| {
        let ids = ids(results);
        let mut n = 0;
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                n += (cosine(&f.embeddings[*a as usize], &f.embeddings[*b as usize]) >= 0.94) as usize;
            }
        }
        n
    };

    // Dedup: near-duplicates (>= 0.94) exist without it and none remain with it; the best result stays.
    let plain = query(json!({"deduplicate": false}));
    let deduped = query(json!({"deduplicate": true}));
    assert!(near_pairs(&plain) > 0, "the data has near-duplicates to remove");
    assert_eq!(near_pairs(&deduped), 0);
    assert!(deduped.len() < plain.len() && !deduped.is_empty());
    assert_eq!(deduped[0]["id"], plain[0]["id"]);

    // Violence: the prompts flag red images; a red query returns some without the detector, none with it.
    let flagged = |results: &[Value], set: &HashSet<i64>| ids(results).iter().filter(|i| set.contains(i)).count();
    let violent = query(json!({"use_violence_detector": true}));
    assert!(flagged(&plain, &f.violent) > 0);
    assert_eq!(flagged(&violent, &f.violent), 0);
    assert!(!violent.is_empty());

    // Safety: the ONNX classifier flags blue images.
    let blue = |extra: Value| {
        let mut q = json!({"text": "a blue square", "num_images": 60, "indice_name": "filtered"});
        q.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        knn(&server, q)
    };
    assert!(flagged(&blue(json!({})), &f.unsafe_ids) > 0);
    let safe = blue(json!({"use_safety_model": true}));
    assert_eq!(flagged(&safe, &f.unsafe_ids), 0);
    assert!(!safe.is_empty());

    // Aesthetic: rating 9 is the green-triangle direction; a strong weight pulls a red query there.
    assert_eq!(plain[0]["color"], "red");
    let shifted = query(json!({"aesthetic_score": 9, "aesthetic_weight": 5.0}));
    assert_eq!((shifted[0]["color"].as_str(), shifted[0]["shape"].as_str()), (Some("green"), Some("triangle")));
    let as_strings = query(json!({"aesthetic_score": "9", "aesthetic_weight": "5"}));
    assert_eq!(ids(&as_strings), ids(&shifted));

    // An index without filters serves the request without them and says so.
    let r = post(
        &server,
        "/knn-service",
        json!({"text": "a red circle", "indice_name": "bare", "num_images": 60, "use_safety_model": true,
               "use_violence_detector": true, "aesthetic_score": 9, "aesthetic_weight": 0.5})
        .to_string(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.headers[clip_server_header()], "aesthetic_score,use_safety_model,use_violence_detector");
    assert_eq!(ids(r.body.as_array().unwrap()), ids(&plain));
    let metrics = client().get(format!("{}/metrics", server.url())).send().unwrap().text().unwrap();
    assert!(metrics.contains("clip_retrieval_skipped_options_total{option=\"use_safety_model\"} 1"), "{metrics}");
}

fn clip_server_header() -> &'static str {
    "x-clip-retrieval-skipped"
}

#[test]
fn bad_inputs_get_json_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    // No UI folder: with one, unknown paths fall back to the page (it routes on the client).
    let no_ui = dir.path().join("no-ui").display().to_string();
    let server = plain_server(
        dir.path(),
        &["--max_num_images", "7", "--max_num_result_ids", "30", "--max_body_size", "64K", "--front_dist", &no_ui],
    );
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "body: not valid JSON"),
        (b"[1, 2]".to_vec(), 400, "expected a JSON object"),
        (b"{}".to_vec(), 400, "one of text, image, image_url or embedding_input"),
        (json!({"image": "!!!"}).to_string().into(), 400, "image: not valid base64"),
        (json!({"image": b64(b"hello")}).to_string().into(), 400, "image: cannot decode image"),
        (json!({"embedding_input": [1.0, 2.0, 3.0]}).to_string().into(), 400, "64-dimensional"),
        (json!({"embedding_input": [1.0, "x"]}).to_string().into(), 400, "embedding_input: value 1"),
        (
            json!({"text": "x", "indice_name": "nope"}).to_string().into(),
            400,
            "\"nope\" is not loaded (loaded: demo, small)",
        ),
        (json!({"text": "x", "modality": "audio"}).to_string().into(), 400, "modality"),
        (json!({"text": "x", "aesthetic_score": "high"}).to_string().into(), 400, "aesthetic_score"),
        (json!({"text": "x", "num_images": -3}).to_string().into(), 400, "num_images"),
        (json!({"text": "x", "deduplicate": [1]}).to_string().into(), 400, "deduplicate"),
        (json!({"image_url": "http://127.0.0.1:9/x.jpg"}).to_string().into(), 400, "allow_private_urls"),
        (json!({"image_url": "file:///etc/passwd"}).to_string().into(), 400, "scheme"),
        (vec![b' '; 100 * 1024], 413, "body"),
    ];
    for (body, status, message) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
        let r = post(&server, "/knn-service", body);
        assert_eq!(r.status, status, "{shown}: {}", r.body);
        let error = r.body["error"].as_str().unwrap_or_else(|| panic!("{shown}: no error message: {}", r.body));
        assert!(error.contains(message), "{shown}: {error:?} should contain {message:?}");
    }
    let meta = post(&server, "/metadata", json!({"indice_name": "demo", "ids": [99999]}).to_string());
    assert_eq!(meta.status, 400);
    assert!(meta.body["error"].as_str().unwrap().contains("99999"));
    let meta =
        post(&server, "/metadata", json!({"indice_name": "demo", "ids": (0..31).collect::<Vec<_>>()}).to_string());
    assert_eq!(meta.status, 400);
    let r = client().get(format!("{}/no-such-thing", server.url())).send().unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().unwrap()["error"].is_string());
    assert_eq!(client().get(format!("{}/knn-service", server.url())).send().unwrap().status(), 405);

    // Caps clamp and say so.
    let r = post(
        &server,
        "/knn-service",
        json!({"text": "a red circle", "num_images": 100, "num_result_ids": 100}).to_string(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-clip-retrieval-capped"], "num_images=7,num_result_ids=30");
    let results = r.body.as_array().unwrap();
    assert_eq!(results.len(), 30);
    assert!(results[6].get("caption").is_some() && results[7].get("caption").is_none());

    // Still healthy, still answering; refusals are counted by field.
    assert_eq!(client().get(format!("{}/healthz", server.url())).send().unwrap().text().unwrap(), "ok");
    assert_eq!(knn(&server, json!({"text": "a red circle", "num_images": 3})).len(), 3);
    let metrics = client().get(format!("{}/metrics", server.url())).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("clip_retrieval_bad_requests_total{endpoint=\"/knn-service\",field=\"image\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clip_retrieval_http_requests_total{endpoint=\"/knn-service\",status=\"413\"} 1"),
        "{metrics}"
    );
}

/// A tiny HTTP server for image_url tests: /ok.jpg, /redirect, /text, /big, /slow, anything else 404.
fn image_host(jpeg: Vec<u8>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let jpeg = jpeg.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, kind, body): (&str, &str, Vec<u8>) = match path.as_str() {
                    "/ok.jpg" => ("200 OK", "image/jpeg", jpeg),
                    "/redirect" => ("302 Found", "text/plain", Vec::new()),
                    "/text" => ("200 OK", "text/plain", b"not an image".to_vec()),
                    "/big" => ("200 OK", "image/jpeg", vec![0u8; 200 * 1024]),
                    "/slow" => {
                        std::thread::sleep(Duration::from_secs(5));
                        ("200 OK", "image/jpeg", jpeg)
                    }
                    _ => ("404 Not Found", "text/plain", Vec::new()),
                };
                let location = if path == "/redirect" { "Location: /ok.jpg\r\n" } else { "" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{location}Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            });
        }
    });
    port
}

#[test]
fn image_url_is_fetched_under_limits() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        plain_server(dir.path(), &["--allow_private_urls", "--image_url_max_size", "100K", "--image_url_timeout", "2"]);
    let host = image_host(std::fs::read(sample_image(17)).unwrap());
    let url = |p: &str| format!("http://127.0.0.1:{host}{p}");
    for path in ["/ok.jpg", "/redirect"] {
        let results = knn(&server, json!({"image_url": url(path), "num_images": 3}));
        assert!(ids(&results).contains(&17), "{path}: {:?}", ids(&results));
        assert!(results[0]["similarity"].as_f64().unwrap() > 0.999);
    }
    for (path, message) in
        [("/text", "is not an image"), ("/big", "byte limit"), ("/missing", "404"), ("/slow", "image_url")]
    {
        let started = Instant::now();
        let r = post(&server, "/knn-service", json!({"image_url": url(path)}).to_string());
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.body["error"].as_str().unwrap().contains(message), "{path}: {}", r.body);
        assert!(started.elapsed() < Duration::from_secs(4), "{path} took {:?}", started.elapsed());
    }
}

#[test]
fn probes_metrics_batching_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    // No text cache: the second pass of each caption must reach the text tower to show batching.
    let mut server = plain_server(dir.path(), &["--text_cache_size", "0"]);
    let ready: Value = client().get(format!("{}/readyz", server.url())).send().unwrap().json().unwrap();
    assert_eq!(ready["ready"], true);
    assert!(ready["indices"]["demo"].is_string());

    // Concurrent text queries are batched and give the same answers as one at a time.
    let captions: Vec<String> = ["red", "blue", "green", "yellow", "purple", "orange"]
        .iter()
        .flat_map(|c| ["circle", "square", "triangle", "diamond"].map(|s| format!("a {c} {s}")))
        .collect();
    let alone: Vec<Vec<i64>> =
        captions.iter().map(|c| ids(&knn(&server, json!({"text": c, "num_images": 5})))).collect();
    let together: Vec<Vec<i64>> = std::thread::scope(|s| {
        let handles: Vec<_> = captions
            .iter()
            .map(|c| {
                let server = &server;
                s.spawn(move || ids(&knn(server, json!({"text": c, "num_images": 5}))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
    let metrics = client().get(format!("{}/metrics", server.url())).send().unwrap().text().unwrap();
    for needle in [
        "clip_retrieval_http_requests_total{endpoint=\"/knn-service\",status=\"200\"} 48",
        "clip_retrieval_http_request_duration_seconds_count{endpoint=\"/knn-service\"} 48",
        "clip_retrieval_query_stage_duration_seconds_count{stage=\"text_encode\"} 48",
        "clip_retrieval_query_stage_duration_seconds_count{stage=\"search\"} 48",
        "clip_retrieval_query_stage_duration_seconds_count{stage=\"metadata\"} 48",
        "clip_retrieval_encode_batch_size_count{tower=\"text\"} 48",
        "clip_retrieval_ready 1",
        "clip_retrieval_index_vectors{index=\"demo\",modality=\"image\"} 400",
        "clip_retrieval_text_cache{index=\"demo\",outcome=\"hit\"} 0",
        "clip_retrieval_text_cache{index=\"demo\",outcome=\"miss\"} 0",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }

    // A request whose body is still arriving when SIGTERM comes is answered; then the process exits cleanly.
    let body = json!({"text": "a red circle", "num_images": 2}).to_string();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(conn, "POST /knn-service HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    conn.write_all(&body.as_bytes()[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = server.pid();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    conn.write_all(&body.as_bytes()[10..]).unwrap();
    let mut answer = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "in-flight request answered: {answer:?}");
    assert!(answer.contains("\"similarity\""));
    let status = server.terminate();
    assert!(status.success(), "exit status {status}:\n{}", server.log_text());
    assert!(server.log_text().contains("shutting down"));
}

#[test]
fn clip_retrieval_python_client_queries_ours_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let server = plain_server(dir.path(), &[]);
    // clip-retrieval's package __init__ imports its whole server stack (flask, torch, ...); ClipClient needs only
    // requests, so its module file is loaded as it ships, without the package's other modules.
    let script = r#"
import importlib.util, json, sys
spec = importlib.util.find_spec("clip_retrieval")
path = spec.submodule_search_locations[0] + "/clip_client.py"
module_spec = importlib.util.spec_from_file_location("clip_client", path)
clip_client = importlib.util.module_from_spec(module_spec)
module_spec.loader.exec_module(clip_client)
url, image, embedding = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
client = clip_client.ClipClient(url=url, indice_name="demo", num_images=10)
text = client.query(text="a red circle")
by_image = client.query(image=image)
by_embedding = client.query(embedding_input=embedding)
text_index = clip_client.ClipClient(url=url, indice_name="demo", num_images=5, modality=clip_client.Modality.TEXT)
print(json.dumps({"text": text, "image": by_image, "embedding": by_embedding,
                  "text_modality": text_index.query(text="a blue square")}))
"#;
    let e17 = serde_json::to_string(&fixture().embeddings[17]).unwrap();
    let out = run(
        python().args(["-c", script, &format!("{}/knn-service", server.url())]).arg(sample_image(17)).arg(e17),
        true,
    );
    let answers: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = answers["text"].as_array().unwrap();
    assert!(!text.is_empty() && text.len() <= 10);
    assert_eq!((text[0]["color"].as_str(), text[0]["shape"].as_str()), (Some("red"), Some("circle")), "{}", text[0]);
    assert!(ids(answers["image"].as_array().unwrap()).contains(&17));
    assert_eq!(answers["embedding"][0]["id"], 17);
    assert!(answers["text_modality"][0]["caption"].as_str().unwrap().contains("blue square"));
}

#[test]
fn folders_built_by_python_clip_retrieval_are_served_with_their_metadata() {
    // clip-retrieval's index leaves image.index (written by Python faiss) and metadata/*.parquet, no metadata.arrow.
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let folder = dir.path().join("python-index");
    std::fs::create_dir_all(folder.join("metadata")).unwrap();
    let rewrite = "import sys, faiss; faiss.write_index(faiss.read_index(sys.argv[1]), sys.argv[2])";
    run(python().args(["-c", rewrite]).arg(f.index.join("image.index")).arg(folder.join("image.index")), true);
    std::fs::copy(f.emb.join("metadata/metadata_0.parquet"), folder.join("metadata/metadata_0.parquet")).unwrap();
    let paths = indices_paths(dir.path(), json!({"py": {"indice_folder": folder, "columns_to_return": ["caption"]}}));
    let server = BackServer::start(&paths, &[]);
    let results = knn(&server, json!({"text": "a red circle", "num_images": 3, "indice_name": "py"}));
    assert!(results[0]["caption"].as_str().unwrap().contains("red circle"), "{}", results[0]);
    assert!(folder.join("metadata.arrow").is_file(), "the row store is built beside the index");
    assert_eq!(post(&server, "/knn-service", json!({"text": "x", "modality": "text"}).to_string()).status, 400);
}

#[test]
fn serves_the_web_ui_folder_and_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(dist.join("assets")).unwrap();
    std::fs::write(dist.join("index.html"), "<!doctype html><title>ui</title>").unwrap();
    std::fs::write(dist.join("assets/app.js"), "console.log(1)").unwrap();
    let dist_arg = dist.display().to_string();
    let server = plain_server(dir.path(), &["--front_dist", &dist_arg, "--default_index", "demo"]);
    let get = |p: &str| client().get(format!("{}{p}", server.url())).send().unwrap();
    assert_eq!(get("/").text().unwrap(), "<!doctype html><title>ui</title>");
    let js = get("/assets/app.js");
    assert!(js.headers()["content-type"].to_str().unwrap().contains("javascript"));
    assert_eq!(js.text().unwrap(), "console.log(1)");
    let config: Value = get("/config.json").json().unwrap();
    assert_eq!(config, json!({"defaultBackend": server.url() + "/", "defaultIndex": "demo", "urlColumn": "url"}));
    // API routes still win over the UI's fallback.
    assert_eq!(get("/indices-list").json::<Value>().unwrap(), json!(["demo", "small"]));
}

#[test]
fn broken_configurations_stop_the_server_with_a_clear_error() {
    assert!(fixture().index.join("_COMPLETE").is_file(), "index writes its completion marker");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let port = clip_retrieval_tests::free_port().to_string();
    let cases = [
        (json!({"x": {"indice_folder": empty}}), "neither image.index nor text.index"),
        // A folder whose build has not finished (or failed): no completion marker.
        (json!({"x": {"indice_folder": empty, "require_completion_marker": true}}), "has no _COMPLETE marker"),
        (json!({"x": {"indice_folders": empty}}), "unknown option"),
        (json!({"x": {"indice_folder": fixture().index, "clip_model": dir.path().join("nope")}}), "no such folder"),
    ];
    for (config, message) in cases {
        let paths = indices_paths(dir.path(), config.clone());
        let out = run(
            cli().arg("back").arg("--indices_paths").arg(&paths).args(["--host", "127.0.0.1", "--port", &port]),
            false,
        );
        assert!(!out.status.success(), "{config}: should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message) && stderr.contains("\"x\""), "{config}: {stderr}");
    }
}

#[test]
fn end2end_builds_and_serves_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let port = clip_retrieval_tests::free_port();
    let mut child = cli()
        .args(["end2end", "--sample_count", "120", "--no_progress", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--output_folder")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = clip_retrieval_tests::http_get(port, "/readyz") {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "end2end exited early");
        assert!(started.elapsed() < Duration::from_secs(180), "end2end not serving after 180 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let body = json!({"text": "a yellow square", "num_images": 3}).to_string();
    let r = client().post(format!("http://127.0.0.1:{port}/knn-service")).body(body).send().unwrap();
    let results: Value = r.json().unwrap();
    assert!(results[0]["caption"].as_str().unwrap().contains("yellow"), "{results}");
    let config: Value = serde_json::from_slice(&std::fs::read(dir.path().join("indices_paths.json")).unwrap()).unwrap();
    assert!(config["end2end"]["indice_folder"].as_str().unwrap().ends_with("index"));
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert!(stdout.contains(&format!("http://127.0.0.1:{port}/")), "prints the URL: {stdout}");
}
