//! The S3 backend: aws-sdk-s3 driven from blocking code through a small tokio runtime the backend owns.
//!
//! Configuration comes from the usual AWS environment and files (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, profiles, web identity on EKS) through aws-config; `AWS_ENDPOINT_URL` points it at another
//! S3-compatible server, and `AWS_S3_FORCE_PATH_STYLE=true` serves servers without virtual-host buckets (path style
//! is also the default whenever a custom endpoint is set). We keep aws-sdk-s3 rather than `object_store` because
//! aws-config reads that whole credential chain as AWS documents it, which users' clusters rely on.

use super::{Backend, LocalCopy, Location};
use crate::error::{DataError, Result};
use std::sync::OnceLock;

/// What the S3 client is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// A custom endpoint (MinIO, Ceph, a test server); `None` is AWS.
    pub endpoint: Option<String>,
    /// Path-style bucket addressing (`endpoint/bucket/key`).
    pub force_path_style: bool,
    /// Objects of at least this many bytes are uploaded in parts (a single PUT is refused above 5 GiB).
    pub multipart_threshold: u64,
    /// Bytes per part (at least S3's 5 MiB minimum; raised so that no object needs over 10,000 parts).
    pub part_size: u64,
}

/// Default of `CLIP_RETRIEVAL_S3_MULTIPART_THRESHOLD`: 64 MiB.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;
/// Default of `CLIP_RETRIEVAL_S3_PART_SIZE`: 16 MiB.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// S3's smallest part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's most parts per upload.
const MAX_PARTS: u64 = 10_000;

impl S3Config {
    /// A client for `endpoint` (None: AWS) with the default upload sizes.
    pub fn new(endpoint: Option<String>, force_path_style: bool) -> Self {
        Self {
            endpoint,
            force_path_style,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// From `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` and `AWS_S3_FORCE_PATH_STYLE`, and the upload sizes from
    /// `CLIP_RETRIEVAL_S3_MULTIPART_THRESHOLD` / `CLIP_RETRIEVAL_S3_PART_SIZE` (bytes).
    pub fn from_env() -> Self {
        let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()));
        let force_path_style =
            std::env::var("AWS_S3_FORCE_PATH_STYLE").map(|v| v == "true" || v == "1").unwrap_or(endpoint.is_some());
        let bytes =
            |var: &str, default: u64| std::env::var(var).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default);
        Self {
            multipart_threshold: bytes("CLIP_RETRIEVAL_S3_MULTIPART_THRESHOLD", DEFAULT_MULTIPART_THRESHOLD),
            part_size: bytes("CLIP_RETRIEVAL_S3_PART_SIZE", DEFAULT_PART_SIZE),
            ..Self::new(endpoint, force_path_style)
        }
    }

    /// The part size for an object of `size` bytes.
    fn part_size_for(&self, size: u64) -> u64 {
        self.part_size.max(MIN_PART_SIZE).max(size.div_ceil(MAX_PARTS))
    }
}

/// The client and the runtime its futures run on, built on first use.
pub(super) struct S3Backend {
    config: S3Config,
    client: OnceLock<S3Client>,
}

struct S3Client {
    runtime: Option<tokio::runtime::Runtime>,
    client: aws_sdk_s3::Client,
}

impl Drop for S3Client {
    fn drop(&mut self) {
        // The last Storage clone may be dropped inside an async context (the server), where a blocking shutdown
        // panics; nothing is in flight by then.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl S3Client {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().expect("runtime present until drop").block_on(f)
    }
}

fn s3_err(loc: &Location, e: impl std::fmt::Debug) -> DataError {
    // The SDK's Display is terse ("service error"); its Debug names the code and message.
    let message = format!("{e:?}");
    let short = message.chars().take(400).collect();
    DataError::S3 { uri: loc.to_string(), message: short }
}

fn bucket_key(loc: &Location) -> Result<(&str, &str)> {
    match loc {
        Location::S3 { bucket, key } => Ok((bucket, key)),
        Location::Local(_) => Err(DataError::format(loc, "not an s3:// location")),
    }
}

impl S3Backend {
    pub(super) fn new(config: S3Config) -> Self {
        Self { config, client: OnceLock::new() }
    }

    pub(super) fn config(&self) -> &S3Config {
        &self.config
    }

    fn client(&self) -> Result<&S3Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-io")
            .enable_all()
            .build()
            .map_err(DataError::io("tokio runtime for S3 I/O"))?;
        let client = runtime.block_on(async {
            let mut loader = aws_config::from_env();
            if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                loader = loader.region(aws_config::Region::new("us-east-1"));
            }
            if let Some(endpoint) = &self.config.endpoint {
                loader = loader.endpoint_url(endpoint);
            }
            let shared = loader.load().await;
            let config =
                aws_sdk_s3::config::Builder::from(&shared).force_path_style(self.config.force_path_style).build();
            aws_sdk_s3::Client::from_conf(config)
        });
        // Two threads racing here build two clients; one is kept, the other dropped unused.
        Ok(self.client.get_or_init(|| S3Client { runtime: Some(runtime), client }))
    }
}

impl Backend for S3Backend {
    fn read_at_most(&self, loc: &Location, max: u64) -> Result<Vec<u8>> {
        let (bucket, key) = bucket_key(loc)?;
        let c = self.client()?;
        c.block_on(async {
            let out = c.client.get_object().bucket(bucket).key(key).send().await.map_err(|e| s3_err(loc, e))?;
            // The size comes with the response headers: a large object is refused before its body is read.
            let size = out.content_length().unwrap_or(0).max(0) as u64;
            if size > max {
                return Err(super::local::too_large(loc, size, max));
            }
            let body = out.body.collect().await.map_err(|e| s3_err(loc, e))?;
            Ok(body.into_bytes().to_vec())
        })
    }

