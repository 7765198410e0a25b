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
    /// A child's name is taken by an object the resource does not own (server-side apply would adopt it, and
    /// garbage collection would later delete it).
    #[error("{0}")]
    Conflict(String),
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
            Error::Conflict(_) => "conflict",
        }
    }

    /// Whether retrying cannot help until the spec (or the cluster) changes: the resource is then `Failed` with
    /// [`Error::reason`] instead of being retried. A 422 from the API server is the server refusing an object the
    /// spec produced (e.g. a pod template field): the same spec gives the same answer.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::InvalidSpec(_) | Error::Conflict(_) => true,
            Error::Kube(kube::Error::Api(e)) => e.code == 422,
            _ => false,
        }
    }

    /// The message for a condition: the API server's own words for its errors.
    pub fn message(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(e)) if !e.message.is_empty() => e.message.clone(),
            other => other.to_string(),
        }
    }

    /// The condition reason for this error: ours, or the API server's (`Forbidden`, `Invalid`, ...).
    pub fn reason(&self) -> String {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec".into(),
            Error::Conflict(_) => "Conflict".into(),
            Error::Kube(kube::Error::Api(e)) if !e.reason.is_empty() => e.reason.clone(),
            Error::Kube(kube::Error::Api(_)) => "ApiError".into(),
            Error::Kube(_) => "ApiUnreachable".into(),
            Error::Serialise { .. } => "InternalError".into(),
            Error::MissingField(..) => "MissingField".into(),
        }
    }
}

/// Result of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> Error {
        let status =
            kube::core::Status { code, reason: reason.into(), message: format!("{reason} it"), ..Default::default() };
        Error::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn refusals_of_the_spec_are_permanent_and_carry_the_servers_reason_and_words() {
        assert!(api(422, "Invalid").is_permanent());
        assert!(!api(403, "Forbidden").is_permanent(), "a quota or a permission can change");
        assert!(!api(500, "InternalError").is_permanent());
        assert_eq!(
            (api(403, "Forbidden").reason(), api(403, "Forbidden").message()),
            ("Forbidden".into(), "Forbidden it".into())
        );
        assert_eq!(api(500, "").reason(), "ApiError");
        assert!(Error::InvalidSpec("x".into()).is_permanent());
        assert_eq!(Error::InvalidSpec("x".into()).reason(), "InvalidSpec");
    }
}
