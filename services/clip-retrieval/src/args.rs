//! Command-line flags, named as clip-retrieval's (`--input_dataset`) with kebab-case aliases (`--input-dataset`).
//! Booleans take a value like Python fire does (`--enable_text False`), or none (`--enable_metadata`).

use clap::{Args, Parser, Subcommand};

/// Compute CLIP embeddings, build indices and serve them.
#[derive(Debug, Parser)]
#[command(name = "clip-retrieval", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Images and captions -> embeddings (img_emb/, text_emb/) and metadata/ partitions.
    Inference(Box<InferenceArgs>),
    /// Render the synthetic captioned dataset (coloured shapes) as files, webdataset shards or parquet.
    #[command(name = "sample-dataset", alias = "sample_dataset")]
    SampleDataset(SampleDatasetArgs),
    /// Embeddings -> faiss indices (image.index, text.index) under a memory budget, plus the metadata row store.
    Index(Box<IndexArgs>),
    /// Merge index folders built on consecutive shards into one.
    #[command(name = "index_combiner", alias = "index-combiner")]
    IndexCombiner(IndexCombinerArgs),
    /// Query an index and copy the matching images out, with results.parquet.
    Filter(Box<FilterArgs>),
    /// Serve indices over HTTP: clip-retrieval's knn service and the web UI.
    Back(Box<BackArgs>),
    /// inference -> index -> back on one dataset (the synthetic sample when none is given).
    End2end(Box<End2endArgs>),
}

/// Parses Python-style booleans.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "none" => Ok(false),
        _ => Err(format!("expected True or False, got {s:?}")),
    }
}

/// Model selection shared by commands that embed.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model folder in the immich/OpenCLIP ONNX layout: a path or s3:// URI. Default: the shipped models/tiny-clip.
    #[arg(long = "clip_model", alias = "clip-model")]
    pub clip_model: Option<String>,
    /// Where s3:// models are copied to (default ~/.cache/clip-retrieval/models).
    #[arg(long = "clip_cache_path", alias = "clip-cache-path")]
    pub clip_cache_path: Option<String>,
    /// Execution provider: cpu, cuda or cuda:N (CUDA needs the onnxruntime-gpu library in ORT_DYLIB_PATH).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// ONNX Runtime threads per model (0: one per core).
    #[arg(long = "num_threads", alias = "num-threads", default_value_t = 0)]
    pub num_threads: usize,
}

/// `clip-retrieval inference`.
#[derive(Debug, Args)]
pub struct InferenceArgs {
    /// Input: a folder, a shard pattern like "shards/{000..150}.tar", or a parquet folder; local or s3://.
    #[arg(long = "input_dataset", alias = "input-dataset")]
    pub input_dataset: String,
    /// Output folder (local or s3://): img_emb/, text_emb/, metadata/, stats/.
    #[arg(long = "output_folder", alias = "output-folder")]
    pub output_folder: String,
    /// files, webdataset or parquet.
    #[arg(long = "input_format", alias = "input-format", default_value = "files")]
    pub input_format: String,
    /// Samples per encoder batch.
    #[arg(long = "batch_size", alias = "batch-size", default_value_t = 256)]
    pub batch_size: usize,
    /// Threads decoding and preprocessing images.
    #[arg(long = "num_prepro_workers", alias = "num-prepro-workers", default_value_t = 4)]
    pub num_prepro_workers: usize,
    /// Compute text embeddings.
    #[arg(long = "enable_text", alias = "enable-text", default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_text: bool,
    /// Compute image embeddings.
    #[arg(long = "enable_image", alias = "enable-image", default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_image: bool,
    /// Copy metadata into metadata/*.parquet.
    #[arg(long = "enable_metadata", alias = "enable-metadata", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_metadata: bool,
    /// Samples per output partition when --output_partition_count is not given.
    #[arg(long = "write_batch_size", alias = "write-batch-size", default_value_t = 1_000_000)]
    pub write_batch_size: usize,
    /// Process only this many samples.
    #[arg(long = "subset_size", alias = "subset-size")]
    pub subset_size: Option<usize>,
    /// Image member extension (webdataset) or column (parquet).
    #[arg(long = "wds_image_key", alias = "wds-image-key", default_value = "jpg")]
    pub wds_image_key: String,
    /// Caption member extension (webdataset) or column (parquet; falls back to caption/text).
    #[arg(long = "wds_caption_key", alias = "wds-caption-key", default_value = "txt")]
    pub wds_caption_key: String,
    /// Number of output partitions.
    #[arg(long = "output_partition_count", alias = "output-partition-count")]
    pub output_partition_count: Option<usize>,
    /// Estimated samples per shard or parquet file, to size partitions.
    #[arg(long = "wds_number_file_per_input_file", alias = "wds-number-file-per-input-file", default_value_t = 10_000)]
    pub wds_number_file_per_input_file: usize,
    /// Compute only these partitions (comma-separated ids), e.g. one per pod.
    #[arg(long = "partition_ids", alias = "partition-ids", value_delimiter = ',')]
    pub partition_ids: Option<Vec<usize>>,
    /// Embedding dtype in the npy files: float16 (clip-retrieval's) or float32.
    #[arg(long = "embedding_dtype", alias = "embedding-dtype", default_value = "float16")]
    pub embedding_dtype: String,
    /// Accepted for compatibility; only "sequential" exists (partitions run in order; scale out with --partition_ids).
    #[arg(long = "distribution_strategy", alias = "distribution-strategy", default_value = "sequential")]
    pub distribution_strategy: String,
    /// Accepted for compatibility and ignored (inputs are streamed, S3 objects go to temporary files).
    #[arg(long = "cache_path", alias = "cache-path")]
    pub cache_path: Option<String>,
    /// Multilingual CLIP is not supported: passing True is an error.
    #[arg(long = "use_mclip", alias = "use-mclip", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub use_mclip: bool,
    /// Accepted for compatibility and ignored (ONNX Runtime optimises the graph itself).
    #[arg(long = "use_jit", alias = "use-jit", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub use_jit: bool,
    /// Model to use.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Hide the progress bar.
    #[arg(long = "no_progress", alias = "no-progress")]
    pub no_progress: bool,
}

