//! Errors of the search engine, split by who caused them: the request (a 4xx for the HTTP layer), the server's
//! configuration, or the engine itself.

/// What can go wrong answering a query or loading the indices.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The request is wrong: names the field and what is wrong with it.
    #[error("{field}: {message}")]
    BadRequest {
        /// The request field at fault (`text`, `image`, `embedding_input`, ...).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// `indice_name` names no loaded index.
    #[error("indice_name {name:?} is not loaded (loaded: {available})")]
    UnknownIndex {
        /// The requested name.
        name: String,
        /// The loaded names, comma-separated.
        available: String,
    },
    /// More requests are queued than the server accepts; the client should retry later.
    #[error("the server is overloaded ({0}); retry later")]
    Overloaded(&'static str),
    /// A reload was asked for while another runs.
    #[error("a reload is already running")]
    ReloadRunning,
    /// A shard of a sharded index failed, timed out or answered something unusable (503: the request may succeed
    /// once the shard is back; `allow_partial_results` answers from the others instead).
    #[error("index {index:?}: shard {shard} failed: {message}")]
    Shard {
        /// The sharded index.
        index: String,
        /// The shard's URL.
        shard: String,
        /// What went wrong.
        message: String,
    },
    /// A shard answered the request with a 4xx: the request is wrong for it (e.g. it has no text index).
    #[error("index {index:?}: shard {shard} refused the request: {message}")]
    ShardRefused {
        /// The sharded index.
        index: String,
        /// The shard's URL.
        shard: String,
        /// The shard's error message.
        message: String,
    },
    /// The indices configuration (indices_paths.json, flags) is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// An index or row store failed.
    #[error(transparent)]
    Index(#[from] clip_index::IndexError),
    /// The model failed on a valid input.
    #[error(transparent)]
    Model(#[from] clip_model::ModelError),
    /// Storage (local or S3) failed while loading.
    #[error(transparent)]
    Data(#[from] clip_data::DataError),
    /// Something that should not happen (a worker thread died, a task panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

impl SearchError {
    /// A request error on `field`.
    pub fn bad(field: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { field, message: message.into() }
    }
}

/// Result alias of this crate.
pub type Result<T, E = SearchError> = std::result::Result<T, E>;
