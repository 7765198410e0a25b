//! Building one index (image or text) from an embeddings folder: choose, train on a sample, add in chunks while
//! computing the exact neighbours of held-out queries (and, for a compressed index, writing the float16 re-rank
//! vectors), tune, write the index and its report.

use crate::choice::{self, Codec, IndexChoice};
use crate::embeddings::EmbeddingSource;
use crate::error::{IndexError, Result};
use crate::exact::ExactTopK;
use crate::faiss_index::{set_threads, FaissIndex, Metric};
use crate::folder::Modality;
use crate::report::{IndexReport, PartitionRows, RerankReport};
use crate::tune::{self, Searchable, RECALL_K};
use crate::vectors::{vectors_file, StoredVectors};
use clip_data::npy::{NpyDtype, NpyWriter};
use clip_data::Location;
use clip_data::Storage;
use rand::seq::index::sample;
use rand::SeedableRng;
use std::time::Instant;

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Memory the index may take when served, in bytes.
    pub max_index_memory: u64,
    /// Memory the build may use, in bytes (training sample, chunks).
    pub current_memory_available: u64,
    /// Distance.
    pub metric: Metric,
    /// A faiss factory string forcing the index type (autofaiss's `index_key`).
    pub index_key: Option<String>,
    /// Single-query latency budget for tuning, in milliseconds.
    pub max_query_ms: f64,
    /// Recall@10 the tuned index should reach (reported when not met).
    pub min_recall: f64,
    /// faiss threads.
    pub threads: usize,
    /// Held-out queries used for tuning.
    pub tuning_queries: usize,
    /// Seed of the training and query samples.
    pub seed: u64,
    /// An index file whose training to reuse (its vectors are dropped): parts built from the same trained index can
    /// be merged by `index_combiner`.
    pub trained_index: Option<std::path::PathBuf>,
    /// Whether a compressed index gets float16 re-rank vectors beside it.
    pub rerank: RerankMode,
}

/// `--rerank`: whether compressed indices are searched with exact re-scoring of their candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RerankMode {
    /// Every index that is not exact (not Flat) gets re-rank vectors, and tuning chooses its `k_factor`.
    #[default]
    Auto,
    /// No re-rank vectors: results come from the compressed index alone.
    Off,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            max_index_memory: 4 << 30,
            current_memory_available: 16 << 30,
            metric: Metric::Ip,
            index_key: None,
            max_query_ms: 10.0,
            min_recall: 0.0,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            tuning_queries: 1000,
            seed: 0,
            trained_index: None,
            rerank: RerankMode::Auto,
        }
    }
}

/// Reports the stages of a build (the CLI draws bars, services count).
pub trait BuildProgress: Sync {
    /// A stage starts; `total` is in rows.
    fn stage(&self, name: &str, total: u64);
    /// `n` more rows of the current stage are done.
    fn advance(&self, n: u64);
}

/// Progress that reports nothing.
pub struct NoProgress;
impl BuildProgress for NoProgress {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// A memory figure of this process from /proc/self/status (`VmRSS`, `VmHWM`, ...), in bytes; 0 when unavailable.
pub fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.split(':').next() == Some(field)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
pub fn peak_rss_bytes() -> u64 {
    proc_status_bytes("VmHWM")
}

pub(crate) fn training_rows(choice: &IndexChoice, n: u64, dim: usize, memory: u64) -> usize {
    // ~64 points per list trains k-means well; PQ codebooks want at least ~64k points.
    let wanted = if choice.nlist == 0 { 0 } else { (choice.nlist as u64 * 64).max(65_536) };
    // The sample, faiss's copy of it and the residuals must fit in a quarter of the build memory.
    let affordable = memory / 4 / (dim as u64 * 4 * 3).max(1);
    wanted.min(n).min(affordable.max(choice.nlist as u64 * 39)) as usize
}

pub(crate) fn chunk_rows(dim: usize, memory: u64) -> usize {
    ((memory / 8 / (dim as u64 * 4).max(1)) as usize).clamp(1024, 65_536)
}

/// Builds the `modality` index of `source` into `folder` (`image.index`, and `image_vectors.npy` for a compressed
/// index), returning its report (written beside it by the caller as `image.json`).
pub fn build_index(
    storage: &Storage,
    source: &EmbeddingSource,
    folder: &Location,
    modality: Modality,
    opts: &BuildOptions,
    progress: &dyn BuildProgress,
) -> Result<IndexReport> {
    let started = Instant::now();
    set_threads(opts.threads);
    let (n, dim) = (source.rows(), source.dim);
    if n == 0 {
        return Err(IndexError::invalid(&source.folder, "the embedding partitions hold no rows"));
    }
    let (choice, mut index) = match &opts.trained_index {
        Some(path) => trained_start(path, n, dim)?,
        None => untrained_start(n, dim, opts)?,
    };
    let rerank = opts.rerank == RerankMode::Auto && choice.codec != Codec::Flat && choice.factory != "Flat";
    tracing::info!(factory = %choice.factory, rows = n, dim, estimated_bytes = choice.estimated_bytes, rerank, "index chosen");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);

