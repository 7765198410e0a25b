//! The operator of clip-retrieval-rs: custom resources users `kubectl apply` (EmbeddingJob, IndexBuild,
//! SearchDeployment), reconciled into Jobs, a Deployment, a Service, an HPA and an Ingress that run the
//! `clip-retrieval` binary. It schedules that binary by its command line and knows nothing of CLIP.
//!
//! Supported API servers: Kubernetes 1.20 (CI's) to current; see [`capabilities`] for what differs.

pub mod admission;
pub mod backoff;
pub mod capabilities;
pub mod command_line;
pub mod context;
pub mod crd;
pub mod distributed_build;
pub mod embedding_job;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod health;
pub mod http;
pub mod index_build;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod outcome;
pub mod pod_security;
pub mod pods;
pub mod quantity;
pub mod run;
pub mod search_deployment;
pub mod shard_children;
pub mod status;

pub use error::{Error, Result};

use kube::CustomResourceExt;

/// `(file name, YAML)` of every CRD, as `crdgen` writes them into `crds/`.
pub fn crds() -> Vec<(&'static str, String)> {
    let yaml = |crd| {
        let mut json = serde_json::to_value(&crd).expect("CRD serialises");
        drop_empty_string_defaults(&mut json);
        serde_yaml::to_string(&json).expect("CRD serialises")
    };
    vec![
        ("embeddingjobs.yaml", yaml(crd::EmbeddingJob::crd())),
        ("indexbuilds.yaml", yaml(crd::IndexBuild::crd())),
        ("searchdeployments.yaml", yaml(crd::SearchDeployment::crd())),
    ]
}

/// Removes `default: ""` from a schema: Kubernetes 1.20 reads an empty-string default as null and rejects the CRD
/// ("in body must be of type string"). Those defaults are only on status fields, which the operator always writes.
fn drop_empty_string_defaults(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("default") == Some(&serde_json::Value::String(String::new())) {
                map.remove("default");
            }
            map.values_mut().for_each(drop_empty_string_defaults);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_empty_string_defaults),
        _ => {}
    }
}
