//! `clip-retrieval inference` flags: clip-retrieval's names and defaults, plus partition selection for scale-out.
//! Field order is the order `to_argv` writes flags in (the operator's pods show these first).

use crate::model::ModelArgs;
use crate::values::{parse_bool, ByteSize, DistributionStrategy, EmbeddingDtype, InputFormat};
use crate::CommandArgs;
use clap::{ArgAction, Args};
use serde::Serialize;

/// `clip-retrieval inference`.
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct InferenceArgs {
    /// Input: a folder, a shard pattern like "shards/{000..150}.tar", or a parquet folder; local or s3://.
    #[arg(long)]
    pub input_dataset: String,
    /// files, webdataset or parquet.
    #[arg(long, value_enum, default_value_t = InputFormat::Files)]
    pub input_format: InputFormat,
    /// Output folder (local or s3://): img_emb/, text_emb/, metadata/, stats/.
    #[arg(long)]
    pub output_folder: String,
    /// Number of output partitions.
    #[arg(long)]
    pub output_partition_count: Option<usize>,
    /// Compute only these partitions (comma-separated ids), e.g. one per pod.
    #[arg(long, value_delimiter = ',')]
    pub partition_ids: Option<Vec<usize>>,
    /// Samples per encoder batch.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Threads decoding and preprocessing images.
    #[arg(long, default_value_t = 4)]
    pub num_prepro_workers: usize,
    /// Compute text embeddings.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_text: bool,
    /// Compute image embeddings.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_image: bool,
    /// Copy metadata into metadata/*.parquet.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_metadata: bool,
    /// Samples per output partition when --output_partition_count is not given.
    #[arg(long, default_value_t = 1_000_000)]
    pub write_batch_size: usize,
    /// Process only this many samples.
    #[arg(long)]
    pub subset_size: Option<usize>,
    /// Image member extension (webdataset) or column (parquet).
    #[arg(long, default_value = "jpg")]
    pub wds_image_key: String,
    /// Caption member extension (webdataset) or column (parquet; falls back to caption/text).
    #[arg(long, default_value = "txt")]
    pub wds_caption_key: String,
    /// Largest file, tar member or parquet cell of one sample (e.g. 64M); a larger sample is skipped, counted,
    /// with its reason, before anything of its size is read.
    #[arg(long, default_value_t = ByteSize::mib(64))]
    pub max_sample_bytes: ByteSize,
    /// Delete the output folder's previous outputs (img_emb/, text_emb/, metadata/, stats/, plan.json) and start
    /// afresh, instead of resuming; needed when the plan recorded in plan.json differs (dataset, partitions, model,
    /// options). Not with --partition_ids.
    #[arg(long)]
    pub overwrite: bool,
    /// Estimated samples per shard or parquet file, to size partitions.
    #[arg(long, default_value_t = 10_000)]
    pub wds_number_file_per_input_file: usize,
    /// Embedding dtype in the npy files: float16 (clip-retrieval's) or float32.
    #[arg(long, value_enum, default_value_t = EmbeddingDtype::Float16)]
    pub embedding_dtype: EmbeddingDtype,
    /// Accepted for compatibility; only "sequential" exists (partitions run in order; scale out with --partition_ids).
    #[arg(long, value_enum, default_value_t = DistributionStrategy::Sequential)]
    pub distribution_strategy: DistributionStrategy,
    /// Accepted for compatibility and ignored (inputs are streamed, S3 objects go to temporary files).
    #[arg(long)]
    pub cache_path: Option<String>,
    /// Multilingual CLIP is not supported: passing True is an error.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub use_mclip: bool,
    /// Accepted for compatibility and ignored (ONNX Runtime optimises the graph itself).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub use_jit: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Model to use.
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
}

impl CommandArgs for InferenceArgs {
    const NAME: &'static str = "inference";
}

impl InferenceArgs {
    /// Embeds `input_dataset` into `output_folder`, every other flag at its default.
    pub fn new(input_dataset: &str, output_folder: &str) -> Self {
        crate::parse_known(&[&format!("--input_dataset={input_dataset}"), &format!("--output_folder={output_folder}")])
    }
}