    fn exists(&self, loc: &Location) -> Result<bool> {
        let (bucket, key) = bucket_key(loc)?;
        let c = self.client()?;
        c.block_on(async {
            match c.client.head_object().bucket(bucket).key(key).send().await {
                Ok(_) => Ok(true),
                Err(e) if e.as_service_error().map(|s| s.is_not_found()).unwrap_or(false) => Ok(false),
                Err(e) => Err(s3_err(loc, e)),
            }
        })
    }

    fn delete(&self, loc: &Location) -> Result<()> {
        let (bucket, key) = bucket_key(loc)?;
        let c = self.client()?;
        c.block_on(async {
            c.client.delete_object().bucket(bucket).key(key).send().await.map(|_| ()).map_err(|e| s3_err(loc, e))
        })
    }

    fn list(&self, loc: &Location) -> Result<Vec<Location>> {
        let (bucket, key) = bucket_key(loc)?;
        let c = self.client()?;
        let prefix = if key.is_empty() { String::new() } else { format!("{key}/") };
        let mut out = Vec::new();
        c.block_on(async {
            let mut pages = c.client.list_objects_v2().bucket(bucket).prefix(&prefix).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| s3_err(loc, e))?;
                for obj in page.contents() {
                    if let Some(k) = obj.key() {
                        out.push(Location::S3 { bucket: bucket.to_string(), key: k.to_string() });
                    }
                }
            }
            Ok::<_, DataError>(())
        })?;
        Ok(out)
    }

    fn local_copy(&self, loc: &Location) -> Result<LocalCopy> {
        let (bucket, key) = bucket_key(loc)?;
        let tmp = tempfile::NamedTempFile::new().map_err(DataError::io("temporary file"))?;
        let (file, path) = tmp.into_parts();
        let c = self.client()?;
        c.block_on(async {
            use tokio::io::AsyncWriteExt;
            let out = c.client.get_object().bucket(bucket).key(key).send().await.map_err(|e| s3_err(loc, e))?;
            let mut reader = out.body.into_async_read();
            let mut f = tokio::fs::File::from_std(file);
            tokio::io::copy(&mut reader, &mut f).await.map_err(DataError::io(loc))?;
            f.flush().await.map_err(DataError::io(loc))
        })?;
        Ok(LocalCopy::Downloaded(path))
    }

    fn stage(&self, _target: &Location) -> Result<tempfile::NamedTempFile> {
        tempfile::NamedTempFile::new().map_err(DataError::io("temporary file"))
    }

    fn commit(&self, staged: tempfile::NamedTempFile, target: &Location) -> Result<()> {
        let (bucket, key) = bucket_key(target)?;
        let size = staged.as_file().metadata().map_err(DataError::io(target))?.len();
        let c = self.client()?;
        if size >= self.config.multipart_threshold {
            return c.block_on(upload_in_parts(
                &c.client,
                staged.path(),
                size,
                self.config.part_size_for(size),
                target,
            ));
        }
        c.block_on(async {
            let body =
                aws_sdk_s3::primitives::ByteStream::from_path(staged.path()).await.map_err(|e| s3_err(target, e))?;
            c.client.put_object().bucket(bucket).key(key).body(body).send().await.map_err(|e| s3_err(target, e))?;
            Ok(())
        })
    }
}

/// Uploads the file at `path` as `target` in parts of `part_size`, each streamed from the file (never held whole);
/// a failed upload is aborted so no parts are left billed. The object appears only when the upload completes.
async fn upload_in_parts(
    client: &aws_sdk_s3::Client,
    path: &std::path::Path,
    size: u64,
    part_size: u64,
    target: &Location,
) -> Result<()> {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let (bucket, key) = bucket_key(target)?;
    let created =
        client.create_multipart_upload().bucket(bucket).key(key).send().await.map_err(|e| s3_err(target, e))?;
    let upload_id = created.upload_id().ok_or_else(|| s3_err(target, "no upload id in the reply"))?.to_string();
    let parts = async {
        let mut done = Vec::new();
        for (i, offset) in (0..size).step_by(part_size as usize).enumerate() {
            let length = part_size.min(size - offset);
            let body = aws_sdk_s3::primitives::ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(aws_sdk_s3::primitives::Length::Exact(length))
                .build()
                .await
                .map_err(|e| s3_err(target, e))?;
            let number = i as i32 + 1;
            let part = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(length as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| s3_err(target, e))?;
            done.push(CompletedPart::builder().part_number(number).set_e_tag(part.e_tag().map(String::from)).build());
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
            .send()
            .await
            .map_err(|e| s3_err(target, e))?;
        Ok::<(), DataError>(())
    }
    .await;
    if parts.is_err() {
        let _ = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id).send().await;
    }
    tracing::debug!(object = %target, size, part_size, "multipart upload");
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_respect_s3_minimum_and_maximum_count() {
        let config = S3Config { part_size: 1, ..S3Config::new(None, false) };
        assert_eq!(config.part_size_for(1 << 30), MIN_PART_SIZE);
        let one_tib = 1u64 << 40;
        assert!(one_tib.div_ceil(config.part_size_for(one_tib)) <= MAX_PARTS);
    }

    #[test]
    fn a_local_path_given_to_the_s3_backend_is_an_error_not_a_panic() {
        let backend = S3Backend::new(S3Config::new(None, false));
        let err = backend.read(&Location::parse("/tmp/x")).unwrap_err();
        assert!(err.to_string().contains("not an s3:// location"), "{err}");
        assert!(backend.client.get().is_none(), "no client is built for a refused call");
    }
}
