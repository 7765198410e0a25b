//! The fake kubelet of [`NODE`]: registers the node and moves the pods bound to it through their lives without
//! running anything (the process kubelet, `crate::kubelet`, runs them for real).

use super::{client_for, NODE};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Plays the kubelet of [`NODE`] without running containers: a pod bound to the node becomes Running; a Job's pod
/// (or any pod whose restartPolicy is not Always) then terminates after `FAKE_RUN_SECONDS` (default 1) with exit code `FAKE_EXIT_CODE` (default 0) when its
/// `--partition_ids` is listed in `FAKE_FAIL_PARTITIONS` (or that variable is absent), else 0, and the
/// termination message `FAKE_TERMINATION_MESSAGE`; other pods become Ready and stay Running. The variables are
/// read from the pod's container env, which the operator copies from the resource's `env`. A pod whose `envFrom`
/// Secret does not exist waits in `CreateContainerConfigError` until it does, as with a real kubelet.
pub struct FakeKubelet;

impl FakeKubelet {
    pub(super) fn run(kubeconfig: &Path) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("kubelet runtime");
        runtime.block_on(async {
            let client = client_for(kubeconfig).await;
            register_node(&client).await;
            let pods: Api<Pod> = Api::all(client.clone());
            let mut started: HashMap<String, Instant> = HashMap::new();
            loop {
                let list = pods.list(&ListParams::default().fields(&format!("spec.nodeName={NODE}"))).await;
                if let Ok(list) = list {
                    for pod in list.items {
                        if let Err(e) = step(&client, &pod, &mut started).await {
                            eprintln!("fake kubelet: {}: {e}", pod.name_any());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

pub(super) async fn register_node(client: &Client) {
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
    }))
    .expect("node");
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.create(&PostParams::default(), &node).await.expect("register the fake node");
    let status = serde_json::json!({"status": {
        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "4"},
        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "4"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test kubelet"}],
    }});
    nodes.patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status)).await.expect("node status");
}

fn env_of(pod: &Pod) -> HashMap<String, String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

/// The first Secret the container's `envFrom` names that does not exist (and is not optional).
async fn missing_secret(client: &Client, pod: &Pod) -> Result<Option<String>, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let container = pod.spec.as_ref().and_then(|s| s.containers.first());
    let refs = container.and_then(|c| c.env_from.clone()).unwrap_or_default();
    for r in refs.into_iter().filter_map(|f| f.secret_ref).filter(|r| r.optional != Some(true)) {
        if secrets.get_opt(&r.name).await?.is_none() {
            return Ok(Some(r.name));
        }
    }
    Ok(None)
}

fn partition_of(pod: &Pod) -> Option<String> {
    let args = pod.spec.as_ref()?.containers.first()?.args.clone()?;
    let i = args.iter().position(|a| a == "--partition_ids")?;
    args.get(i + 1).cloned()
}

async fn step(client: &Client, pod: &Pod, started: &mut HashMap<String, Instant>) -> Result<(), kube::Error> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    if pod.metadata.deletion_timestamp.is_some() {
        // A kubelet confirms a deleted pod's end; without it the pod would stay Terminating.
        let params = kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        return api.delete(&pod.name_any(), &params).await.map(|_| ());
    }
    if phase == "Succeeded" || phase == "Failed" {
        return Ok(());
    }
    let uid = pod.uid().unwrap_or_default();
    // Pods that run to completion: a Job's, or any pod not restarted forever (a `helm test` hook's).
    let restart = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    let is_job = pod.owner_references().iter().any(|o| o.kind == "Job") || restart != "Always";
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let name = pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone()).unwrap_or_default();
    let Some(since) = started.get(&uid).copied() else {
        if let Some(missing) = missing_secret(client, pod).await? {
            // A kubelet cannot create the container and says why; it tries again later.
            let status = serde_json::json!({"status": {"containerStatuses": [{
                "name": name, "ready": false, "restartCount": 0, "image": "fake", "imageID": "",
                "state": {"waiting": {"reason": "CreateContainerConfigError",
                                      "message": format!("secret \"{missing}\" not found")}}}]}});
            api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
            return Ok(());
        }
        started.insert(uid, Instant::now());
        let status = serde_json::json!({"status": {
            "phase": "Running", "startTime": now, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": if is_job { "False" } else { "True" }}],
            "containerStatuses": [{"name": name, "ready": !is_job, "restartCount": 0, "image": "fake", "imageID": "fake",
                                   "state": {"running": {"startedAt": now}}}],
        }});
        api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
        return Ok(());
    };
    if !is_job {
        return Ok(());
    }
    let env = env_of(pod);
    let run_for = env.get("FAKE_RUN_SECONDS").and_then(|s| s.parse::<f64>().ok()).unwrap_or(1.0);
    if since.elapsed().as_secs_f64() < run_for {
        return Ok(());
    }
    let failing = match (env.get("FAKE_FAIL_PARTITIONS"), partition_of(pod)) {
        (Some(list), Some(p)) => list.split(',').any(|x| x.trim() == p),
        (Some(_), None) => false,
        (None, _) => true,
    };
    let code: i32 = if failing { env.get("FAKE_EXIT_CODE").and_then(|c| c.parse().ok()).unwrap_or(0) } else { 0 };
    let message = env.get("FAKE_TERMINATION_MESSAGE").cloned().unwrap_or_default();
    let status = serde_json::json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": name, "ready": false, "restartCount": 0, "image": "fake", "imageID": "fake",
            "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                      "message": message, "startedAt": now, "finishedAt": now}}}],
    }});
    api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}
