//! Resume that cannot mix runs: `plan.json` in the output folder records what the partitions were computed from
//! (the input listing, the partition count, the model, every option that changes the bytes) when the first run
//! starts; a rerun with a different plan is refused with what changed, instead of skipping the finished partitions
//! and dealing the rest differently (samples duplicated or lost across partitions). `--overwrite` starts afresh.
//!
//! Local output folders also get a lock per partition (`.locks/N`, an OS file lock holding the owner's pid and
//! host), so two runs never write the same partition at once: the second gets an error naming the first.

use crate::{InferenceError, InferenceOptions, Result};
use clip_data::{DatasetPlan, InputUnit, Location, Storage};
use clip_model::ClipModel;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};

/// The file recording the plan, at the root of the output folder.
pub const PLAN_FILE: &str = "plan.json";

/// Largest `plan.json` read (ours are under 1 KiB).
const MAX_PLAN_BYTES: u64 = 1 << 20;

/// What the bytes of every partition depend on. Fields compare one by one; `input_dataset` is kept for people
/// reading the file (a dataset moved to another path but unchanged resumes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    /// Format of this file.
    pub plan_version: u32,
    /// The input (a local folder made absolute; not compared).
    pub input_dataset: String,
    /// files, webdataset or parquet.
    pub input_format: String,
    /// Inputs listed: samples (files) or containers.
    pub input_count: usize,
    /// SHA-256 of the listing: each input's name relative to the dataset, in order.
    pub input_digest: String,
    /// Partitions the inputs are dealt into.
    pub partition_count: usize,
    /// `--subset_size`.
    pub subset_size: Option<usize>,
    /// SHA-256 over the model's configs and tokenizer and each tower's size, first and last MiB.
    pub model_digest: String,
    /// Embedding dimension.
    pub embed_dim: usize,
    /// Image embeddings computed.
    pub enable_image: bool,
    /// Text embeddings computed (off when the dataset has no captions).
    pub enable_text: bool,
    /// Metadata copied.
    pub enable_metadata: bool,
    /// Image member / column.
    pub wds_image_key: String,
    /// Caption member / column.
    pub wds_caption_key: String,
    /// npy element type.
    pub embedding_dtype: String,
    /// `--max_sample_bytes` (decides which samples are skipped).
    pub max_sample_bytes: u64,
    /// `--max_image_pixels` (decides which images are skipped).
    pub max_image_pixels: u64,
}

/// Fields of [`RunPlan`] that do not have to match on resume.
const INFORMATIONAL: [&str; 1] = ["input_dataset"];

impl RunPlan {
    /// The plan of a run over `plan` split into `partition_count` partitions with `model`.
    pub fn new(plan: &DatasetPlan, partition_count: usize, opts: &InferenceOptions, model: &ClipModel) -> Result<Self> {
        let mut listing = Sha256::new();
        for unit in &plan.units {
            listing.update(unit_name(unit, &opts.input_dataset).as_bytes());
            listing.update([0]);
        }
        Ok(Self {
            plan_version: 1,
            input_dataset: absolute_input(&opts.input_dataset),
            input_format: format!("{:?}", plan.format).to_lowercase(),
            input_count: plan.units.len(),
            input_digest: hex(&listing.finalize()),
            partition_count,
            subset_size: opts.subset_size,
            model_digest: model_digest(model)?,
            embed_dim: model.embed_dim(),
            enable_image: plan.options.enable_image,
            enable_text: plan.options.enable_text,
            enable_metadata: plan.options.enable_metadata,
            wds_image_key: plan.options.image_key.clone(),
            wds_caption_key: plan.options.caption_key.clone(),
            embedding_dtype: format!("{:?}", opts.dtype).to_lowercase(),
            max_sample_bytes: opts.max_sample_bytes,
            max_image_pixels: model.image_limits.max_pixels,
        })
    }

    /// `field: before -> now` for every compared field that differs.
    pub fn changes_from(&self, recorded: &RunPlan) -> Vec<String> {
        let (now, before) =
            (serde_json::to_value(self).expect("plain"), serde_json::to_value(recorded).expect("plain"));
        let (now, before) = (now.as_object().expect("struct"), before.as_object().expect("struct"));
        now.iter()
            .filter(|(k, _)| !INFORMATIONAL.contains(&k.as_str()))
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: {} -> {v}", before.get(k).cloned().unwrap_or_default()))
            .collect()
    }
}

/// An input's name relative to the dataset as given (the part of each location after the input's fixed prefix),
/// with the parts a sample has (files), so that a dataset moved elsewhere but unchanged resumes.
fn unit_name(unit: &InputUnit, input: &str) -> String {
    let prefix = input.split('{').next().unwrap_or(input).trim_end_matches('/');
    let relative = |loc: &Location| {
        let full = loc.to_string();
        full.strip_prefix(prefix).map(|r| r.trim_start_matches('/').to_string()).unwrap_or(full)
    };
    match unit {
        InputUnit::FileSample { key, image, text, json } => {
            let ext = |p: &Option<Location>| {
                p.as_ref().and_then(|l| l.file_name().rsplit_once('.').map(|(_, e)| e.to_string())).unwrap_or_default()
            };
            format!("{key}\t{}\t{}\t{}", ext(image), ext(text), ext(json))
        }
        InputUnit::Shard(loc) | InputUnit::ParquetFile(loc) => relative(loc),
    }
}

