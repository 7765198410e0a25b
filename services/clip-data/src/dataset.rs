//! Dataset readers: a folder of files, webdataset tar shards, or img2dataset parquet; split into partitions.
//!
//! Partitioning follows clip-retrieval: the sorted input units (sample keys for `files`, shards or parquet files
//! otherwise) are dealt round-robin, unit `i` going to partition `i % count`. The plan is a pure function of the
//! input listing, so a rerun (resume) or another worker computes the same partitions.

use crate::arrow_json::{cell_bytes, cell_json, cell_len, cell_string, is_scalar};
use crate::braces::brace_expand;
use crate::error::{DataError, Result};
use crate::storage::{Location, Storage};
use arrow::array::RecordBatch;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Image extensions read from `files` datasets (any case).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

/// Dataset layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// A folder (recursive) of images with same-name `.txt` captions and `.json` metadata.
    Files,
    /// Tar shards of `key.ext` members.
    Webdataset,
    /// Parquet files with an image bytes column (img2dataset's output).
    Parquet,
}

/// What to read from each sample.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Read image bytes.
    pub enable_image: bool,
    /// Read captions.
    pub enable_text: bool,
    /// Read metadata (json files, json tar members, other parquet columns).
    pub enable_metadata: bool,
    /// Member extension (webdataset) or column (parquet) of the image.
    pub image_key: String,
    /// Member extension (webdataset) or column (parquet) of the caption.
    pub caption_key: String,
    /// Largest file, tar member or parquet cell of one sample (`--max_sample_bytes`); larger ones skip the sample
    /// before anything of that size is allocated.
    pub max_sample_bytes: u64,
}

/// Default of `--max_sample_bytes`: 64 MiB.
pub const DEFAULT_MAX_SAMPLE_BYTES: u64 = 64 << 20;

/// One sample as read, before decoding.
#[derive(Debug, Clone, Default)]
pub struct RawSample {
    /// Where the image came from: its path (files), its key (webdataset), its url or key (parquet).
    pub image_path: String,
    /// Encoded image bytes.
    pub image: Option<Vec<u8>>,
    /// Caption text.
    pub caption: Option<String>,
    /// Metadata object.
    pub metadata: Option<Map<String, Value>>,
}

/// An input that could not be used; the run goes on without it.
#[derive(Debug, Clone)]
pub struct SkippedInput {
    /// The file, member or row.
    pub input: String,
    /// Why.
    pub reason: String,
}

/// What a reader yields.
#[derive(Debug)]
pub enum ReadEvent {
    /// A sample to process.
    Sample(RawSample),
    /// An input that was skipped.
    Skipped(SkippedInput),
}

/// The unit of partitioning.
#[derive(Debug, Clone)]
pub enum InputUnit {
    /// One sample of a `files` dataset.
    FileSample {
        /// Relative path without extension.
        key: String,
        /// The image file.
        image: Option<Location>,
        /// The caption file.
        text: Option<Location>,
        /// The metadata file.
        json: Option<Location>,
    },
    /// A tar shard.
    Shard(Location),
    /// A parquet file.
    ParquetFile(Location),
}

/// All units of a dataset, and what it turned out to contain.
#[derive(Debug, Clone)]
pub struct DatasetPlan {
    /// The layout.
    pub format: InputFormat,
    /// Sorted units.
    pub units: Vec<InputUnit>,
    /// Options, with text/metadata switched off when a `files` dataset has none (as clip-retrieval does).
    pub options: ReadOptions,
}

