//! `index_combiner`: merges index folders built on consecutive shards of a collection into one servable folder.
//!
//! Part `i`'s ids are shifted by the row count of the parts before it, so ids stay global row numbers. IVF parts
//! must share their coarse quantiser (build later parts with `--trained_index` from the first); Flat parts are
//! concatenated exactly (clip-retrieval's combiner handles IVF only).

use crate::error::{IndexError, Result};
use crate::faiss_index::{is_flat_file, FaissIndex};
use crate::folder::{Modality, ROW_STORE_FILE};
use crate::report::{IndexReport, PartitionRows};
use crate::row_store::{conform, RowStoreWriter};
use arrow::datatypes::Schema;
use arrow_ipc::reader::FileReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a merge produced for one modality.
#[derive(Debug, Clone)]
pub struct MergeSummary {
    /// The modality merged.
    pub modality: Modality,
    /// Vectors in the merged index.
    pub count: u64,
    /// Parts merged.
    pub parts: usize,
}

/// Merges the `modality` index of every part folder into `output` (a local folder); returns `None` when no part has
/// that modality.
pub fn merge_modality(
    storage: &clip_data::Storage,
    parts: &[PathBuf],
    output: &Path,
    modality: Modality,
) -> Result<Option<MergeSummary>> {
    let files: Vec<PathBuf> = parts.iter().map(|p| p.join(modality.index_file())).collect();
    match files.iter().filter(|f| f.is_file()).count() {
        0 => return Ok(None),
        n if n != files.len() => {
            let missing = files.iter().find(|f| !f.is_file()).expect("one is missing");
            return Err(IndexError::invalid(missing.display(), "missing: every part needs the same indices"));
        }
        _ => {}
    }
    if crate::ondisk::can_merge_ondisk(&files)? {
        return merge_modality_ondisk(parts, &files, output, modality).map(Some);
    }
    let mut merged = FaissIndex::read(&files[0], false)?;
    let mut reports: Vec<Option<IndexReport>> = vec![read_report(&parts[0], modality)];
    let first_centroids = merged.ivf_centroids()?;
    if first_centroids.is_none() && !is_flat_file(&files[0])? {
        return Err(IndexError::invalid(files[0].display(), "only Flat and IVF indices can be merged"));
    }
    if first_centroids.is_none() {
        // Re-add into a fresh Flat so the merged index owns plain memory whatever the first part was read as.
        let mut flat = FaissIndex::from_factory(merged.dim(), "Flat", merged.metric())?;
        copy_vectors(&merged, &mut flat)?;
        merged = flat;
    }
    for (file, folder) in files.iter().zip(parts).skip(1) {
        let mut part = FaissIndex::read(file, false)?;
        if part.dim() != merged.dim() || part.metric() != merged.metric() {
            return Err(IndexError::invalid(file.display(), "dimension or metric differs from the first part"));
        }
        match &first_centroids {
            Some(c) => {
                if part.ivf_centroids()?.as_ref() != Some(c) {
                    return Err(IndexError::invalid(
                        file.display(),
                        "its IVF centroids differ from the first part's: build every part from the same trained \
                         index (--trained_index)",
                    ));
                }
                let offset = merged.len();
                merged.merge_ivf_from(&mut part, offset)?;
            }
            None if is_flat_file(file)? => copy_vectors(&part, &mut merged)?,
            None => return Err(IndexError::invalid(file.display(), "cannot merge a Flat index with this one")),
        }
        reports.push(read_report(folder, modality));
    }
    let target = output.join(modality.index_file());
    std::fs::create_dir_all(output).map_err(IndexError::io(output.display()))?;
    let bytes = crate::build::write_index(storage, &merged, &clip_data::Location::Local(target))?;
    if let Some(Some(first)) = reports.first() {
        let mut report = first.clone();
        report.count = merged.len();
        report.index_bytes = bytes;
        report.rerank = merge_vectors(parts, &reports, output, modality)?;
        report.disk_bytes = report.rerank.as_ref().map_or(0, |r| r.disk_bytes);
        report.partitions = reports
            .iter()
            .flat_map(|r| r.as_ref().map(|r| r.partitions.clone()).unwrap_or_default())
            .collect::<Vec<PartitionRows>>();
        let json = serde_json::to_vec_pretty(&report).expect("report serialises");
        let path = output.join(modality.report_file());
        std::fs::write(&path, json).map_err(IndexError::io(path.display()))?;
    }
    Ok(Some(MergeSummary { modality, count: merged.len(), parts: parts.len() }))
}

