//! Errors of the data crate: each names the path or URI it is about.

/// What can go wrong reading inputs or writing outputs.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Local file system failure.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// S3 request failure.
    #[error("{uri}: S3 error: {message}")]
    S3 {
        /// The s3:// URI involved.
        uri: String,
        /// What the service or client said.
        message: String,
    },
    /// The input exists but is not in the expected format.
    #[error("{path}: {reason}")]
    Format {
        /// The offending input.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A flag or setting names something unusable (e.g. `--clip_model` names no folder).
    #[error("configuration: {0}")]
    Config(String),
    /// A file is larger than the limit set for it; nothing of its size was read.
    #[error("{path}: {size} bytes, over {limit} ({max} bytes)")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit's flag, e.g. `--max_sample_bytes`.
        limit: &'static str,
        /// The limit's value.
        max: u64,
    },
    /// The input selects nothing.
    #[error("{path}: {reason}")]
    Empty {
        /// The input that was searched.
        path: String,
        /// What was looked for.
        reason: String,
    },
}

impl DataError {
    /// An I/O error about `path`.
    pub fn io(path: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_string();
        move |source| Self::Io { path, source }
    }

    /// A format error about `path`.
    pub fn format(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Self::Format { path: path.to_string(), reason: reason.to_string() }
    }
}

/// An error and its causes on one line, each cause once (HTTP clients' own messages are only the outermost one:
/// "error sending request" without the "connection refused" under it).
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Result alias of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