    let mut stages = crate::report::StageTimes::default();
    let stage_started = Instant::now();
    train_on_sample(&mut index, &choice, source, &mut rng, opts, progress)?;
    stages.train = stage_started.elapsed().as_secs_f64();
    let q = opts.tuning_queries.min(n as usize);
    let mut query_ids: Vec<u64> = sample(&mut rng, n as usize, q).into_iter().map(|i| i as u64).collect();
    query_ids.sort_unstable();
    let queries = source.read_ids(&query_ids)?;
    let mut exact = ExactTopK::new(queries.clone(), query_ids.clone(), dim, RECALL_K, opts.metric);

    let vectors_target = folder.join(&vectors_file(modality.name()));
    let mut staged_vectors = if rerank { Some(storage.create(&vectors_target)?) } else { None };
    progress.stage("adding", n);
    let stage_started = Instant::now();
    {
        let mut writer = match staged_vectors.as_mut() {
            Some(out) => Some(
                NpyWriter::new(std::io::BufWriter::with_capacity(1 << 20, out.file()), NpyDtype::F16, dim)
                    .map_err(IndexError::io(&vectors_target))?,
            ),
            None => None,
        };
        source.for_each_chunk(chunk_rows(dim, opts.current_memory_available), |first, rows| {
            index.add(rows)?;
            exact.add_chunk(first, rows)?;
            if let Some(w) = writer.as_mut() {
                w.write_rows(rows).map_err(IndexError::io(&vectors_target))?;
            }
            progress.advance((rows.len() / dim) as u64);
            Ok(())
        })?;
        if let Some(w) = writer {
            use std::io::Write;
            w.finish().and_then(|mut b| b.flush()).map_err(IndexError::io(&vectors_target))?;
        }
    }
    let exact = exact.finish();
    let vectors = match &staged_vectors {
        Some(out) => Some(StoredVectors::open(out.path())?),
        None => None,
    };

    stages.add = stage_started.elapsed().as_secs_f64();
    progress.stage("tuning", 0);
    let stage_started = Instant::now();
    let hnsw = choice.factory.contains("_HNSW");
    let mut target = Searchable { index: &mut index, vectors: vectors.as_ref() };
    let tuning = tune::tune(&mut target, hnsw, &queries, &exact, &query_ids, opts.max_query_ms, opts.min_recall)?;
    if !tuning.meets_min_recall {
        tracing::warn!(
            recall = tuning.chosen.recall_at_10,
            min_recall = opts.min_recall,
            "the tuned index does not reach --min_recall within --max_index_query_time_ms; give it more memory or time"
        );
    }

    stages.tune = stage_started.elapsed().as_secs_f64();
    let stage_started = Instant::now();
    let index_bytes = write_index(storage, &index, &folder.join(&modality.index_file()))?;
    let rerank_report = match (vectors, staged_vectors) {
        (Some(v), Some(out)) => {
            let report = RerankReport {
                vectors_file: vectors_file(modality.name()),
                k_factor: tuning.chosen.k_factor,
                disk_bytes: v.file_bytes(),
            };
            drop(v);
            out.commit()?;
            Some(report)
        }
        _ => None,
    };
    let mut report = IndexReport::new(
        &choice,
        opts,
        &index,
        tuning,
        index_bytes,
        started.elapsed().as_secs_f64(),
        peak_rss_bytes(),
        source.partitions.iter().map(|p| PartitionRows { number: p.number, rows: p.rows }).collect(),
    );
    stages.write = stage_started.elapsed().as_secs_f64();
    report.stage_seconds = stages;
    report.disk_bytes = rerank_report.as_ref().map_or(0, |r| r.disk_bytes);
    report.rerank = rerank_report;
    Ok(report)
}