/// `clip-retrieval sample-dataset`.
#[derive(Debug, Args)]
pub struct SampleDatasetArgs {
    /// Where to write the dataset (local or s3://).
    #[arg(long = "output_folder", alias = "output-folder")]
    pub output_folder: String,
    /// Number of samples.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Dataset seed: the same seed renders the same samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// files, webdataset or parquet.
    #[arg(long = "output_format", alias = "output-format", default_value = "files")]
    pub output_format: String,
    /// Samples per tar shard or parquet file.
    #[arg(long = "shard_size", alias = "shard-size", default_value_t = 1000)]
    pub shard_size: usize,
    /// First sample index (to render disjoint slices of one dataset).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
}

/// `clip-retrieval index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Folder written by `inference` (img_emb/, text_emb/, metadata/); local or s3://.
    #[arg(long = "embeddings_folder", alias = "embeddings-folder")]
    pub embeddings_folder: String,
    /// Where to write image.index, text.index, their reports and metadata.arrow; local or s3://.
    #[arg(long = "index_folder", alias = "index-folder")]
    pub index_folder: String,
    /// Memory the served index may take (e.g. 4G, 512M).
    #[arg(long = "max_index_memory_usage", alias = "max-index-memory-usage", default_value = "4G")]
    pub max_index_memory_usage: String,
    /// Memory the build may use.
    #[arg(long = "current_memory_available", alias = "current-memory-available", default_value = "16G")]
    pub current_memory_available: String,
    /// Also copy metadata/*.parquet into the index folder.
    #[arg(long = "copy_metadata", alias = "copy-metadata", default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub copy_metadata: bool,
    /// Sub-folder of image embeddings.
    #[arg(long = "image_subfolder", alias = "image-subfolder", default_value = "img_emb")]
    pub image_subfolder: String,
    /// Sub-folder of text embeddings.
    #[arg(long = "text_subfolder", alias = "text-subfolder", default_value = "text_emb")]
    pub text_subfolder: String,
    /// faiss threads (default: all cores).
    #[arg(long = "nb_cores", alias = "nb-cores")]
    pub nb_cores: Option<usize>,
    /// Distance: ip (cosine on normalised embeddings) or l2.
    #[arg(long, default_value = "ip")]
    pub metric: String,
    /// Single-query latency budget for tuning, in milliseconds.
    #[arg(long = "max_index_query_time_ms", alias = "max-index-query-time-ms", default_value_t = 10.0)]
    pub max_index_query_time_ms: f64,
    /// Recall@10 the tuned index should reach; a warning says when it does not.
    #[arg(long = "min_recall", alias = "min-recall", default_value_t = 0.0)]
    pub min_recall: f64,
    /// Force a faiss factory string (autofaiss's index_key), e.g. "IVF256,SQ8".
    #[arg(long = "index_key", alias = "index-key")]
    pub index_key: Option<String>,
    /// Reuse the trained indices of this index folder (e.g. part 0's) so that parts can be merged by index_combiner.
    #[arg(long = "trained_index_folder", alias = "trained-index-folder")]
    pub trained_index_folder: Option<std::path::PathBuf>,
    /// Indices to build: image, text or both (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "image,text", value_parser = parse_modality)]
    pub modalities: Vec<clip_index::Modality>,
    /// Also write a short JSON summary here (index key, bytes, recall@10 per modality; under 4 KiB): the operator
    /// points it at the pod's termination message (`/dev/termination-log`) to report the build in IndexBuild status.
    #[arg(long = "report_path", alias = "report-path")]
    pub report_path: Option<std::path::PathBuf>,
    /// Hide the progress bar.
    #[arg(long = "no_progress", alias = "no-progress")]
    pub no_progress: bool,
}

