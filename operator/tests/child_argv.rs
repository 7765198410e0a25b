//! Every command line the operator gives a pod, parsed by the real `clip-retrieval` parser (clip-cli's `Cli`,
//! exactly as the binary parses it, without the kebab-case normalisation): for each spec in `examples/` and the
//! specs of the cluster tests, every child it can build. A flag renamed, retyped or reformatted in clip-cli fails
//! here in milliseconds instead of in a pod. The parsed values are checked against the spec they came from.

use clap::Parser;
use clip_cli::{ByteSize, Cli, Command, Device};
use clip_operator::crd::{EmbeddingJob, IndexBuild, SearchDeployment};
use clip_operator::{distributed_build, embedding_job, index_build, search_deployment, shard_children};
use k8s_openapi::api::core::v1::PodSpec;
use kube::Resource;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The resource of `kind` from `examples/<file>`.
fn example(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
    let yaml: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    yaml["spec"].clone()
}

/// A resource as the API server hands it to the operator (namespace, uid, generation set).
fn resource<K: Resource + serde::de::DeserializeOwned>(kind: &str, spec: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "clip-retrieval.io/v1alpha1", "kind": kind,
        "metadata": {"name": "r", "namespace": "ns", "uid": "uid-1", "generation": 2}, "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// Parses the first container's argv; `$(PARTITION_ID)` is expanded by the kubelet, here to `partition`.
fn parsed(pod: &PodSpec, partition: u32) -> Command {
    let args = pod.containers[0].args.clone().unwrap();
    let argv = std::iter::once("clip-retrieval".to_string())
        .chain(args.iter().map(|a| a.replace("$(PARTITION_ID)", &partition.to_string())));
    Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?} does not parse:\n{e}")).command
}

fn embedding_job_specs() -> Vec<Value> {
    vec![
        example("embeddingjob.yaml"),
        example("gpu/embeddingjob.yaml"),
        // operator.rs: the GPU happy path, the failing partition, the leader tests.
        json!({"input": "s3://data/shards/{000..003}.tar", "inputFormat": "webdataset", "output": "s3://data/emb",
               "model": "s3://models/tiny-clip", "batchSize": 64, "partitions": 5, "parallelism": 2,
               "retriesPerPartition": 2, "image": "clip-retrieval:test",
               "resources": {"gpu": 1, "cpu": "2", "memory": "4Gi"}}),
        json!({"input": "/data/in", "output": "/data/out", "partitions": 3, "parallelism": 3,
               "retriesPerPartition": 1, "image": "clip-retrieval:test"}),
        json!({"input": "/data/in", "output": "s3://data/emb", "partitions": 2, "parallelism": 2, "image": "i"}),
        // kubernetes_e2e.rs.
        json!({"input": "s3://data/shards/{00000..00002}.tar", "inputFormat": "webdataset",
               "output": "s3://data/embeddings", "model": "/models/tiny-clip", "partitions": 3, "parallelism": 2,
               "batchSize": 32, "image": "clip-retrieval:local"}),
        json!({"input": "s3://p/", "inputFormat": "parquet", "output": "o", "partitions": 1, "image": "i"}),
        // Typed options and extraArgs.
        json!({"input": "s3://w/{0..3}.tar", "inputFormat": "webdataset", "output": "o", "partitions": 2, "image": "i",
               "wdsImageKey": "webp", "wdsCaptionKey": "json", "embeddingDtype": "float32", "enableText": false,
               "enableImage": true, "precision": "int8", "textPrecision": "fp32", "extraArgs": ["--num-prepro-workers=8", "--max_sample_bytes", "32M"]}),
    ]
}

