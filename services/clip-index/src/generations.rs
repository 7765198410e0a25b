//! The generation folders under an index root, as the operator's IndexBuilds write them (`<root>/g<N>/`, and a
//! distributed build's `<root>/g<N>-parts/`), and their pruning: every generation older than the newest one kept,
//! and not kept itself, is deleted. Generations newer than every kept one are never touched: they are builds in
//! progress. Other names under the root (a folder built before generations existed) are left alone.

use crate::error::{IndexError, Result};
use clip_data::{Location, Storage};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What a prune found and did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct PruneReport {
    /// Generations deleted (or, with `dry_run`, to delete), oldest first.
    pub deleted: Vec<u64>,
    /// Kept generations found under the root.
    pub kept: Vec<u64>,
    /// Generations newer than every kept one, left as they are.
    pub newer: Vec<u64>,
    /// Files deleted (or to delete).
    pub files: usize,
}

/// The generation a top-level name under the root belongs to: `g12` and `g12-parts` are generation 12.
pub fn generation_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('g')?;
    let digits = digits.strip_suffix("-parts").unwrap_or(digits);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Deletes the generations under `root` that are older than the newest of `keep` and not in it.
pub fn prune(storage: &Storage, root: &Location, keep: &[u64], dry_run: bool) -> Result<PruneReport> {
    let newest_kept = *keep
        .iter()
        .max()
        .ok_or_else(|| IndexError::invalid(root, "no generation to keep: refusing to delete every generation"))?;
    let keep: BTreeSet<u64> = keep.iter().copied().collect();
    let mut files: BTreeMap<u64, Vec<Location>> = BTreeMap::new();
    for file in storage.list_or_empty(root)? {
        let Some(rel) = file.relative_to(root) else { continue };
        let top = rel.split('/').next().unwrap_or_default();
        if let Some(generation) = generation_of(top) {
            files.entry(generation).or_default().push(file);
        }
    }
    let mut report = PruneReport::default();
    for (generation, found) in files {
        if keep.contains(&generation) {
            report.kept.push(generation);
        } else if generation > newest_kept {
            report.newer.push(generation);
        } else {
            report.deleted.push(generation);
            report.files += found.len();
            if !dry_run {
                delete_generation(storage, root, generation, &found)?;
            }
        }
    }
    Ok(report)
}

/// Deletes one generation's files (and, on local disk, its emptied folders).
fn delete_generation(storage: &Storage, root: &Location, generation: u64, files: &[Location]) -> Result<()> {
    tracing::info!(%root, generation, files = files.len(), "deleting an old index generation");
    for file in files {
        storage.delete(file)?;
    }
    if let Location::Local(dir) = root {
        for name in [format!("g{generation}"), format!("g{generation}-parts")] {
            let folder = dir.join(name);
            if folder.is_dir() {
                std::fs::remove_dir_all(&folder).map_err(clip_data::DataError::io(folder.display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_are_g_and_a_number_with_an_optional_parts_suffix() {
        assert_eq!(generation_of("g12"), Some(12));
        assert_eq!(generation_of("g3-parts"), Some(3));
        for other in ["g", "gx", "g-parts", "image.index", "g1-partsx", "G1", "g+1"] {
            assert_eq!(generation_of(other), None, "{other}");
        }
    }

    fn touch(root: &std::path::Path, rel: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn old_generations_go_kept_and_newer_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        for rel in [
            "g1/image.index",
            "g1/_COMPLETE",
            "g2/image.index",
            "g3-parts/0/image.index",
            "g3-parts/trained/x",
            "g3/image.index",
            "g4/image.index",
            "g5/partial",
            "legacy/image.index",
            "image.index",
        ] {
            touch(dir.path(), rel);
        }
        let storage = Storage::from_env();
        let root = Location::Local(dir.path().to_path_buf());
        let dry = prune(&storage, &root, &[4, 3], true).unwrap();
        assert_eq!(
            (dry.deleted.clone(), dry.kept.clone(), dry.newer.clone(), dry.files),
            (vec![1, 2], vec![3, 4], vec![5], 3)
        );
        assert!(dir.path().join("g1/image.index").exists(), "a dry run deletes nothing");
        let done = prune(&storage, &root, &[4, 3], false).unwrap();
        assert_eq!(done, dry);
        for gone in ["g1", "g2"] {
            assert!(!dir.path().join(gone).exists(), "{gone} still there");
        }
        for kept in [
            "g3/image.index",
            "g3-parts/0/image.index",
            "g4/image.index",
            "g5/partial",
            "legacy/image.index",
            "image.index",
        ] {
            assert!(dir.path().join(kept).exists(), "{kept} was deleted");
        }
        assert!(prune(&storage, &root, &[], false).is_err(), "keeping nothing is refused");
    }
}
