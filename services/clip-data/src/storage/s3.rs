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
}

impl S3Config {
    /// From `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` and `AWS_S3_FORCE_PATH_STYLE`.
    pub fn from_env() -> Self {
        let endpoint = ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()));
        let force_path_style =
            std::env::var("AWS_S3_FORCE_PATH_STYLE").map(|v| v == "true" || v == "1").unwrap_or(endpoint.is_some());
        Self { endpoint, force_path_style }
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
        let c = self.client()?;
        c.block_on(async {
            let body =
                aws_sdk_s3::primitives::ByteStream::from_path(staged.path()).await.map_err(|e| s3_err(target, e))?;
            c.client.put_object().bucket(bucket).key(key).body(body).send().await.map_err(|e| s3_err(target, e))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_path_given_to_the_s3_backend_is_an_error_not_a_panic() {
        let backend = S3Backend::new(S3Config { endpoint: None, force_path_style: false });
        let err = backend.read(&Location::parse("/tmp/x")).unwrap_err();
        assert!(err.to_string().contains("not an s3:// location"), "{err}");
        assert!(backend.client.get().is_none(), "no client is built for a refused call");
    }
}