#[test]
fn every_inference_pod_parses_to_its_spec() {
    for spec_json in embedding_job_specs() {
        let ej: EmbeddingJob = resource("EmbeddingJob", spec_json.clone());
        let spec = &ej.spec;
        let check = |command: Command, partition: u32| {
            let Command::Inference(a) = command else { panic!("{spec_json}: not inference") };
            assert_eq!(a.input_dataset, spec.input);
            assert_eq!(a.output_folder, spec.output);
            assert_eq!(a.input_format, spec.input_format);
            assert_eq!(a.output_partition_count, Some(spec.partitions as usize));
            assert_eq!(a.partition_ids, Some(vec![partition as usize]));
            assert_eq!(a.batch_size, spec.batch_size as usize);
            assert!(a.enable_metadata && a.no_progress);
            assert_eq!(a.model.clip_model, spec.model);
            let gpu = spec.placement.resources.gpu > 0;
            assert_eq!(a.model.device, if gpu { Device::Cuda(0) } else { Device::Cpu });
            assert_eq!(a.wds_image_key, spec.wds_image_key.as_deref().unwrap_or("jpg"));
            assert_eq!(a.wds_caption_key, spec.wds_caption_key.as_deref().unwrap_or("txt"));
            assert_eq!(a.embedding_dtype, spec.embedding_dtype.unwrap_or_default());
            assert_eq!(a.model.precision, spec.precision.unwrap_or_default());
            assert_eq!((a.model.image_precision, a.model.text_precision), (spec.image_precision, spec.text_precision));
            assert_eq!(
                (a.enable_image, a.enable_text),
                (spec.enable_image.unwrap_or(true), spec.enable_text.unwrap_or(true))
            );
            let extra = !spec.extra_args.is_empty();
            assert_eq!(a.num_prepro_workers, if extra { 8 } else { 4 }, "{spec_json}");
            assert_eq!(a.max_sample_bytes, if extra { ByteSize::mib(32) } else { ByteSize::mib(64) });
        };
        for partition in 0..spec.partitions {
            let job = embedding_job::partition_job(&ej, partition).unwrap();
            check(parsed(&job.spec.unwrap().template.spec.unwrap(), partition), partition);
        }
        let indexed = embedding_job::indexed_job(&ej).unwrap();
        let pod = indexed.spec.unwrap().template.spec.unwrap();
        check(parsed(&pod, spec.partitions - 1), spec.partitions - 1);
    }
}

#[test]
fn every_index_build_pod_parses_to_its_spec() {
    let specs = [
        example("indexbuild.yaml"),
        json!({"embeddings": {"embeddingJob": "emb"}, "output": "s3://data/index", "maxIndexMemoryUsage": "1G",
               "modalities": ["image", "text"], "image": "clip-retrieval:test", "resources": {"memory": "8Gi"}}),
        json!({"embeddings": {"embeddingJob": "shapes"}, "output": "s3://data/index", "maxIndexMemoryUsage": "100M",
               "image": "i"}),
        json!({"embeddings": {"uri": "s3://e"}, "output": "o", "maxIndexMemoryUsage": "1.5GB",
               "modalities": ["text"], "image": "i", "resources": {"memory": "512Mi"}}),
        json!({"embeddings": {"uri": "s3://e"}, "output": "o", "image": "i", "resources": {"memory": "16G"}}),
        json!({"embeddings": {"uri": "s3://e"}, "output": "o", "image": "i", "indexKey": "IVF256,PQ16", "metric": "l2",
               "maxIndexQueryTimeMs": 2.5, "minRecall": 0.9, "extraArgs": ["--nb_cores=8"]}),
    ];
    for spec_json in specs {
        let ib: IndexBuild = resource("IndexBuild", spec_json.clone());
        let job = index_build::build_job(&ib, "s3://data/emb").unwrap();
        let Command::Index(a) = parsed(&job.spec.unwrap().template.spec.unwrap(), 0) else { panic!("not index") };
        let generation = format!("{}/g2", ib.spec.output);
        assert_eq!((a.embeddings_folder.as_str(), a.index_folder.as_str()), ("s3://data/emb", generation.as_str()));
        assert_eq!(a.max_index_memory_usage, ib.spec.max_index_memory_usage.parse::<ByteSize>().unwrap());
        assert_eq!(a.modalities, ib.spec.modalities);
        assert_eq!(a.report_path.as_deref(), Some(std::path::Path::new("/dev/termination-log")));
        assert_eq!(a.index_key, ib.spec.index_key);
        assert_eq!(a.metric, ib.spec.metric.unwrap_or_default());
        assert_eq!(a.max_index_query_time_ms, ib.spec.max_index_query_time_ms.unwrap_or(10.0));
        assert_eq!(a.min_recall, ib.spec.min_recall.unwrap_or(0.0));
        assert_eq!(a.nb_cores, (!ib.spec.extra_args.is_empty()).then_some(8));
        if let Some(memory) = &ib.spec.placement.resources.memory {
            let bytes = clip_operator::quantity::bytes(memory, "memory").unwrap();
            assert_eq!(a.current_memory_available.bytes(), bytes, "{spec_json}");
            if memory == "16G" {
                assert_eq!(bytes, 16_000_000_000, "Kubernetes' G is 10^9, not the CLI's GiB");
            }
        }
    }
}