/// `clip-retrieval index_combiner`.
#[derive(Debug, Args)]
pub struct IndexCombinerArgs {
    /// Index folders of the parts, in id order (comma-separated, local).
    #[arg(long = "input_folders", alias = "input-folders", value_delimiter = ',', required = true)]
    pub input_folders: Vec<String>,
    /// Where the merged index folder goes (local).
    #[arg(long = "output_folder", alias = "output-folder")]
    pub output_folder: String,
}

/// `clip-retrieval filter`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Text to search for, or the path of an image.
    #[arg(long)]
    pub query: String,
    /// Where matched images and results.parquet go.
    #[arg(long = "output_folder", alias = "output-folder")]
    pub output_folder: String,
    /// Index folder made by `clip-retrieval index`.
    #[arg(long = "indice_folder", alias = "indice-folder")]
    pub indice_folder: String,
    /// Results of a top-k search.
    #[arg(long = "num_results", alias = "num-results", default_value_t = 100)]
    pub num_results: usize,
    /// Keep every result with similarity >= threshold (range search) instead of the top num_results.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Which index to search: image or text.
    #[arg(long, default_value = "image")]
    pub modality: String,
    /// How to read --query: auto (an existing file is an image), text or image.
    #[arg(long = "query_type", alias = "query-type", default_value = "auto")]
    pub query_type: String,
    /// The dataset the index was built from, to extract images of webdataset/parquet inputs (their image_path is a key).
    #[arg(long = "input_dataset", alias = "input-dataset")]
    pub input_dataset: Option<String>,
    /// Format of --input_dataset: files, webdataset or parquet.
    #[arg(long = "input_format", alias = "input-format", default_value = "webdataset")]
    pub input_format: String,
    /// Model to use.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `clip-retrieval back`.
#[derive(Debug, Args)]
pub struct BackArgs {
    /// JSON object: index name -> index folder (local or s3://), or name -> per-index options.
    #[arg(long = "indices_paths", alias = "indices-paths", default_value = "indices_paths.json")]
    pub indices_paths: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 1234)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// Map index files instead of reading them into memory (default for every index).
    #[arg(long = "enable_faiss_memory_mapping", alias = "enable-faiss-memory-mapping", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_faiss_memory_mapping: bool,
    /// Metadata columns returned: a comma list or a Python/JSON list (default url,image_path,caption,NSFW).
    #[arg(long = "columns_to_return", alias = "columns-to-return")]
    pub columns_to_return: Option<String>,
    /// Model folder for indices that do not name one (default: the shipped models/tiny-clip).
    #[arg(long = "clip_model", alias = "clip-model")]
    pub clip_model: Option<String>,
    /// Load the safety model for every index (from --safety_model or <model>/filters/safety.onnx).
    #[arg(long = "provide_safety_model", alias = "provide-safety-model", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub provide_safety_model: bool,
    /// Load the violence detector (from --violence_detector or <model>/filters/violence_detection.npy).
    #[arg(long = "provide_violence_detector", alias = "provide-violence-detector", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub provide_violence_detector: bool,
    /// Load aesthetic embeddings (from --aesthetic_embeddings or <model>/filters/aesthetic/).
    #[arg(long = "provide_aesthetic_embeddings", alias = "provide-aesthetic-embeddings", default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub provide_aesthetic_embeddings: bool,
    /// ONNX safety classifier over embeddings (first output column = probability of unsafe).
    #[arg(long = "safety_model", alias = "safety-model")]
    pub safety_model: Option<String>,
    /// .npy of prompt embeddings [k, dim]; results closest to row 1 are violent.
    #[arg(long = "violence_detector", alias = "violence-detector")]
    pub violence_detector: Option<String>,
    /// Folder of rating0.npy .. rating9.npy aesthetic embeddings.
    #[arg(long = "aesthetic_embeddings", alias = "aesthetic-embeddings")]
    pub aesthetic_embeddings: Option<String>,
    /// /config.json defaultBackend for the UI (default: the URL the page came from).
    #[arg(long = "default_backend", alias = "default-backend")]
    pub default_backend: Option<String>,
    /// /config.json defaultIndex for the UI.
    #[arg(long = "default_index", alias = "default-index")]
    pub default_index: Option<String>,
    /// /config.json urlColumn for the UI.
    #[arg(long = "url_column", alias = "url-column", default_value = "url")]
    pub url_column: String,
    /// The built web UI folder (default: front/dist above the executable or the working directory).
    #[arg(long = "front_dist", alias = "front-dist")]
    pub front_dist: Option<std::path::PathBuf>,
    /// Cap on num_images per request.
    #[arg(long = "max_num_images", alias = "max-num-images", default_value_t = 1000)]
    pub max_num_images: usize,
    /// Cap on num_result_ids per request (and ids per /metadata request).
    #[arg(long = "max_num_result_ids", alias = "max-num-result-ids", default_value_t = 10_000)]
    pub max_num_result_ids: usize,
    /// Largest request body (e.g. 20M).
    #[arg(long = "max_body_size", alias = "max-body-size", default_value = "20M")]
    pub max_body_size: String,
    /// Whole-request time limit in seconds.
    #[arg(long = "request_timeout", alias = "request-timeout", default_value_t = 60.0)]
    pub request_timeout: f64,
    /// Allow image_url queries to loopback, private and link-local addresses.
    #[arg(long = "allow_private_urls", alias = "allow-private-urls", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub allow_private_urls: bool,
    /// image_url download time limit in seconds.
    #[arg(long = "image_url_timeout", alias = "image-url-timeout", default_value_t = 10.0)]
    pub image_url_timeout: f64,
    /// Largest image_url download (e.g. 20M).
    #[arg(long = "image_url_max_size", alias = "image-url-max-size", default_value = "20M")]
    pub image_url_max_size: String,
    /// Searches running at once (default: one per core).
    #[arg(long = "search_threads", alias = "search-threads")]
    pub search_threads: Option<usize>,
    /// Most queries encoded together in one model run.
    #[arg(long = "max_encode_batch", alias = "max-encode-batch", default_value_t = 64)]
    pub max_encode_batch: usize,
    /// Where s3:// index folders are copied (default ~/.cache/clip-retrieval/indices-cache).
    #[arg(long = "cache_path", alias = "cache-path")]
    pub cache_path: Option<String>,
    /// Accepted for compatibility with clip-retrieval; no effect (metadata is an Arrow row store).
    #[arg(long = "enable_hdf5", alias = "enable-hdf5", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_hdf5: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long = "reorder_metadata_by_ivf_index", alias = "reorder-metadata-by-ivf-index", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub reorder_metadata_by_ivf_index: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long = "use_jit", alias = "use-jit", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub use_jit: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long = "use_arrow", alias = "use-arrow", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub use_arrow: Option<bool>,
    /// Accepted for compatibility; no multilingual model is available (use_mclip requests use the CLIP text tower).
    #[arg(long = "enable_mclip_option", alias = "enable-mclip-option", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_mclip_option: Option<bool>,
}

