//! clip-cli's flag values -> the engine crates' types (the two sides are separate crates so that the operator can
//! use the CLI's types without linking any engine), and the model load every embedding subcommand shares.

use anyhow::{Context, Result};
use clip_cli::{Device, InputFormat, Metric, Modality, ModelArgs, Precision};
use clip_data::Storage;
use clip_model::{ClipModel, ExecutionDevice, ImageLimits, SessionOptions, TowerPrecisions};

/// The dataset reader's format.
pub fn input_format(f: InputFormat) -> clip_data::InputFormat {
    match f {
        InputFormat::Files => clip_data::InputFormat::Files,
        InputFormat::Webdataset => clip_data::InputFormat::Webdataset,
        InputFormat::Parquet => clip_data::InputFormat::Parquet,
    }
}

/// The index crate's modality.
pub fn modality(m: Modality) -> clip_index::Modality {
    match m {
        Modality::Image => clip_index::Modality::Image,
        Modality::Text => clip_index::Modality::Text,
    }
}

/// The index crate's metric.
pub fn metric(m: Metric) -> clip_index::Metric {
    match m {
        Metric::Ip => clip_index::Metric::Ip,
        Metric::L2 => clip_index::Metric::L2,
    }
}

/// ONNX Runtime's execution provider.
pub fn device(d: Device) -> ExecutionDevice {
    match d {
        Device::Cpu => ExecutionDevice::Cpu,
        Device::Cuda(n) => ExecutionDevice::Cuda(n as i32),
    }
}

/// The model crate's precision.
pub fn precision(p: Precision) -> clip_model::Precision {
    match p {
        Precision::Fp32 => clip_model::Precision::Fp32,
        Precision::Int8 => clip_model::Precision::Int8,
    }
}

/// Loads the model named by the flags (a folder, an s3:// folder copied to the cache, or the shipped model) with
/// the towers at the flags' precisions.
pub fn load_model(storage: &Storage, m: &ModelArgs) -> Result<ClipModel> {
    let (image, text) = m.tower_precisions();
    load_model_at(storage, m, TowerPrecisions { image: precision(image), text: precision(text) })
}

/// Like [`load_model`], at the given precisions.
pub fn load_model_at(storage: &Storage, m: &ModelArgs, precisions: TowerPrecisions) -> Result<ClipModel> {
    let folder = clip_data::model_source::resolve(storage, m.clip_model.as_deref(), m.clip_cache_path.as_deref())?;
    let options =
        SessionOptions { device: device(m.device), intra_threads: m.num_threads, intra_spinning: m.intra_op_spinning };
    let mut model = ClipModel::load_at(&folder, options, precisions)
        .with_context(|| format!("loading model {}", folder.display()))?;
    model.image_limits = ImageLimits { max_pixels: m.max_image_pixels };
    tracing::info!(
        model = %folder.display(),
        image_tower = %model.image_file.display(),
        text_tower = %model.text_file.display(),
        embed_dim = model.embed_dim(),
        trims_captions = model.trims_captions(),
        "model loaded"
    );
    Ok(model)
}
