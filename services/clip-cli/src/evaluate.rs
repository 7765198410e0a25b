//! `clip-retrieval evaluate` flags: the faithfulness gate a user runs on their own model and data before serving a
//! cheaper precision (int8) in place of the reference one (fp32).

use crate::model::ModelArgs;
use crate::values::{InputFormat, Precision};
use crate::CommandArgs;
use clap::Args;
use serde::Serialize;

/// `clip-retrieval evaluate`.
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct EvaluateArgs {
    /// The dataset to measure on (as `inference` reads it): a folder, shard pattern or parquet folder; local or s3://.
    #[arg(long)]
    pub input_dataset: String,
    /// files, webdataset or parquet.
    #[arg(long, value_enum, default_value_t = InputFormat::Files)]
    pub input_format: InputFormat,
    /// The model, and the precision measured (`--precision`, `--image_precision`, `--text_precision`; int8 unless
    /// given).
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// The reference precision every tower is compared against.
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub against_precision: Precision,
    /// Samples measured (the first ones of the dataset); the text->image overlap compares every caption with every
    /// image, so time grows with its square.
    #[arg(long, default_value_t = 2000)]
    pub subset_size: usize,
    /// Results per caption compared by the retrieval overlap and recall (top-k).
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Samples per encoder batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Threads decoding and preprocessing images.
    #[arg(long, default_value_t = 4)]
    pub num_prepro_workers: usize,
    /// Image member extension (webdataset) or column (parquet).
    #[arg(long, default_value = "jpg")]
    pub wds_image_key: String,
    /// Caption member extension (webdataset) or column (parquet).
    #[arg(long, default_value = "txt")]
    pub wds_caption_key: String,
    /// Keep both runs' embeddings and `evaluate.json` here (default: a temporary folder, deleted).
    #[arg(long)]
    pub output_folder: Option<String>,
    /// Exit 0 even when the gate fails (the report is printed either way).
    #[arg(long)]
    pub no_gate: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl CommandArgs for EvaluateArgs {
    const NAME: &'static str = "evaluate";
}

impl EvaluateArgs {
    /// `(image, text)` precisions measured: the model flags' when any was given, else int8 for both.
    pub fn candidate_precisions(&self) -> (Precision, Precision) {
        let m = &self.model;
        let given = m.precision != Precision::Fp32 || m.image_precision.is_some() || m.text_precision.is_some();
        if given {
            m.tower_precisions()
        } else {
            (Precision::Int8, Precision::Int8)
        }
    }
}
