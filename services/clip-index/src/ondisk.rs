//! The on-disk merge of IVF parts, as faiss's `merge_ondisk` (clip-retrieval's `index_combiner`) lays it out:
//! `merged_index.ivfdata` holds every inverted list (codes, then ids), and `populated.index` is the trained index
//! whose lists point into it (faiss's `OnDiskInvertedLists`, read with `IO_FLAG_ONDISK_SAME_DIR`).
//!
//! faiss's own merge maps the output file and every input, so pages of all of them become resident. Here each list
//! is streamed: for list `l`, every part's codes of `l` then every part's ids of `l` are read with positioned reads
//! into a bounded buffer and appended to the output, so memory stays at one buffer whatever the collection size.
//! The parts are faiss files whose lists are stored inline (`ilar`, what `write_index` writes for IVF-Flat, SQ and
//! PQ); their layout is located from the end of the file with faiss's list sizes and checked before use.

use crate::error::{IndexError, Result};
use crate::faiss_index::FaissIndex;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The inverted-lists file of an on-disk index folder.
pub const IVFDATA_FILE: &str = "merged_index.ivfdata";

/// Bytes read per positioned read while copying a list.
const COPY_CHUNK: usize = 1 << 20;

/// Where one part's inline inverted lists are in its file.
struct PartLayout {
    path: PathBuf,
    file: std::fs::File,
    /// Entries per list.
    sizes: Vec<u64>,
    /// File offset of each list's codes (its ids follow them).
    offsets: Vec<u64>,
    /// Offset of the `ilar` section (everything before it is the index without its lists).
    section_start: u64,
    ntotal: u64,
}

