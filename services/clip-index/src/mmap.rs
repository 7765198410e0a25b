//! Read-only memory maps of files written by this crate (the metadata row store).
#![allow(unsafe_code)]

use crate::error::{IndexError, Result};
use std::path::Path;

/// Maps `path` read-only as shared bytes; pages are read from disk when touched and evictable by the kernel.
pub fn map_file(path: &Path) -> Result<bytes::Bytes> {
    let file = std::fs::File::open(path).map_err(IndexError::io(path.display()))?;
    // SAFETY: the map is read-only and private to this process; files under an index folder are written once
    // (temp file + rename) and never modified in place, so the mapped bytes do not change under us.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(IndexError::io(path.display()))?;
    // Lookups are random: no read-ahead, so a lookup maps the pages it reads and not their neighbours.
    map.advise(memmap2::Advice::Random).map_err(IndexError::io(path.display()))?;
    Ok(bytes::Bytes::from_owner(map))
}

/// Maps `path` read-only as a raw map (for stores that read their own layout, like the re-rank vectors).
pub fn map_raw(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(IndexError::io(path.display()))?;
    // SAFETY: as in `map_file`: read-only, private, and the file is replaced by rename, never modified in place.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(IndexError::io(path.display()))?;
    map.advise(memmap2::Advice::Random).map_err(IndexError::io(path.display()))?;
    Ok(map)
}