impl DatasetPlan {
    /// Lists the dataset. `subset_size` keeps only the first keys of a `files` dataset.
    pub fn discover(
        storage: &Storage,
        input: &str,
        format: InputFormat,
        mut options: ReadOptions,
        subset_size: Option<usize>,
    ) -> Result<Self> {
        let units = match format {
            InputFormat::Files => {
                let (units, has_text, has_json) = list_files_dataset(storage, &Location::parse(input), &options)?;
                options.enable_text &= has_text;
                options.enable_metadata &= has_json;
                match subset_size {
                    Some(n) => units.into_iter().take(n).collect(),
                    None => units,
                }
            }
            InputFormat::Webdataset => {
                list_containers(storage, input, "tar")?.into_iter().map(InputUnit::Shard).collect()
            }
            InputFormat::Parquet => {
                list_containers(storage, input, "parquet")?.into_iter().map(InputUnit::ParquetFile).collect()
            }
        };
        if units.is_empty() {
            let what = match format {
                InputFormat::Files if options.enable_image => "no image files (jpg, jpeg, png, webp, bmp)",
                InputFormat::Files => "no caption files",
                InputFormat::Webdataset => "no .tar shards",
                InputFormat::Parquet => "no .parquet files",
            };
            return Err(DataError::Empty { path: input.to_string(), reason: format!("the input dataset has {what}") });
        }
        Ok(Self { format, units, options })
    }

    /// The number of partitions clip-retrieval would choose: one per `write_batch_size` samples (files), or per
    /// `write_batch_size / samples_per_container` containers, never more partitions than units.
    pub fn default_partition_count(&self, write_batch_size: usize, samples_per_container: usize) -> usize {
        let samples = match self.format {
            InputFormat::Files => self.units.len(),
            _ => self.units.len() * samples_per_container,
        };
        samples.div_ceil(write_batch_size.max(1)).clamp(1, self.units.len())
    }

    /// The units of partition `id` out of `count`.
    pub fn partition(&self, id: usize, count: usize) -> Vec<InputUnit> {
        self.units.iter().enumerate().filter(|(i, _)| i % count == id).map(|(_, u)| u.clone()).collect()
    }
}

fn list_files_dataset(
    storage: &Storage,
    root: &Location,
    options: &ReadOptions,
) -> Result<(Vec<InputUnit>, bool, bool)> {
    #[derive(Default)]
    struct Parts {
        image: Option<Location>,
        text: Option<Location>,
        json: Option<Location>,
    }
    let mut by_key: BTreeMap<String, Parts> = BTreeMap::new();
    for file in storage.list(root)? {
        let Some(rel) = file.relative_to(root) else {
            continue;
        };
        let Some((key, ext)) = rel.rsplit_once('.') else {
            continue;
        };
        if key.rsplit('/').next().is_some_and(|name| name.starts_with('.')) {
            continue; // hidden and temporary files
        }
        let ext = ext.to_ascii_lowercase();
        let parts = by_key.entry(key.to_string()).or_default();
        match ext.as_str() {
            "txt" => parts.text = Some(file),
            "json" => parts.json = Some(file),
            e if IMAGE_EXTENSIONS.contains(&e) => parts.image = Some(file),
            _ => {}
        }
    }
    let has_text = by_key.values().any(|p| p.text.is_some());
    let has_json = by_key.values().any(|p| p.json.is_some());
    let need_text = options.enable_text && has_text;
    // Unlike clip-retrieval, a sample without a .json file is kept (its metadata columns are null), not dropped.
    let units = by_key
        .into_iter()
        .filter(|(_, p)| {
            (!options.enable_image || p.image.is_some())
                && (!need_text || p.text.is_some())
                && (options.enable_image || need_text)
        })
        .map(|(key, p)| InputUnit::FileSample { key, image: p.image, text: p.text, json: p.json })
        .collect();
    Ok((units, has_text, has_json))
}

/// Shards or parquet files named by a brace pattern, a single file, or a folder holding them.
fn list_containers(storage: &Storage, input: &str, ext: &str) -> Result<Vec<Location>> {
    if input.contains('{') {
        return Ok(brace_expand(input).iter().map(|s| Location::parse(s)).collect());
    }
    let loc = Location::parse(input);
    if loc.file_name().ends_with(&format!(".{ext}")) && storage.exists(&loc)? {
        return Ok(vec![loc]);
    }
    Ok(storage.list(&loc)?.into_iter().filter(|l| l.file_name().ends_with(&format!(".{ext}"))).collect())
}

