//! One small storage interface over local paths and `s3://bucket/key` URIs.
//!
//! S3 uses aws-sdk-s3 configured from the usual AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`), plus `AWS_S3_FORCE_PATH_STYLE=true` for servers without virtual-host buckets
//! (path style is also the default whenever a custom endpoint is set). Calls are blocking: the pipeline is
//! thread-based, so the client owns a small tokio runtime of its own.

use crate::error::{DataError, Result};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where a file or folder lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// A local path.
    Local(PathBuf),
    /// An S3 object or prefix.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key or prefix, without a leading slash.
        key: String,
    },
}

impl Location {
    /// Parses `s3://bucket/key` or a local path.
    pub fn parse(s: &str) -> Self {
        match s.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                Self::S3 { bucket: bucket.to_string(), key: key.trim_matches('/').to_string() }
            }
            None => Self::Local(PathBuf::from(s)),
        }
    }

    /// A child location, `rel` using `/` separators.
    pub fn join(&self, rel: &str) -> Self {
        match self {
            Self::Local(p) => Self::Local(p.join(rel)),
            Self::S3 { bucket, key } if key.is_empty() => Self::S3 { bucket: bucket.clone(), key: rel.to_string() },
            Self::S3 { bucket, key } => Self::S3 { bucket: bucket.clone(), key: format!("{key}/{rel}") },
        }
    }

    /// Whether this is an S3 location.
    pub fn is_s3(&self) -> bool {
        matches!(self, Self::S3 { .. })
    }

    /// The last path component.
    pub fn file_name(&self) -> String {
        match self {
            Self::Local(p) => p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            Self::S3 { key, .. } => key.rsplit('/').next().unwrap_or("").to_string(),
        }
    }

    /// Path of `self` relative to `base` with `/` separators, when `self` is inside `base`.
    pub fn relative_to(&self, base: &Location) -> Option<String> {
        match (self, base) {
            (Self::Local(p), Self::Local(b)) => p
                .strip_prefix(b)
                .ok()
                .map(|r| r.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")),
            (Self::S3 { bucket, key }, Self::S3 { bucket: b2, key: k2 }) if bucket == b2 => {
                if k2.is_empty() {
                    Some(key.clone())
                } else {
                    key.strip_prefix(k2.as_str()).and_then(|r| r.strip_prefix('/')).map(str::to_string)
                }
            }
            _ => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

struct S3Client {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
}

static S3: OnceLock<S3Client> = OnceLock::new();

fn s3() -> &'static S3Client {
    S3.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-io")
            .enable_all()
            .build()
            .expect("a tokio runtime for S3 I/O");
        let client = runtime.block_on(async {
            let mut loader = aws_config::from_env();
            if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                loader = loader.region(aws_config::Region::new("us-east-1"));
            }
            let shared = loader.load().await;
            let custom_endpoint =
                std::env::var_os("AWS_ENDPOINT_URL").is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
            let path_style =
                std::env::var("AWS_S3_FORCE_PATH_STYLE").map(|v| v == "true" || v == "1").unwrap_or(custom_endpoint);
            let config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(path_style).build();
            aws_sdk_s3::Client::from_conf(config)
        });
        S3Client { runtime, client }
    })
}

fn s3_err(loc: &Location, e: impl fmt::Debug) -> DataError {
    // The SDK's Display is terse ("service error"); its Debug names the code and message.
    let message = format!("{e:?}");
    let short = message.chars().take(400).collect();
    DataError::S3 { uri: loc.to_string(), message: short }
}

/// Reads a whole file.
pub fn read(loc: &Location) -> Result<Vec<u8>> {
    match loc {
        Location::Local(p) => std::fs::read(p).map_err(DataError::io(p.display())),
        Location::S3 { bucket, key } => {
            let c = s3();
            c.runtime.block_on(async {
                let out = c.client.get_object().bucket(bucket).key(key).send().await.map_err(|e| s3_err(loc, e))?;
                let body = out.body.collect().await.map_err(|e| s3_err(loc, e))?;
                Ok(body.into_bytes().to_vec())
            })
        }
    }
}

/// Writes a whole file atomically: readers see the old content or the new one, never a part.
pub fn write(loc: &Location, bytes: &[u8]) -> Result<()> {
    let mut out = OutputFile::create(loc)?;
    out.write_all(bytes).map_err(DataError::io(loc))?;
    out.commit()
}

/// Whether a file exists.
pub fn exists(loc: &Location) -> Result<bool> {
    match loc {
        Location::Local(p) => Ok(p.is_file()),
        Location::S3 { bucket, key } => {
            let c = s3();
            c.runtime.block_on(async {
                match c.client.head_object().bucket(bucket).key(key).send().await {
                    Ok(_) => Ok(true),
                    Err(e) if e.as_service_error().map(|s| s.is_not_found()).unwrap_or(false) => Ok(false),
                    Err(e) => Err(s3_err(loc, e)),
                }
            })
        }
    }
}

/// Deletes a file; a missing file is not an error.
pub fn delete(loc: &Location) -> Result<()> {
    match loc {
        Location::Local(p) => match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DataError::io(p.display())(e)),
            _ => Ok(()),
        },
        Location::S3 { bucket, key } => {
            let c = s3();
            c.runtime.block_on(async {
                c.client.delete_object().bucket(bucket).key(key).send().await.map(|_| ()).map_err(|e| s3_err(loc, e))
            })
        }
    }
}

