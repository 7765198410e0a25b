//! Storage behind one trait: a [`Backend`] per kind of place (local disk, S3), and [`Storage`], the handle every
//! reader and writer is given, which picks the backend from the [`Location`] and owns the S3 client.
//!
//! Nothing here is global: whoever builds the `Storage` (the binary's `main`, a test, the server) owns the S3 client
//! and its runtime, and they go when its last clone does. S3 is configured from the usual AWS environment (see
//! [`s3`]); the client is built on the first `s3://` access, so local-only runs never start a runtime.

mod local;
mod location;
pub mod s3;

pub use location::Location;

use crate::error::{DataError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One kind of storage. Methods are blocking: the pipelines are thread-based.
pub trait Backend: Send + Sync {
    /// Reads a whole file, whatever its size.
    fn read(&self, loc: &Location) -> Result<Vec<u8>> {
        self.read_at_most(loc, u64::MAX)
    }
    /// Reads a whole file of at most `max` bytes; a larger one is [`DataError::TooLarge`], refused from its size
    /// before it is read.
    fn read_at_most(&self, loc: &Location, max: u64) -> Result<Vec<u8>>;
    /// Whether a file exists.
    fn exists(&self, loc: &Location) -> Result<bool>;
    /// Deletes a file; a missing file is not an error.
    fn delete(&self, loc: &Location) -> Result<()>;
    /// Every file under a folder or prefix, recursively (any order); a missing local folder is an error.
    fn list(&self, loc: &Location) -> Result<Vec<Location>>;
    /// Makes a file readable from the local disk without holding it in memory.
    fn local_copy(&self, loc: &Location) -> Result<LocalCopy>;
    /// A temporary file that will become `target` on [`Backend::commit`].
    fn stage(&self, target: &Location) -> Result<tempfile::NamedTempFile>;
    /// Makes a staged file visible at `target` at once (rename locally, one upload to S3).
    fn commit(&self, staged: tempfile::NamedTempFile, target: &Location) -> Result<()>;
}

/// The storage handle: cheap to clone, shared by every reader and writer of a run.
#[derive(Clone)]
pub struct Storage {
    local: Arc<local::LocalBackend>,
    s3: Arc<s3::S3Backend>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("s3", &self.s3.config()).finish()
    }
}

impl Storage {
    /// Local disk plus S3 configured from the environment.
    pub fn from_env() -> Self {
        Self::with_s3(s3::S3Config::from_env())
    }

    /// Local disk plus S3 with an explicit configuration.
    pub fn with_s3(config: s3::S3Config) -> Self {
        Self { local: Arc::new(local::LocalBackend), s3: Arc::new(s3::S3Backend::new(config)) }
    }

    /// The backend serving `loc` (the one place a location's kind is looked at).
    pub fn backend(&self, loc: &Location) -> &dyn Backend {
        match loc {
            Location::Local(_) => self.local.as_ref(),
            Location::S3 { .. } => self.s3.as_ref(),
        }
    }

    /// Reads a whole file.
    pub fn read(&self, loc: &Location) -> Result<Vec<u8>> {
        self.backend(loc).read(loc)
    }

    /// Reads a whole sample file of at most `max` bytes (`--max_sample_bytes`).
    pub fn read_at_most(&self, loc: &Location, max: u64) -> Result<Vec<u8>> {
        self.backend(loc).read_at_most(loc, max)
    }

    /// Writes a whole file atomically: readers see the old content or the new one, never a part.
    pub fn write(&self, loc: &Location, bytes: &[u8]) -> Result<()> {
        let mut out = self.create(loc)?;
        out.write_all(bytes).map_err(DataError::io(loc))?;
        out.commit()
    }

    /// Whether a file exists.
    pub fn exists(&self, loc: &Location) -> Result<bool> {
        self.backend(loc).exists(loc)
    }

    /// Deletes a file; a missing file is not an error.
    pub fn delete(&self, loc: &Location) -> Result<()> {
        self.backend(loc).delete(loc)
    }

