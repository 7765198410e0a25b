//! s3:// input, output and model against a real S3 server (s3s-fs with SigV4) on 127.0.0.1, and pruning of an
//! index root's old generations there.

use clip_retrieval_tests::{cli, copy_dir, python_summary, run, shipped_model, S3Server};

#[test]
fn inference_reads_and_writes_s3_and_loads_the_model_from_s3() {
    let s3 = S3Server::start(&["data"]);
    let bucket = s3.root.path().join("data");
    // s3s-fs stores objects as files: placing the model folder in the bucket uploads it.
    copy_dir(&shipped_model(), &bucket.join("models/tiny-clip"));
    let cache = tempfile::tempdir().unwrap();

    let mut render = cli();
    render.args([
        "sample-dataset",
        "--output_folder",
        "s3://data/shards",
        "--count",
        "50",
        "--seed",
        "21",
        "--output_format",
        "webdataset",
        "--shard_size",
        "20",
    ]);
    s3.configure(&mut render);
    run(&mut render, true);
    assert!(bucket.join("shards/00002.tar").is_file(), "sample-dataset did not write to S3");

    let infer = || {
        let mut c = cli();
        c.args(["inference", "--input_dataset", "s3://data/shards/{00000..00002}.tar", "--input_format", "webdataset"])
            .args([
                "--output_folder",
                "s3://data/embeddings",
                "--clip_model",
                "s3://data/models/tiny-clip",
                "--no_progress",
            ])
            .args(["--output_partition_count", "2"])
            .arg("--clip_cache_path")
            .arg(cache.path());
        s3.configure(&mut c);
        run(&mut c, true)
    };
    let first = infer();
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("50 samples embedded"),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    assert!(cache.path().join("data/models/tiny-clip/visual/model.onnx").is_file(), "model not cached locally");

    let summary = python_summary(&bucket.join("embeddings"));
    let rows: u64 = summary
        .as_object()
        .unwrap()
        .values()
        .map(|p| {
            let n = p["metadata_rows"].as_u64().unwrap();
            assert_eq!(p["img"]["rows"].as_u64().unwrap(), n);
            assert_eq!(p["text"]["rows"].as_u64().unwrap(), n);
            n
        })
        .sum();
    assert_eq!(rows, 50);
    assert!(bucket.join("embeddings/stats/0.json").is_file() && bucket.join("embeddings/stats/1.json").is_file());

    // A rerun finds both partitions finished on S3.
    let second = infer();
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("2 already done"),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
}

#[test]
fn wrong_s3_credentials_are_a_clear_error() {
    let s3 = S3Server::start(&["data"]);
    let mut c = cli();
    c.args(["inference", "--input_dataset", "s3://data/nothing", "--output_folder", "s3://data/out", "--no_progress"]);
    s3.configure(&mut c);
    c.env("AWS_SECRET_ACCESS_KEY", "wrong");
    let out = run(&mut c, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("s3://data/nothing") && err.contains("SignatureDoesNotMatch"), "{err}");
}

#[test]
fn index_reads_embeddings_from_s3_and_writes_the_index_folder_to_s3() {
    let s3 = S3Server::start(&["data"]);
    let bucket = s3.root.path().join("data");
    let all = clip_retrieval_tests::clustered_embeddings(3_000, 64, 20, 0.6, 31);
    // s3s-fs stores objects as files: writing into the bucket folder uploads them.
    clip_retrieval_tests::write_embeddings_folder(&bucket.join("emb"), &all, 1_000);
    let mut c = cli();
    c.args(["index", "--embeddings_folder", "s3://data/emb", "--index_folder", "s3://data/idx", "--no_progress"]);
    s3.configure(&mut c);
    let out = run(&mut c, true);
    assert!(String::from_utf8_lossy(&out.stdout).contains("image.index: 3000 vectors"), "{out:?}");
    for f in
        ["image.index", "image.json", "metadata.arrow", "metadata/metadata_0.parquet", "metadata/metadata_2.parquet"]
    {
        assert!(bucket.join("idx").join(f).is_file(), "{f} not uploaded");
    }
    let loaded = clip_index::LoadedIndex::open(&bucket.join("idx"), clip_index::Modality::Image, true).unwrap();
    assert_eq!(loaded.index.search(&all[2_500], 1).unwrap().ids, vec![2_500]);
    let store = clip_index::RowStore::open(&bucket.join("idx/metadata.arrow")).unwrap();
    assert_eq!(store.get(&[2_500], None).unwrap()[0].as_ref().unwrap()["caption"], "row 2500");

    // `back` serves the s3:// folder: copied into its cache, then memory-mapped.
    let dir = tempfile::tempdir().unwrap();
    let paths = dir.path().join("indices_paths.json");
    let config = serde_json::json!({"s3": {"indice_folder": "s3://data/idx", "enable_faiss_memory_mapping": true}});
    std::fs::write(&paths, config.to_string()).unwrap();
    let cache = dir.path().join("cache").display().to_string();
    let server = clip_retrieval_tests::BackServer::start_with(&paths, &["--cache_path", &cache], |c| s3.configure(c));
    assert!(dir.path().join("cache/indices/data/idx/image.index").is_file());
    let body = serde_json::json!({"embedding_input": all[2_500], "num_images": 1, "indice_name": "s3"});
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/knn-service", server.url()))
        .body(body.to_string())
        .send()
        .unwrap();
    let results: serde_json::Value = response.json().unwrap();
    assert_eq!(results[0]["id"], 2_500, "{results}");
    assert_eq!(results[0]["caption"], "row 2500");
}

#[test]
fn prune_generations_deletes_old_generations_on_s3_and_leaves_kept_newer_and_other_objects() {
    let s3 = S3Server::start(&["data"]);
    let bucket = s3.root.path().join("data");
    // s3s-fs stores objects as files: these are the objects under s3://data/idx.
    for key in [
        "idx/g1/image.index",
        "idx/g1/_COMPLETE",
        "idx/g2-parts/0/image.index",
        "idx/g3/image.index",
        "idx/g3/_COMPLETE",
        "idx/g4/image.index",
        "idx/old/image.index",
    ] {
        let path = bucket.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }
    let mut prune = cli();
    prune.args(["prune_generations", "--index_root", "s3://data/idx", "--keep_generations", "3"]);
    s3.configure(&mut prune);
    let out = run(&mut prune, true);
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["report"]["deleted"], serde_json::json!([1, 2]));
    assert_eq!(printed["report"]["kept"], serde_json::json!([3]));
    assert_eq!(printed["report"]["newer"], serde_json::json!([4]), "a build in progress is left alone");
    assert_eq!(printed["report"]["files"], 3);
    for gone in ["idx/g1/image.index", "idx/g1/_COMPLETE", "idx/g2-parts/0/image.index"] {
        assert!(!bucket.join(gone).exists(), "{gone} is still on the server");
    }
    for kept in ["idx/g3/image.index", "idx/g4/image.index", "idx/old/image.index"] {
        assert!(bucket.join(kept).exists(), "{kept} was deleted");
    }
}
