//! `clip-retrieval end2end` flags: the few choices of the inference -> index -> back chain.

use crate::values::{parse_bool, ByteSize, InputFormat};
use crate::CommandArgs;
use clap::{ArgAction, Args};
use serde::Serialize;
use std::path::PathBuf;

/// `clip-retrieval end2end`.
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct End2endArgs {
    /// Images and captions (folder, tar shards, parquet; local or s3://). Default: render the synthetic sample.
    #[arg(long)]
    pub input_dataset: Option<String>,
    /// Where dataset (when rendered), embeddings, index and indices_paths.json go.
    #[arg(long, default_value = "end2end")]
    pub output_folder: String,
    /// files, webdataset or parquet.
    #[arg(long, value_enum, default_value_t = InputFormat::Files)]
    pub input_format: InputFormat,
    /// Samples of the synthetic dataset rendered when no input is given.
    #[arg(long, default_value_t = 1000)]
    pub sample_count: u64,
    /// Index memory budget.
    #[arg(long, default_value_t = ByteSize::gib(4))]
    pub max_index_memory_usage: ByteSize,
    /// Serve the result (clip-retrieval's run_back).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub run_back: bool,
    /// Port of the server.
    #[arg(long, default_value_t = 1234)]
    pub port: u16,
    /// Address of the server.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// Model folder (default: the shipped models/tiny-clip).
    #[arg(long)]
    pub clip_model: Option<String>,
    /// Batch size of inference.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// The built web UI folder (default: front/dist above the executable or the working directory).
    #[arg(long)]
    pub front_dist: Option<PathBuf>,
    /// Hide progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

impl CommandArgs for End2endArgs {
    const NAME: &'static str = "end2end";
}
