//! The re-rank store: every vector of a compressed index at float16 in one `.npy` file beside it
//! (`image_vectors.npy`; numpy reads it with `np.load(path, mmap_mode="r")`), memory-mapped and read only for the
//! candidates of a query. A search over a compressed index fetches `k * k_factor` candidates from faiss, then scores
//! them exactly here, so the similarities served are exact inner products of the stored vectors; dedup and the
//! filters read their vectors here too. The file is on disk, not counted in `--max_index_memory_usage`.

use crate::error::{IndexError, Result};
use crate::faiss_index::{FaissIndex, Metric, Neighbours};
use crate::half_dot::Kernel;
use clip_data::npy::{self, NpyDtype};
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::path::Path;

/// Candidates fetched per query are at most this many (or `k`, when a query asks for more results): re-scoring
/// reads one stored vector per candidate.
pub const MAX_CANDIDATES: usize = 16_384;

/// Candidates fetched from the compressed index for `k` results.
pub fn candidates(k: usize, k_factor: usize) -> usize {
    k.saturating_mul(k_factor.max(1)).min(MAX_CANDIDATES.max(k))
}

/// The file name of a modality's re-rank vectors (`image` -> `image_vectors.npy`).
pub fn vectors_file(modality_name: &str) -> String {
    format!("{modality_name}_vectors.npy")
}

/// A memory-mapped `[rows, dim]` float16 `.npy` file.
pub struct StoredVectors {
    name: String,
    map: memmap2::Mmap,
    data_offset: usize,
    rows: u64,
    dim: usize,
}

impl std::fmt::Debug for StoredVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredVectors({}, {} x {})", self.name, self.rows, self.dim)
    }
}

impl StoredVectors {
    /// Maps `path` and checks its header: float16, two dimensions, as many bytes as the header says.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let map = crate::mmap::map_raw(path)?;
        let (dtype, rows, dim, data_offset) = npy::read_header(&map[..], &name)?;
        if dtype != NpyDtype::F16 {
            return Err(IndexError::invalid(&name, "re-rank vectors must be float16 (<f2)"));
        }
        let expected = npy::data_bytes(rows, dim, dtype).and_then(|n| n.checked_add(data_offset));
        if expected != Some(map.len()) {
            return Err(IndexError::invalid(
                &name,
                format!("is {} bytes but its header says {rows} x {dim} float16 (truncated or rewritten?)", map.len()),
            ));
        }
        if data_offset % 2 != 0 {
            return Err(IndexError::invalid(&name, "the data is not 2-byte aligned"));
        }
        Ok(Self { name, map, data_offset, rows: rows as u64, dim })
    }

    /// Rows.
    pub fn len(&self) -> u64 {
        self.rows
    }

    /// Whether the file holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes of the file.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    fn row(&self, id: i64) -> Result<&[f16]> {
        if id < 0 || id as u64 >= self.rows {
            return Err(IndexError::invalid(&self.name, format!("id {id} is not among its {} rows", self.rows)));
        }
        let start = self.data_offset + id as usize * self.dim * 2;
        let bytes = &self.map[start..start + self.dim * 2];
        bytemuck::try_cast_slice(bytes).map_err(|e| IndexError::invalid(&self.name, format!("row {id}: {e}")))
    }

    /// The vectors of `ids` as f32, row-major.
    pub fn read(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; ids.len() * self.dim];
        for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(self.dim.max(1))) {
            self.row(id)?.convert_to_f32_slice(dst);
        }
        Ok(out)
    }

    /// Exact scores of `query` against the vectors of `ids`: inner product, or squared distance for l2.
    pub fn score(&self, query: &[f32], ids: &[i64], metric: Metric) -> Result<Vec<f32>> {
        if query.len() != self.dim {
            return Err(IndexError::invalid(&self.name, format!("query has {} values, not {}", query.len(), self.dim)));
        }
        let kernel = Kernel::detect();
        ids.iter().map(|&id| Ok(kernel.score(query, self.row(id)?, metric))).collect()
    }
}

