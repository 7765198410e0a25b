//! The operator of clip-retrieval-rs: custom resources users `kubectl apply` (EmbeddingJob, IndexBuild,
//! SearchDeployment). It schedules the `clip-retrieval` binaries by their command line and knows nothing of CLIP.
//! This first part holds the resource types and the CRDs generated from them (`crdgen`); controllers follow.

pub mod crd;

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
