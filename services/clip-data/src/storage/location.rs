//! `Location`: a local path or an `s3://bucket/key` URI, and the path arithmetic on it (parse, join, relative).

use std::fmt;
use std::path::PathBuf;

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
        assert_eq!(Location::parse("/tmp/a/b/c").relative_to(&Location::parse("/tmp/a")).as_deref(), Some("b/c"));
        assert_eq!(Location::parse("s3://b/p").relative_to(&Location::parse("/tmp")), None);
    }
}