/// `--train_only`: chooses the index for every row of `source` (all partitions), trains it on a sample drawn across
/// them exactly as [`build_index`] does, and writes it empty with a report (count 0) whose `index_key` the parts
/// built from it (`--trained_index_folder`) reuse. Parts trained from one file merge, or serve as shards, with the
/// ids and results of a single build.
pub fn train_index(
    storage: &Storage,
    source: &EmbeddingSource,
    folder: &Location,
    modality: Modality,
    opts: &BuildOptions,
    progress: &dyn BuildProgress,
) -> Result<IndexReport> {
    let started = Instant::now();
    set_threads(opts.threads);
    let (n, dim) = (source.rows(), source.dim);
    if n == 0 {
        return Err(IndexError::invalid(&source.folder, "the embedding partitions hold no rows"));
    }
    let (choice, mut index) = untrained_start(n, dim, opts)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    train_on_sample(&mut index, &choice, source, &mut rng, opts, progress)?;
    let train_seconds = started.elapsed().as_secs_f64();
    tracing::info!(factory = %choice.factory, rows = n, dim, seconds = train_seconds, "trained; written empty");
    let index_bytes = write_index(storage, &index, &folder.join(&modality.index_file()))?;
    let tuning = tune::untuned();
    let mut report = IndexReport::new(
        &choice,
        opts,
        &index,
        tuning,
        index_bytes,
        started.elapsed().as_secs_f64(),
        peak_rss_bytes(),
        source.partitions.iter().map(|p| PartitionRows { number: p.number, rows: p.rows }).collect(),
    );
    report.stage_seconds.train = train_seconds;
    Ok(report)
}

/// The index `--index_key` names, or the one chosen for `n x dim` in the memory budget; untrained.
fn untrained_start(n: u64, dim: usize, opts: &BuildOptions) -> Result<(IndexChoice, FaissIndex)> {
    let choice = match &opts.index_key {
        Some(key) => forced_choice(key, n, dim),
        None => choice::choose(n, dim, opts.max_index_memory)?,
    };
    let index = FaissIndex::from_factory(dim, &choice.factory, opts.metric)?;
    Ok((choice, index))
}

/// Trains `index` (when it needs training) on rows sampled from all of `source` by `rng`: the same draw in a single
/// build and in `--train_only`, so that both train the same index.
fn train_on_sample(
    index: &mut FaissIndex,
    choice: &IndexChoice,
    source: &EmbeddingSource,
    rng: &mut rand_chacha::ChaCha8Rng,
    opts: &BuildOptions,
    progress: &dyn BuildProgress,
) -> Result<()> {
    if index.is_trained() {
        return Ok(());
    }
    let n = source.rows();
    let rows = training_rows(choice, n, source.dim, opts.current_memory_available);
    progress.stage("training", rows as u64);
    let mut ids: Vec<u64> = sample(rng, n as usize, rows).into_iter().map(|i| i as u64).collect();
    ids.sort_unstable();
    let x = source.read_ids(&ids)?;
    index.train(&x).map_err(|e| with_context(e, &choice.factory))?;
    progress.advance(rows as u64);
    Ok(())
}

fn with_context(e: IndexError, factory: &str) -> IndexError {
    match e {
        IndexError::Faiss { what, message } => IndexError::Faiss { what: format!("{what} {factory}"), message },
        other => other,
    }
}

/// Starts from the training of an existing index file (and the factory string of its report, when beside it).
fn trained_start(path: &std::path::Path, n: u64, dim: usize) -> Result<(IndexChoice, FaissIndex)> {
    let mut index = FaissIndex::read(path, false)?;
    if index.dim() != dim {
        return Err(IndexError::invalid(
            path.display(),
            format!("--trained_index holds {}-dimensional vectors, the embeddings have {dim}", index.dim()),
        ));
    }
    index.reset()?;
    let report = path.with_extension("json");
    let key = std::fs::read(&report)
        .ok()
        .and_then(|b| crate::report::IndexReport::from_json(&b, &report.display().to_string()).ok())
        .map(|r| r.index_key)
        .unwrap_or_else(|| format!("trained:{}", path.display()));
    Ok((forced_choice(&key, n, dim), index))
}

/// A user-forced factory string, with its estimated size for the report.
fn forced_choice(key: &str, n: u64, dim: usize) -> IndexChoice {
    let nlist = key
        .split(',')
        .find_map(|part| part.strip_prefix("IVF"))
        .and_then(|rest| rest.split('_').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let codec = if key == "Flat" { Codec::Flat } else { Codec::Sq8 };
    IndexChoice {
        factory: key.to_string(),
        codec,
        nlist,
        estimated_bytes: choice::estimate_bytes(codec, n, dim, nlist),
    }
}

/// Writes the index to `target` atomically (local rename or one S3 upload); returns its size.
pub fn write_index(storage: &Storage, index: &FaissIndex, target: &Location) -> Result<u64> {
    let tmp = tempfile::Builder::new().prefix(".faiss-").tempdir().map_err(IndexError::io("temporary folder"))?;
    let path = tmp.path().join("index");
    index.write(&path)?;
    let bytes = std::fs::metadata(&path).map_err(IndexError::io(path.display()))?.len();
    let mut out = storage.create(target)?;
    let mut file = std::fs::File::open(&path).map_err(IndexError::io(path.display()))?;
    std::io::copy(&mut file, out.file()).map_err(IndexError::io(target))?;
    out.commit()?;
    Ok(bytes)
}
