//! The two ONNX towers of a CLIP model as encoders: batches in, L2-normalised embeddings out.
//!
//! Exports differ: immich's have a fixed batch of 1 and int32 tokens at 77; ours have dynamic batch and sequence
//! axes and int64 tokens. The encoders read the input signature and adapt (chunking, dtype, trimming).

use crate::error::{ModelError, Result};
use crate::runtime::{environment, ExecutionDevice};
use ort::session::Session;
use ort::value::TensorElementType;
use ort::value::{Tensor, ValueType};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How sessions are built.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// CPU or CUDA.
    pub device: ExecutionDevice,
    /// ONNX Runtime intra-op threads (0 lets it decide).
    pub intra_threads: usize,
    /// Whether idle intra-op threads spin-wait for the next operator. ONNX Runtime spins by default, which hands
    /// work over fastest when the session owns the cores, but burns the cores the preprocessing pool shares.
    pub intra_spinning: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self { device: ExecutionDevice::Cpu, intra_threads: 0, intra_spinning: true }
    }
}

/// One ONNX tower and what we learnt about its input.
struct Tower {
    model: &'static str,
    path: PathBuf,
    session: Mutex<Session>,
    input_name: String,
    input_type: TensorElementType,
    /// `Some(n)` when the export fixed the batch dimension (immich exports use 1).
    fixed_batch: Option<usize>,
    /// Static sizes of the non-batch input dimensions (`None` where dynamic).
    dims: Vec<Option<usize>>,
}

pub(crate) fn build_session(path: &Path, options: SessionOptions) -> Result<Session> {
    let ctx = || format!("loading {}", path.display());
    let mut builder = Session::builder(environment()?).map_err(ModelError::ort(ctx()))?;
    let option_error = |e: ort::Error| ModelError::ort(ctx())(e);
    if options.intra_threads > 0 {
        builder = builder.with_intra_threads(options.intra_threads).map_err(|e| option_error(e.into()))?;
    }
    builder = builder.with_intra_op_spinning(options.intra_spinning).map_err(|e| option_error(e.into()))?;
    // The CPU arena keeps every activation buffer it ever grew; without it peak RSS for ViT-B/32 at batch 64 drops
    // from ~1.7 GB to ~1.3 GB at the same speed (bench/README.md).
    let cpu = ort::ep::CPU::default().with_arena_allocator(false).build();
    let providers = match options.device {
        ExecutionDevice::Cpu => vec![cpu],
        ExecutionDevice::Cuda(id) => vec![ort::ep::CUDA::default().with_device_id(id).build().error_on_failure(), cpu],
    };
    builder = builder.with_execution_providers(providers).map_err(|e| option_error(e.into()))?;
    builder.commit_from_file(path).map_err(ModelError::ort(ctx()))
}

impl Tower {
    fn load(model: &'static str, path: &Path, options: SessionOptions) -> Result<Self> {
        let session = build_session(path, options)?;
        let invalid = |reason: String| ModelError::InvalidFile { path: path.into(), reason };
        let input = session.inputs().first().ok_or_else(|| invalid("the model has no input".into()))?;
        let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
            return Err(invalid(format!("input {} is not a tensor", input.name())));
        };
        let to_dim = |d: i64| if d > 0 { Some(d as usize) } else { None };
        let fixed_batch = shape.first().copied().and_then(to_dim);
        let dims = shape.iter().skip(1).map(|&d| to_dim(d)).collect();
        if session.outputs().is_empty() {
            return Err(invalid("the model has no output".into()));
        }
        Ok(Self {
            model,
            path: path.into(),
            input_name: input.name().to_string(),
            input_type: *ty,
            fixed_batch,
            dims,
            session: Mutex::new(session),
        })
    }

    /// Runs rows of `row_len` input values; returns `[rows, dim]` embeddings, L2-normalised.
    fn run<T: ort::value::PrimitiveTensorElementType + Copy + Default + std::fmt::Debug + 'static>(
        &self,
        data: &[T],
        row_shape: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let row_len: usize = row_shape.iter().product();
        let rows = data.len() / row_len;
        let chunk = self.fixed_batch.unwrap_or(rows.max(1));
        let mut out = Vec::with_capacity(rows);
        for start in (0..rows).step_by(chunk) {
            let n = chunk.min(rows - start);
            let mut buf = data[start * row_len..(start + n) * row_len].to_vec();
            // A fixed-batch export needs exactly `chunk` rows: pad, then drop the padding's outputs.
            buf.resize(chunk * row_len, T::default());
            let mut shape = vec![chunk as i64];
            shape.extend(row_shape.iter().map(|&d| d as i64));
            let tensor = Tensor::from_array((shape, buf)).map_err(ModelError::ort(format!("{} input", self.model)))?;
            let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let outputs = session
                .run(ort::inputs![self.input_name.as_str() => tensor])
                .map_err(ModelError::ort(format!("running {}", self.path.display())))?;
            let (oshape, values) = outputs[0].try_extract_tensor::<f32>().map_err(|e| ModelError::BadOutput {
                model: self.model,
                reason: format!("expected float32 embeddings: {e}"),
            })?;
            if oshape.len() != 2 || oshape[0] as usize != chunk {
                return Err(ModelError::BadOutput {
                    model: self.model,
                    reason: format!("expected shape [{chunk}, dim], got {:?}", &oshape[..]),
                });
            }
            let dim = oshape[1] as usize;
            out.extend(values.chunks_exact(dim).take(n).map(l2_normalized));
        }
        Ok(out)
    }
}