/// `clip-retrieval end2end`.
#[derive(Debug, Args)]
pub struct End2endArgs {
    /// Images and captions (folder, tar shards, parquet; local or s3://). Default: render the synthetic sample.
    #[arg(long = "input_dataset", alias = "input-dataset")]
    pub input_dataset: Option<String>,
    /// Where dataset (when rendered), embeddings, index and indices_paths.json go.
    #[arg(long = "output_folder", alias = "output-folder", default_value = "end2end")]
    pub output_folder: String,
    /// files, webdataset or parquet.
    #[arg(long = "input_format", alias = "input-format", default_value = "files")]
    pub input_format: String,
    /// Samples of the synthetic dataset rendered when no input is given.
    #[arg(long = "sample_count", alias = "sample-count", default_value_t = 1000)]
    pub sample_count: u64,
    /// Index memory budget.
    #[arg(long = "max_index_memory_usage", alias = "max-index-memory-usage", default_value = "4G")]
    pub max_index_memory_usage: String,
    /// Serve the result (clip-retrieval's run_back).
    #[arg(long = "run_back", alias = "run-back", default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub run_back: bool,
    /// Port of the server.
    #[arg(long, default_value_t = 1234)]
    pub port: u16,
    /// Address of the server.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// Model folder (default: the shipped models/tiny-clip).
    #[arg(long = "clip_model", alias = "clip-model")]
    pub clip_model: Option<String>,
    /// Batch size of inference.
    #[arg(long = "batch_size", alias = "batch-size", default_value_t = 256)]
    pub batch_size: usize,
    /// The built web UI folder (default: front/dist above the executable or the working directory).
    #[arg(long = "front_dist", alias = "front-dist")]
    pub front_dist: Option<std::path::PathBuf>,
    /// Hide progress bars.
    #[arg(long = "no_progress", alias = "no-progress")]
    pub no_progress: bool,
}

fn parse_modality(s: &str) -> Result<clip_index::Modality, String> {
    match s.trim() {
        "image" => Ok(clip_index::Modality::Image),
        "text" => Ok(clip_index::Modality::Text),
        other => Err(format!("unknown modality {other:?} (image or text)")),
    }
}