#[test]
fn every_distributed_build_pod_parses_to_its_stage() {
    let spec = json!({"embeddings": {"uri": "s3://data/emb"}, "output": "s3://data/index", "shards": 3,
                      "maxIndexMemoryUsage": "256M", "image": "i", "resources": {"memory": "8Gi"}});
    let mut ib: IndexBuild = resource("IndexBuild", spec);
    let index_of = |args: Vec<String>| {
        let argv = std::iter::once("clip-retrieval".to_string()).chain(args.clone());
        match Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}")).command {
            Command::Index(a) => a,
            _ => panic!("not index"),
        }
    };
    let train = index_of(distributed_build::train_args(&ib, "s3://data/emb").unwrap());
    assert!(train.train_only);
    assert_eq!(train.index_folder, "s3://data/index/g2-parts/trained");
    assert_eq!(train.report_path.as_deref(), Some(std::path::Path::new("/dev/termination-log")));
    let parts = distributed_build::slice_partitions(&[[0, 9, 1000]], 3, &index_build::generation_folder(&ib));
    for (i, part) in parts.iter().enumerate() {
        let a = index_of(distributed_build::part_args(&ib, "s3://data/emb", part).unwrap());
        assert_eq!(a.partition_ids.unwrap().to_string(), part.partitions);
        assert_eq!(a.index_folder, format!("s3://data/index/g2-parts/{i}"));
        assert_eq!(a.trained_index_folder.unwrap().to_string_lossy(), "s3://data/index/g2-parts/trained");
        assert_eq!(a.max_index_memory_usage.to_string(), "256M");
    }
    ib.status = Some(clip_operator::crd::IndexBuildStatus { parts, ..Default::default() });
    let argv = std::iter::once("clip-retrieval".to_string()).chain(distributed_build::merge_args(&ib));
    let Command::IndexCombiner(m) = Cli::try_parse_from(argv).unwrap().command else { panic!("not index_combiner") };
    assert_eq!(
        m.input_folders,
        ["s3://data/index/g2-parts/0", "s3://data/index/g2-parts/1", "s3://data/index/g2-parts/2"]
    );
    assert_eq!(m.output_folder, "s3://data/index/g2");
}

#[test]
fn the_prune_pod_parses_to_the_retained_generations() {
    let ib: IndexBuild =
        resource("IndexBuild", json!({"embeddings": {"uri": "e"}, "output": "s3://data/index/", "image": "i"}));
    let status = clip_operator::crd::IndexBuildStatus { retained_generations: vec![7, 5], ..Default::default() };
    let argv = std::iter::once("clip-retrieval".to_string()).chain(index_build::prune_args(&ib, &status));
    let Command::PruneGenerations(p) = Cli::try_parse_from(argv).unwrap().command else { panic!("not prune") };
    assert_eq!(
        (p.index_root.as_str(), p.keep_generations.as_slice(), p.dry_run),
        ("s3://data/index", &[7, 5][..], false)
    );
}