/// What [`merge_ondisk`] wrote.
#[derive(Debug, Clone)]
pub struct OnDiskMerge {
    /// Vectors in the merged index.
    pub count: u64,
    /// Bytes of `merged_index.ivfdata`.
    pub ivfdata_bytes: u64,
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Locates the `ilar` section at the end of `path`: faiss writes it last, as `ilar`, nlist, code_size, `full` +
/// every list size or `sprs` + (list, size) pairs, then each non-empty list's codes and ids.
fn layout(path: &Path, index: &FaissIndex) -> Result<Option<PartLayout>> {
    let (Some(sizes), Some(code_size)) = (index.list_sizes(), index.ivf_code_size()?) else {
        return Err(IndexError::invalid(path.display(), "not an IVF index: only IVF indices merge on disk"));
    };
    let nlist = sizes.len() as u64;
    let file = std::fs::File::open(path).map_err(IndexError::io(path.display()))?;
    let len = file.metadata().map_err(IndexError::io(path.display()))?.len();
    let non_empty = sizes.iter().filter(|&&s| s > 0).count() as u64;
    let table = if non_empty > nlist / 2 { nlist } else { 2 * non_empty };
    let header = 4 + 8 + 8 + 4 + 8 + 8 * table;
    let data: u64 = sizes.iter().map(|s| s * (code_size as u64 + 8)).sum();
    let Some(section_start) = len.checked_sub(data + header) else { return Ok(None) };
    let mut head = vec![0u8; 32];
    file.read_exact_at(&mut head, section_start).map_err(IndexError::io(path.display()))?;
    let kind = if non_empty > nlist / 2 { b"full" } else { b"sprs" };
    if &head[..4] != b"ilar"
        || read_u64(&head, 4) != nlist
        || read_u64(&head, 12) != code_size as u64
        || &head[20..24] != kind
    {
        // Lists stored another way (fast-scan blocks, or already on disk).
        return Ok(None);
    }
    let mut offsets = Vec::with_capacity(sizes.len());
    let mut at = section_start + header;
    for &s in &sizes {
        offsets.push(at);
        at += s * (code_size as u64 + 8);
    }
    Ok(Some(PartLayout { path: path.to_path_buf(), file, sizes, offsets, section_start, ntotal: index.len() }))
}

/// Whether every part's lists are stored inline, so that [`merge_ondisk`] can stream them.
pub fn can_merge_ondisk(parts: &[PathBuf]) -> Result<bool> {
    for p in parts {
        let index = FaissIndex::read(p, true)?;
        if index.nlist().is_none() || layout(p, &index)?.is_none() {
            return Ok(false);
        }
    }
    Ok(!parts.is_empty())
}

/// Offsets of the `ntotal` fields to rewrite in the bytes before the lists: the outer index header's (at 8) and,
/// when the IVF sits inside a pre-transform (OPQ), the IVF's own. Every index header is `d: i32, ntotal: i64,
/// 2^20: i64, 2^20: i64, is_trained: u8, metric: i32`, and the IVF's is followed by its nlist.
fn ntotal_fields(prefix: &[u8], d: i32, ntotal: u64, nlist: u64) -> Result<Vec<usize>> {
    let dummy = (1u64 << 20).to_le_bytes();
    let matches_at = |p: usize| {
        prefix.len() >= p + 28
            && prefix[p..p + 4] == d.to_le_bytes()
            && prefix[p + 4..p + 12] == ntotal.to_le_bytes()
            && prefix[p + 12..p + 20] == dummy
            && prefix[p + 20..p + 28] == dummy
    };
    if !matches_at(4) {
        return Err(IndexError::invalid("merge", "unexpected index header (not written by faiss?)"));
    }
    // The IVF header: is_trained (1) and metric (4) follow the dummies, then nlist.
    let ivf = (4..prefix.len().saturating_sub(41))
        .find(|&p| matches_at(p) && read_u64(prefix, p + 33) == nlist)
        .ok_or_else(|| IndexError::invalid("merge", "cannot find the IVF header"))?;
    let mut fields = vec![8];
    if ivf != 4 {
        fields.push(ivf + 4);
    }
    Ok(fields)
}

/// Merges IVF `parts` (index files trained identically) into `folder/populated.index` +
/// `folder/merged_index.ivfdata`; part `i`'s ids are shifted by the vectors before it when `shift_ids` (our part
/// folders number their rows from 0), kept as stored otherwise (faiss's `merge_ondisk` keeps them: clip-retrieval's
/// blocks carry global ids).
pub fn merge_ondisk(parts: &[PathBuf], folder: &Path, shift_ids: bool) -> Result<OnDiskMerge> {
    let mut layouts = Vec::with_capacity(parts.len());
    let mut first: Option<(FaissIndex, Vec<f32>)> = None;
    for p in parts {
        let index = FaissIndex::read(p, true)?;
        let centroids = index.ivf_centroids()?.unwrap_or_default();
        let layout = layout(p, &index)?.ok_or_else(|| {
            IndexError::invalid(p.display(), "its inverted lists are not stored inline (fast-scan?): merge in memory")
        })?;
        match &first {
            None => first = Some((index, centroids)),
            Some((f, c)) => {
                if index.dim() != f.dim() || index.metric() != f.metric() || &centroids != c {
                    return Err(IndexError::invalid(
                        p.display(),
                        "dimension, metric or IVF centroids differ from the first part's: build every part from \
                         the same trained index (--trained_index_folder)",
                    ));
                }
                if layout.sizes.len() != layouts.first().map_or(0, |l: &PartLayout| l.sizes.len()) {
                    return Err(IndexError::invalid(p.display(), "nlist differs from the first part's"));
                }
            }
        }
        layouts.push(layout);
    }
    let (first, _) = first.ok_or_else(|| IndexError::invalid(folder.display(), "no part to merge"))?;
    let code_size = first.ivf_code_size()?.expect("an IVF index") as u64;
    let nlist = layouts[0].sizes.len();
    std::fs::create_dir_all(folder).map_err(IndexError::io(folder.display()))?;

    // merged_index.ivfdata: list by list, codes of every part then ids of every part.
    let ivfdata = folder.join(IVFDATA_FILE);
    let partial = folder.join(format!(".{IVFDATA_FILE}.partial"));
    let mut out = std::io::BufWriter::with_capacity(
        COPY_CHUNK,
        std::fs::File::create(&partial).map_err(IndexError::io(partial.display()))?,
    );
    let shifts: Vec<u64> = layouts
        .iter()
        .scan(0u64, |acc, l| {
            let s = *acc;
            *acc += l.ntotal;
            Some(if shift_ids { s } else { 0 })
        })
        .collect();
    let mut lists = Vec::with_capacity(nlist);
    let mut offset = 0u64;
    let mut buf = vec![0u8; COPY_CHUNK];
    for l in 0..nlist {
        let size: u64 = layouts.iter().map(|p| p.sizes[l]).sum();
        lists.push((size, size, offset));
        offset += size * (code_size + 8);
        for p in &layouts {
            copy_range(p, p.offsets[l], p.sizes[l] * code_size, &mut buf, &mut out, &partial, |_| {})?;
        }
        for (p, &shift) in layouts.iter().zip(&shifts) {
            let ids_at = p.offsets[l] + p.sizes[l] * code_size;
            copy_range(p, ids_at, p.sizes[l] * 8, &mut buf, &mut out, &partial, |chunk| {
                if shift > 0 {
                    for id in chunk.chunks_exact_mut(8) {
                        let v = i64::from_le_bytes(id.try_into().expect("8 bytes")) + shift as i64;
                        id.copy_from_slice(&v.to_le_bytes());
                    }
                }
            })?;
        }
    }
    let file = out.into_inner().map_err(|e| IndexError::io(partial.display())(e.into_error()))?;
    file.sync_all().map_err(IndexError::io(partial.display()))?;
    let totsize = offset;

    // populated.index: part 0 without its lists, ntotal rewritten, then an `ilod` section pointing at the data.
    let count: u64 = layouts.iter().map(|l| l.ntotal).sum();
    let p0 = &layouts[0];
    let mut prefix = vec![0u8; p0.section_start as usize];
    p0.file.read_exact_at(&mut prefix, 0).map_err(IndexError::io(p0.path.display()))?;
    for at in ntotal_fields(&prefix, first.dim() as i32, p0.ntotal, nlist as u64)? {
        prefix[at..at + 8].copy_from_slice(&count.to_le_bytes());
    }
    let mut section = Vec::new();
    section.extend_from_slice(b"ilod");
    section.extend_from_slice(&(nlist as u64).to_le_bytes());
    section.extend_from_slice(&code_size.to_le_bytes());
    section.extend_from_slice(&(nlist as u64).to_le_bytes());
    for (size, capacity, offset) in &lists {
        for v in [size, capacity, offset] {
            section.extend_from_slice(&v.to_le_bytes());
        }
    }
    // The free-space list as faiss's merge leaves it (one slot spanning the file); unused when read-only.
    let slots: Vec<(u64, u64)> = if totsize > 0 { vec![(0, totsize)] } else { Vec::new() };
    section.extend_from_slice(&(slots.len() as u64).to_le_bytes());
    for (o, c) in slots {
        section.extend_from_slice(&o.to_le_bytes());
        section.extend_from_slice(&c.to_le_bytes());
    }
    // faiss opens this path unless the reader passes IO_FLAG_ONDISK_SAME_DIR (then the file beside the index).
    let name = std::path::absolute(&ivfdata).unwrap_or_else(|_| ivfdata.clone());
    let name = name.to_string_lossy().into_owned().into_bytes();
    section.extend_from_slice(&(name.len() as u64).to_le_bytes());
    section.extend_from_slice(&name);
    section.extend_from_slice(&totsize.to_le_bytes());
    std::fs::rename(&partial, &ivfdata).map_err(IndexError::io(ivfdata.display()))?;
    let populated = folder.join(crate::folder::POPULATED_INDEX);
    let tmp = folder.join(".populated.index.partial");
    std::fs::write(&tmp, [prefix, section].concat()).map_err(IndexError::io(tmp.display()))?;
    std::fs::rename(&tmp, &populated).map_err(IndexError::io(populated.display()))?;

    // Read back as a server will: faiss must see every vector.
    let check = FaissIndex::read_ondisk(&populated)?;
    if check.len() != count || check.list_sizes().map(|s| s.iter().sum::<u64>()) != Some(count) {
        return Err(IndexError::invalid(populated.display(), "the merged index does not read back whole"));
    }
    Ok(OnDiskMerge { count, ivfdata_bytes: totsize })
}

/// Appends `len` bytes of `part` from `at` to `out`, `edit`ing each chunk first (whole 8-byte ids per chunk).
fn copy_range(
    part: &PartLayout,
    mut at: u64,
    len: u64,
    buf: &mut [u8],
    out: &mut impl Write,
    out_name: &Path,
    mut edit: impl FnMut(&mut [u8]),
) -> Result<()> {
    let end = at + len;
    while at < end {
        let n = (buf.len() as u64).min(end - at) as usize;
        part.file.read_exact_at(&mut buf[..n], at).map_err(IndexError::io(part.path.display()))?;
        edit(&mut buf[..n]);
        out.write_all(&buf[..n]).map_err(IndexError::io(out_name.display()))?;
        at += n as u64;
    }
    Ok(())
}
