//! The local-disk backend: plain files, written through a hidden temporary in the target's folder and renamed.

use super::{Backend, LocalCopy, Location};
use crate::error::{DataError, Result};
use std::path::{Path, PathBuf};

/// Files on this machine.
pub(super) struct LocalBackend;

fn path(loc: &Location) -> Result<&PathBuf> {
    match loc {
        Location::Local(p) => Ok(p),
        Location::S3 { .. } => Err(DataError::format(loc, "not a local path")),
    }
}

impl Backend for LocalBackend {
    fn read_at_most(&self, loc: &Location, max: u64) -> Result<Vec<u8>> {
        use std::io::Read;
        let p = path(loc)?;
        let file = std::fs::File::open(p).map_err(DataError::io(p.display()))?;
        let size = file.metadata().map_err(DataError::io(p.display()))?.len();
        if size > max {
            return Err(too_large(loc, size, max));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        // A file growing while it is read still cannot pass the cap.
        file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(DataError::io(p.display()))?;
        if bytes.len() as u64 > max {
            return Err(too_large(loc, bytes.len() as u64, max));
        }
        Ok(bytes)
    }

    fn exists(&self, loc: &Location) -> Result<bool> {
        Ok(path(loc)?.is_file())
    }

    fn delete(&self, loc: &Location) -> Result<()> {
        let p = path(loc)?;
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DataError::io(p.display())(e)),
            _ => Ok(()),
        }
    }

    fn list(&self, loc: &Location) -> Result<Vec<Location>> {
        let p = path(loc)?;
        if !p.exists() {
            return Err(DataError::Io { path: p.display().to_string(), source: std::io::ErrorKind::NotFound.into() });
        }
        let mut out = Vec::new();
        walk(p, &mut out)?;
        Ok(out)
    }

    fn local_copy(&self, loc: &Location) -> Result<LocalCopy> {
        Ok(LocalCopy::Original(path(loc)?.clone()))
    }

    fn stage(&self, target: &Location) -> Result<tempfile::NamedTempFile> {
        let p = path(target)?;
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(DataError::io(dir.display()))?;
        let prefix = format!(".tmp-{}-", target.file_name());
        remove_stale_temporaries(dir, &prefix);
        tempfile::Builder::new().prefix(&prefix).tempfile_in(dir).map_err(DataError::io(dir.display()))
    }

    fn commit(&self, staged: tempfile::NamedTempFile, target: &Location) -> Result<()> {
        let p = path(target)?;
        staged.as_file().sync_all().map_err(DataError::io(p.display()))?;
        // Temporary files are created 0600; outputs are read by other users and pods (Python writes them 0644).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let readable = std::fs::Permissions::from_mode(0o644);
            staged.as_file().set_permissions(readable).map_err(DataError::io(p.display()))?;
        }
        staged.persist(p).map_err(|e| DataError::io(p.display())(e.error))?;
        Ok(())
    }
}

pub(super) fn too_large(loc: &Location, size: u64, max: u64) -> DataError {
    DataError::TooLarge { path: loc.to_string(), size, limit: "--max_sample_bytes", max }
}

fn walk(dir: &Path, out: &mut Vec<Location>) -> Result<()> {
    if dir.is_file() {
        out.push(Location::Local(dir.to_path_buf()));
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(DataError::io(dir.display()))? {
        let entry = entry.map_err(DataError::io(dir.display()))?;
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(Location::Local(path));
        }
    }
    Ok(())
}

/// Deletes what a killed writer of the same target left behind (one writer per target at a time).
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
