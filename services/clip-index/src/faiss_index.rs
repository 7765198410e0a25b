//! A faiss index owned by Rust: build, train, add, search (shared, from many threads), save, memory-mapped load,
//! and IVF merge.
//!
//! The `faiss` crate covers building and writing, but its `IndexImpl` searches through `&mut self` and its
//! `IoFlags::MEM_MAP` is wrong (0x01 is skip-storage). The few calls it lacks go straight to the faiss C API here,
//! in the only module of the crate allowed `unsafe`.
#![allow(unsafe_code)]

use crate::error::{IndexError, Result};
use faiss::index::IndexImpl;
use faiss::{Index, MetricType};
use std::ffi::{CStr, CString};
use std::path::Path;

/// faiss `IO_FLAG_MMAP`: inverted lists are mapped from the file instead of read into memory.
const IO_FLAG_MMAP: i32 = 0x646f_0008;
/// faiss `IO_FLAG_MMAP_IFC`: the codes of flat-code indices (Flat, SQ, PQ without IVF) are mapped.
const IO_FLAG_MMAP_IFC: i32 = 1 << 9;
/// faiss `IO_FLAG_READ_ONLY`.
const IO_FLAG_READ_ONLY: i32 = 2;
/// faiss `IO_FLAG_ONDISK_SAME_DIR`: an on-disk index finds its `.ivfdata` beside the index file, wherever the folder
/// was moved (clip-retrieval's back opens `image.index/populated.index` this way).
const IO_FLAG_ONDISK_SAME_DIR: i32 = 4;

extern "C" {
    fn omp_set_num_threads(n: std::os::raw::c_int);
}

/// Sets how many threads faiss (OpenMP) uses for training, adding and batch search.
pub fn set_threads(n: usize) {
    // SAFETY: plain setter of the OpenMP runtime linked with faiss.
    unsafe { omp_set_num_threads(n.max(1) as i32) }
}

fn check(code: i32, what: impl FnOnce() -> String) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: faiss keeps the last error of this thread as a C string until the next failing call.
    let message = unsafe {
        let p = faiss_sys::faiss_get_last_error();
        if p.is_null() {
            format!("error code {code}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    Err(IndexError::Faiss { what: what(), message })
}

/// Distance between a query and a vector as faiss reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Inner product (cosine on normalised CLIP embeddings); larger is closer.
    Ip,
    /// Squared euclidean distance; smaller is closer.
    L2,
}

impl Metric {
    /// Sorts `(id, score)` hits best first (largest similarity for ip, smallest distance for l2), equal scores by
    /// ascending id: the one order every search path (plain, re-ranked, merged from shards) answers in.
    pub fn sort_best(self, hits: &mut [(i64, f32)]) {
        match self {
            Self::Ip => hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))),
            Self::L2 => hits.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))),
        }
    }

    fn faiss(self) -> MetricType {
        match self {
            Self::Ip => MetricType::InnerProduct,
            Self::L2 => MetricType::L2,
        }
    }
}

/// Top-k results of a batch of queries: `k` entries per query, id -1 where fewer than k were found.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    /// Results per query.
    pub k: usize,
    /// Scores (similarity for ip, squared distance for l2), `nq * k`.
    pub distances: Vec<f32>,
    /// Ids, `nq * k`.
    pub ids: Vec<i64>,
}

impl Neighbours {
    /// `(id, distance)` of query `q`, without the -1 padding.
    pub fn row(&self, q: usize) -> impl Iterator<Item = (i64, f32)> + '_ {
        let r = q * self.k..(q + 1) * self.k;
        self.ids[r.clone()].iter().copied().zip(self.distances[r].iter().copied()).filter(|(id, _)| *id >= 0)
    }
}

/// A faiss index in memory (or memory-mapped).
pub struct FaissIndex {
    inner: IndexImpl,
}

impl std::fmt::Debug for FaissIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaissIndex(d={}, ntotal={})", self.dim(), self.len())
    }
}

impl FaissIndex {
    /// An empty index from a faiss factory string such as `IVF4096,SQ8`.
    pub fn from_factory(dim: usize, factory: &str, metric: Metric) -> Result<Self> {
        let inner = faiss::index_factory(dim as u32, factory, metric.faiss())
            .map_err(IndexError::faiss(format!("index_factory({dim}, {factory:?})")))?;
        Ok(Self { inner })
    }