/// IVF parts with inline lists: streamed into `output/image.index/` (`populated.index` + `merged_index.ivfdata`),
/// never holding the lists in memory.
fn merge_modality_ondisk(
    parts: &[PathBuf],
    files: &[PathBuf],
    output: &Path,
    modality: Modality,
) -> Result<MergeSummary> {
    let folder = output.join(modality.index_file());
    if folder.is_file() {
        std::fs::remove_file(&folder).map_err(IndexError::io(folder.display()))?;
    }
    let merged = crate::ondisk::merge_ondisk(files, &folder, true)?;
    let reports: Vec<Option<IndexReport>> = parts.iter().map(|p| read_report(p, modality)).collect();
    if let Some(Some(first)) = reports.first() {
        let mut report = first.clone();
        report.count = merged.count;
        let populated = folder.join(crate::folder::POPULATED_INDEX);
        report.index_bytes =
            std::fs::metadata(&populated).map_err(IndexError::io(populated.display()))?.len() + merged.ivfdata_bytes;
        report.partitions =
            reports.iter().flat_map(|r| r.as_ref().map(|r| r.partitions.clone()).unwrap_or_default()).collect();
        report.rerank = merge_vectors(parts, &reports, output, modality)?;
        report.disk_bytes = report.rerank.as_ref().map_or(0, |r| r.disk_bytes);
        let json = serde_json::to_vec_pretty(&report).expect("report serialises");
        let path = output.join(modality.report_file());
        std::fs::write(&path, json).map_err(IndexError::io(path.display()))?;
    }
    Ok(MergeSummary { modality, count: merged.count, parts: parts.len() })
}

/// Concatenates the parts' re-rank vectors when every part has them (else the merged index is served without).
fn merge_vectors(
    parts: &[PathBuf],
    reports: &[Option<IndexReport>],
    output: &Path,
    modality: Modality,
) -> Result<Option<crate::report::RerankReport>> {
    let files: Option<Vec<PathBuf>> = parts
        .iter()
        .zip(reports)
        .map(|(p, r)| r.as_ref().and_then(|r| r.rerank.as_ref()).map(|rr| p.join(&rr.vectors_file)))
        .collect();
    let Some(files) = files else {
        if reports.iter().flatten().any(|r| r.rerank.is_some()) {
            tracing::warn!("only some parts have re-rank vectors: the merged index is served without re-ranking");
        }
        return Ok(None);
    };
    let name = crate::vectors::vectors_file(modality.name());
    let target = output.join(&name);
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    crate::vectors::concat_vectors(&refs, &target)?;
    let k_factor = reports.iter().flatten().filter_map(|r| r.rerank.as_ref()).map(|r| r.k_factor).max().unwrap_or(1);
    let disk_bytes = std::fs::metadata(&target).map_err(IndexError::io(target.display()))?.len();
    Ok(Some(crate::report::RerankReport { vectors_file: name, k_factor, disk_bytes }))
}

fn copy_vectors(from: &FaissIndex, to: &mut FaissIndex) -> Result<()> {
    const CHUNK: u64 = 65_536;
    let mut first = 0;
    while first < from.len() {
        let n = CHUNK.min(from.len() - first);
        to.add(&from.reconstruct_range(first, n as usize)?)?;
        first += n;
    }
    Ok(())
}

fn read_report(folder: &Path, modality: Modality) -> Option<IndexReport> {
    let path = folder.join(modality.report_file());
    std::fs::read(&path).ok().and_then(|b| IndexReport::from_json(&b, &path.display().to_string()).ok())
}

/// Concatenates the parts' `metadata.arrow` row stores in order into `output/metadata.arrow`.
pub fn merge_row_stores(parts: &[PathBuf], output: &Path) -> Result<Option<u64>> {
    let files: Vec<PathBuf> = parts.iter().map(|p| p.join(ROW_STORE_FILE)).collect();
    if !files.iter().all(|f| f.is_file()) {
        return Ok(None);
    }
    let err = |p: &Path| {
        let name = p.display().to_string();
        move |e: arrow::error::ArrowError| IndexError::invalid(name, e)
    };
    let mut schemas = Vec::new();
    for f in &files {
        let reader =
            FileReader::try_new(std::fs::File::open(f).map_err(IndexError::io(f.display()))?, None).map_err(err(f))?;
        schemas.push(reader.schema().as_ref().clone());
    }
    let schema = Arc::new(Schema::try_merge(schemas).map_err(err(output))?);
    let target = output.join(ROW_STORE_FILE);
    let tmp = output.join(format!(".{ROW_STORE_FILE}.partial"));
    let mut writer = RowStoreWriter::new(std::fs::File::create(&tmp).map_err(IndexError::io(tmp.display()))?, &schema)
        .map_err(err(&tmp))?;
    let mut rows = 0u64;
    for f in &files {
        let reader =
            FileReader::try_new(std::fs::File::open(f).map_err(IndexError::io(f.display()))?, None).map_err(err(f))?;
        for batch in reader {
            let batch = batch.map_err(err(f))?;
            rows += batch.num_rows() as u64;
            writer.write(&conform(&batch, &schema, f.display())?).map_err(err(&tmp))?;
        }
    }
    writer.finish().map_err(err(&tmp))?;
    std::fs::rename(&tmp, &target).map_err(IndexError::io(target.display()))?;
    Ok(Some(rows))
}
