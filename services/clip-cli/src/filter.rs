//! `clip-retrieval filter` flags: one query, how many results or which threshold, and where the images come from.

use crate::model::ModelArgs;
use crate::values::{InputFormat, Modality, QueryType};
use crate::CommandArgs;
use clap::Args;
use serde::Serialize;

/// `clip-retrieval filter`.
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct FilterArgs {
    /// Text to search for, or the path of an image.
    #[arg(long)]
    pub query: String,
    /// Where matched images and results.parquet go.
    #[arg(long)]
    pub output_folder: String,
    /// Index folder made by `clip-retrieval index`.
    #[arg(long)]
    pub indice_folder: String,
    /// Results of a top-k search.
    #[arg(long, default_value_t = 100)]
    pub num_results: usize,
    /// Keep every result with similarity >= threshold (range search) instead of the top num_results.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Which index to search: image or text.
    #[arg(long, value_enum, default_value_t = Modality::Image)]
    pub modality: Modality,
    /// How to read --query: auto (an existing file is an image), text or image.
    #[arg(long, value_enum, default_value_t = QueryType::Auto)]
    pub query_type: QueryType,
    /// The dataset the index was built from, to extract images of webdataset/parquet inputs (their image_path is a key).
    #[arg(long)]
    pub input_dataset: Option<String>,
    /// Format of --input_dataset: files, webdataset or parquet.
    #[arg(long, value_enum, default_value_t = InputFormat::Webdataset)]
    pub input_format: InputFormat,
    /// Model to use.
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
}

impl CommandArgs for FilterArgs {
    const NAME: &'static str = "filter";
}