    /// Reads an index file; `mmap` maps inverted lists or flat codes instead of reading them.
    pub fn read(path: &Path, mmap: bool) -> Result<Self> {
        let flags = if mmap { mmap_flags(path)? } else { 0 };
        Self::read_with_flags(path, flags)
    }

    /// Reads an on-disk index (`populated.index`, whose inverted lists are mapped from the `.ivfdata` file beside
    /// it, as faiss's `merge_ondisk` writes it).
    pub fn read_ondisk(path: &Path) -> Result<Self> {
        Self::read_with_flags(path, IO_FLAG_ONDISK_SAME_DIR | IO_FLAG_READ_ONLY)
    }

    fn read_with_flags(path: &Path, flags: i32) -> Result<Self> {
        if !path.is_file() {
            return Err(IndexError::invalid(path.display(), "no such index file"));
        }
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| IndexError::invalid(path.display(), "path contains a NUL byte"))?;
        let mut out: *mut faiss_sys::FaissIndex = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointer; on success faiss hands us ownership of a new index.
        let code = unsafe { faiss_sys::faiss_read_index_fname(c_path.as_ptr(), flags, &mut out) };
        check(code, || format!("reading index {}", path.display()))?;
        // SAFETY: `out` is a non-null index we now own (checked by the success code).
        let inner = unsafe { <IndexImpl as faiss::index::FromInnerPtr>::from_inner_ptr(out) };
        Ok(Self { inner })
    }

    /// Writes the index file faiss and Python faiss read (`faiss.read_index`).
    pub fn write(&self, path: &Path) -> Result<()> {
        faiss::write_index(&self.inner, path.to_string_lossy().as_ref())
            .map_err(IndexError::faiss(format!("writing index {}", path.display())))
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.inner.d() as usize
    }

    /// Number of vectors.
    pub fn len(&self) -> u64 {
        self.inner.ntotal()
    }

    /// Whether the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The metric the index was built with.
    pub fn metric(&self) -> Metric {
        match self.inner.metric_type() {
            MetricType::L2 => Metric::L2,
            _ => Metric::Ip,
        }
    }

    /// Whether the index needs no (more) training.
    pub fn is_trained(&self) -> bool {
        self.inner.is_trained()
    }

    /// Trains on row-major vectors.
    pub fn train(&mut self, x: &[f32]) -> Result<()> {
        self.inner.train(x).map_err(IndexError::faiss("training"))
    }

    /// Appends row-major vectors; they get the next sequential ids.
    pub fn add(&mut self, x: &[f32]) -> Result<()> {
        self.inner.add(x).map_err(IndexError::faiss("adding vectors"))
    }

    /// Removes every vector, keeping the training.
    pub fn reset(&mut self) -> Result<()> {
        self.inner.reset().map_err(IndexError::faiss("reset"))
    }

    /// Reconstructs vectors `first..first + count` (exact for Flat, decoded otherwise).
    pub fn reconstruct_range(&self, first: u64, count: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; count * self.dim()];
        self.inner
            .reconstruct_n(faiss::Idx::new(first), count, &mut out)
            .map_err(IndexError::faiss("reconstructing vectors"))?;
        Ok(out)
    }

    /// Lets [`FaissIndex::reconstruct`] find vectors by id: IVF indices get a direct map (8 bytes per vector, built by
    /// reading every list's ids); other indices need nothing.
    pub fn enable_reconstruct(&mut self) -> Result<()> {
        if let Some(ivf) = self.ivf_ptr() {
            // SAFETY: `ivf` is a live IVF owned by this index, which we hold exclusively here.
            check(unsafe { faiss_sys::faiss_IndexIVF_make_direct_map(ivf, 1) }, || {
                "building the IVF direct map".into()
            })?;
        }
        Ok(())
    }

    /// The stored (decoded) vectors of `ids`, row-major; IVF indices need [`FaissIndex::enable_reconstruct`] first.
    /// Shared like [`FaissIndex::search`].
    pub fn reconstruct(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let d = self.dim();
        let mut out = vec![0f32; ids.len() * d];
        for (&id, row) in ids.iter().zip(out.chunks_exact_mut(d)) {
            if id < 0 || id as u64 >= self.len() {
                return Err(IndexError::invalid("reconstruct", format!("id {id} is not in the index")));
            }
            // SAFETY: `row` holds d floats; reconstruct only reads the index.
            let code = unsafe { faiss_sys::faiss_Index_reconstruct(self.inner.inner_ptr(), id, row.as_mut_ptr()) };
            check(code, || format!("reconstructing vector {id}"))?;
        }
        Ok(out)
    }

    /// Sets a search parameter by faiss name (`nprobe`, `efSearch`, `quantizer_efSearch`, `k_factor`, `ht`).
    pub fn set_parameter(&mut self, name: &str, value: f64) -> Result<()> {
        let space = faiss::index::autotune::ParameterSpace::new().map_err(IndexError::faiss("ParameterSpace"))?;
        space
            .set_index_parameter(&self.inner, name, value)
            .map_err(IndexError::faiss(format!("setting {name}={value}")))
    }

    /// Top-`k` search of row-major queries; safe to call from many threads at once (faiss search is const).
    pub fn search(&self, queries: &[f32], k: usize) -> Result<Neighbours> {
        let d = self.dim();
        if d == 0 || !queries.len().is_multiple_of(d) {
            return Err(IndexError::invalid("query", format!("length {} is not a multiple of {d}", queries.len())));
        }
        let nq = queries.len() / d;
        let mut distances = vec![0f32; nq * k];
        let mut ids = vec![-1i64; nq * k];
        if nq > 0 && k > 0 {
            // SAFETY: buffers sized nq*d, nq*k and nq*k as faiss requires; the index outlives the call.
            let code = unsafe {
                faiss_sys::faiss_Index_search(
                    self.inner.inner_ptr(),
                    nq as i64,
                    queries.as_ptr(),
                    k as i64,
                    distances.as_mut_ptr(),
                    ids.as_mut_ptr(),
                )
            };
            check(code, || format!("search of {nq} queries, k={k}"))?;
        }
        Ok(Neighbours { k, distances, ids })
    }

    /// [`FaissIndex::search`] with the cut and order of equal scores settled by id ([`Metric::sort_best`]), not by
    /// faiss's heap: a query whose k-th and (k+1)-th scores tie is searched again, wider, until the tie ends, so
    /// every vector tied at the cut is seen and the smallest ids kept. That makes an answer independent of how
    /// the rows are split into shards or merged (ties are common: duplicate images, equal captions).
    pub fn search_ties_by_id(&self, queries: &[f32], k: usize) -> Result<Neighbours> {
        let first = self.search(queries, k + 1)?;
        let (d, metric, total) = (self.dim(), self.metric(), self.len() as usize);
        let mut out = Neighbours { k, distances: Vec::with_capacity(first.ids.len()), ids: Vec::new() };
        for (q, query) in queries.chunks_exact(d).enumerate() {
            let mut hits: Vec<(i64, f32)> = first.row(q).collect();
            let mut fetched = k + 1;
            // The last hit fetched still ties the k-th: more tied vectors may lie beyond it.
            while k > 0 && hits.len() == fetched && fetched < total && hits[fetched - 1].1 == hits[k - 1].1 {
                fetched = (fetched * 2).min(total);
                hits = self.search(query, fetched)?.row(0).collect();
            }
            metric.sort_best(&mut hits);
            hits.resize(k, (-1, f32::NAN));
            for (id, s) in hits {
                out.ids.push(id);
                out.distances.push(s);
            }
        }
        Ok(out)
    }

    /// Every vector within `radius` of each query (similarity >= radius for ip, distance < radius for l2), best
    /// first; shared like [`FaissIndex::search`].
    pub fn range_search(&self, queries: &[f32], radius: f32) -> Result<Vec<Vec<(i64, f32)>>> {
        let d = self.dim();
        if d == 0 || !queries.len().is_multiple_of(d) {
            return Err(IndexError::invalid("query", format!("length {} is not a multiple of {d}", queries.len())));
        }
        let nq = queries.len() / d;
        let metric = self.metric();
        // faiss keeps similarities strictly above the radius; one ulp lower (then filtered) makes it inclusive.
        let faiss_radius = match metric {
            Metric::Ip => radius.next_down(),
            Metric::L2 => radius,
        };
        let mut res: *mut faiss_sys::FaissRangeSearchResult = std::ptr::null_mut();
        // SAFETY: out-pointer for a new result object, freed below.
        check(unsafe { faiss_sys::faiss_RangeSearchResult_new(&mut res, nq as i64) }, || "range search".into())?;
        // SAFETY: query buffer of nq*d floats; `res` sized for nq queries.
        let code = unsafe {
            faiss_sys::faiss_Index_range_search(self.inner.inner_ptr(), nq as i64, queries.as_ptr(), faiss_radius, res)
        };
        let out = check(code, || format!("range search of {nq} queries, radius {radius}")).map(|_| {
            // SAFETY: after a successful search, lims has nq+1 entries and labels/distances lims[nq] entries.
            unsafe {
                let mut lims: *mut usize = std::ptr::null_mut();
                let (mut labels, mut dists): (*mut i64, *mut f32) = (std::ptr::null_mut(), std::ptr::null_mut());
                faiss_sys::faiss_RangeSearchResult_lims(res, &mut lims);
                faiss_sys::faiss_RangeSearchResult_labels(res, &mut labels, &mut dists);
                let lims = std::slice::from_raw_parts(lims, nq + 1);
                (0..nq)
                    .map(|q| {
                        (lims[q]..lims[q + 1]).map(|i| (*labels.add(i), *dists.add(i))).collect::<Vec<(i64, f32)>>()
                    })
                    .collect::<Vec<_>>()
            }
        });
        // SAFETY: `res` was created above and is not used after this.
        unsafe { faiss_sys::faiss_RangeSearchResult_free(res) };
        let mut out = out?;
        for hits in &mut out {
            if metric == Metric::Ip {
                hits.retain(|&(_, s)| s >= radius);
            }
            metric.sort_best(hits);
        }
        Ok(out)
    }

    /// The IVF part of this index (through an OPQ/PCA pre-transform), if it has one.
    fn ivf_ptr(&self) -> Option<*mut faiss_sys::FaissIndexIVF> {
        // SAFETY: the casts are dynamic_casts returning null when the index is of another type.
        unsafe {
            let mut p = self.inner.inner_ptr();
            let pre = faiss_sys::faiss_IndexPreTransform_cast(p);
            if !pre.is_null() {
                p = faiss_sys::faiss_IndexPreTransform_index(pre);
            }
            let ivf = faiss_sys::faiss_IndexIVF_cast(p);
            (!ivf.is_null()).then_some(ivf)
        }
    }

    /// Number of inverted lists, or `None` for an index without IVF.
    pub fn nlist(&self) -> Option<usize> {
        // SAFETY: `ivf` is a live IVF owned by this index.
        self.ivf_ptr().map(|ivf| unsafe { faiss_sys::faiss_IndexIVF_nlist(ivf) })
    }

    /// Entries of every inverted list of an IVF index (`None` without IVF); reads list headers only.
    pub fn list_sizes(&self) -> Option<Vec<u64>> {
        let ivf = self.ivf_ptr()?;
        // SAFETY: `ivf` is a live IVF owned by this index; list numbers are below nlist.
        unsafe {
            let nlist = faiss_sys::faiss_IndexIVF_nlist(ivf);
            Some((0..nlist).map(|l| faiss_sys::faiss_IndexIVF_get_list_size(ivf, l) as u64).collect())
        }
    }

    /// Bytes of one vector's code in the inverted lists of an IVF index (its `code_size`): faiss reports the
    /// standalone code size, which adds the bytes of the list number.
    pub fn ivf_code_size(&self) -> Result<Option<usize>> {
        let Some(ivf) = self.ivf_ptr() else { return Ok(None) };
        let mut size = 0usize;
        // SAFETY: `ivf` is a live IVF; an IndexIVF is an Index, so the cast is valid for this const call.
        check(unsafe { faiss_sys::faiss_Index_sa_code_size(ivf as *const faiss_sys::FaissIndex, &mut size) }, || {
            "reading the IVF code size".into()
        })?;
        let nlist = self.nlist().unwrap_or(1);
        let mut coarse = 0;
        let mut rest = nlist.saturating_sub(1);
        while rest > 0 {
            coarse += 1;
            rest >>= 8;
        }
        Ok(Some(size - coarse))
    }

    /// The coarse centroids of an IVF index (to check two parts were trained together).
    pub fn ivf_centroids(&self) -> Result<Option<Vec<f32>>> {
        let Some(ivf) = self.ivf_ptr() else { return Ok(None) };
        // SAFETY: the quantizer is owned by the IVF index; reconstruct_n writes nlist*d floats.
        unsafe {
            let q = faiss_sys::faiss_IndexIVF_quantizer(ivf);
            let nlist = faiss_sys::faiss_IndexIVF_nlist(ivf);
            let d = faiss_sys::faiss_Index_d(q) as usize;
            let mut out = vec![0f32; nlist * d];
            check(faiss_sys::faiss_Index_reconstruct_n(q, 0, nlist as i64, out.as_mut_ptr()), || {
                "reading IVF centroids".into()
            })?;
            Ok(Some(out))
        }
    }

    /// Moves every vector of `other` (an IVF index trained identically) into this one, ids shifted by `add_id`.
    pub fn merge_ivf_from(&mut self, other: &mut FaissIndex, add_id: u64) -> Result<()> {
        let (Some(dst), Some(src)) = (self.ivf_ptr(), other.ivf_ptr()) else {
            return Err(IndexError::invalid("merge", "both indices must be IVF indices"));
        };
        // SAFETY: both are live IVF indices; faiss checks compatibility and throws (caught by the C API) if not.
        let code = unsafe { faiss_sys::faiss_IndexIVF_merge_from(dst, src, add_id as i64) };
        check(code, || "merging IVF indices".into())?;
        // An IVF inside a pre-transform (OPQ) keeps its own count: IndexPreTransform::add sets the wrapper's ntotal
        // from the sub-index, and adding zero vectors does nothing else.
        self.inner.add(&[]).map_err(IndexError::faiss("updating the merged count"))
    }
}