fn l2_normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}

/// The image tower: preprocessed CHW tensors in, embeddings out.
pub struct ImageEncoder {
    tower: Tower,
    /// `(height, width)` the tower expects.
    pub input_hw: (usize, usize),
}

impl ImageEncoder {
    /// Loads `visual/model.onnx` for inputs of `input_hw`.
    pub fn load(path: &Path, input_hw: (usize, usize), options: SessionOptions) -> Result<Self> {
        let tower = Tower::load("visual model", path, options)?;
        if tower.input_type != TensorElementType::Float32 {
            return Err(ModelError::InvalidFile {
                path: path.into(),
                reason: format!("image input must be float32, found {:?}", tower.input_type),
            });
        }
        let expected = [Some(3), Some(input_hw.0), Some(input_hw.1)];
        let mismatch = tower.dims.len() != 3 || tower.dims.iter().zip(expected).any(|(d, e)| d.is_some() && *d != e);
        if mismatch {
            return Err(ModelError::InvalidFile {
                path: path.into(),
                reason: format!(
                    "image input shape {:?} does not match [batch, 3, {}, {}]",
                    tower.dims, input_hw.0, input_hw.1
                ),
            });
        }
        Ok(Self { tower, input_hw })
    }

    /// Encodes `pixels.len() / (3*h*w)` images.
    pub fn encode(&self, pixels: &[f32]) -> Result<Vec<Vec<f32>>> {
        let (h, w) = self.input_hw;
        self.tower.run(pixels, &[3, h, w])
    }
}

/// The text tower: token id rows in, embeddings out.
pub struct TextEncoder {
    tower: Tower,
    /// Whether the tower accepts sequences shorter than the context length.
    pub dynamic_sequence: bool,
}

impl TextEncoder {
    /// Loads `textual/model.onnx`.
    pub fn load(path: &Path, context_length: usize, options: SessionOptions) -> Result<Self> {
        let tower = Tower::load("textual model", path, options)?;
        let invalid = |reason: String| ModelError::InvalidFile { path: path.into(), reason };
        if !matches!(tower.input_type, TensorElementType::Int32 | TensorElementType::Int64) {
            return Err(invalid(format!("text input must be int32 or int64 token ids, found {:?}", tower.input_type)));
        }
        match tower.dims.as_slice() {
            [Some(n)] if *n != context_length => {
                return Err(invalid(format!("text input length {n} differs from context_length {context_length}")))
            }
            [_] => {}
            other => return Err(invalid(format!("text input must be [batch, tokens], found [batch, {other:?}]"))),
        }
        let dynamic_sequence = tower.dims[0].is_none();
        Ok(Self { tower, dynamic_sequence })
    }

    /// Encodes token rows of `len` ids each (`ids.len() / len` captions).
    pub fn encode(&self, ids: &[i64], len: usize) -> Result<Vec<Vec<f32>>> {
        if self.tower.input_type == TensorElementType::Int32 {
            let narrow: Vec<i32> = ids.iter().map(|&v| v as i32).collect();
            self.tower.run(&narrow, &[len])
        } else {
            self.tower.run(ids, &[len])
        }
    }
}
