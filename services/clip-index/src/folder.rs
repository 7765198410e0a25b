//! An index folder as clip-retrieval lays it out: `image.index`, `text.index`, `metadata/` (copied parquet), plus
//! our `image.json` / `text.json` reports and the `metadata.arrow` row store. Building one from an embeddings folder,
//! and opening one for serving.

use crate::build::{build_index, BuildOptions, BuildProgress};
use crate::embeddings::EmbeddingSource;
use crate::error::{IndexError, Result};
use crate::faiss_index::{FaissIndex, Metric, Neighbours};
use crate::report::{parse_params, IndexReport};
use crate::row_store::{metadata_partitions, parquet_row_counts, write_row_store, RowStore};
use crate::tune;
use crate::vectors::{search_reranked, StoredVectors};
use clip_data::{Location, Storage};
use std::path::{Path, PathBuf};

/// The two embedding modalities and their file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// `img_emb/` -> `image.index`.
    Image,
    /// `text_emb/` -> `text.index`.
    Text,
}

impl Modality {
    /// `image` or `text`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Text => "text",
        }
    }
    /// The index file name.
    pub fn index_file(self) -> String {
        format!("{}.index", self.name())
    }
    /// The report file name.
    pub fn report_file(self) -> String {
        format!("{}.json", self.name())
    }
}

/// File name of the metadata row store in an index folder.
pub const ROW_STORE_FILE: &str = "metadata.arrow";

/// What `clip-retrieval index` is asked to do.
#[derive(Debug, Clone)]
pub struct FolderBuild {
    /// Where `inference` wrote its outputs.
    pub embeddings_folder: Location,
    /// Where the indices go.
    pub index_folder: Location,
    /// Sub-folder of image embeddings.
    pub image_subfolder: String,
    /// Sub-folder of text embeddings.
    pub text_subfolder: String,
    /// Indices to build (a modality without embeddings is skipped either way).
    pub modalities: Vec<Modality>,
    /// Also copy `metadata/*.parquet` into the index folder (clip-retrieval's `--copy_metadata`).
    pub copy_metadata: bool,
    /// Index options.
    pub options: BuildOptions,
    /// An index folder whose trained indices to reuse (`<folder>/image.index`, `<folder>/text.index`).
    pub trained_index_folder: Option<PathBuf>,
    /// Write only the trained, empty indices and their reports (no metadata): a distributed build's first stage.
    pub train_only: bool,
    /// Index only these embedding partitions (sorted numbers) and their metadata, ids from 0: a part folder.
    pub partition_ids: Option<Vec<usize>>,
    /// Add only the partitions `index_folder` does not hold yet, to its existing indices.
    pub append: bool,
}

/// What was built.
#[derive(Debug)]
pub struct FolderReport {
    /// Per modality built.
    pub indices: Vec<(Modality, IndexReport)>,
    /// Rows in the metadata row store, when metadata was found.
    pub metadata_rows: Option<u64>,
}

fn has_npy(storage: &Storage, folder: &Location) -> Result<bool> {
    Ok(storage.list_or_empty(folder)?.iter().any(|f| f.file_name().ends_with(".npy")))
}