/// A local input as an absolute path with symlinks resolved (index records it as the folder result images may be
/// read from); s3:// inputs and patterns as given.
fn absolute_input(input: &str) -> String {
    match Location::parse(input) {
        Location::Local(p) if !input.contains('{') => {
            std::fs::canonicalize(&p).map(|p| p.display().to_string()).unwrap_or_else(|_| input.to_string())
        }
        _ => input.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes the small files whole and the towers by size and their ends: reading a 600 MB tower whole would cost
/// seconds a run, and two exports differ in their first or last megabyte (graph and weights).
fn model_digest(model: &ClipModel) -> Result<String> {
    const END: u64 = 1 << 20;
    let layout = &model.layout;
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| InferenceError::Data(clip_data::DataError::io(&path)(e))
    };
    let mut digest = Sha256::new();
    for small in [&layout.config, &layout.preprocess_cfg, &layout.tokenizer] {
        digest.update(std::fs::read(small).map_err(io(small))?);
    }
    // The graphs actually run: an int8 or fused tower gives other embeddings than model.onnx.
    for tower in [&model.image_file, &model.text_file] {
        let mut file = std::fs::File::open(tower).map_err(io(tower))?;
        let size = file.metadata().map_err(io(tower))?.len();
        digest.update(size.to_le_bytes());
        let mut chunk = Vec::new();
        (&mut file).take(END).read_to_end(&mut chunk).map_err(io(tower))?;
        file.seek(SeekFrom::Start(size.saturating_sub(END))).map_err(io(tower))?;
        file.take(END).read_to_end(&mut chunk).map_err(io(tower))?;
        digest.update(&chunk);
    }
    Ok(hex(&digest.finalize()))
}

/// Checks `plan` against the one recorded in `output` (or records it), after clearing the folder's outputs when
/// `overwrite`. A folder with finished partitions but no plan (written by an older version or by Python
/// clip-retrieval) is adopted with a warning.
pub fn check_or_record(storage: &Storage, output: &Location, plan: &RunPlan, overwrite: bool) -> Result<()> {
    let file = output.join(PLAN_FILE);
    if overwrite {
        clear_outputs(storage, output)?;
    } else if storage.exists(&file)? {
        let bytes = storage.read_at_most(&file, MAX_PLAN_BYTES)?;
        let recorded: RunPlan = serde_json::from_slice(&bytes).map_err(|e| {
            InferenceError::Options(format!(
                "{file} is not a plan this version reads ({e}); start fresh with --overwrite"
            ))
        })?;
        let changes = plan.changes_from(&recorded);
        if changes.is_empty() {
            return Ok(());
        }
        return Err(InferenceError::PlanChanged { folder: output.to_string(), changes });
    } else if storage.list_or_empty(&output.join("stats"))?.iter().any(|l| l.file_name().ends_with(".json")) {
        tracing::warn!(
            folder = %output,
            "finished partitions but no plan.json (an older version or Python clip-retrieval wrote them): \
             recording this run's plan and trusting those partitions as they are"
        );
    }
    storage.write(&file, &serde_json::to_vec_pretty(plan).expect("plain struct"))?;
    Ok(())
}

/// Deletes what inference writes (img_emb/, text_emb/, metadata/, stats/, plan.json) and nothing else.
fn clear_outputs(storage: &Storage, output: &Location) -> Result<()> {
    let mut removed = 0usize;
    for folder in ["img_emb", "text_emb", "metadata", "stats"] {
        for loc in storage.list_or_empty(&output.join(folder))? {
            storage.delete(&loc)?;
            removed += 1;
        }
    }
    let plan = output.join(PLAN_FILE);
    if storage.exists(&plan)? {
        storage.delete(&plan)?;
    }
    tracing::info!(folder = %output, files = removed, "--overwrite: previous outputs deleted");
    Ok(())
}

/// An exclusive lock on one partition of a local output folder, released when dropped (or when the process dies:
/// the OS lock goes with it, so a crashed run never leaves a lock behind that blocks the retry).
#[derive(Debug)]
pub struct PartitionLock {
    _file: Option<std::fs::File>,
}

impl PartitionLock {
    /// Locks partition `name` of `output`; an error names the run holding it. S3 folders are not locked (S3 has no
    /// lock; run disjoint `--partition_ids` per process there).
    pub fn acquire(output: &Location, name: &str) -> Result<Self> {
        let Location::Local(folder) = output else { return Ok(Self { _file: None }) };
        let dir = folder.join(".locks");
        let path = dir.join(name);
        let io = |e: std::io::Error| InferenceError::Data(clip_data::DataError::io(path.display())(e));
        std::fs::create_dir_all(&dir).map_err(io)?;
        // Never truncated before the lock is ours: the holder's pid and host stay readable for the message.
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = (&file).take(4096).read_to_string(&mut owner);
                return Err(InferenceError::Locked {
                    folder: folder.display().to_string(),
                    partition: name.to_string(),
                    owner: owner.trim().to_string(),
                    lock: path.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        writeln!(file, "pid {} on host {}", std::process::id(), host_name()).map_err(io)?;
        Ok(Self { _file: Some(file) })
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_partition_lock_refuses_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let output = Location::Local(dir.path().join("out"));
        let first = PartitionLock::acquire(&output, "0").unwrap();
        let err = PartitionLock::acquire(&output, "0").unwrap_err().to_string();
        assert!(err.contains(&format!("pid {} on host", std::process::id())), "{err}");
        let _other = PartitionLock::acquire(&output, "1").expect("other partitions are free");
        drop(first);
        PartitionLock::acquire(&output, "0").expect("released with its holder");
    }

    #[test]
    fn listings_are_named_relative_to_the_input() {
        let at = |root: &str| InputUnit::Shard(Location::parse(&format!("{root}/shards/0001.tar")));
        let a = unit_name(&at("/data/v1"), "/data/v1/shards/{0000..0009}.tar");
        let b = unit_name(&at("/mnt/copy"), "/mnt/copy/shards/{0000..0009}.tar");
        assert_eq!(a, b, "a moved but unchanged dataset resumes");
        assert_eq!(a, "0001.tar");
    }
}
