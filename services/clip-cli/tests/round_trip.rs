//! `parse(render(args)) == args` for every subcommand, with every flag set away from its default and with every
//! flag at its default: the operator's pods get argv rendered by `to_argv`, so a flag the parser would read
//! differently (renamed, retyped, reformatted) fails here, not in a cluster.

use clip_cli::*;
use std::path::PathBuf;

fn round_trip<T: CommandArgs + PartialEq + std::fmt::Debug>(args: &T) -> Vec<String> {
    let argv = args.to_argv();
    assert_eq!(argv[0], T::NAME);
    let parsed = T::parse_flags(&argv[1..]).unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"));
    assert_eq!(&parsed, args, "argv {argv:?}");
    let cli = Cli::try_parse_normalized(std::iter::once("clip-retrieval".to_string()).chain(argv.clone())).unwrap();
    assert_ne!(format!("{:?}", cli.command), "", "the whole CLI parses it too");
    argv
}

fn model() -> ModelArgs {
    ModelArgs {
        clip_model: Some("s3://models/ViT-B-32".into()),
        clip_cache_path: Some("/cache/models".into()),
        device: Device::Cuda(1),
        num_threads: 3,
        max_image_pixels: 4_000_000,
        precision: Precision::Int8,
        image_precision: Some(Precision::Fp32),
        text_precision: Some(Precision::Int8),
        intra_op_spinning: true,
    }
}

#[test]
fn inference() {
    let hyphens = InferenceArgs::new("-in", "--out");
    assert_eq!(round_trip(&hyphens), ["inference", "--input_dataset=-in", "--output_folder=--out"]);
    let defaults = InferenceArgs::new("in", "out");
    assert_eq!(round_trip(&defaults), ["inference", "--input_dataset", "in", "--output_folder", "out"]);
    let all = InferenceArgs {
        input_dataset: "s3://data/{000..009}.tar".into(),
        input_format: InputFormat::Webdataset,
        output_folder: "s3://out/emb".into(),
        output_partition_count: Some(8),
        max_sample_bytes: ByteSize::mib(8),
        partition_ids: Some(vec![2, 5]),
        batch_size: 64,
        num_prepro_workers: 7,
        enable_text: false,
        enable_image: false,
        enable_metadata: true,
        write_batch_size: 123,
        subset_size: Some(99),
        wds_image_key: "png".into(),
        wds_caption_key: "caption".into(),
        wds_number_file_per_input_file: 42,
        embedding_dtype: EmbeddingDtype::Float32,
        distribution_strategy: DistributionStrategy::Pyspark,
        cache_path: Some("/tmp/c".into()),
        use_mclip: true,
        use_jit: true,
        no_progress: true,
        overwrite: true,
        model: model(),
    };
    let argv = round_trip(&all);
    assert_eq!(argv.iter().filter(|a| a.starts_with("--")).count(), 32, "{argv:?}");
}

#[test]
fn index_and_combiner() {
    let defaults = IndexArgs::new("emb", "idx");
    assert_eq!(
        round_trip(&defaults),
        ["index", "--embeddings_folder", "emb", "--index_folder", "idx", "--modalities", "image,text"]
    );
    let all = IndexArgs {
        embeddings_folder: "s3://e".into(),
        index_folder: "s3://i".into(),
        max_index_memory_usage: "1.5G".parse().unwrap(),
        modalities: vec![Modality::Text],
        report_path: Some(PathBuf::from("/dev/termination-log")),
        no_progress: true,
        current_memory_available: ByteSize(12345),
        copy_metadata: false,
        image_subfolder: "img".into(),
        text_subfolder: "txt".into(),
        nb_cores: Some(2),
        metric: Metric::L2,
        max_index_query_time_ms: 2.5,
        min_recall: 0.9,
        index_key: Some("IVF256,SQ8".into()),
        trained_index_folder: Some(PathBuf::from("/parts/0")),
        train_only: false,
        partition_ids: Some("0-3,7".parse().unwrap()),
        rerank: clip_cli::values::Rerank::Off,
        append: true,
        plan: false,
        count: Some(5),
        dim: Some(8),
        costs: Some(PathBuf::from("costs.json")),
        measure_costs: None,
    };
    let argv = round_trip(&all);
    assert!(argv.windows(2).any(|w| w == ["--max_index_memory_usage", "1536M"]), "{argv:?}");
    assert!(argv.windows(2).any(|w| w == ["--rerank", "off"]), "{argv:?}");
    assert!(argv.windows(2).any(|w| w == ["--partition_ids", "0-3,7"]), "{argv:?}");
    let train = IndexArgs { train_only: true, ..IndexArgs::new("emb", "trained") };
    assert!(round_trip(&train).contains(&"--train_only".to_string()));
    round_trip(&IndexCombinerArgs {
        input_folders: vec!["a".into(), "b".into()],
        input_folder: None,
        output_folder: "o".into(),
    });
    round_trip(&IndexCombinerArgs {
        input_folders: vec![],
        input_folder: Some("blocks".into()),
        output_folder: "o".into(),
    });
    let prune = round_trip(&PruneGenerationsArgs {
        index_root: "s3://b/idx".into(),
        keep_generations: vec![4, 3],
        dry_run: true,
    });
    assert!(prune.windows(2).any(|w| w == ["--keep_generations", "4,3"]), "{prune:?}");
    round_trip(&clip_cli::ParquetToArrowArgs {
        parquet_folder: "meta".into(),
        output_arrow_folder: "arrow".into(),
        columns_to_return: Some("[\"url\", \"caption\"]".parse().unwrap()),
    });
}