/// Every file under a folder or prefix, recursively, sorted.
pub fn list(loc: &Location) -> Result<Vec<Location>> {
    let mut out = Vec::new();
    match loc {
        Location::Local(p) => {
            if !p.exists() {
                return Err(DataError::Io {
                    path: p.display().to_string(),
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
            walk(p, &mut out)?;
        }
        Location::S3 { bucket, key } => {
            let c = s3();
            let prefix = if key.is_empty() { String::new() } else { format!("{key}/") };
            c.runtime.block_on(async {
                let mut pages = c.client.list_objects_v2().bucket(bucket).prefix(&prefix).into_paginator().send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| s3_err(loc, e))?;
                    for obj in page.contents() {
                        if let Some(k) = obj.key() {
                            out.push(Location::S3 { bucket: bucket.clone(), key: k.to_string() });
                        }
                    }
                }
                Ok::<_, DataError>(())
            })?;
        }
    }
    out.sort();
    Ok(out)
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

/// Makes a file readable from the local disk (streams S3 objects to a temporary file, never to memory).
pub fn local_copy(loc: &Location) -> Result<LocalCopy> {
    match loc {
        Location::Local(p) => Ok(LocalCopy::Original(p.clone())),
        Location::S3 { bucket, key } => {
            let tmp = tempfile::NamedTempFile::new().map_err(DataError::io("temporary file"))?;
            let (file, path) = tmp.into_parts();
            let c = s3();
            c.runtime.block_on(async {
                use tokio::io::AsyncWriteExt;
                let out = c.client.get_object().bucket(bucket).key(key).send().await.map_err(|e| s3_err(loc, e))?;
                let mut reader = out.body.into_async_read();
                let mut f = tokio::fs::File::from_std(file);
                tokio::io::copy(&mut reader, &mut f).await.map_err(DataError::io(loc))?;
                f.flush().await.map_err(DataError::io(loc))
            })?;
            Ok(LocalCopy::Downloaded(path))
        }
    }
}

/// Copies every file under `loc` into `dest` (keeping relative paths); files already there with the same size are kept.
pub fn download_folder(loc: &Location, dest: &Path) -> Result<()> {
    for file in list(loc)? {
        let rel = file.relative_to(loc).ok_or_else(|| DataError::format(&file, "outside the folder being copied"))?;
        let target = dest.join(&rel);
        if target.is_file() {
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(DataError::io(parent.display()))?;
        }
        let copy = local_copy(&file)?;
        let tmp = target.with_extension("partial");
        std::fs::copy(copy.path(), &tmp).map_err(DataError::io(tmp.display()))?;
        std::fs::rename(&tmp, &target).map_err(DataError::io(target.display()))?;
    }
    Ok(())
}

/// A file being written that becomes visible only on [`OutputFile::commit`] (rename locally, upload to S3).
pub struct OutputFile {
    target: Location,
    tmp: tempfile::NamedTempFile,
}

impl OutputFile {
    /// Starts writing `target`; parent folders are created for local targets.
    pub fn create(target: &Location) -> Result<Self> {
        let tmp = match target {
            Location::Local(p) => {
                let dir = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir).map_err(DataError::io(dir.display()))?;
                let prefix = format!(".tmp-{}-", target.file_name());
                remove_stale_temporaries(dir, &prefix);
                tempfile::Builder::new().prefix(&prefix).tempfile_in(dir).map_err(DataError::io(dir.display()))?
            }
            Location::S3 { .. } => tempfile::NamedTempFile::new().map_err(DataError::io("temporary file"))?,
        };
        Ok(Self { target: target.clone(), tmp })
    }

    /// The file being written (for seeking writers).
    pub fn file(&mut self) -> &mut std::fs::File {
        self.tmp.as_file_mut()
    }

    /// Makes the file visible at its target.
    pub fn commit(mut self) -> Result<()> {
        self.tmp.as_file_mut().flush().map_err(DataError::io(&self.target))?;
        match &self.target {
            Location::Local(p) => {
                self.tmp.as_file().sync_all().map_err(DataError::io(p.display()))?;
                self.tmp.persist(p).map_err(|e| DataError::io(p.display())(e.error))?;
                Ok(())
            }
            Location::S3 { bucket, key } => {
                let c = s3();
                let loc = self.target.clone();
                c.runtime.block_on(async {
                    let body = aws_sdk_s3::primitives::ByteStream::from_path(self.tmp.path())
                        .await
                        .map_err(|e| s3_err(&loc, e))?;
                    c.client
                        .put_object()
                        .bucket(bucket)
                        .key(key)
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| s3_err(&loc, e))?;
                    Ok(())
                })
            }
        }
    }
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

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_joins_locations() {
        let l = Location::parse("s3://bucket/some/prefix/");
        assert_eq!(l, Location::S3 { bucket: "bucket".into(), key: "some/prefix".into() });
        assert_eq!(l.join("img_emb/img_emb_0.npy").to_string(), "s3://bucket/some/prefix/img_emb/img_emb_0.npy");
        assert_eq!(Location::parse("s3://b").join("x").to_string(), "s3://b/x");
        let child = Location::parse("s3://b/p/q/r.jpg");
        assert_eq!(child.relative_to(&Location::parse("s3://b/p")).as_deref(), Some("q/r.jpg"));
        assert_eq!(Location::parse("/tmp/a").join("b/c"), Location::Local("/tmp/a/b/c".into()));
    }

    #[test]
    fn output_file_is_invisible_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = Location::Local(dir.path().join("sub/out.bin"));
        let mut f = OutputFile::create(&target).unwrap();
        f.write_all(b"hello").unwrap();
        assert!(!exists(&target).unwrap());
        f.commit().unwrap();
        assert_eq!(read(&target).unwrap(), b"hello");
        assert_eq!(list(&Location::Local(dir.path().into())).unwrap(), vec![target]);
    }
}
