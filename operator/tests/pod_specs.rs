//! Every pod spec the operator can build, for plain specs and specs with a `podTemplate`: each passes the Pod
//! Security "restricted" rules (so a namespace enforcing the profile admits every child), and each carries the
//! template's fields where Kubernetes reads them.

use clip_operator::crd::{EmbeddingJob, IndexBuild, SearchDeployment};
use clip_operator::pod_security::restricted_violations;
use clip_operator::{embedding_job, index_build, pods, search_deployment, shard_children};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::Resource;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn resource<K: Resource + serde::de::DeserializeOwned>(kind: &str, spec: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "clip-retrieval.io/v1alpha1", "kind": kind,
        "metadata": {"name": "r", "namespace": "ns", "uid": "uid-1", "generation": 2}, "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// What a platform team sets: IRSA service account, pull secret, a model cache on a PVC, GPU runtime, spread,
/// a fixed UID, labels and annotations.
fn template() -> Value {
    json!({
        "serviceAccountName": "s3-reader",
        "imagePullSecrets": [{"name": "registry"}],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "model-cache"}}],
        "volumeMounts": [{"name": "models", "mountPath": "/var/cache/clip-retrieval"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]}}},
        "priorityClassName": "batch-low",
        "runtimeClassName": "nvidia",
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
        "securityContext": {"runAsUser": 2000, "fsGroup": 2000},
        "labels": {"team": "search", "app.kubernetes.io/managed-by": "someone-else"},
        "annotations": {"cost-center": "ml"}
    })
}

fn with_template(mut spec: Value, template: &Value) -> Value {
    spec["podTemplate"] = template.clone();
    spec
}

/// Every pod template of every resource kind built from `t` (`null`: no podTemplate), named for messages.
fn every_pod(t: &Value) -> Vec<(String, PodTemplateSpec)> {
    let add = |spec: Value| if t.is_null() { spec } else { with_template(spec, t) };
    let mut out = Vec::new();
    let ej: EmbeddingJob = resource(
        "EmbeddingJob",
        add(json!({"input": "s3://d/{000..003}.tar", "inputFormat": "webdataset", "output": "s3://d/emb",
                   "partitions": 4, "image": "i", "resources": {"gpu": 1}})),
    );
    out.push(("inference partition".into(), embedding_job::partition_job(&ej, 1).unwrap().spec.unwrap().template));
    out.push(("inference indexed".into(), embedding_job::indexed_job(&ej).unwrap().spec.unwrap().template));
    let ib: IndexBuild = resource(
        "IndexBuild",
        add(json!({"embeddings": {"uri": "s3://d/emb"}, "output": "s3://d/idx", "shards": 3, "image": "i"})),
    );
    out.push(("index build".into(), index_build::build_job(&ib, "s3://d/emb").unwrap().spec.unwrap().template));
    let train = clip_operator::distributed_build::train_args(&ib, "s3://d/emb").unwrap();
    out.push(("index train".into(), index_build::index_job(&ib, "r-train", train).unwrap().spec.unwrap().template));
    let sd: SearchDeployment = resource(
        "SearchDeployment",
        add(json!({"indices": {"a": {"indexBuild": "idx", "sharded": true}}, "image": "i"})),
    );
    let indices = BTreeMap::from([("a".to_string(), ("s3://x".to_string(), "v1".to_string()))]);
    out.push(("search front".into(), search_deployment::deployment(&sd, &indices).unwrap().spec.template));
    let (_, shard, _) = shard_children::shard_objects(&sd, "a", "v1", 0, "s3://x-parts/0").unwrap();
    out.push(("search shard".into(), shard.spec.template));
    out
}

#[test]
fn every_child_pod_is_admitted_by_the_restricted_profile() {
    for t in [Value::Null, template()] {
        for (name, pod) in every_pod(&t) {
            let violations = restricted_violations(pod.spec.as_ref().unwrap());
            assert!(violations.is_empty(), "{name} (template {t}) breaks the restricted profile:\n{violations:#?}");
        }
    }
}

#[test]
fn the_defaults_are_restricted_read_only_and_token_free() {
    for (name, pod) in every_pod(&Value::Null) {
        let spec = pod.spec.unwrap();
        let c = &spec.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(spec.security_context.as_ref().unwrap().run_as_user, None, "{name}: no fixed UID by default");
        assert_eq!(spec.automount_service_account_token, Some(false), "{name}");
        let mounts: Vec<&str> = c.volume_mounts.iter().flatten().map(|m| m.mount_path.as_str()).collect();
        for (_, path) in pods::SCRATCH {
            assert!(mounts.contains(&path), "{name}: {path} must be writable (mounts {mounts:?})");
        }
        let volumes = spec.volumes.unwrap_or_default();
        for m in c.volume_mounts.iter().flatten() {
            assert!(volumes.iter().any(|v| v.name == m.name), "{name}: mount {} has no volume", m.name);
        }
        let env: BTreeMap<_, _> =
            c.env.iter().flatten().map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or(""))).collect();
        assert_eq!(env.get("HOME"), Some(&"/var/cache/clip-retrieval"), "{name}");
        if name.starts_with("search") {
            assert!(volumes.iter().any(|v| v.config_map.is_some()), "{name}: the indices ConfigMap stays mounted");
        }
    }
}

