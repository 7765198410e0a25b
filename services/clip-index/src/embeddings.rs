//! The embedding partitions written by `inference` (`img_emb/img_emb_N.npy`), read as one matrix in streaming chunks.
//!
//! Rows are numbered globally in partition order: row ids are the ids of the index and of the metadata row store.
//! Nothing here holds more than one chunk in memory, so an index can be built from embeddings larger than RAM.

use crate::error::{IndexError, Result};
use clip_data::npy::{self, NpyDtype};
use clip_data::storage::{LocalCopy, Storage};
use clip_data::Location;
use half::f16;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// One `.npy` partition: where it is and what its header says.
pub struct EmbeddingPartition {
    /// Partition number parsed from the file name (`img_emb_12.npy` -> 12).
    pub number: usize,
    /// Where the user's file is.
    pub location: Location,
    /// A readable local path (the file itself, or a download of an s3:// object).
    local: LocalCopy,
    /// Element type.
    pub dtype: NpyDtype,
    /// Row count.
    pub rows: usize,
    /// Offset of the first row.
    header_len: usize,
    /// Global id of the first row.
    pub first_id: u64,
}

/// All partitions of one modality, in partition order.
#[derive(Debug)]
pub struct EmbeddingSource {
    /// The folder that was read.
    pub folder: Location,
    /// Embedding dimension.
    pub dim: usize,
    /// Partitions in order.
    pub partitions: Vec<EmbeddingPartition>,
}

/// Partition number of `prefix_N.ext` (e.g. `img_emb_3.npy`), as clip-retrieval names its outputs.
pub fn partition_number(file_name: &str, extension: &str) -> Option<usize> {
    let stem = file_name.strip_suffix(extension)?;
    stem.rsplit('_').next()?.parse().ok()
}

impl EmbeddingSource {
    /// Opens every `*.npy` of `folder`, sorted by partition number; s3:// partitions are downloaded to temporary files.
    pub fn open(storage: &Storage, folder: &Location) -> Result<Self> {
        Self::open_partitions(storage, folder, None)
    }

    /// [`EmbeddingSource::open`] of only the partitions numbered in `only` (sorted; `None` is all): ids start at 0
    /// in the first of them, and the others are never downloaded. A number the folder lacks is an error.
    pub fn open_partitions(storage: &Storage, folder: &Location, only: Option<&[usize]>) -> Result<Self> {
        let mut files: Vec<(usize, Location)> = storage
            .list(folder)?
            .into_iter()
            .filter_map(|loc| partition_number(&loc.file_name(), ".npy").map(|n| (n, loc)))
            .collect();
        if files.is_empty() {
            return Err(IndexError::invalid(folder, "no embedding partitions (*_N.npy) in this folder"));
        }
        if let Some(only) = only {
            let present: std::collections::BTreeSet<usize> = files.iter().map(|(n, _)| *n).collect();
            let missing: Vec<String> = only.iter().filter(|n| !present.contains(n)).map(|n| n.to_string()).collect();
            if !missing.is_empty() {
                return Err(IndexError::invalid(
                    folder,
                    format!("--partition_ids names partition(s) {} that this folder does not have", missing.join(", ")),
                ));
            }
            files.retain(|(n, _)| only.binary_search(n).is_ok());
        }
        files.sort_by_key(|(n, _)| *n);
        let mut partitions = Vec::with_capacity(files.len());
        let mut dim = None;
        let mut first_id = 0u64;
        for (number, location) in files {
            let local = storage.local_copy(&location)?;
            let file = File::open(local.path()).map_err(IndexError::io(&location))?;
            let (dtype, rows, cols, header_len) = npy::read_header(BufReader::new(file), &location.to_string())?;
            match dim {
                None => dim = Some(cols),
                Some(d) if d != cols => {
                    return Err(IndexError::invalid(
                        &location,
                        format!("has {cols} columns but earlier partitions have {d}"),
                    ))
                }
                _ => {}
            }
            let size = std::fs::metadata(local.path()).map_err(IndexError::io(&location))?.len() as usize;
            let expected = npy::data_bytes(rows, cols, dtype).and_then(|n| n.checked_add(header_len));
            if expected.is_none_or(|n| size < n) {
                return Err(IndexError::invalid(&location, format!("truncated: header says {rows} rows of {cols}")));
            }
            partitions.push(EmbeddingPartition { number, location, local, dtype, rows, header_len, first_id });
            first_id += rows as u64;
        }
        Ok(Self { folder: folder.clone(), dim: dim.unwrap_or(0), partitions })
    }

