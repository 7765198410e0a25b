//! The embedding pipeline behind `clip-retrieval inference`.
//!
//! Per partition: a reader thread streams samples; a preprocessing thread forms batches and decodes them on a pool
//! of `num_prepro_workers` threads; the calling thread encodes each batch while the next one is being prepared, and
//! streams rows into `img_emb/img_emb_N.npy`, `text_emb/text_emb_N.npy` and `metadata/metadata_N.parquet`. Every
//! output appears atomically, and `stats/N.json` is written last: it marks the partition finished, so a rerun on
//! the same output folder skips it and redoes any partition without it, once `plan.json` shows the run is the same
//! (see [`resume`]).

pub mod faithfulness;
mod pipeline;
pub mod resume;

pub use pipeline::{run_partition, PartitionInput, PartitionStats, Prepared};
pub use resume::{PartitionLock, RunPlan};

use clip_data::npy::NpyDtype;
use clip_data::{partition_name, DatasetPlan, InputFormat, Location, ReadOptions, Storage};
use clip_model::ClipModel;
use std::time::Instant;

/// Errors that stop a run (bad samples never do: they are skipped and counted).
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] clip_model::ModelError),
    /// Reading the input or writing the output failed.
    #[error(transparent)]
    Data(#[from] clip_data::DataError),
    /// The options do not make sense.
    #[error("invalid options: {0}")]
    Options(String),
    /// The output folder was started with another plan (input listing, partitions, model or options).
    #[error(
        "{folder} was started with a different plan ({}): its finished partitions would mix with this run's. \
         Rerun with the recorded options to resume, or start fresh with --overwrite (deletes img_emb/, text_emb/, \
         metadata/, stats/) or a new --output_folder",
        changes.join("; ")
    )]
    PlanChanged {
        /// The output folder.
        folder: String,
        /// `field: recorded -> now`.
        changes: Vec<String>,
    },
    /// Another run holds a partition of the output folder.
    #[error(
        "partition {partition} of {folder} is being written by another run ({owner}); wait for it to finish, or \
         write elsewhere (lock: {lock})"
    )]
    Locked {
        /// The output folder.
        folder: String,
        /// Partition name.
        partition: String,
        /// What the lock file says (pid and host).
        owner: String,
        /// The lock file.
        lock: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = InferenceError> = std::result::Result<T, E>;

/// Everything `clip-retrieval inference` accepts.
#[derive(Debug, Clone)]
pub struct InferenceOptions {
    /// Folder, shard pattern or parquet folder; local or s3://.
    pub input_dataset: String,
    /// Output folder; local or s3://.
    pub output_folder: String,
    /// Layout of the input.
    pub input_format: InputFormat,
    /// Samples per encoder batch.
    pub batch_size: usize,
    /// Threads decoding and preprocessing images.
    pub num_prepro_workers: usize,
    /// Compute text embeddings.
    pub enable_text: bool,
    /// Compute image embeddings.
    pub enable_image: bool,
    /// Copy metadata (json files, json members, extra parquet columns) into the metadata parquet.
    pub enable_metadata: bool,
    /// Samples per output partition (when `output_partition_count` is not given).
    pub write_batch_size: usize,
    /// Only this many samples (files: the first keys; other formats: per partition).
    pub subset_size: Option<usize>,
    /// Image member extension / column.
    pub wds_image_key: String,
    /// Caption member extension / column.
    pub wds_caption_key: String,
    /// Number of output partitions.
    pub output_partition_count: Option<usize>,
    /// Estimated samples per shard/parquet file, to size partitions.
    pub wds_number_file_per_input_file: usize,
    /// Run only these partition ids (the operator runs partitions as separate pods).
    pub partition_ids: Option<Vec<usize>>,
    /// Embedding element type.
    pub dtype: NpyDtype,
    /// Largest file, tar member or parquet cell of one sample; larger samples are skipped with their reason.
    pub max_sample_bytes: u64,
    /// Delete the folder's previous outputs first instead of resuming (refused with `partition_ids`).
    pub overwrite: bool,
}

/// Hooks for progress display (CLI bars) or metrics (services).
pub trait Progress: Sync {
    /// A partition starts; `expected` is its unit count (samples for files, containers otherwise).
    fn partition_started(&self, _name: &str, _expected: usize) {}
    /// `n` more samples were encoded and written.
    fn samples_done(&self, _n: usize) {}
    /// A sample or container was skipped.
    fn sample_skipped(&self, _input: &str, _reason: &str) {}
    /// A partition finished.
    fn partition_finished(&self, _name: &str, _stats: &PartitionStats) {}
}

/// A progress sink that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Partitions of the dataset.
    pub partition_count: usize,
    /// Partitions found finished and skipped.
    pub already_done: Vec<usize>,
    /// Partitions computed now.
    pub computed: Vec<usize>,
    /// Samples written now.
    pub samples: usize,
    /// Inputs skipped now.
    pub skipped: usize,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// The output locations of partition `name`.
pub struct PartitionOutputs {
    /// `img_emb/img_emb_N.npy`.
    pub image: Location,
    /// `text_emb/text_emb_N.npy`.
    pub text: Location,
    /// `metadata/metadata_N.parquet`.
    pub metadata: Location,
    /// `stats/N.json`, written last.
    pub stats: Location,
}

impl PartitionOutputs {
    /// Output paths of a partition under `output_folder`.
    pub fn new(output_folder: &Location, name: &str) -> Self {
        Self {
            image: output_folder.join(&format!("img_emb/img_emb_{name}.npy")),
            text: output_folder.join(&format!("text_emb/text_emb_{name}.npy")),
            metadata: output_folder.join(&format!("metadata/metadata_{name}.parquet")),
            stats: output_folder.join(&format!("stats/{name}.json")),
        }
    }
}

/// Lists the dataset and decides the partitions, as clip-retrieval does.
pub fn plan(storage: &Storage, opts: &InferenceOptions) -> Result<(DatasetPlan, usize)> {
    if !opts.enable_image && !opts.enable_text {
        return Err(InferenceError::Options("enable_image and enable_text are both off: nothing to compute".into()));
    }
    if opts.batch_size == 0 || opts.write_batch_size == 0 {
        return Err(InferenceError::Options("batch_size and write_batch_size must be positive".into()));
    }
    let read = ReadOptions {
        enable_image: opts.enable_image,
        enable_text: opts.enable_text,
        enable_metadata: opts.enable_metadata,
        image_key: opts.wds_image_key.clone(),
        caption_key: opts.wds_caption_key.clone(),
        max_sample_bytes: opts.max_sample_bytes,
    };
    let plan = DatasetPlan::discover(storage, &opts.input_dataset, opts.input_format, read, opts.subset_size)?;
    let count = match opts.output_partition_count {
        Some(0) => return Err(InferenceError::Options("output_partition_count must be positive".into())),
        Some(n) => n,
        None => plan.default_partition_count(opts.write_batch_size, opts.wds_number_file_per_input_file),
    };
    Ok((plan, count))
}

/// Runs inference over every unfinished partition (or the selected ones).
pub fn run(
    storage: &Storage,
    model: &ClipModel,
    opts: &InferenceOptions,
    progress: &dyn Progress,
) -> Result<RunSummary> {
    let (plan, count) = plan(storage, opts)?;
    run_plan(storage, model, opts, &plan, count, progress)
}

/// Runs inference over an already listed dataset split into `count` partitions.
pub fn run_plan(
    storage: &Storage,
    model: &ClipModel,
    opts: &InferenceOptions,
    plan: &DatasetPlan,
    count: usize,
    progress: &dyn Progress,
) -> Result<RunSummary> {
    let start = Instant::now();
    if opts.enable_text && !plan.options.enable_text {
        tracing::warn!(input = %opts.input_dataset, "no caption files found: text embeddings disabled");
    }
    let output = Location::parse(&opts.output_folder);
    let ids: Vec<usize> = match &opts.partition_ids {
        Some(ids) => {
            if let Some(bad) = ids.iter().find(|&&i| i >= count) {
                return Err(InferenceError::Options(format!("partition id {bad} out of range (0..{count})")));
            }
            ids.clone()
        }
        None => (0..count).collect(),
    };
    if opts.overwrite && opts.partition_ids.is_some() {
        return Err(InferenceError::Options(
            "--overwrite with --partition_ids would delete the partitions other processes write: clear the folder \
             once, then run the partitions"
                .into(),
        ));
    }
    // --overwrite deletes every partition, so it first holds every partition's lock (and keeps them for the run).
    let _held: Vec<PartitionLock> = if opts.overwrite {
        ids.iter().map(|&id| PartitionLock::acquire(&output, &partition_name(id, count))).collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    resume::check_or_record(storage, &output, &RunPlan::new(plan, count, opts, model)?, opts.overwrite)?;
    let mut summary = RunSummary { partition_count: count, ..Default::default() };
    for id in ids {
        let name = partition_name(id, count);
        let outputs = PartitionOutputs::new(&output, &name);
        // Taken before looking at stats/N.json, so a partition another run is finishing is not redone.
        let _lock = if opts.overwrite { None } else { Some(PartitionLock::acquire(&output, &name)?) };
        if storage.exists(&outputs.stats)? {
            tracing::info!(partition = %name, "already finished, skipping");
            summary.already_done.push(id);
            continue;
        }
        let units = plan.partition(id, count);
        let limit = match plan.format {
            InputFormat::Files => None,
            _ => opts.subset_size.map(|n| n.div_ceil(count)),
        };
        progress.partition_started(&name, units.len());
        let input = PartitionInput { units: &units, read_options: &plan.options, limit };
        let stats = run_partition(storage, model, input, opts, &outputs, progress)?;
        progress.partition_finished(&name, &stats);
        summary.samples += stats.sample_count;
        summary.skipped += stats.skipped_count;
        summary.computed.push(id);
    }
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}