/// Reads every unit of a partition, in order, calling `emit` for each sample or skipped input.
/// `limit` stops after that many samples. Returns early (without error) when `emit` returns false.
pub fn read_units(
    storage: &Storage,
    units: &[InputUnit],
    options: &ReadOptions,
    limit: Option<usize>,
    mut emit: impl FnMut(ReadEvent) -> bool,
) -> Result<()> {
    let mut count = 0usize;
    let mut gated = |ev: ReadEvent| -> bool {
        if let ReadEvent::Sample(_) = ev {
            if limit.is_some_and(|l| count >= l) {
                return false;
            }
            count += 1;
        }
        emit(ev)
    };
    for unit in units {
        let go_on = match unit {
            InputUnit::FileSample { image, text, json, .. } => {
                gated(read_file_sample(storage, image, text, json, options))
            }
            InputUnit::Shard(loc) => read_shard(storage, loc, options, &mut gated),
            InputUnit::ParquetFile(loc) => read_parquet(storage, loc, options, &mut gated),
        };
        if !go_on {
            break;
        }
    }
    Ok(())
}

fn skipped(input: impl std::fmt::Display, reason: impl std::fmt::Display) -> ReadEvent {
    ReadEvent::Skipped(SkippedInput { input: input.to_string(), reason: reason.to_string() })
}

/// Parses a metadata JSON object; the error is the reason to skip the sample.
fn parse_metadata(bytes: &[u8]) -> std::result::Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("metadata is not a JSON object".into()),
        Err(e) => Err(format!("invalid metadata JSON: {e}")),
    }
}

fn read_file_sample(
    storage: &Storage,
    image: &Option<Location>,
    text: &Option<Location>,
    json: &Option<Location>,
    o: &ReadOptions,
) -> ReadEvent {
    let mut sample = RawSample::default();
    if let Some(img) = image.as_ref().filter(|_| o.enable_image) {
        sample.image_path = img.to_string();
        match storage.read_at_most(img, o.max_sample_bytes) {
            Ok(b) => sample.image = Some(b),
            Err(e) => return skipped(img, e),
        }
    }
    if let Some(t) = text.as_ref().filter(|_| o.enable_text) {
        match storage.read_at_most(t, o.max_sample_bytes) {
            Ok(b) => sample.caption = Some(String::from_utf8_lossy(&b).into_owned()),
            Err(e) => return skipped(t, e),
        }
        if sample.image_path.is_empty() {
            sample.image_path = t.to_string();
        }
    }
    if let Some(j) = json.as_ref().filter(|_| o.enable_metadata) {
        match storage.read_at_most(j, o.max_sample_bytes).map_err(|e| e.to_string()).and_then(|b| parse_metadata(&b)) {
            Ok(m) => sample.metadata = Some(m),
            Err(reason) => return skipped(j, reason),
        }
    }
    ReadEvent::Sample(sample)
}

/// A shard sample being gathered: its key, its members, and why it is skipped when a member was too large.
type GatheredSample = (String, BTreeMap<String, Vec<u8>>, Option<String>);

/// Streams one tar shard, grouping consecutive members by key (the name up to the first dot of its basename).
fn read_shard(storage: &Storage, loc: &Location, o: &ReadOptions, emit: &mut dyn FnMut(ReadEvent) -> bool) -> bool {
    let copy = match storage.local_copy(loc) {
        Ok(c) => c,
        Err(e) => return emit(skipped(loc, e)),
    };
    let file = match std::fs::File::open(copy.path()) {
        Ok(f) => f,
        Err(e) => return emit(skipped(loc, e)),
    };
    let shard_bytes = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    read_tar(std::io::BufReader::with_capacity(1 << 20, file), loc, shard_bytes, o, emit)
}

