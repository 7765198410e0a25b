//! Which graph file each tower runs: fp32 (the fused graph when `models/scripts/quantize.py` wrote one) or int8.
//!
//! The files sit beside the fp32 tower in immich's layout: `visual/model.onnx`, `visual/model.fused.onnx`,
//! `visual/model.int8.onnx` (and the same under `textual/`). fp32 stays the default: int8 changes the embeddings,
//! and `clip-retrieval evaluate` measures by how much before a user switches.

use crate::error::{ModelError, Result};
use std::path::{Path, PathBuf};

/// Numeric precision of one tower's graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Precision {
    /// Float weights and activations (`model.fused.onnx` when present, else `model.onnx`).
    #[default]
    Fp32,
    /// MatMul/Gemm weights as per-channel signed int8, activations quantized per batch (`model.int8.onnx`).
    Int8,
}

impl Precision {
    /// The flag spelling (`fp32`, `int8`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Int8 => "int8",
        }
    }
}

/// The precision of each tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TowerPrecisions {
    /// The image tower's.
    pub image: Precision,
    /// The text tower's.
    pub text: Precision,
}

impl TowerPrecisions {
    /// Both towers at `p`.
    pub fn both(p: Precision) -> Self {
        Self { image: p, text: p }
    }
}

/// The graph file of a tower at `precision`, given its fp32 `model.onnx`.
pub(crate) fn tower_file(fp32: &Path, precision: Precision, what_int8: &'static str) -> Result<PathBuf> {
    let sibling = |name: &str| fp32.with_file_name(name);
    match precision {
        Precision::Fp32 => {
            let fused = sibling("model.fused.onnx");
            Ok(if fused.is_file() { fused } else { fp32.to_path_buf() })
        }
        Precision::Int8 => {
            let int8 = sibling("model.int8.onnx");
            if int8.is_file() {
                Ok(int8)
            } else {
                Err(ModelError::MissingFile { path: int8, what: what_int8 })
            }
        }
    }
}

/// How the image tower's int8 file is described when missing.
pub(crate) const MISSING_IMAGE_INT8: &str =
    "the int8 image tower asked for by --precision/--image_precision int8; write it with \
     `python models/scripts/quantize.py MODEL_FOLDER`, or run the image tower at fp32";
/// How the text tower's int8 file is described when missing.
pub(crate) const MISSING_TEXT_INT8: &str =
    "the int8 text tower asked for by --precision/--text_precision int8; write it with \
     `python models/scripts/quantize.py MODEL_FOLDER`, or run the text tower at fp32";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp32_prefers_the_fused_graph_and_int8_needs_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let fp32 = dir.path().join("model.onnx");
        std::fs::write(&fp32, b"x").unwrap();
        assert_eq!(tower_file(&fp32, Precision::Fp32, MISSING_IMAGE_INT8).unwrap(), fp32);
        let err = tower_file(&fp32, Precision::Int8, MISSING_IMAGE_INT8).unwrap_err().to_string();
        assert!(err.contains("model.int8.onnx") && err.contains("quantize.py"), "{err}");
        std::fs::write(dir.path().join("model.fused.onnx"), b"x").unwrap();
        std::fs::write(dir.path().join("model.int8.onnx"), b"x").unwrap();
        assert_eq!(
            tower_file(&fp32, Precision::Fp32, MISSING_IMAGE_INT8).unwrap(),
            dir.path().join("model.fused.onnx")
        );
        assert_eq!(tower_file(&fp32, Precision::Int8, MISSING_IMAGE_INT8).unwrap(), dir.path().join("model.int8.onnx"));
    }
}
