//! The model folder layout (immich's OpenCLIP export): `config.json`, `visual/`, `textual/`.

use crate::error::{ModelError, Result};
use crate::resample::Interpolation;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Paths of every file of a model folder.
#[derive(Debug, Clone)]
pub struct ModelLayout {
    /// The folder itself.
    pub root: PathBuf,
    /// `config.json`: embed_dim, vision_cfg.image_size, text_cfg.context_length.
    pub config: PathBuf,
    /// `visual/model.onnx`.
    pub visual_model: PathBuf,
    /// `visual/preprocess_cfg.json`.
    pub preprocess_cfg: PathBuf,
    /// `textual/model.onnx`.
    pub textual_model: PathBuf,
    /// `textual/tokenizer.json`.
    pub tokenizer: PathBuf,
}

impl ModelLayout {
    /// Names the files of a model folder and checks that each one exists.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(ModelError::MissingFile { path: root.to_path_buf(), what: "a CLIP model folder" });
        }
        let layout = Self {
            root: root.to_path_buf(),
            config: root.join("config.json"),
            visual_model: root.join("visual/model.onnx"),
            preprocess_cfg: root.join("visual/preprocess_cfg.json"),
            textual_model: root.join("textual/model.onnx"),
            tokenizer: root.join("textual/tokenizer.json"),
        };
        let required: [(&PathBuf, &'static str); 5] = [
            (&layout.config, "model config with embed_dim, vision_cfg and text_cfg"),
            (&layout.visual_model, "the image tower as ONNX"),
            (&layout.preprocess_cfg, "image preprocessing: size, mean, std, interpolation, resize_mode"),
            (&layout.textual_model, "the text tower as ONNX"),
            (&layout.tokenizer, "a Hugging Face tokenizer.json"),
        ];
        for (path, what) in required {
            if !path.is_file() {
                return Err(ModelError::MissingFile { path: path.clone(), what });
            }
        }
        Ok(layout)
    }
}

/// The subset of OpenCLIP's `config.json` the engine needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    /// Width of the shared embedding space.
    pub embed_dim: usize,
    /// Image tower settings.
    pub vision_cfg: VisionConfig,
    /// Text tower settings.
    pub text_cfg: TextConfig,
}

/// `vision_cfg` of `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    /// Input resolution: one number, or `[height, width]`.
    pub image_size: ImageSize,
}

/// `text_cfg` of `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct TextConfig {
    /// Maximum tokens per caption, start and end tokens included.
    #[serde(default = "default_context_length")]
    pub context_length: usize,
}

fn default_context_length() -> usize {
    77
}

/// A square size or an explicit `[height, width]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ImageSize {
    /// Square input.
    Square(usize),
    /// `[height, width]`.
    Rect([usize; 2]),
}

impl ImageSize {
    /// `(height, width)`.
    pub fn hw(self) -> (usize, usize) {
        match self {
            Self::Square(s) => (s, s),
            Self::Rect([h, w]) => (h, w),
        }
    }
}

/// How the image is brought to the model's input size (OpenCLIP `resize_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Resize the shortest side to the target, then center crop (the CLIP default).
    Shortest,
    /// Resize the longest side to the target, then center pad with `fill_color`.
    Longest,
    /// Resize both sides to the target, ignoring aspect ratio.
    Squash,
}

/// `visual/preprocess_cfg.json`, parsed and checked.
#[derive(Debug, Clone)]
pub struct PreprocessConfig {
    /// Target `(height, width)`.
    pub size: (usize, usize),
    /// Per-channel mean, applied after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
    /// Resampling kernel.
    pub interpolation: Interpolation,
    /// Resize strategy.
    pub resize_mode: ResizeMode,
    /// Padding value for `longest` (0-255).
    pub fill_color: u8,
}

#[derive(Deserialize)]
struct RawPreprocess {
    size: ImageSize,
    mean: Vec<f32>,
    std: Vec<f32>,
    #[serde(default = "default_interpolation")]
    interpolation: String,
    #[serde(default = "default_resize_mode")]
    resize_mode: String,
    #[serde(default)]
    fill_color: u8,
}

fn default_interpolation() -> String {
    "bicubic".into()
}
fn default_resize_mode() -> String {
    "shortest".into()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::InvalidFile { path: path.into(), reason: format!("unreadable: {e}") })?;
    serde_json::from_str(&text).map_err(|e| ModelError::InvalidFile { path: path.into(), reason: e.to_string() })
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let config: Self = read_json(path)?;
        if config.embed_dim == 0 || config.text_cfg.context_length < 2 {
            return Err(ModelError::InvalidFile {
                path: path.into(),
                reason: "embed_dim must be > 0 and text_cfg.context_length >= 2".into(),
            });
        }
        Ok(config)
    }
}

impl PreprocessConfig {
    /// Reads and validates `visual/preprocess_cfg.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let raw: RawPreprocess = read_json(path)?;
        let invalid = |reason: String| ModelError::InvalidFile { path: path.into(), reason };
        let triple = |name: &str, v: &[f32]| -> Result<[f32; 3]> {
            <[f32; 3]>::try_from(v).map_err(|_| invalid(format!("{name} must have 3 values, found {}", v.len())))
        };
        let mean = triple("mean", &raw.mean)?;
        let std = triple("std", &raw.std)?;
        if std.iter().any(|s| *s <= 0.0) {
            return Err(invalid("std values must be positive".into()));
        }
        let interpolation = Interpolation::parse(&raw.interpolation)
            .ok_or_else(|| invalid(format!("unknown interpolation {:?}", raw.interpolation)))?;
        let resize_mode = match raw.resize_mode.as_str() {
            "shortest" => ResizeMode::Shortest,
            "longest" => ResizeMode::Longest,
            "squash" => ResizeMode::Squash,
            other => return Err(invalid(format!("unknown resize_mode {other:?}"))),
        };
        let size = raw.size.hw();
        if size.0 == 0 || size.1 == 0 {
            return Err(invalid("size must be positive".into()));
        }
        Ok(Self { size, mean, std, interpolation, resize_mode, fill_color: raw.fill_color })
    }
}