/// Reads a webdataset tar of `shard_bytes` bytes from `reader` (`loc` names it in skips): the samples and skips of
/// one shard, in order, each given to `emit` (which returns false to stop). Public for the fuzz target.
pub fn read_tar(
    reader: impl std::io::Read,
    loc: &Location,
    shard_bytes: u64,
    o: &ReadOptions,
    emit: &mut dyn FnMut(ReadEvent) -> bool,
) -> bool {
    let mut archive = tar::Archive::new(reader);
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => return emit(skipped(loc, format!("not a tar file: {e}"))),
    };
    let mut current: Option<GatheredSample> = None;
    // A truncated or corrupt tar ends the shard: what was read before is kept, the rest is one skip.
    let mut corruption: Option<(String, std::io::Error)> = None;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                corruption = Some((loc.to_string(), e));
                break;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let (dir, base) = path
            .rsplit_once('/')
            .map(|(d, b)| (format!("{d}/"), b.to_string()))
            .unwrap_or((String::new(), path.clone()));
        let Some((stem, ext)) = base.split_once('.') else {
            continue;
        };
        let key = format!("{dir}{stem}");
        let size = entry.size();
        if size > shard_bytes {
            // The header lies: nothing after it can be trusted to be where the header says.
            let e = std::io::Error::other(format!("header claims {size} bytes, the shard has {shard_bytes}"));
            corruption = Some((format!("{loc}:{path}"), e));
            break;
        }
        if current.as_ref().is_some_and(|(k, _, _)| *k != key) {
            let (k, members, too_large) = current.take().expect("checked");
            if !emit(shard_sample(loc, k, members, too_large, o)) {
                return false;
            }
        }
        let (_, members, too_large) = current.get_or_insert_with(|| (key, BTreeMap::new(), None));
        if size > o.max_sample_bytes {
            // The archive skips the member's data on the next entry; nothing of its size is read.
            *too_large = Some(format!("member {base} is {size} bytes, over --max_sample_bytes {}", o.max_sample_bytes));
            continue;
        }
        let mut data = Vec::with_capacity(size as usize);
        if let Err(e) = std::io::Read::read_to_end(&mut std::io::Read::take(&mut entry, size), &mut data) {
            corruption = Some((format!("{loc}:{path}"), e));
            break;
        }
        members.insert(ext.to_ascii_lowercase(), data);
    }
    if let Some((key, members, too_large)) = current {
        if !emit(shard_sample(loc, key, members, too_large, o)) {
            return false;
        }
    }
    match corruption {
        Some((input, e)) => emit(skipped(input, format!("corrupt tar, rest of the shard skipped: {e}"))),
        None => true,
    }
}

fn shard_sample(
    loc: &Location,
    key: String,
    mut members: BTreeMap<String, Vec<u8>>,
    too_large: Option<String>,
    o: &ReadOptions,
) -> ReadEvent {
    let name = format!("{loc}:{key}");
    if let Some(reason) = too_large {
        return skipped(name, reason);
    }
    let mut sample = RawSample { image_path: key, ..Default::default() };
    if o.enable_image {
        match members.remove(&o.image_key) {
            Some(b) => sample.image = Some(b),
            None => return skipped(name, format!("no .{} member", o.image_key)),
        }
    }
    if o.enable_text {
        match members.remove(&o.caption_key) {
            Some(b) => sample.caption = Some(String::from_utf8_lossy(&b).into_owned()),
            None => return skipped(name, format!("no .{} member", o.caption_key)),
        }
    }
    if o.enable_metadata {
        if let Some(b) = members.remove("json") {
            match parse_metadata(&b) {
                Ok(m) => sample.metadata = Some(m),
                Err(reason) => return skipped(name, reason),
            }
        }
    }
    ReadEvent::Sample(sample)
}

/// Column names tried for the image bytes and the caption when the configured ones are absent.
const IMAGE_COLUMNS: [&str; 5] = ["jpg", "image", "png", "webp", "image_bytes"];
const CAPTION_COLUMNS: [&str; 3] = ["caption", "text", "txt"];

