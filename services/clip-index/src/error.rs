//! Errors of the index crate: each names the file, folder or parameter it is about.

use clip_data::DataError;

/// What can go wrong building, loading or querying an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading or writing embeddings, metadata or index files failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// faiss refused an operation; `what` says which one and on what.
    #[error("{what}: faiss error: {message}")]
    Faiss {
        /// The operation and its subject.
        what: String,
        /// faiss's own message.
        message: String,
    },
    /// The inputs are inconsistent (dimensions, row counts, partitions).
    #[error("{path}: {reason}")]
    Invalid {
        /// The offending input.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No index fits the requested memory budget.
    #[error("no index fits --max_index_memory_usage {budget}: {reason}")]
    Budget {
        /// The budget as given.
        budget: String,
        /// Why nothing fits.
        reason: String,
    },
}

impl IndexError {
    /// An inconsistency in `path`.
    pub fn invalid(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Self::Invalid { path: path.to_string(), reason: reason.to_string() }
    }

    /// Wraps a faiss error with the operation it interrupted.
    pub fn faiss(what: impl std::fmt::Display) -> impl FnOnce(faiss::error::Error) -> Self {
        let what = what.to_string();
        move |e| Self::Faiss { what, message: e.to_string() }
    }

    /// An I/O error about `path`.
    pub fn io(path: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_string();
        move |e| Self::Data(DataError::io(path)(e))
    }
}

/// Result alias of this crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;
