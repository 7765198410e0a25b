//! The operator of clip-retrieval-rs: custom resources users `kubectl apply` (EmbeddingJob, IndexBuild,
//! SearchDeployment), reconciled into Jobs, a Deployment, a Service, an HPA and an Ingress that run the
//! `clip-retrieval` binary. It schedules that binary by its command line and knows nothing of CLIP.
//!
//! Supported API servers: Kubernetes 1.20 (CI's) to current; see [`capabilities`] for what differs.

pub mod capabilities;
pub mod context;
pub mod crd;
pub mod embedding_job;
pub mod error;
pub mod http;
pub mod index_build;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod run;
pub mod search_deployment;
pub mod status;

pub use error::{Error, Result};

use kube::CustomResourceExt;

/// `(file name, YAML)` of every CRD, as `crdgen` writes them into `crds/`.
pub fn crds() -> Vec<(&'static str, String)> {
    let yaml = |crd| serde_yaml::to_string(&crd).expect("CRD serialises");
    vec![
        ("embeddingjobs.yaml", yaml(crd::EmbeddingJob::crd())),
        ("indexbuilds.yaml", yaml(crd::IndexBuild::crd())),
        ("searchdeployments.yaml", yaml(crd::SearchDeployment::crd())),
    ]
}