/// Rows decoded at once from a parquet file: 256, fewer when the footer says rows are large, so that one batch
/// stays near [`PARQUET_BATCH_BYTES`] whatever the row size.
const PARQUET_BATCH_ROWS: usize = 256;
const PARQUET_BATCH_BYTES: u64 = 64 << 20;

/// Streams one parquet file row group by row group. Sizes come from the footer before anything is decoded: the
/// batch size follows the group's bytes per row, and a one-row group whose image or caption column is over
/// `--max_sample_bytes` is skipped undecoded; larger cells in bigger groups are caught per cell after decoding
/// (a batch holds at most [`PARQUET_BATCH_BYTES`] of them).
fn read_parquet(storage: &Storage, loc: &Location, o: &ReadOptions, emit: &mut dyn FnMut(ReadEvent) -> bool) -> bool {
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    let copy = match storage.local_copy(loc) {
        Ok(c) => c,
        Err(e) => return emit(skipped(loc, e)),
    };
    let opened = std::fs::File::open(copy.path()).map_err(|e| e.to_string()).and_then(|f| {
        ArrowReaderMetadata::load(&f, ArrowReaderOptions::default()).map(|m| (f, m)).map_err(|e| e.to_string())
    });
    let (file, metadata) = match opened {
        Ok(o) => o,
        Err(e) => return emit(skipped(loc, format!("not a readable parquet file: {e}"))),
    };
    let read_columns: Vec<&str> = [(o.enable_image, &o.image_key), (o.enable_text, &o.caption_key)]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, k)| k.as_str())
        .chain(IMAGE_COLUMNS.iter().copied().filter(|_| o.enable_image))
        .chain(CAPTION_COLUMNS.iter().copied().filter(|_| o.enable_text))
        .collect();
    let mut row0 = 0usize;
    for (g, group) in metadata.metadata().row_groups().iter().enumerate() {
        let rows = group.num_rows().max(0) as usize;
        let group_row0 = row0;
        row0 += rows;
        if rows == 0 {
            continue;
        }
        let widest = group
            .columns()
            .iter()
            .filter(|c| read_columns.contains(&c.column_path().string().as_str()))
            .map(|c| c.uncompressed_size().max(0) as u64)
            .max()
            .unwrap_or(0);
        if rows == 1 && widest > o.max_sample_bytes.saturating_add(64 << 10) {
            let reason = format!(
                "a cell of about {widest} bytes, over --max_sample_bytes {} (from the footer)",
                o.max_sample_bytes
            );
            if !emit(skipped(format!("{loc}#{group_row0}"), reason)) {
                return false;
            }
            continue;
        }
        let per_row = (widest / rows as u64).max(1);
        let batch_rows = (PARQUET_BATCH_BYTES / per_row).clamp(1, PARQUET_BATCH_ROWS as u64) as usize;
        let reader = file.try_clone().map_err(|e| e.to_string()).and_then(|f| {
            ParquetRecordBatchReaderBuilder::new_with_metadata(f, metadata.clone())
                .with_row_groups(vec![g])
                .with_batch_size(batch_rows)
                .build()
                .map_err(|e| e.to_string())
        });
        let reader = match reader {
            Ok(r) => r,
            Err(e) => return emit(skipped(loc, format!("not a readable parquet file: {e}"))),
        };
        let mut batch_row0 = group_row0;
        for batch in reader {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => return emit(skipped(loc, format!("corrupt parquet, rest of the file skipped: {e}"))),
            };
            let columns = match ParquetColumns::find(&batch, o) {
                Ok(c) => c,
                Err(reason) => return emit(skipped(loc, reason)),
            };
            for row in 0..batch.num_rows() {
                if !emit(columns.sample(&batch, row, &format!("{loc}#{}", batch_row0 + row), o)) {
                    return false;
                }
            }
            batch_row0 += batch.num_rows();
        }
    }
    true
}