/// Writes `target` as the concatenation of the `parts`' vectors, in order (ids shift as `index_combiner` numbers
/// them), streaming the rows: the output header is written first, then each part's data is copied as is.
pub fn concat_vectors(parts: &[&Path], target: &Path) -> Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let opened = parts.iter().map(|p| StoredVectors::open(p)).collect::<Result<Vec<_>>>()?;
    let dim = opened.first().map_or(0, StoredVectors::dim);
    if let Some((p, v)) = parts.iter().zip(&opened).find(|(_, v)| v.dim() != dim) {
        return Err(IndexError::invalid(p.display(), format!("holds {}-dimensional vectors, not {dim}", v.dim())));
    }
    let rows: u64 = opened.iter().map(StoredVectors::len).sum();
    let offsets: Vec<usize> = opened.iter().map(|v| v.data_offset).collect();
    drop(opened);
    let tmp = target.with_extension("npy.partial");
    let file = std::fs::File::create(&tmp).map_err(IndexError::io(tmp.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&npy::header(NpyDtype::F16, rows as usize, dim)).map_err(IndexError::io(tmp.display()))?;
    for (part, offset) in parts.iter().zip(offsets) {
        let mut f = std::fs::File::open(part).map_err(IndexError::io(part.display()))?;
        f.seek(SeekFrom::Start(offset as u64)).map_err(IndexError::io(part.display()))?;
        std::io::copy(&mut f, &mut out).map_err(IndexError::io(tmp.display()))?;
    }
    out.into_inner()
        .map_err(|e| IndexError::io(tmp.display())(e.into_error()))?
        .sync_all()
        .map_err(IndexError::io(tmp.display()))?;
    std::fs::rename(&tmp, target).map_err(IndexError::io(target.display()))?;
    Ok(rows)
}

/// Top-`k` of row-major `queries`: `k * k_factor` candidates from `index`, re-scored exactly from `vectors` and
/// re-sorted (best first, ties by id).
pub fn search_reranked(
    index: &FaissIndex,
    vectors: &StoredVectors,
    k_factor: usize,
    queries: &[f32],
    k: usize,
) -> Result<Neighbours> {
    let found = index.search(queries, candidates(k, k_factor))?;
    let d = index.dim().max(1);
    let metric = index.metric();
    let nq = queries.len() / d;
    let mut distances = Vec::with_capacity(nq * k);
    let mut ids = Vec::with_capacity(nq * k);
    for (q, query) in queries.chunks_exact(d).enumerate() {
        let candidates: Vec<i64> = found.row(q).map(|(id, _)| id).collect();
        let scores = vectors.score(query, &candidates, metric)?;
        let mut scored: Vec<(i64, f32)> = candidates.into_iter().zip(scores).collect();
        metric.sort_best(&mut scored);
        scored.resize(k, (-1, f32::NAN));
        for (id, s) in scored.into_iter().take(k) {
            distances.push(s);
            ids.push(id);
        }
    }
    Ok(Neighbours { k, distances, ids })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clip_data::npy::NpyWriter;

    #[test]
    fn scores_are_exact_products_of_the_stored_halves_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image_vectors.npy");
        let rows: Vec<Vec<f32>> = (0..5).map(|i| vec![0.1 * i as f32, 0.3, -0.7]).collect();
        let mut w = NpyWriter::new(std::fs::File::create(&path).unwrap(), NpyDtype::F16, 3).unwrap();
        rows.iter().for_each(|r| w.write_row(r).unwrap());
        w.finish().unwrap();
        let v = StoredVectors::open(&path).unwrap();
        assert_eq!((v.len(), v.dim()), (5, 3));
        let q = [0.5f32, -0.25, 1.0];
        let got = v.score(&q, &[4, 0], Metric::Ip).unwrap();
        for (&id, s) in [4usize, 0].iter().zip(got) {
            let exact: f64 = rows[id].iter().zip(q).map(|(x, q)| f16::from_f32(*x).to_f64() * q as f64).sum();
            assert!((s as f64 - exact).abs() < 1e-6, "{s} vs {exact}");
        }
        assert!(v.score(&q, &[5], Metric::Ip).unwrap_err().to_string().contains("id 5"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        assert!(StoredVectors::open(&path).unwrap_err().to_string().contains("truncated"));
    }

    #[test]
    fn candidates_are_bounded() {
        assert_eq!(candidates(10, 8), 80);
        assert_eq!(candidates(10_000, 8), MAX_CANDIDATES);
        assert_eq!(candidates(20_000, 8), 20_000);
        assert_eq!(candidates(10, 0), 10);
    }
}
