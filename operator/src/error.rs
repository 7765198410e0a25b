//! The operator's error type: what a reconcile can fail with, and a label for the error metric.

/// Why a reconcile failed (it is retried by `error_policy`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be turned into JSON (never expected; the types are ours).
    #[error("serialising {what}: {source}")]
    Serialise {
        /// What was being serialised.
        what: &'static str,
        /// The serde error.
        source: serde_json::Error,
    },
    /// An object lacks a field the API server always sets (namespace, uid, ...).
    #[error("{0} has no {1}")]
    MissingField(String, &'static str),
    /// A spec value the schema admits but the CLI cannot take (e.g. a memory quantity in another syntax).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
}

impl Error {
    /// Short label for `clip_operator_reconcile_errors_total{error=...}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Serialise { .. } => "serialise",
            Error::MissingField(..) => "missing_field",
            Error::InvalidSpec(_) => "invalid_spec",
        }
    }
}

/// Result of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;
