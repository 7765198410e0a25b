//! One partition through the pipeline: reader thread -> batch preprocessing pool -> encoder -> writers.

use crate::{InferenceOptions, PartitionOutputs, Progress, Result};
use clip_data::dataset::{read_units, InputUnit, RawSample, ReadEvent, ReadOptions};
use clip_data::metadata::{MetadataRow, MetadataTable};
use clip_data::npy::NpyWriter;
use clip_data::storage::{OutputFile, Storage};
use clip_data::DataError;
use clip_model::ClipModel;
use crossbeam_channel::bounded;
use rayon::prelude::*;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Skips kept verbatim in `stats/N.json`; the count is always exact.
const MAX_LISTED_SKIPS: usize = 1000;

/// `stats/N.json`: clip-retrieval's fields plus what was skipped and why.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStats {
    /// Samples written.
    pub sample_count: usize,
    /// Seconds reading and preprocessing (on the preprocessing thread).
    pub read_duration: f64,
    /// Seconds in the encoders.
    pub inference_duration: f64,
    /// Seconds writing outputs.
    pub write_duration: f64,
    /// Wall seconds for the partition.
    pub total_duration: f64,
    /// Inputs skipped (corrupt images, unreadable files, broken tar members or parquet rows).
    pub skipped_count: usize,
    /// The first skipped inputs with their reason.
    pub skipped: Vec<SkipRecord>,
    /// The image tower's graph file and precision (`visual/model.int8.onnx (int8)`), when images were embedded.
    pub image_model: Option<String>,
    /// The text tower's graph file and precision, when captions were embedded.
    pub text_model: Option<String>,
}

/// One skipped input.
#[derive(Debug, Clone, Serialize)]
pub struct SkipRecord {
    /// Path, member or row.
    pub input: String,
    /// Why it was skipped.
    pub reason: String,
}

/// A sample ready for the encoders.
pub struct Prepared {
    /// Preprocessed CHW pixels (when images are enabled).
    pub pixels: Option<Vec<f32>>,
    /// The raw sample (caption, path, metadata).
    pub sample: RawSample,
}

struct PreparedBatch {
    samples: Vec<Prepared>,
    skipped: Vec<SkipRecord>,
    read_time: Duration,
}

struct Writers {
    image: Option<(NpyWriter<std::fs::File>, OutputFile)>,
    text: Option<(NpyWriter<std::fs::File>, OutputFile)>,
    metadata: MetadataTable,
}

fn npy_output(
    storage: &Storage,
    target: &clip_data::Location,
    opts: &InferenceOptions,
    dim: usize,
) -> Result<(NpyWriter<std::fs::File>, OutputFile)> {
    let mut out = storage.create(target)?;
    let file = out.file().try_clone().map_err(DataError::io(target))?;
    let writer = NpyWriter::new(file, opts.dtype, dim).map_err(DataError::io(target))?;
    Ok((writer, out))
}

fn finish_npy(w: Option<(NpyWriter<std::fs::File>, OutputFile)>, target: &clip_data::Location) -> Result<()> {
    if let Some((writer, out)) = w {
        writer.finish().map_err(DataError::io(target))?;
        out.commit()?;
    }
    Ok(())
}

/// Decodes and preprocesses one batch on the pool; a bad image becomes a skip, never an error.
fn prepare_batch(model: &ClipModel, raw: Vec<RawSample>, pool: &rayon::ThreadPool) -> (Vec<Prepared>, Vec<SkipRecord>) {
    let results: Vec<std::result::Result<Prepared, SkipRecord>> = pool.install(|| {
        raw.into_par_iter()
            .map(|mut sample| match sample.image.take() {
                Some(bytes) => match model.preprocess_image(&bytes) {
                    Ok(px) => Ok(Prepared { pixels: Some(px), sample }),
                    Err(e) => Err(SkipRecord { input: sample.image_path.clone(), reason: e.to_string() }),
                },
                None => Ok(Prepared { pixels: None, sample }),
            })
            .collect()
    });
    let mut ok = Vec::with_capacity(results.len());
    let mut skipped = Vec::new();
    for r in results {
        match r {
            Ok(p) => ok.push(p),
            Err(s) => skipped.push(s),
        }
    }
    (ok, skipped)
}

/// What one partition reads.
#[derive(Debug, Clone, Copy)]
pub struct PartitionInput<'a> {
    /// Its units, in order.
    pub units: &'a [InputUnit],
    /// What to read of each sample.
    pub read_options: &'a ReadOptions,
    /// Stop after this many samples.
    pub limit: Option<usize>,
}