/// Refuses an embeddings folder written by our `inference` (it has `stats/`) that is unfinished or mixes runs: a
/// partition without `stats/N.json` (written last) is still running or was killed, and partition names of two
/// widths (`7` and `07`) come from runs with different partition counts. Folders without `stats/` (Python
/// clip-retrieval's, hand-made ones) are taken as they are.
fn check_finished(storage: &Storage, job: &FolderBuild) -> Result<()> {
    let stats: std::collections::BTreeSet<String> = storage
        .list_or_empty(&job.embeddings_folder.join("stats"))?
        .iter()
        .filter_map(|f| f.file_name().strip_suffix(".json").map(str::to_string))
        .collect();
    if stats.is_empty() {
        return Ok(());
    }
    for sub in [&job.image_subfolder, &job.text_subfolder] {
        let folder = job.embeddings_folder.join(sub);
        let names: Vec<String> = storage
            .list_or_empty(&folder)?
            .iter()
            .filter_map(|f| f.file_name().strip_suffix(".npy")?.rsplit('_').next().map(str::to_string))
            .collect();
        let widths: std::collections::BTreeSet<usize> = names.iter().map(String::len).collect();
        if widths.len() > 1 {
            return Err(IndexError::invalid(
                &folder,
                "partition names of different widths (e.g. 7 and 07): two inference runs with different partition \
                 counts wrote this folder; rerun inference into a new folder",
            ));
        }
        let unfinished: Vec<&str> = names.iter().filter(|n| !stats.contains(*n)).map(String::as_str).collect();
        if !unfinished.is_empty() {
            return Err(IndexError::invalid(
                &folder,
                format!(
                    "partition(s) {} have no stats/N.json: their inference did not finish; rerun the same \
                     inference command to finish them",
                    unfinished.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The folder result images may be read from: the local `files` input recorded in the embeddings folder's
/// `plan.json` (written by `clip-retrieval inference`); none for other inputs, whose `image_path`s are keys.
fn recorded_image_roots(storage: &Storage, embeddings: &Location) -> Vec<String> {
    let plan = embeddings.join("plan.json");
    let Ok(bytes) = storage.read_at_most(&plan, 1 << 20) else { return Vec::new() };
    let Ok(plan) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return Vec::new() };
    match (plan["input_format"].as_str(), plan["input_dataset"].as_str()) {
        (Some("files"), Some(input)) if matches!(Location::parse(input), Location::Local(_)) => vec![input.to_string()],
        _ => Vec::new(),
    }
}

/// Builds every index the embeddings folder has data for, then the metadata row store.
pub fn build_folder(storage: &Storage, job: &FolderBuild, progress: &dyn BuildProgress) -> Result<FolderReport> {
    check_finished(storage, job)?;
    let image_roots = recorded_image_roots(storage, &job.embeddings_folder);
    let mut indices = Vec::new();
    let mut rows_of_first = None;
    for (modality, sub) in [(Modality::Image, &job.image_subfolder), (Modality::Text, &job.text_subfolder)] {
        if !job.modalities.contains(&modality) {
            continue;
        }
        let folder = job.embeddings_folder.join(sub);
        if !has_npy(storage, &folder)? {
            tracing::info!(folder = %folder, "no {} embeddings; skipping the {} index", modality.name(), modality.name());
            continue;
        }
        let source = EmbeddingSource::open_partitions(storage, &folder, job.partition_ids.as_deref())?;
        let mut options = job.options.clone();
        if let Some(trained) = &job.trained_index_folder {
            options.trained_index = Some(trained.join(modality.index_file()));
        }
        let mut report = if job.train_only {
            crate::build::train_index(storage, &source, &job.index_folder, modality, &options, progress)?
        } else if job.append {
            crate::append::append_index(&source, &job.index_folder, modality, &options, progress)?
        } else {
            build_index(storage, &source, &job.index_folder, modality, &options, progress)?
        };
        report.image_roots = image_roots.clone();
        let json = serde_json::to_vec_pretty(&report).expect("report serialises");
        storage.write(&job.index_folder.join(&modality.report_file()), &json)?;
        tracing::info!(
            modality = modality.name(),
            index_key = %report.index_key,
            index_param = %report.index_param,
            recall_at_10 = report.recall_at_10,
            index_bytes = report.index_bytes,
            "index written"
        );
        if rows_of_first.is_none() {
            rows_of_first = Some(source.partitions.iter().map(|p| (p.number, p.rows)).collect::<Vec<_>>());
        }
        indices.push((modality, report));
    }
    let Some(rows) = rows_of_first else {
        return Err(IndexError::invalid(
            &job.embeddings_folder,
            format!("no embeddings in {}/ or {}/", job.image_subfolder, job.text_subfolder),
        ));
    };
    if job.train_only {
        return Ok(FolderReport { indices, metadata_rows: None });
    }
    let metadata_folder = job.embeddings_folder.join("metadata");
    let mut partitions = match storage.list(&metadata_folder) {
        Ok(_) => metadata_partitions(storage, &metadata_folder)?,
        Err(_) => Vec::new(),
    };
    if let Some(only) = &job.partition_ids {
        partitions.retain(|(n, _)| only.binary_search(n).is_ok());
    }
    let metadata_rows = if partitions.is_empty() {
        tracing::warn!(folder = %metadata_folder, "no metadata partitions: results will carry ids only");
        None
    } else {
        let n = write_row_store(storage, &partitions, &rows, &job.index_folder.join(ROW_STORE_FILE))?;
        if job.copy_metadata {
            for (_, loc) in &partitions {
                let copy = job.index_folder.join(&format!("metadata/{}", loc.file_name()));
                storage.write(&copy, &storage.read(loc)?)?;
            }
        }
        Some(n)
    };
    Ok(FolderReport { indices, metadata_rows })
}

/// Written last into every folder `index` and `index_combiner` finish (with the build's summary): a folder without
/// it is still being written, or its build failed. `back` with `require_completion_marker` (the operator's query
/// pods) refuses such a folder instead of serving vectors that may not match their metadata.
pub const COMPLETION_MARKER: &str = "_COMPLETE";

/// Writes `folder`'s completion marker holding `summary`; call it after everything else in the folder is written.
pub fn mark_complete(storage: &Storage, folder: &Location, summary: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_vec_pretty(summary).expect("JSON serialises");
    storage.write(&folder.join(COMPLETION_MARKER), &text)?;
    Ok(())
}

/// Whether `folder` has its completion marker.
pub fn is_complete(storage: &Storage, folder: &Location) -> Result<bool> {
    Ok(storage.exists(&folder.join(COMPLETION_MARKER))?)
}

/// The file faiss reads inside an index that is a folder (`image.index/populated.index`, as faiss's `merge_ondisk`
/// and clip-retrieval's `index_combiner` write it, beside `merged_index.ivfdata`).
pub const POPULATED_INDEX: &str = "populated.index";

/// An approximate range search keeps candidates this much below the threshold (cosine) before exact re-scoring, so
/// that results whose compressed score is a little low are not lost.
const RANGE_MARGIN: f32 = 0.05;

/// An index opened for search, with its tuned parameters applied and its re-rank vectors mapped.
#[derive(Debug)]
pub struct LoadedIndex {
    /// The faiss index.
    pub index: FaissIndex,
    /// Its report, when the folder has one (indices built elsewhere may not).
    pub report: Option<IndexReport>,
    /// The float16 re-rank vectors, when the report names them.
    pub vectors: Option<StoredVectors>,
    /// Candidates fetched per result when re-ranking.
    pub k_factor: usize,
}

impl LoadedIndex {
    /// Opens `<folder>/<modality>.index` (memory-mapped when `mmap`; an `image.index/` folder is always read
    /// on-disk, its lists mapped from `merged_index.ivfdata` beside `populated.index`), applies `<modality>.json`'s
    /// parameters and maps the re-rank vectors it names.
    pub fn open(folder: &Path, modality: Modality, mmap: bool) -> Result<Self> {
        let path = folder.join(modality.index_file());
        let mut index = if path.is_dir() {
            FaissIndex::read_ondisk(&path.join(POPULATED_INDEX))?
        } else if path.is_file() {
            FaissIndex::read(&path, mmap)?
        } else {
            return Err(IndexError::invalid(
                path.display(),
                "no such index file (build it with `clip-retrieval index`)",
            ));
        };
        let report_path = folder.join(modality.report_file());
        let report = match std::fs::read(&report_path) {
            Ok(bytes) => Some(IndexReport::from_json(&bytes, &report_path.display().to_string())?),
            Err(_) => None,
        };
        let mut vectors = None;
        let mut k_factor = 1;
        if let Some(r) = &report {
            // A report beside another build's index (a half-copied folder) would apply the wrong tuning and hide it.
            if (r.count, r.dim) != (index.len(), index.dim()) {
                return Err(IndexError::invalid(
                    path.display(),
                    format!(
                        "holds {} vectors of dimension {} but {} describes {} of dimension {} (a folder mixing two \
                         builds: rebuild or copy it again)",
                        index.len(),
                        index.dim(),
                        report_path.display(),
                        r.count,
                        r.dim
                    ),
                ));
            }
            tune::apply(&mut index, &parse_params(&r.index_param)?)?;
            if let Some(rerank) = &r.rerank {
                let v = StoredVectors::open(&folder.join(&rerank.vectors_file))?;
                if (v.len(), v.dim()) != (index.len(), index.dim()) {
                    return Err(IndexError::invalid(
                        folder.join(&rerank.vectors_file).display(),
                        format!(
                            "holds {} x {} vectors but {} holds {} x {} (a folder mixing two builds)",
                            v.len(),
                            v.dim(),
                            path.display(),
                            index.len(),
                            index.dim()
                        ),
                    ));
                }
                vectors = Some(v);
                k_factor = rerank.k_factor.max(1);
            }
        }
        Ok(Self { index, report, vectors, k_factor })
    }

    /// Lets [`LoadedIndex::stored_vectors`] serve an index without re-rank vectors (built elsewhere, or with
    /// `--rerank off`): an IVF index gets faiss's direct map (8 bytes per vector, read from every list).
    pub fn prepare_reconstruct(&mut self) -> Result<()> {
        if self.vectors.is_none() {
            self.index.enable_reconstruct()?;
        }
        Ok(())
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.index.dim()
    }

    /// Number of vectors.
    pub fn len(&self) -> u64 {
        self.index.len()
    }

    /// Whether the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The metric of the index.
    pub fn metric(&self) -> Metric {
        self.index.metric()
    }

    /// Top-`k` of row-major queries, re-ranked exactly when the folder has re-rank vectors; shared between threads.
    pub fn search(&self, queries: &[f32], k: usize) -> Result<Neighbours> {
        match &self.vectors {
            Some(v) => search_reranked(&self.index, v, self.k_factor, queries, k),
            None => self.index.search_ties_by_id(queries, k),
        }
    }

    /// Every vector within `radius` of one query, best first; with re-rank vectors, faiss's candidates within
    /// `radius - 0.05` (the compressed scores' slack) are re-scored and those exactly within `radius` kept.
    pub fn range_search(&self, query: &[f32], radius: f32) -> Result<Vec<(i64, f32)>> {
        let Some(v) = &self.vectors else {
            return Ok(self.index.range_search(query, radius)?.into_iter().next().unwrap_or_default());
        };
        let metric = self.metric();
        let loose = match metric {
            Metric::Ip => radius - RANGE_MARGIN,
            Metric::L2 => radius * 1.1,
        };
        let candidates: Vec<i64> = self
            .index
            .range_search(query, loose)?
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let scores = v.score(query, &candidates, metric)?;
        let mut hits: Vec<(i64, f32)> = candidates
            .into_iter()
            .zip(scores)
            .filter(|&(_, s)| match metric {
                Metric::Ip => s >= radius,
                Metric::L2 => s < radius,
            })
            .collect();
        metric.sort_best(&mut hits);
        Ok(hits)
    }

    /// The stored vectors of `ids`, row-major: exact from the re-rank vectors (or a Flat index), else decoded by
    /// faiss (after [`LoadedIndex::prepare_reconstruct`]).
    pub fn stored_vectors(&self, ids: &[i64]) -> Result<Vec<f32>> {
        match &self.vectors {
            Some(v) => v.read(ids),
            None => self.index.reconstruct(ids),
        }
    }
}

/// Opens the row store of an index folder, when it has one: our `metadata.arrow`, else the `metadata/**/*.arrow`
/// files of a LAION / Python folder (clip-retrieval's `parquet_to_arrow` output, read as its
/// `ArrowMetadataProvider` does: every file in sorted path order, ids in file order).
pub fn open_row_store(folder: &Path) -> Result<Option<RowStore>> {
    let path: PathBuf = folder.join(ROW_STORE_FILE);
    if path.is_file() {
        return RowStore::open(&path).map(Some);
    }
    let arrow = arrow_metadata_files(&folder.join("metadata"))?;
    if arrow.is_empty() {
        return Ok(None);
    }
    tracing::info!(folder = %folder.display(), files = arrow.len(), "metadata from metadata/*.arrow");
    RowStore::open_many(&arrow).map(Some)
}

/// The `.arrow` files under `metadata` (recursively), in sorted path order (Python's `sorted(Path.glob("**/*"))`
/// compares paths component by component, as `Path`'s `Ord` does).
pub fn arrow_metadata_files(metadata: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![metadata.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.map_err(IndexError::io(dir.display()))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "arrow") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Opens the row store of a folder; a folder with only `metadata/*.parquet` (as Python clip-retrieval's `index`
/// leaves it) gets its `metadata.arrow` built first, in the folder or, when that is not writable, under `fallback`.
pub fn open_or_build_row_store(storage: &Storage, folder: &Path, fallback: &Path) -> Result<Option<RowStore>> {
    if let Some(store) = open_row_store(folder)? {
        return Ok(Some(store));
    }
    let metadata = folder.join("metadata");
    if !metadata.is_dir() {
        return Ok(None);
    }
    let partitions = metadata_partitions(storage, &Location::Local(metadata))?;
    if partitions.is_empty() {
        return Ok(None);
    }
    let rows = parquet_row_counts(storage, &partitions)?;
    let beside = folder.join(ROW_STORE_FILE);
    tracing::info!(folder = %folder.display(), partitions = partitions.len(), "building metadata.arrow from metadata/");
    let target = match write_row_store(storage, &partitions, &rows, &Location::Local(beside.clone())) {
        Ok(_) => beside,
        Err(e) => {
            tracing::warn!(error = %e, fallback = %fallback.display(), "cannot write beside the index; using the cache");
            std::fs::create_dir_all(fallback).map_err(IndexError::io(fallback.display()))?;
            let elsewhere = fallback.join(ROW_STORE_FILE);
            write_row_store(storage, &partitions, &rows, &Location::Local(elsewhere.clone()))?;
            elsewhere
        }
    };
    RowStore::open(&target).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(root: &Path) -> FolderBuild {
        FolderBuild {
            embeddings_folder: Location::Local(root.to_path_buf()),
            index_folder: Location::Local(root.join("index")),
            image_subfolder: "img_emb".into(),
            text_subfolder: "text_emb".into(),
            modalities: vec![Modality::Image, Modality::Text],
            copy_metadata: false,
            options: BuildOptions::default(),
            trained_index_folder: None,
            train_only: false,
            partition_ids: None,
            append: false,
        }
    }

    fn touch(root: &Path, names: &[&str]) {
        for n in names {
            let p = root.join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
    }

    #[test]
    fn unfinished_or_mixed_inference_folders_are_refused_and_others_taken_as_they_are() {
        let storage = Storage::from_env();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // No stats/ (Python clip-retrieval, hand-made): names of any width are accepted.
        touch(root, &["img_emb/img_emb_9.npy", "img_emb/img_emb_10.npy"]);
        check_finished(&storage, &job(root)).unwrap();
        // Ours, finished.
        let done = tempfile::tempdir().unwrap();
        touch(done.path(), &["img_emb/img_emb_0.npy", "img_emb/img_emb_1.npy", "stats/0.json", "stats/1.json"]);
        check_finished(&storage, &job(done.path())).unwrap();
        // Ours, partition 1 still running or killed.
        std::fs::remove_file(done.path().join("stats/1.json")).unwrap();
        let err = check_finished(&storage, &job(done.path())).unwrap_err().to_string();
        assert!(err.contains("img_emb") && err.contains("partition(s) 1 have no stats/N.json"), "{err}");
        // Two runs with different partition counts.
        touch(done.path(), &["stats/1.json", "img_emb/img_emb_01.npy", "stats/01.json"]);
        let err = check_finished(&storage, &job(done.path())).unwrap_err().to_string();
        assert!(err.contains("different widths"), "{err}");
    }
}