#[test]
fn every_shard_pod_parses_and_the_front_lists_the_shards() {
    let spec = json!({"indices": {"laion": {"indexBuild": "idx", "sharded": true, "precision": "int8"}}, "image": "i", "port": 8080,
                      "model": "s3://models/tiny-clip", "allowPartialResults": true});
    let sd: SearchDeployment = resource("SearchDeployment", spec);
    let (config, deployment, _) = shard_children::shard_objects(&sd, "laion", "idx@t", 2, "s3://d/i-parts/2").unwrap();
    let Command::Back(a) = parsed(&deployment.spec.template.spec.unwrap(), 0) else { panic!("not back") };
    assert_eq!(a.port, 8080);
    assert!(config.data.unwrap()["indices_paths.json"].contains("s3://d/i-parts/2"));
    let indices = BTreeMap::from([("laion".to_string(), (String::new(), "idx@t".to_string()))]);
    let shards = BTreeMap::from([("laion".to_string(), vec!["p0".to_string(), "p1".to_string()])]);
    let front = search_deployment::config_map(&sd, &indices, &shards).unwrap();
    let paths: Value = serde_json::from_str(&front.data.unwrap()["indices_paths.json"]).unwrap();
    assert_eq!(paths["laion"]["shards"], json!(shard_children::urls(&sd, "laion", "idx@t", 2)));
    assert_eq!(paths["laion"]["allow_partial_results"], true);
    assert_eq!(paths["laion"]["precision"], "int8", "the front encodes the queries at the index's precision");
}

#[test]
fn an_index_precision_reaches_indices_paths_and_an_unset_one_keeps_the_plain_entry() {
    let spec = json!({"indices": {"q": {"uri": "s3://q", "precision": "int8"}, "b": {"indexBuild": "idx",
                      "precision": "fp32"}, "p": {"uri": "s3://p"}}, "image": "i"});
    let sd: SearchDeployment = resource("SearchDeployment", spec);
    let indices = BTreeMap::from(
        [("q", "s3://q"), ("b", "s3://d/idx/1"), ("p", "s3://p")]
            .map(|(n, f)| (n.to_string(), (f.to_string(), "v".into()))),
    );
    let config = search_deployment::config_map(&sd, &indices, &BTreeMap::new()).unwrap();
    let paths: Value = serde_json::from_str(&config.data.unwrap()["indices_paths.json"]).unwrap();
    assert_eq!(paths["q"], json!({"indice_folder": "s3://q", "precision": "int8"}));
    assert_eq!(
        paths["b"],
        json!({"indice_folder": "s3://d/idx/1", "require_completion_marker": true, "precision": "fp32"})
    );
    assert_eq!(paths["p"], "s3://p");
    let refused = serde_json::from_value::<SearchDeployment>(json!({"apiVersion": "clip-retrieval.io/v1alpha1",
        "kind": "SearchDeployment", "metadata": {"name": "r"},
        "spec": {"indices": {"q": {"uri": "s3://q", "precision": "int4"}}, "image": "i"}}));
    assert!(refused.unwrap_err().to_string().contains("int4"), "an unknown precision is not accepted");
}