fn fourcc(path: &Path) -> Result<[u8; 4]> {
    use std::io::Read;
    let mut fourcc = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut fourcc)).map_err(IndexError::io(path.display()))?;
    Ok(fourcc)
}

/// Whether the index file holds an exact Flat index (whose vectors reconstruct exactly).
pub fn is_flat_file(path: &Path) -> Result<bool> {
    Ok(matches!(&fourcc(path)?, b"IxFI" | b"IxF2" | b"IxFl"))
}

/// The read flags that map `path` rather than load it: flat-code indices map their codes, IVF indices their lists.
fn mmap_flags(path: &Path) -> Result<i32> {
    let fourcc = fourcc(path)?;
    let flat_codes = matches!(&fourcc, b"IxFI" | b"IxF2" | b"IxFl" | b"IxSQ" | b"IxPq" | b"IxPQ");
    Ok(if flat_codes { IO_FLAG_MMAP_IFC | IO_FLAG_READ_ONLY } else { IO_FLAG_MMAP | IO_FLAG_READ_ONLY })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows `[1, 0]` (ten copies), `[0.6, 0.8]` (five), `[0, 1]` (one), interleaved so that ids of equal rows are
    /// spread over the index as duplicates are in a real dataset.
    fn rows() -> Vec<[f32; 2]> {
        (0..16)
            .map(|i| {
                if i % 3 == 2 && i < 15 {
                    [0.6, 0.8]
                } else if i == 15 {
                    [0.0, 1.0]
                } else {
                    [1.0, 0.0]
                }
            })
            .collect()
    }

    fn flat(rows: &[[f32; 2]]) -> FaissIndex {
        let mut index = FaissIndex::from_factory(2, "Flat", Metric::Ip).unwrap();
        index.add(&rows.concat()).unwrap();
        index
    }

    #[test]
    fn ties_at_the_cut_keep_the_smallest_ids_whatever_the_split() {
        let rows = rows();
        let whole = flat(&rows);
        let ones: Vec<i64> = (0..16).filter(|i| i % 3 != 2 && *i != 15).collect();
        for k in [1, 3, 7, 10, 12] {
            let found = whole.search_ties_by_id(&[1.0, 0.0], k).unwrap();
            let ids: Vec<i64> = found.row(0).map(|(id, _)| id).collect();
            let mut expected: Vec<i64> = ones.clone();
            expected.extend([2, 5, 8, 11, 14]);
            assert_eq!(ids, expected[..k], "k={k}");
        }
        // The same rows in two halves, searched apart and merged by (score, id), answer as the whole index.
        let (a, b) = (flat(&rows[..7]), flat(&rows[7..]));
        for k in [3, 8, 11] {
            let mut merged: Vec<(i64, f32)> = a.search_ties_by_id(&[0.6, 0.8], k).unwrap().row(0).collect();
            merged.extend(b.search_ties_by_id(&[0.6, 0.8], k).unwrap().row(0).map(|(id, s)| (id + 7, s)));
            Metric::Ip.sort_best(&mut merged);
            merged.truncate(k);
            let whole: Vec<(i64, f32)> = whole.search_ties_by_id(&[0.6, 0.8], k).unwrap().row(0).collect();
            assert_eq!(merged, whole, "k={k}");
        }
        // Fewer rows than k: every row, padding dropped.
        assert_eq!(whole.search_ties_by_id(&[0.0, 1.0], 40).unwrap().row(0).count(), 16);
    }
}