/// Computes one partition and commits its outputs (stats last).
pub fn run_partition(
    storage: &Storage,
    model: &ClipModel,
    input: PartitionInput<'_>,
    opts: &InferenceOptions,
    outputs: &PartitionOutputs,
    progress: &dyn Progress,
) -> Result<PartitionStats> {
    let start = Instant::now();
    let PartitionInput { units, read_options, limit } = input;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.num_prepro_workers.max(1))
        .thread_name(|i| format!("prepro-{i}"))
        .build()
        .map_err(|e| crate::InferenceError::Options(format!("cannot start preprocessing threads: {e}")))?;
    let dim = model.embed_dim();
    let mut writers = Writers {
        image: if read_options.enable_image { Some(npy_output(storage, &outputs.image, opts, dim)?) } else { None },
        text: if read_options.enable_text { Some(npy_output(storage, &outputs.text, opts, dim)?) } else { None },
        metadata: MetadataTable::new(read_options.enable_image, read_options.enable_text),
    };
    let tower = |file: &std::path::Path, p: clip_model::Precision| {
        let relative = file.strip_prefix(&model.layout.root).unwrap_or(file);
        format!("{} ({})", relative.display(), p.name())
    };
    let mut stats = PartitionStats {
        image_model: read_options.enable_image.then(|| tower(&model.image_file, model.precisions.image)),
        text_model: read_options.enable_text.then(|| tower(&model.text_file, model.precisions.text)),
        ..PartitionStats::default()
    };
    let (raw_tx, raw_rx) = bounded::<ReadEvent>(opts.batch_size * 2);
    let (batch_tx, batch_rx) = bounded::<PreparedBatch>(2);
    let batch_size = opts.batch_size;

    let result: Result<()> = std::thread::scope(|scope| {
        let reader = scope.spawn(move || read_units(storage, units, read_options, limit, |ev| raw_tx.send(ev).is_ok()));
        let pool = &pool;
        scope.spawn(move || {
            let mut pending = Vec::with_capacity(batch_size);
            let mut skipped = Vec::new();
            let mut wait = Instant::now();
            let flush = |pending: &mut Vec<RawSample>, skipped: &mut Vec<SkipRecord>, wait: &mut Instant| {
                let (samples, mut bad) = prepare_batch(model, std::mem::take(pending), pool);
                skipped.append(&mut bad);
                let batch = PreparedBatch { samples, skipped: std::mem::take(skipped), read_time: wait.elapsed() };
                *wait = Instant::now();
                batch_tx.send(batch).is_ok()
            };
            for ev in raw_rx {
                match ev {
                    ReadEvent::Sample(s) => pending.push(s),
                    ReadEvent::Skipped(s) => skipped.push(SkipRecord { input: s.input, reason: s.reason }),
                }
                if pending.len() == batch_size && !flush(&mut pending, &mut skipped, &mut wait) {
                    return;
                }
            }
            if !pending.is_empty() || !skipped.is_empty() {
                flush(&mut pending, &mut skipped, &mut wait);
            }
        });
        // Taking the receiver by value means an encoder error drops it, which unblocks and stops the other stages.
        let mut consume = |batches: crossbeam_channel::Receiver<PreparedBatch>| -> Result<()> {
            for batch in batches {
                stats.read_duration += batch.read_time.as_secs_f64();
                for s in &batch.skipped {
                    tracing::warn!(input = %s.input, reason = %s.reason, "skipped");
                    progress.sample_skipped(&s.input, &s.reason);
                }
                stats.skipped_count += batch.skipped.len();
                let room = MAX_LISTED_SKIPS.saturating_sub(stats.skipped.len());
                stats.skipped.extend(batch.skipped.into_iter().take(room));
                let before = stats.sample_count;
                encode_and_write(model, batch.samples, &mut writers, &mut stats)?;
                progress.samples_done(stats.sample_count - before);
            }
            Ok(())
        };
        let consumed = consume(batch_rx);
        let read = reader.join().expect("reader thread panicked");
        consumed?;
        read?;
        Ok(())
    });
    result?;

    let t = Instant::now();
    finish_npy(writers.image.take(), &outputs.image)?;
    finish_npy(writers.text.take(), &outputs.text)?;
    writers.metadata.write(storage, &outputs.metadata)?;
    stats.write_duration += t.elapsed().as_secs_f64();
    stats.total_duration = start.elapsed().as_secs_f64();
    let json = serde_json::to_vec_pretty(&stats).expect("plain struct");
    storage.write(&outputs.stats, &json)?;
    Ok(stats)
}

fn encode_and_write(
    model: &ClipModel,
    samples: Vec<Prepared>,
    w: &mut Writers,
    stats: &mut PartitionStats,
) -> Result<()> {
    if samples.is_empty() {
        return Ok(());
    }
    let t = Instant::now();
    let image_embs = if w.image.is_some() {
        let mut pixels = Vec::with_capacity(samples.len() * model.image_tensor_len());
        samples.iter().for_each(|p| pixels.extend_from_slice(p.pixels.as_deref().unwrap_or_default()));
        Some(model.encode_images(&pixels)?)
    } else {
        None
    };
    let text_embs = if w.text.is_some() {
        let captions: Vec<&str> = samples.iter().map(|p| p.sample.caption.as_deref().unwrap_or("")).collect();
        Some(model.encode_texts(&captions)?)
    } else {
        None
    };
    stats.inference_duration += t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (i, p) in samples.into_iter().enumerate() {
        if let (Some((writer, _)), Some(embs)) = (w.image.as_mut(), image_embs.as_ref()) {
            writer.write_row(&embs[i]).map_err(DataError::io("image embeddings"))?;
        }
        if let (Some((writer, _)), Some(embs)) = (w.text.as_mut(), text_embs.as_ref()) {
            writer.write_row(&embs[i]).map_err(DataError::io("text embeddings"))?;
        }
        let image_path = w.image.is_some().then(|| p.sample.image_path.clone());
        w.metadata.push(MetadataRow { image_path, caption: p.sample.caption, metadata: p.sample.metadata });
    }
    stats.sample_count = w.metadata.len();
    stats.write_duration += t.elapsed().as_secs_f64();
    Ok(())
}