#[test]
fn the_pod_template_reaches_every_pod() {
    for (name, pod) in every_pod(&template()) {
        let meta = pod.metadata.unwrap();
        let labels = meta.labels.unwrap();
        assert_eq!(labels["team"], "search", "{name}");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "clip-operator", "{name}: ours win");
        assert_eq!(meta.annotations.unwrap()["cost-center"], "ml", "{name}");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.service_account_name.as_deref(), Some("s3-reader"), "{name}");
        assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "registry", "{name}");
        assert_eq!(spec.priority_class_name.as_deref(), Some("batch-low"), "{name}");
        assert_eq!(spec.runtime_class_name.as_deref(), Some("nvidia"), "{name}");
        assert!(spec.affinity.unwrap().node_affinity.is_some(), "{name}");
        assert_eq!(spec.topology_spread_constraints.unwrap()[0].max_skew, 1, "{name}");
        let sc = spec.security_context.unwrap();
        assert_eq!((sc.run_as_user, sc.fs_group, sc.run_as_non_root), (Some(2000), Some(2000), Some(true)), "{name}");
        let c = &spec.containers[0];
        let cache: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.mount_path == "/var/cache/clip-retrieval")
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(cache, ["models"], "{name}: the PVC replaces the scratch cache");
        let volumes = spec.volumes.unwrap();
        assert!(volumes.iter().any(|v| v.persistent_volume_claim.is_some()), "{name}");
        assert!(!volumes.iter().any(|v| v.name == "scratch-cache"), "{name}");
        assert!(volumes.iter().any(|v| v.name == "scratch-tmp"), "{name}");
    }
}

/// Every name and label value the operator writes, for resources with the longest names Kubernetes allows (253
/// characters): each within 63, so the API server accepts the child instead of refusing it on every retry.
#[test]
fn children_of_resources_with_long_names_fit_the_63_character_limits() {
    let long = "a".repeat(253);
    let named = |kind: &str, spec: Value| -> Value {
        json!({"apiVersion": "clip-retrieval.io/v1alpha1", "kind": kind,
               "metadata": {"name": long, "namespace": "ns", "uid": "uid-1", "generation": 2}, "spec": spec})
    };
    let ej: EmbeddingJob = serde_json::from_value(named(
        "EmbeddingJob",
        json!({"input": "s3://d/x", "output": "s3://d/emb", "partitions": 4, "image": "i"}),
    ))
    .unwrap();
    let ib: IndexBuild = serde_json::from_value(named(
        "IndexBuild",
        json!({"embeddings": {"uri": "s3://d/emb"}, "output": "s3://d/idx", "shards": 3, "image": "i"}),
    ))
    .unwrap();
    let sd: SearchDeployment = serde_json::from_value(named(
        "SearchDeployment",
        json!({"indices": {"a": {"indexBuild": "idx", "sharded": true}}, "image": "i",
               "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
               "ingress": {"host": "search.example.com"}}),
    ))
    .unwrap();
    let mut metas = vec![
        embedding_job::partition_job(&ej, 99_999).unwrap().metadata,
        embedding_job::indexed_job(&ej).unwrap().metadata,
        index_build::build_job(&ib, "s3://d/emb").unwrap().metadata,
    ];
    for name in [
        clip_operator::distributed_build::train_job_name(&ib),
        clip_operator::distributed_build::part_job_name(&ib, 999, 20),
        clip_operator::distributed_build::merge_job_name(&ib),
    ] {
        metas.push(index_build::index_job(&ib, &name, vec![]).unwrap().metadata);
    }
    let indices = BTreeMap::from([("a".to_string(), ("s3://x".to_string(), "v1".to_string()))]);
    let shards = BTreeMap::from([("a".to_string(), vec!["p0".to_string()])]);
    metas.push(search_deployment::deployment(&sd, &indices).unwrap().metadata);
    metas.push(search_deployment::service(&sd).unwrap().metadata);
    metas.push(search_deployment::config_map(&sd, &indices, &shards).unwrap().metadata);
    metas.push(search_deployment::ingress(&sd).unwrap().unwrap().metadata);
    let (config, shard, service) = shard_children::shard_objects(&sd, "a", "v1", 0, "s3://x-parts/0").unwrap();
    metas.extend([config.metadata, shard.metadata, service.metadata]);
    let jobs: std::collections::BTreeSet<_> = metas[..6].iter().map(|m| m.name.clone()).collect();
    assert_eq!(jobs.len(), 6, "the Jobs stay distinct: {jobs:?}");
    for meta in &metas {
        let name = meta.name.clone().unwrap();
        assert!(name.len() <= 63, "{name} ({} characters)", name.len());
        for (k, v) in meta.labels.iter().flatten() {
            assert!(v.len() <= 63, "label {k}={v} ({} characters)", v.len());
        }
    }
}