struct ParquetColumns {
    image: Option<usize>,
    caption: Option<usize>,
    path: Option<usize>,
}

impl ParquetColumns {
    fn find(batch: &RecordBatch, o: &ReadOptions) -> std::result::Result<Self, String> {
        let schema = batch.schema();
        let pick = |preferred: &str, fallbacks: &[&str]| {
            std::iter::once(preferred).chain(fallbacks.iter().copied()).find_map(|n| schema.index_of(n).ok())
        };
        let image = pick(&o.image_key, &IMAGE_COLUMNS);
        let caption = pick(&o.caption_key, &CAPTION_COLUMNS);
        if o.enable_image && image.is_none() {
            return Err(format!("no image column ({} or one of {IMAGE_COLUMNS:?})", o.image_key));
        }
        if o.enable_text && caption.is_none() {
            return Err(format!("no caption column ({} or one of {CAPTION_COLUMNS:?})", o.caption_key));
        }
        let path = ["url", "key", "image_path"].iter().find_map(|n| schema.index_of(n).ok());
        Ok(Self { image, caption, path })
    }

    fn sample(&self, batch: &RecordBatch, row: usize, name: &str, o: &ReadOptions) -> ReadEvent {
        let mut sample = RawSample {
            image_path: self
                .path
                .and_then(|c| cell_string(batch.column(c).as_ref(), row))
                .unwrap_or_else(|| name.to_string()),
            ..Default::default()
        };
        let too_large = [self.image.filter(|_| o.enable_image), self.caption.filter(|_| o.enable_text)]
            .into_iter()
            .flatten()
            .find_map(|c| cell_len(batch.column(c).as_ref(), row).filter(|&n| n > o.max_sample_bytes));
        if let Some(n) = too_large {
            return skipped(name, format!("a cell of {n} bytes, over --max_sample_bytes {}", o.max_sample_bytes));
        }
        if o.enable_image {
            match self.image.and_then(|c| cell_bytes(batch.column(c).as_ref(), row)) {
                Some(b) => sample.image = Some(b),
                None => return skipped(name, "null or non-binary image cell"),
            }
        }
        if o.enable_text {
            match self.caption.and_then(|c| cell_string(batch.column(c).as_ref(), row)) {
                Some(t) => sample.caption = Some(t),
                None => return skipped(name, "null caption"),
            }
        }
        if o.enable_metadata {
            let mut m = Map::new();
            for (i, field) in batch.schema().fields().iter().enumerate() {
                if Some(i) == self.image || Some(i) == self.caption {
                    continue;
                }
                // Nested and temporal columns stay out of the metadata, as before (clip-retrieval keeps scalars).
                let column = batch.column(i).as_ref();
                if !is_scalar(column.data_type()) {
                    continue;
                }
                if let Some(v) = cell_json(column, row) {
                    m.insert(field.name().clone(), v);
                }
            }
            sample.metadata = Some(m);
        }
        ReadEvent::Sample(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ReadOptions {
        ReadOptions {
            enable_image: true,
            enable_text: true,
            enable_metadata: false,
            image_key: "jpg".into(),
            caption_key: "txt".into(),
            max_sample_bytes: DEFAULT_MAX_SAMPLE_BYTES,
        }
    }

    fn touch(dir: &std::path::Path, names: &[&str]) {
        for n in names {
            let p = dir.join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
    }

    #[test]
    fn files_are_grouped_by_key_sorted_and_dealt_round_robin() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), &["b.jpg", "b.txt", "a.PNG", "a.txt", "c/d.webp", "c/d.txt", "e.jpg", ".tmp-x.jpg", "f.txt"]);
        let input = dir.path().to_str().unwrap();
        let plan = DatasetPlan::discover(&Storage::from_env(), input, InputFormat::Files, options(), None).unwrap();
        let keys: Vec<String> = plan
            .units
            .iter()
            .map(|u| match u {
                InputUnit::FileSample { key, .. } => key.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        // e.jpg has no caption and f.txt no image: both dropped, as clip-retrieval does; hidden files ignored.
        assert_eq!(keys, vec!["a", "b", "c/d"]);
        assert_eq!(plan.partition(0, 2).len(), 2);
        assert_eq!(plan.partition(1, 2).len(), 1);
        assert_eq!(plan.default_partition_count(2, 1), 2);
        assert_eq!(plan.default_partition_count(1_000_000, 1), 1);
        let subset =
            DatasetPlan::discover(&Storage::from_env(), input, InputFormat::Files, options(), Some(2)).unwrap();
        assert_eq!(subset.units.len(), 2);
    }

    #[test]
    fn captions_are_optional_when_none_exist() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), &["a.jpg", "b.jpg"]);
        let plan = DatasetPlan::discover(
            &Storage::from_env(),
            dir.path().to_str().unwrap(),
            InputFormat::Files,
            options(),
            None,
        )
        .unwrap();
        assert_eq!(plan.units.len(), 2);
        assert!(!plan.options.enable_text, "text switches off when the folder has no caption");
    }

    #[test]
    fn container_partitions_never_outnumber_containers() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), &["0.tar", "1.tar", "2.tar", "notes.md"]);
        let plan = DatasetPlan::discover(
            &Storage::from_env(),
            dir.path().to_str().unwrap(),
            InputFormat::Webdataset,
            options(),
            None,
        )
        .unwrap();
        assert_eq!(plan.units.len(), 3);
        assert_eq!(plan.default_partition_count(1_000_000, 10_000), 1);
        assert_eq!(plan.default_partition_count(10, 10_000), 3);
        let err = DatasetPlan::discover(
            &Storage::from_env(),
            dir.path().to_str().unwrap(),
            InputFormat::Parquet,
            options(),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no .parquet files"), "{err}");
    }

    fn read_all(input: &str, format: InputFormat, o: ReadOptions) -> (Vec<RawSample>, Vec<SkippedInput>) {
        let storage = Storage::from_env();
        let plan = DatasetPlan::discover(&storage, input, format, o, None).unwrap();
        let (mut samples, mut skips) = (Vec::new(), Vec::new());
        read_units(&storage, &plan.units, &plan.options, None, |ev| {
            match ev {
                ReadEvent::Sample(s) => samples.push(s),
                ReadEvent::Skipped(s) => skips.push(s),
            }
            true
        })
        .unwrap();
        (samples, skips)
    }

    fn member(builder: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, data).unwrap();
    }

    #[test]
    fn a_tar_header_claiming_more_than_the_shard_ends_the_shard_as_one_counted_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(std::fs::File::create(dir.path().join("0.tar")).unwrap());
        member(&mut builder, "a.jpg", b"jpeg");
        member(&mut builder, "a.txt", b"caption a");
        // A PAX header saying the next member holds 2^62 bytes.
        builder.append_pax_extensions([("size", b"4611686018427387904".as_slice())]).unwrap();
        member(&mut builder, "b.jpg", b"tiny");
        member(&mut builder, "c.jpg", b"never reached");
        builder.finish().unwrap();
        let (samples, skips) = read_all(dir.path().to_str().unwrap(), InputFormat::Webdataset, options());
        assert_eq!(samples.iter().map(|s| s.image_path.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(skips.len(), 1, "{skips:?}");
        assert!(skips[0].input.ends_with("0.tar:b.jpg"), "{skips:?}");
        assert!(skips[0].reason.contains("header claims 4611686018427387904 bytes"), "{skips:?}");
    }

    #[test]
    fn a_member_over_max_sample_bytes_skips_its_sample_and_the_shard_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(std::fs::File::create(dir.path().join("0.tar")).unwrap());
        member(&mut builder, "a.jpg", &[1u8; 100]);
        member(&mut builder, "a.txt", b"caption a");
        member(&mut builder, "b.jpg", &[2u8; 10]);
        member(&mut builder, "b.txt", b"caption b");
        builder.finish().unwrap();
        let o = ReadOptions { max_sample_bytes: 50, ..options() };
        let (samples, skips) = read_all(dir.path().to_str().unwrap(), InputFormat::Webdataset, o);
        assert_eq!(samples.iter().map(|s| s.image_path.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(skips.len(), 1);
        assert!(skips[0].reason.contains("a.jpg is 100 bytes, over --max_sample_bytes 50"), "{skips:?}");
    }

    #[test]
    fn a_file_over_max_sample_bytes_is_skipped_unread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("b.jpg"), [0u8; 10]).unwrap();
        touch(dir.path(), &["a.txt", "b.txt"]);
        let o = ReadOptions { max_sample_bytes: 50, ..options() };
        let (samples, skips) = read_all(dir.path().to_str().unwrap(), InputFormat::Files, o);
        assert_eq!(samples.len(), 1);
        assert!(samples[0].image_path.ends_with("b.jpg"));
        assert!(skips[0].input.ends_with("a.jpg") && skips[0].reason.contains("over --max_sample_bytes"), "{skips:?}");
    }

    #[test]
    fn a_parquet_cell_over_max_sample_bytes_skips_its_row() {
        use arrow::array::{ArrayRef, BinaryArray, StringArray};
        use arrow::datatypes::{Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let schema = Schema::new(vec![
            Field::new("jpg", arrow::datatypes::DataType::Binary, true),
            Field::new("caption", arrow::datatypes::DataType::Utf8, true),
        ]);
        let (big, small) = (vec![1u8; 100], vec![2u8; 10]);
        let columns: Vec<ArrayRef> = vec![
            std::sync::Arc::new(BinaryArray::from(vec![big.as_slice(), small.as_slice()])),
            std::sync::Arc::new(StringArray::from(vec!["a", "b"])),
        ];
        let batch = RecordBatch::try_new(std::sync::Arc::new(schema), columns).unwrap();
        let target = Location::Local(dir.path().join("0.parquet"));
        crate::metadata::write_parquet(&Storage::from_env(), &target, &batch).unwrap();
        let o = ReadOptions { max_sample_bytes: 50, ..options() };
        let (samples, skips) = read_all(dir.path().to_str().unwrap(), InputFormat::Parquet, o);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].caption.as_deref(), Some("b"));
        assert!(skips[0].input.ends_with("0.parquet#0") && skips[0].reason.contains("100 bytes"), "{skips:?}");
    }

    #[test]
    fn a_one_row_group_over_max_sample_bytes_is_skipped_from_the_footer_and_the_next_group_is_read() {
        use arrow::array::{ArrayRef, BinaryArray, StringArray};
        use arrow::datatypes::{Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("jpg", arrow::datatypes::DataType::Binary, true),
            Field::new("caption", arrow::datatypes::DataType::Utf8, true),
        ]));
        let batch = |image: &[u8], caption: &str| {
            let columns: Vec<ArrayRef> = vec![
                std::sync::Arc::new(BinaryArray::from(vec![image])),
                std::sync::Arc::new(StringArray::from(vec![caption])),
            ];
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        };
        let file = std::fs::File::create(dir.path().join("0.parquet")).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        // Incompressible bytes, so the footer's size is the cell's.
        let noise: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        writer.write(&batch(&noise, "big")).unwrap();
        writer.flush().unwrap(); // one row group per row
        writer.write(&batch(b"small", "small")).unwrap();
        writer.close().unwrap();
        let o = ReadOptions { max_sample_bytes: 100_000, ..options() };
        let (samples, skips) = read_all(dir.path().to_str().unwrap(), InputFormat::Parquet, o);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].caption.as_deref(), Some("small"));
        assert!(skips[0].input.ends_with("0.parquet#0") && skips[0].reason.contains("from the footer"), "{skips:?}");
    }
}