    /// Total rows over all partitions.
    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(|p| p.rows as u64).sum()
    }

    /// Bytes the embeddings take as f32 (what a Flat index stores).
    pub fn f32_bytes(&self) -> u64 {
        self.rows() * self.dim as u64 * 4
    }

    /// Calls `f(first_id, rows)` for consecutive chunks of at most `chunk_rows` rows, in id order.
    pub fn for_each_chunk(&self, chunk_rows: usize, f: impl FnMut(u64, &[f32]) -> Result<()>) -> Result<()> {
        self.for_each_chunk_where(chunk_rows, |_| true, f)
    }

    /// [`EmbeddingSource::for_each_chunk`] over the partitions whose number `keep` accepts (ids stay global).
    pub fn for_each_chunk_where(
        &self,
        chunk_rows: usize,
        keep: impl Fn(usize) -> bool,
        mut f: impl FnMut(u64, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let chunk_rows = chunk_rows.max(1);
        let mut buf = Vec::new();
        let mut values = Vec::new();
        for p in self.partitions.iter().filter(|p| keep(p.number)) {
            let mut reader = p.reader()?;
            let mut done = 0;
            while done < p.rows {
                let n = chunk_rows.min(p.rows - done);
                p.read_rows(&mut reader, n, self.dim, &mut buf, &mut values)?;
                f(p.first_id + done as u64, &values)?;
                done += n;
            }
        }
        Ok(())
    }

    /// Reads the rows with the given global ids (sorted ascending) into one row-major matrix.
    pub fn read_ids(&self, ids: &[u64]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(ids.len() * self.dim);
        let mut buf = Vec::new();
        let mut values = Vec::new();
        let mut part = 0;
        let mut reader: Option<BufReader<File>> = None;
        for &id in ids {
            while part < self.partitions.len()
                && id >= self.partitions[part].first_id + self.partitions[part].rows as u64
            {
                part += 1;
                reader = None;
            }
            let p =
                self.partitions.get(part).ok_or_else(|| IndexError::invalid(&self.folder, "row id out of range"))?;
            let r = match reader.as_mut() {
                Some(r) => r,
                None => reader.insert(p.reader()?),
            };
            let row = (id - p.first_id) as usize;
            let offset = p.header_len + row * self.dim * p.dtype.size();
            r.seek(SeekFrom::Start(offset as u64)).map_err(IndexError::io(&p.location))?;
            p.read_rows(r, 1, self.dim, &mut buf, &mut values)?;
            out.extend_from_slice(&values);
        }
        Ok(out)
    }
}

impl std::fmt::Debug for EmbeddingPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmbeddingPartition({}, {} rows, {:?})", self.location, self.rows, self.dtype)
    }
}

impl EmbeddingPartition {
    /// A buffered reader positioned at the first row.
    fn reader(&self) -> Result<BufReader<File>> {
        let mut file = File::open(self.local.path()).map_err(IndexError::io(&self.location))?;
        file.seek(SeekFrom::Start(self.header_len as u64)).map_err(IndexError::io(&self.location))?;
        Ok(BufReader::with_capacity(1 << 20, file))
    }

    /// Reads `n` rows at the reader's position, converted to f32, into `values`.
    fn read_rows(
        &self,
        r: &mut impl Read,
        n: usize,
        dim: usize,
        buf: &mut Vec<u8>,
        values: &mut Vec<f32>,
    ) -> Result<()> {
        buf.resize(n * dim * self.dtype.size(), 0);
        r.read_exact(buf).map_err(IndexError::io(&self.location))?;
        values.clear();
        match self.dtype {
            NpyDtype::F16 => values.extend(buf.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
            NpyDtype::F32 => values.extend(buf.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        }
        Ok(())
    }

    /// The local file read (for tests and tools).
    pub fn local_path(&self) -> &Path {
        self.local.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clip_data::npy::NpyWriter;

    fn write_npy(path: &Path, dtype: NpyDtype, rows: &[Vec<f32>]) {
        let mut w = NpyWriter::new(File::create(path).unwrap(), dtype, rows[0].len()).unwrap();
        for r in rows {
            w.write_row(r).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn partitions_are_read_in_numeric_order_with_global_ids() {
        let dir = tempfile::tempdir().unwrap();
        let rows = |start: usize, n: usize| (start..start + n).map(|i| vec![i as f32, -(i as f32)]).collect::<Vec<_>>();
        write_npy(&dir.path().join("img_emb_10.npy"), NpyDtype::F32, &rows(5, 2));
        write_npy(&dir.path().join("img_emb_2.npy"), NpyDtype::F16, &rows(2, 3));
        write_npy(&dir.path().join("img_emb_0.npy"), NpyDtype::F32, &rows(0, 2));
        let src = EmbeddingSource::open(&Storage::from_env(), &Location::Local(dir.path().to_path_buf())).unwrap();
        assert_eq!((src.rows(), src.dim), (7, 2));
        assert_eq!(src.partitions.iter().map(|p| p.number).collect::<Vec<_>>(), vec![0, 2, 10]);
        let mut seen = Vec::new();
        src.for_each_chunk(2, |first, v| {
            seen.push((first, v.to_vec()));
            Ok(())
        })
        .unwrap();
        let flat: Vec<f32> = seen.iter().flat_map(|(_, v)| v.clone()).collect();
        assert_eq!(flat, (0..7).flat_map(|i| [i as f32, -(i as f32)]).collect::<Vec<_>>());
        assert_eq!(seen.iter().map(|(f, _)| *f).collect::<Vec<_>>(), vec![0, 2, 4, 5]);
        assert_eq!(src.read_ids(&[1, 4, 6]).unwrap(), vec![1.0, -1.0, 4.0, -4.0, 6.0, -6.0]);
    }

    #[test]
    fn mismatched_dimensions_name_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        write_npy(&dir.path().join("img_emb_0.npy"), NpyDtype::F32, &[vec![1.0, 2.0]]);
        write_npy(&dir.path().join("img_emb_1.npy"), NpyDtype::F32, &[vec![1.0, 2.0, 3.0]]);
        let err = EmbeddingSource::open(&Storage::from_env(), &Location::Local(dir.path().to_path_buf()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("img_emb_1.npy") && err.contains("3 columns"), "{err}");
    }
}
