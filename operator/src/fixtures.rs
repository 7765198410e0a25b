//! Objects as a v1.20 API server returned them to the operator (recorded from the control plane of
//! `tests/tests/operator.rs`, names shortened), for unit tests of the phase decisions without a cluster.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use serde_json::json;

/// A per-partition inference Job in one of the states a Job goes through.
pub fn partition_job(partition: u32, state: &str) -> Job {
    let conditions = match state {
        "complete" => json!([{
            "type": "Complete", "status": "True",
            "lastProbeTime": "2026-11-30T10:01:12Z", "lastTransitionTime": "2026-11-30T10:01:12Z"
        }]),
        "failed" => json!([{
            "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
            "lastProbeTime": "2026-11-30T10:02:40Z", "lastTransitionTime": "2026-11-30T10:02:40Z"
        }]),
        _ => json!(null),
    };
    let counts = match state {
        "complete" => json!({ "succeeded": 1 }),
        "failed" => json!({ "failed": 3 }),
        _ => json!({ "active": 1 }),
    };
    let mut status = json!({ "startTime": "2026-11-30T10:00:03Z", "conditions": conditions });
    status.as_object_mut().unwrap().extend(counts.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": format!("laion-inference-{partition}"),
            "namespace": "ns",
            "uid": format!("0b0c9e1a-5d1e-4c7e-9a53-00000000000{partition}"),
            "resourceVersion": "1834",
            "labels": {
                "app.kubernetes.io/managed-by": "clip-retrieval-operator",
                "clip-retrieval.io/embedding-job": "laion",
                "clip-retrieval.io/partition": partition.to_string()
            },
            "ownerReferences": [{
                "apiVersion": "clip-retrieval.io/v1alpha1", "kind": "EmbeddingJob", "name": "laion",
                "uid": "uid-1", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "backoffLimit": 2,
            "completions": 1,
            "parallelism": 1,
            "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "inference", "image": "img" }] } }
        },
        "status": status
    }))
    .expect("a Job")
}

/// The search Deployment with `updated` of `replicas` updated and `ready` ready, for `generation`.
pub fn deployment(replicas: i32, updated: i32, ready: i32, observed: i64) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "search", "namespace": "ns", "generation": 2, "resourceVersion": "2211" },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "clip-retrieval.io/search-deployment": "search" } },
            "template": { "spec": { "containers": [{ "name": "back", "image": "img" }] } }
        },
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready
        }
    }))
    .expect("a Deployment")
}