#[test]
fn every_search_pod_parses_to_its_spec() {
    let specs = [
        example("searchdeployment.yaml"),
        json!({"indices": {"laion": {"indexBuild": "idx"}}, "image": "clip-retrieval:test", "port": 8080,
               "model": "s3://models/tiny-clip"}),
        json!({"indices": {"a": {"uri": "s3://x"}}, "image": "i", "replicas": 1}),
        json!({"indices": {"a": {"uri": "s3://x"}}, "image": "i", "columnsToReturn": ["url", "caption"],
               "enableFaissMemoryMapping": true, "safetyModel": "/m/safety.onnx", "provideViolenceDetector": true,
               "provideAestheticEmbeddings": false, "maxNumImages": 50, "maxNumResultIds": 500,
               "requestTimeoutSeconds": 5.5, "extraArgs": ["--search_threads", "4"]}),
    ];
    for spec_json in specs {
        let sd: SearchDeployment = resource("SearchDeployment", spec_json.clone());
        let indices = BTreeMap::from([("a".to_string(), ("s3://x".to_string(), "v1".to_string()))]);
        let deployment = search_deployment::deployment(&sd, &indices).unwrap();
        let Command::Back(a) = parsed(&deployment.spec.template.spec.unwrap(), 0) else { panic!("not back") };
        assert_eq!(a.port as u32, sd.spec.port, "{spec_json}");
        assert_eq!(a.clip_model, sd.spec.model);
        assert_eq!(a.indices_paths, "/etc/clip-retrieval/indices_paths.json");
        let typed = !sd.spec.extra_args.is_empty();
        let columns = a.columns_to_return.map(|c| c.0);
        assert_eq!(columns, typed.then(|| vec!["url".to_string(), "caption".to_string()]));
        assert_eq!(a.enable_faiss_memory_mapping, typed);
        assert_eq!((a.provide_safety_model, a.safety_model.is_some()), (typed, typed), "safetyModel implies provide");
        assert_eq!(a.provide_violence_detector, typed);
        assert_eq!(a.provide_aesthetic_embeddings, !typed);
        assert_eq!((a.max_num_images, a.max_num_result_ids), if typed { (50, 500) } else { (1000, 10_000) });
        assert_eq!(a.request_timeout.0, if typed { 5.5 } else { 60.0 });
        assert_eq!(a.search_threads, typed.then_some(4));
    }
}

#[test]
fn extra_args_the_cli_refuses_fail_the_spec_before_any_pod() {
    let ej: EmbeddingJob = resource(
        "EmbeddingJob",
        json!({"input": "i", "output": "o", "partitions": 1, "image": "i", "extraArgs": ["--batch-sise", "8"]}),
    );
    let err = embedding_job::partition_job(&ej, 0).unwrap_err();
    assert_eq!(err.reason(), "InvalidSpec");
    assert!(err.to_string().contains("unexpected argument '--batch-sise'"), "{err}");
    let ib: IndexBuild = resource(
        "IndexBuild",
        json!({"embeddings": {"uri": "e"}, "output": "o", "image": "i", "extraArgs": ["--metric=cosine"]}),
    );
    let err = index_build::build_job(&ib, "e").unwrap_err();
    assert!(err.to_string().contains("invalid value 'cosine'"), "{err}");
    let sd: SearchDeployment =
        resource("SearchDeployment", json!({"indices": {"a": {"uri": "x"}}, "image": "i", "extraArgs": ["--port=1"]}));
    let err = search_deployment::back_args(&sd.spec).unwrap_err();
    assert!(err.to_string().contains("extraArgs sets --port"), "{err}");
}

/// The examples' command lines, written out: what users' clusters run today. A flag renamed in clip-cli changes
/// these (and breaks the images already deployed, which parse the old name), so it must fail a test.
#[test]
fn the_examples_run_these_command_lines() {
    let ej: EmbeddingJob = resource("EmbeddingJob", example("embeddingjob.yaml"));
    assert_eq!(
        embedding_job::inference_args(&ej.spec, Some(1)).unwrap().join(" "),
        "inference --input_dataset s3://clip-data/shards/{0000..0003}.tar --input_format webdataset \
         --output_folder s3://clip-data/embeddings --output_partition_count 4 --partition_ids 1 --batch_size 256 \
         --enable_metadata true --no_progress"
    );
    let ib: IndexBuild = resource("IndexBuild", example("indexbuild.yaml"));
    assert_eq!(
        index_build::index_args(&ib, "s3://clip-data/embeddings").unwrap().join(" "),
        "index --embeddings_folder s3://clip-data/embeddings --index_folder s3://clip-data/index/g2 \
         --max_index_memory_usage 1G --modalities image,text --report_path /dev/termination-log --no_progress \
         --current_memory_available 4G"
    );
    let sd: SearchDeployment = resource("SearchDeployment", example("searchdeployment.yaml"));
    assert_eq!(
        search_deployment::back_args(&sd.spec).unwrap().join(" "),
        "back --indices_paths /etc/clip-retrieval/indices_paths.json --port 1234"
    );
}
