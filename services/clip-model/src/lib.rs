//! A CLIP model folder (immich's OpenCLIP ONNX layout) turned into encoders.
//!
//! [`ClipModel::load`] reads `config.json`, `visual/preprocess_cfg.json`, `textual/tokenizer.json` and the two ONNX
//! towers, then [`ClipModel::encode_images`] and [`ClipModel::encode_texts`] give L2-normalised embeddings. Image
//! preprocessing reproduces OpenCLIP's PIL pipeline byte for byte ([`preprocess`]); tokenization reproduces
//! OpenCLIP's tokenizer ([`tokenizer`]). This crate does no I/O beyond reading the model folder.

pub mod classifier;
pub mod config;
pub mod encoder;
pub mod error;
pub mod precision;
pub mod preprocess;
pub mod resample;
pub mod runtime;
pub mod tokenizer;

pub use classifier::EmbeddingClassifier;
pub use config::{ModelConfig, ModelLayout, PreprocessConfig};
pub use encoder::{ImageEncoder, SessionOptions, TextEncoder};
pub use error::{ModelError, Result};
pub use precision::{Precision, TowerPrecisions};
pub use preprocess::{ImageLimits, DEFAULT_MAX_IMAGE_PIXELS};
pub use runtime::ExecutionDevice;
pub use tokenizer::ClipTokenizer;

use std::path::Path;

/// A loaded CLIP model: preprocessing, tokenizer and both towers.
pub struct ClipModel {
    /// The folder's files.
    pub layout: ModelLayout,
    /// `config.json`.
    pub config: ModelConfig,
    /// `visual/preprocess_cfg.json`.
    pub preprocess: PreprocessConfig,
    /// The caption tokenizer.
    pub tokenizer: ClipTokenizer,
    /// What one image may cost to decode (`--max_image_pixels`).
    pub image_limits: ImageLimits,
    /// The precision each tower runs at.
    pub precisions: TowerPrecisions,
    /// The image tower's graph file loaded (depends on the precision).
    pub image_file: std::path::PathBuf,
    /// The text tower's graph file loaded.
    pub text_file: std::path::PathBuf,
    image: ImageEncoder,
    text: TextEncoder,
}

impl ClipModel {
    /// Loads every file of a model folder at fp32; errors name the file and what is wrong with it.
    pub fn load(root: &Path, options: SessionOptions) -> Result<Self> {
        Self::load_at(root, options, TowerPrecisions::default())
    }

    /// Loads a model folder with each tower at its precision (a missing int8 file is an error naming it).
    pub fn load_at(root: &Path, options: SessionOptions, precisions: TowerPrecisions) -> Result<Self> {
        let layout = ModelLayout::open(root)?;
        let config = ModelConfig::load(&layout.config)?;
        let preprocess = PreprocessConfig::load(&layout.preprocess_cfg)?;
        let tokenizer = ClipTokenizer::load(&layout.tokenizer, config.text_cfg.context_length)?;
        let image_file = precision::tower_file(&layout.visual_model, precisions.image, precision::MISSING_IMAGE_INT8)?;
        let text_file = precision::tower_file(&layout.textual_model, precisions.text, precision::MISSING_TEXT_INT8)?;
        let image = ImageEncoder::load(&image_file, preprocess.size, options)?;
        let text = TextEncoder::load(&text_file, config.text_cfg.context_length, options)?;
        Ok(Self {
            layout,
            config,
            preprocess,
            tokenizer,
            image_limits: ImageLimits::default(),
            precisions,
            image_file,
            text_file,
            image,
            text,
        })
    }

    /// Embedding width.
    pub fn embed_dim(&self) -> usize {
        self.config.embed_dim
    }

    /// Number of floats of one preprocessed image.
    pub fn image_tensor_len(&self) -> usize {
        3 * self.preprocess.size.0 * self.preprocess.size.1
    }

    /// Decodes and preprocesses one encoded image (thread-safe; call from a pool).
    pub fn preprocess_image(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        preprocess::preprocess_image(bytes, &self.preprocess, &self.image_limits)
    }

    /// Embeds concatenated preprocessed images.
    pub fn encode_images(&self, pixels: &[f32]) -> Result<Vec<Vec<f32>>> {
        self.image.encode(pixels)
    }

    /// Embeds captions; batches are trimmed to their longest caption when the text tower allows it.
    pub fn encode_texts(&self, captions: &[&str]) -> Result<Vec<Vec<f32>>> {
        if captions.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, len) = self.tokenizer.encode_batch(captions, self.text.dynamic_sequence)?;
        self.text.encode(&ids, len)
    }

    /// Whether caption batches are trimmed (dynamic sequence axis in the text export).
    pub fn trims_captions(&self) -> bool {
        self.text.dynamic_sequence
    }
}
