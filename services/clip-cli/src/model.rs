//! Model selection flags shared by the subcommands that embed (`inference`, `filter`).

use crate::values::{Device, Precision};

/// Pillow's `Image.MAX_IMAGE_PIXELS * 2`, above which PIL refuses an image as a decompression bomb.
pub const MAX_IMAGE_PIXELS: u64 = 178_956_970;
use clap::Args;
use serde::Serialize;

/// Which model, where it runs.
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct ModelArgs {
    /// Model folder in the immich/OpenCLIP ONNX layout: a path or s3:// URI, or a name as clip-retrieval takes it
    /// (ViT-B/32, open_clip:MODEL/TAG, hf_clip:ORG/NAME) found in the model cache under immich's folder name
    /// (ViT-B-32__openai). Default: the shipped models/tiny-clip.
    #[arg(long)]
    pub clip_model: Option<String>,
    /// The model cache: where s3:// models are copied to and named models are looked up (default
    /// ~/.cache/clip-retrieval/models); an s3:// root is searched for named models, copied to the default cache.
    #[arg(long)]
    pub clip_cache_path: Option<String>,
    /// Execution provider: cpu, cuda or cuda:N (CUDA needs the onnxruntime-gpu library in ORT_DYLIB_PATH).
    #[arg(long, default_value_t = Device::Cpu)]
    pub device: Device,
    /// ONNX Runtime threads per model (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub num_threads: usize,
    /// Most pixels (width x height, read from the header) an image may have; larger ones are skipped undecoded.
    /// The default is Pillow's decompression-bomb threshold.
    #[arg(long, default_value_t = MAX_IMAGE_PIXELS)]
    pub max_image_pixels: u64,
    /// Precision of both towers: fp32, or int8 (the folder's model.int8.onnx files, written by
    /// models/scripts/quantize.py; measure them with `clip-retrieval evaluate` before use).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    pub precision: Precision,
    /// The image tower's precision, overriding --precision.
    #[arg(long, value_enum)]
    pub image_precision: Option<Precision>,
    /// The text tower's precision, overriding --precision.
    #[arg(long, value_enum)]
    pub text_precision: Option<Precision>,
    /// Let ONNX Runtime's idle threads spin-wait between operators (its own default). Off here: spinning threads
    /// take the cores the image preprocessing pool needs (bench/README.md has the measurement).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = crate::values::parse_bool)]
    pub intra_op_spinning: bool,
}

impl ModelArgs {
    /// `(image, text)` precisions after the per-tower overrides.
    pub fn tower_precisions(&self) -> (Precision, Precision) {
        (self.image_precision.unwrap_or(self.precision), self.text_precision.unwrap_or(self.precision))
    }
}
