//! `index --append`: adds the embedding partitions an index folder does not hold yet to its existing index, with
//! the folder's own training, so the result equals a build of every partition from that training (clip-retrieval
//! can only rebuild). The report lists the partitions held; new ones must number after them, so ids stay global
//! row numbers in partition order. The tuned search parameters are kept (recall is not measured again).
//!
//! Files appear whole: each is written beside its target and renamed over it (the re-rank vectors, then the
//! index; the caller writes the report and `metadata.arrow` after), and a server that has the old files mapped
//! keeps reading them until it reloads.

use crate::build::{chunk_rows, peak_rss_bytes, write_index, BuildOptions, BuildProgress};
use crate::embeddings::EmbeddingSource;
use crate::error::{IndexError, Result};
use crate::faiss_index::{set_threads, FaissIndex};
use crate::folder::Modality;
use crate::report::{IndexReport, PartitionRows};
use clip_data::npy::{self, NpyDtype, NpyWriter};
use clip_data::{Location, Storage};
use std::io::{Seek, SeekFrom, Write};
use std::time::Instant;

/// Appends the partitions of `source` that `folder`'s `<modality>.json` does not list; returns the new report.
pub fn append_index(
    source: &EmbeddingSource,
    folder: &Location,
    modality: Modality,
    opts: &BuildOptions,
    progress: &dyn BuildProgress,
) -> Result<IndexReport> {
    let started = Instant::now();
    let Location::Local(dir) = folder else {
        return Err(IndexError::invalid(folder, "--append needs a local index folder"));
    };
    let report_path = dir.join(modality.report_file());
    let bytes = std::fs::read(&report_path)
        .map_err(|e| IndexError::invalid(report_path.display(), format!("--append needs the index's report: {e}")))?;
    let mut report = IndexReport::from_json(&bytes, &report_path.display().to_string())?;
    let new = new_partitions(source, &report, &report_path.display().to_string())?;
    if new.is_empty() {
        tracing::info!(modality = modality.name(), "every partition is already in the index; nothing to append");
        return Ok(report);
    }
    let index_path = dir.join(modality.index_file());
    if index_path.is_dir() {
        return Err(IndexError::invalid(index_path.display(), "an on-disk merged index cannot be appended to"));
    }
    set_threads(opts.threads);
    let mut index = FaissIndex::read(&index_path, false)?;
    if index.dim() != source.dim || index.len() != report.count {
        return Err(IndexError::invalid(index_path.display(), "does not match its report (a half-copied folder?)"));
    }
    let added: u64 = source.partitions.iter().filter(|p| new.contains(&p.number)).map(|p| p.rows as u64).sum();
    progress.stage("appending", added);
    let vectors = match &report.rerank {
        Some(r) => Some(AppendedVectors::start(&dir.join(&r.vectors_file), source.dim)?),
        None => None,
    };
    let mut vectors = vectors;
    source.for_each_chunk_where(
        chunk_rows(source.dim, opts.current_memory_available),
        |n| new.contains(&n),
        |_, rows| {
            index.add(rows)?;
            if let Some(v) = vectors.as_mut() {
                v.write(rows)?;
            }
            progress.advance((rows.len() / source.dim) as u64);
            Ok(())
        },
    )?;
    if let Some(v) = vectors {
        let disk = v.finish()?;
        report.disk_bytes = disk;
        if let Some(r) = report.rerank.as_mut() {
            r.disk_bytes = disk;
        }
    }
    report.index_bytes = write_index(&Storage::from_env(), &index, &Location::Local(index_path))?;
    report.count = index.len();
    report.partitions.extend(
        source
            .partitions
            .iter()
            .filter(|p| new.contains(&p.number))
            .map(|p| PartitionRows { number: p.number, rows: p.rows }),
    );
    report.build_seconds = started.elapsed().as_secs_f64();
    report.peak_rss_bytes = peak_rss_bytes();
    Ok(report)
}

/// The partition numbers of `source` not in `report`, checking that the ones it lists are unchanged and that the
/// new ones come after them.
fn new_partitions(source: &EmbeddingSource, report: &IndexReport, name: &str) -> Result<Vec<usize>> {
    for held in &report.partitions {
        match source.partitions.iter().find(|p| p.number == held.number) {
            Some(p) if p.rows == held.rows => {}
            Some(p) => {
                return Err(IndexError::invalid(
                    &p.location,
                    format!(
                        "has {} rows but the index holds {} from it: rebuild instead of appending",
                        p.rows, held.rows
                    ),
                ))
            }
            None => {
                return Err(IndexError::invalid(
                    &source.folder,
                    format!("partition {} of the index is missing from the embeddings folder", held.number),
                ))
            }
        }
    }
    let last = report.partitions.iter().map(|p| p.number).max();
    let new: Vec<usize> = source
        .partitions
        .iter()
        .map(|p| p.number)
        .filter(|n| !report.partitions.iter().any(|h| h.number == *n))
        .collect();
    if let (Some(last), Some(first_new)) = (last, new.iter().min()) {
        if *first_new < last {
            return Err(IndexError::invalid(
                name,
                format!(
                    "new partition {first_new} numbers before partition {last} the index holds: ids would not be \
                     row numbers in partition order; rebuild instead"
                ),
            ));
        }
    }
    Ok(new)
}

/// The re-rank vectors grown by the appended rows: the old file's rows copied into a new file beside it, new rows
/// appended, renamed over the old one at the end.
struct AppendedVectors {
    target: std::path::PathBuf,
    partial: std::path::PathBuf,
    writer: NpyWriter<std::io::BufWriter<std::fs::File>>,
}

impl AppendedVectors {
    fn start(target: &std::path::Path, dim: usize) -> Result<Self> {
        let old = crate::vectors::StoredVectors::open(target)?;
        if old.dim() != dim {
            return Err(IndexError::invalid(target.display(), format!("holds {} columns, not {dim}", old.dim())));
        }
        drop(old);
        let partial = target.with_extension("npy.partial");
        let file = std::fs::File::create(&partial).map_err(IndexError::io(partial.display()))?;
        let mut writer = NpyWriter::new(std::io::BufWriter::with_capacity(1 << 20, file), NpyDtype::F16, dim)
            .map_err(IndexError::io(partial.display()))?;
        let mut old = std::fs::File::open(target).map_err(IndexError::io(target.display()))?;
        let (_, rows, _, offset) = npy::read_header(std::io::BufReader::new(&old), &target.display().to_string())?;
        old.seek(SeekFrom::Start(offset as u64)).map_err(IndexError::io(target.display()))?;
        writer.append_raw_rows(&mut old, rows).map_err(IndexError::io(partial.display()))?;
        Ok(Self { target: target.to_path_buf(), partial, writer })
    }

    fn write(&mut self, rows: &[f32]) -> Result<()> {
        self.writer.write_rows(rows).map_err(IndexError::io(self.partial.display()))
    }

    fn finish(self) -> Result<u64> {
        let mut sink = self.writer.finish().map_err(IndexError::io(self.partial.display()))?;
        sink.flush().map_err(IndexError::io(self.partial.display()))?;
        let file = sink.into_inner().map_err(|e| IndexError::io(self.partial.display())(e.into_error()))?;
        file.sync_all().map_err(IndexError::io(self.partial.display()))?;
        let bytes = file.metadata().map_err(IndexError::io(self.partial.display()))?.len();
        std::fs::rename(&self.partial, &self.target).map_err(IndexError::io(self.target.display()))?;
        Ok(bytes)
    }
}