    /// Every file under a folder or prefix, recursively, sorted.
    pub fn list(&self, loc: &Location) -> Result<Vec<Location>> {
        let mut files = self.backend(loc).list(loc)?;
        files.sort();
        Ok(files)
    }

    /// As [`Storage::list`], with none for a local folder that does not exist (S3 lists a missing prefix empty).
    pub fn list_or_empty(&self, loc: &Location) -> Result<Vec<Location>> {
        match self.list(loc) {
            Err(DataError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            other => other,
        }
    }

    /// A local copy of a file: the file itself when local, a temporary download (deleted on drop) for S3.
    pub fn local_copy(&self, loc: &Location) -> Result<LocalCopy> {
        self.backend(loc).local_copy(loc)
    }

    /// Starts writing `target`; nothing is visible there until [`OutputFile::commit`].
    pub fn create(&self, target: &Location) -> Result<OutputFile> {
        let staged = self.backend(target).stage(target)?;
        Ok(OutputFile { storage: self.clone(), target: target.clone(), staged })
    }

    /// A local folder holding the files of `folder`: the folder itself when local, else a copy under
    /// `cache/<bucket>/<key>` (files already there with their name are kept, so a second call copies nothing).
    pub fn materialize_folder(&self, folder: &Location, cache: &Path) -> Result<PathBuf> {
        if let Location::Local(p) = folder {
            return if p.is_dir() { Ok(p.clone()) } else { Err(DataError::format(folder, "not a folder")) };
        }
        let dest = cache.join(contained(folder, folder.to_string().trim_start_matches("s3://"))?);
        tracing::info!(from = %folder, to = %dest.display(), "copying folder");
        for file in self.list(folder)? {
            let rel =
                file.relative_to(folder).ok_or_else(|| DataError::format(&file, "outside the folder being copied"))?;
            let target = dest.join(contained(&file, &rel)?);
            if target.is_file() {
                continue;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(DataError::io(parent.display()))?;
            }
            let copy = self.local_copy(&file)?;
            let tmp = target.with_extension("partial");
            std::fs::copy(copy.path(), &tmp).map_err(DataError::io(tmp.display()))?;
            std::fs::rename(&tmp, &target).map_err(DataError::io(target.display()))?;
        }
        Ok(dest)
    }
}

impl Storage {
    /// Copies every file under the local folder `from` to the same relative names under `to` (a folder, local or
    /// s3://), each file atomically; returns the files copied. A merge made on local disk is published this way.
    pub fn upload_folder(&self, from: &Path, to: &Location) -> Result<usize> {
        let mut stack = vec![from.to_path_buf()];
        let mut copied = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(DataError::io(dir.display()))? {
                let path = entry.map_err(DataError::io(dir.display()))?.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path.strip_prefix(from).expect("walked from `from`").to_string_lossy().replace('\\', "/");
                let mut out = self.create(&to.join(&rel))?;
                let mut file = std::fs::File::open(&path).map_err(DataError::io(path.display()))?;
                std::io::copy(&mut file, out.file()).map_err(DataError::io(path.display()))?;
                out.commit()?;
                copied += 1;
            }
        }
        Ok(copied)
    }
}

/// `rel` as a relative path that cannot leave the folder it is joined to: an object key with an empty, `.`, `..`
/// or absolute component (legal in S3, hostile on a disk) is refused, naming the object.
fn contained(what: &Location, rel: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for part in rel.trim_end_matches('/').split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\\') || part.contains('\0') {
            return Err(DataError::format(
                what,
                format!("object key has a {part:?} component; it would be written outside the local copy"),
            ));
        }
        out.push(part);
    }
    Ok(out)
}

/// A local copy of a file: the file itself when local, a downloaded temporary copy for S3.
pub enum LocalCopy {
    /// The original local file.
    Original(PathBuf),
    /// A temporary download, deleted on drop.
    Downloaded(tempfile::TempPath),
}

impl LocalCopy {
    /// Path to read.
    pub fn path(&self) -> &Path {
        match self {
            Self::Original(p) => p,
            Self::Downloaded(t) => t,
        }
    }
}

