//! A small ONNX model over CLIP embeddings (e.g. an NSFW/safety classifier): `[n, dim]` float rows in, one score
//! per row out (the first output column, as clip-retrieval reads its Keras safety model).

use crate::encoder::{build_session, SessionOptions};
use crate::error::{ModelError, Result};
use ort::session::Session;
use ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An embedding classifier loaded from an ONNX file.
pub struct EmbeddingClassifier {
    path: PathBuf,
    session: Mutex<Session>,
    input_name: String,
    /// Embedding width the model expects, when its input fixes it.
    pub dim: Option<usize>,
}

impl EmbeddingClassifier {
    /// Loads `path`; its first input must be a float `[batch, dim]` tensor.
    pub fn load(path: &Path, options: SessionOptions) -> Result<Self> {
        let session = build_session(path, options)?;
        let invalid = |reason: String| ModelError::InvalidFile { path: path.into(), reason };
        let input = session.inputs().first().ok_or_else(|| invalid("the model has no input".into()))?;
        let ort::value::ValueType::Tensor { shape, .. } = input.dtype() else {
            return Err(invalid(format!("input {} is not a tensor", input.name())));
        };
        if shape.len() != 2 {
            return Err(invalid(format!("input must be [batch, dim], found {:?}", &shape[..])));
        }
        let dim = (shape[1] > 0).then_some(shape[1] as usize);
        let input_name = input.name().to_string();
        Ok(Self { path: path.into(), session: Mutex::new(session), input_name, dim })
    }

    /// One score per row of `rows` (row-major, `dim` columns each): the first column of the first output.
    pub fn predict(&self, rows: &[f32], dim: usize) -> Result<Vec<f32>> {
        let n = rows.len() / dim.max(1);
        if n == 0 {
            return Ok(Vec::new());
        }
        let ctx = || format!("running {}", self.path.display());
        let tensor = Tensor::from_array((vec![n as i64, dim as i64], rows.to_vec())).map_err(ModelError::ort(ctx()))?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(ModelError::ort(ctx()))?;
        let (shape, values) = outputs[0].try_extract_tensor::<f32>().map_err(|e| ModelError::BadOutput {
            model: "embedding classifier",
            reason: format!("expected float32 scores: {e}"),
        })?;
        let cols = match &shape[..] {
            [rows] if *rows as usize == n => 1,
            [rows, cols] if *rows as usize == n && *cols > 0 => *cols as usize,
            other => {
                return Err(ModelError::BadOutput {
                    model: "embedding classifier",
                    reason: format!("expected [{n}] or [{n}, k] scores, got {other:?}"),
                })
            }
        };
        Ok(values.chunks_exact(cols).map(|r| r[0]).collect())
    }
}
