//! `clip-retrieval sample-dataset` flags: the synthetic captioned dataset's size, seed, format and slice.

use crate::values::InputFormat;
use crate::CommandArgs;
use clap::Args;
use serde::Serialize;

/// `clip-retrieval sample-dataset`.
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct SampleDatasetArgs {
    /// Where to write the dataset (local or s3://).
    #[arg(long)]
    pub output_folder: String,
    /// Number of samples.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Dataset seed: the same seed renders the same samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// files, webdataset or parquet.
    #[arg(long, value_enum, default_value_t = InputFormat::Files)]
    pub output_format: InputFormat,
    /// Samples per tar shard or parquet file.
    #[arg(long, default_value_t = 1000)]
    pub shard_size: usize,
    /// First sample index (to render disjoint slices of one dataset).
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Longer side of every image in pixels (e.g. 768, web-sized); the default renders 96-256 px images. The
    /// samples (shapes, colours, captions) are the same at any size.
    #[arg(long, value_parser = clap::value_parser!(u32).range(8..=8192))]
    pub image_size: Option<u32>,
}

impl CommandArgs for SampleDatasetArgs {
    const NAME: &'static str = "sample-dataset";
}

impl SampleDatasetArgs {
    /// Renders the default sample into `output_folder`.
    pub fn new(output_folder: &str) -> Self {
        crate::parse_known(&[&format!("--output_folder={output_folder}")])
    }
}