/// A file being written that becomes visible only on [`OutputFile::commit`]; dropped uncommitted, it leaves nothing.
pub struct OutputFile {
    storage: Storage,
    target: Location,
    staged: tempfile::NamedTempFile,
}

impl OutputFile {
    /// The file being written (for seeking writers).
    pub fn file(&mut self) -> &mut std::fs::File {
        self.staged.as_file_mut()
    }

    /// Where the staged bytes are on local disk (to read them back before committing, e.g. memory-mapped).
    pub fn path(&self) -> &Path {
        self.staged.path()
    }

    /// Makes the file visible at its target.
    pub fn commit(mut self) -> Result<()> {
        self.staged.as_file_mut().flush().map_err(DataError::io(&self.target))?;
        self.storage.backend(&self.target).commit(self.staged, &self.target)
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.staged.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.staged.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_file_is_invisible_until_commit() {
        let storage = Storage::from_env();
        let dir = tempfile::tempdir().unwrap();
        let target = Location::Local(dir.path().join("sub/out.bin"));
        let mut f = storage.create(&target).unwrap();
        f.write_all(b"hello").unwrap();
        assert!(!storage.exists(&target).unwrap());
        f.commit().unwrap();
        assert_eq!(storage.read(&target).unwrap(), b"hello");
        assert_eq!(storage.list(&Location::Local(dir.path().into())).unwrap(), vec![target]);
    }

    #[test]
    fn dropped_output_file_leaves_nothing_and_a_killed_writers_temporary_is_cleaned() {
        let storage = Storage::from_env();
        let dir = tempfile::tempdir().unwrap();
        let target = Location::Local(dir.path().join("out.bin"));
        std::fs::write(dir.path().join(".tmp-out.bin-stale"), b"left by a killed writer").unwrap();
        let mut f = storage.create(&target).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert!(storage.list(&Location::Local(dir.path().into())).unwrap().is_empty());
    }

    #[test]
    fn keys_that_would_leave_the_local_copy_are_refused() {
        let loc = Location::parse("s3://b/k");
        assert_eq!(contained(&loc, "a/b.jpg").unwrap(), PathBuf::from("a/b.jpg"));
        for bad in ["../x", "a/../../x", "a//b", "/etc/passwd", "a/./b", "a\\..\\b"] {
            let err = contained(&loc, bad).unwrap_err().to_string();
            assert!(err.contains("s3://b/k") && err.contains("outside the local copy"), "{bad}: {err}");
        }
        let storage = Storage::from_env();
        let err =
            storage.materialize_folder(&Location::parse("s3://bucket/../../tmp"), Path::new("/cache")).unwrap_err();
        assert!(err.to_string().contains("outside the local copy"), "{err}");
    }

    #[test]
    fn a_file_over_the_cap_is_refused_by_its_size() {
        let storage = Storage::from_env();
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::Local(dir.path().join("big"));
        storage.write(&loc, &[7u8; 100]).unwrap();
        assert_eq!(storage.read_at_most(&loc, 100).unwrap().len(), 100);
        let err = storage.read_at_most(&loc, 99).unwrap_err();
        assert!(matches!(err, DataError::TooLarge { size: 100, max: 99, .. }), "{err}");
        assert!(err.to_string().contains("100 bytes, over --max_sample_bytes (99 bytes)"), "{err}");
    }

    #[test]
    fn local_folders_materialize_as_themselves_and_files_are_refused() {
        let storage = Storage::from_env();
        let dir = tempfile::tempdir().unwrap();
        let folder = Location::Local(dir.path().into());
        assert_eq!(storage.materialize_folder(&folder, Path::new("/nonexistent")).unwrap(), dir.path());
        storage.write(&folder.join("f"), b"x").unwrap();
        let err = storage.materialize_folder(&folder.join("f"), Path::new("/nonexistent")).unwrap_err();
        assert!(err.to_string().contains("not a folder"), "{err}");
        assert!(storage.list(&folder.join("missing")).is_err());
        storage.delete(&folder.join("f")).unwrap();
        storage.delete(&folder.join("f")).unwrap();
        assert!(!storage.exists(&folder.join("f")).unwrap());
    }
}