#[test]
fn evaluate() {
    let all = EvaluateArgs {
        input_dataset: "s3://data/{000..003}.tar".into(),
        input_format: InputFormat::Webdataset,
        model: model(),
        against_precision: Precision::Int8,
        subset_size: 500,
        top_k: 5,
        batch_size: 32,
        num_prepro_workers: 1,
        wds_image_key: "webp".into(),
        wds_caption_key: "caption".into(),
        output_folder: Some("eval".into()),
        no_gate: true,
        no_progress: true,
    };
    let argv = round_trip(&all);
    assert!(argv.windows(2).any(|w| w == ["--image_precision", "fp32"]), "{argv:?}");
    assert_eq!(all.candidate_precisions(), (Precision::Fp32, Precision::Int8));
    let defaults = EvaluateArgs::parse_flags(["--input_dataset", "d"]).unwrap();
    assert_eq!(round_trip(&defaults), ["evaluate", "--input_dataset", "d"]);
    assert_eq!(defaults.candidate_precisions(), (Precision::Int8, Precision::Int8), "int8 is measured by default");
}

#[test]
fn filter() {
    let all = FilterArgs {
        query: "a red circle, with --dashes".into(),
        output_folder: "out".into(),
        indice_folder: "idx".into(),
        num_results: 5,
        threshold: Some(0.25),
        modality: Modality::Text,
        query_type: QueryType::Text,
        input_dataset: Some("shards".into()),
        input_format: InputFormat::Parquet,
        model: model(),
    };
    round_trip(&all);
}

#[test]
fn back() {
    assert_eq!(round_trip(&BackArgs::new("indices_paths.json")), ["back"]);
    assert_eq!(
        BackArgs::new("p.json").to_argv_pinning(&["port"]),
        ["back", "--indices_paths", "p.json", "--port", "1234"]
    );
    let typo = std::panic::catch_unwind(|| BackArgs::new("p.json").to_argv_pinning(&["prot"]));
    assert!(typo.is_err(), "pinning a flag that does not exist panics");
    let all = BackArgs {
        indices_paths: "/etc/clip-retrieval/indices_paths.json".into(),
        max_image_pixels: 1_000_000,
        port: 8080,
        host: "127.0.0.1".into(),
        enable_faiss_memory_mapping: true,
        columns_to_return: Some("url,caption".parse().unwrap()),
        clip_model: Some("m".into()),
        provide_safety_model: true,
        provide_violence_detector: true,
        provide_aesthetic_embeddings: false,
        safety_model: Some("s.onnx".into()),
        violence_detector: Some("v.npy".into()),
        aesthetic_embeddings: Some("aes".into()),
        default_backend: Some("http://x/".into()),
        default_index: Some("laion".into()),
        url_column: "URL".into(),
        front_dist: Some(PathBuf::from("/ui")),
        max_num_images: 10,
        max_num_result_ids: 20,
        max_body_size: ByteSize::mib(3),
        request_timeout: Seconds(2.5),
        allow_private_urls: true,
        image_url_use_proxy: true,
        image_roots: Some(vec!["/data/images".into(), "/more".into()]),
        image_url_timeout: Seconds(1.0),
        image_url_max_size: ByteSize(1000),
        search_threads: Some(1),
        max_encode_batch: 8,
        text_cache_size: 5,
        cache_path: Some("/c".into()),
        shard_timeout: Seconds(0.5),
        allow_partial_results: true,
        require_completion_marker: true,
        enable_hdf5: Some(true),
        reorder_metadata_by_ivf_index: Some(false),
        use_jit: Some(true),
        use_arrow: Some(false),
        enable_mclip_option: Some(true),
    };
    round_trip(&all);
    assert_eq!(all.ignored_flags().len(), 5);
}

#[test]
fn sample_dataset_and_end2end() {
    round_trip(&SampleDatasetArgs {
        output_folder: "d".into(),
        count: 5,
        seed: 7,
        output_format: InputFormat::Webdataset,
        shard_size: 2,
        start: 3,
        image_size: Some(768),
    });
    round_trip(&End2endArgs {
        input_dataset: Some("d".into()),
        output_folder: "o".into(),
        input_format: InputFormat::Parquet,
        sample_count: 9,
        max_index_memory_usage: ByteSize::mib(64),
        run_back: false,
        port: 0,
        host: "127.0.0.1".into(),
        clip_model: Some("m".into()),
        batch_size: 3,
        front_dist: Some(PathBuf::from("ui")),
        no_progress: true,
    });
}
