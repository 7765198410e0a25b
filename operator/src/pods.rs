//! The container every child runs: the `clip-retrieval` binary of the user's image with the subcommand's arguments,
//! the placement (resources, node selection, tolerations) and environment of the resource.

use crate::crd::Placement;
use k8s_openapi::api::core::v1::{
    Container, ContainerStateTerminated, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec,
    ResourceRequirements, SecretEnvSource, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// The binary every container runs (its command line is the operator's contract with the images).
pub const BINARY: &str = "clip-retrieval";

/// One container running `clip-retrieval <args>` with `placement`'s resources and environment.
pub fn container(name: &str, placement: &Placement, args: Vec<String>, extra_env: Vec<EnvVar>) -> Container {
    let mut env: Vec<EnvVar> = placement
        .env
        .iter()
        .map(|(k, v)| EnvVar { name: k.clone(), value: Some(v.clone()), ..Default::default() })
        .collect();
    env.extend(extra_env);
    Container {
        name: name.into(),
        image: Some(placement.image.clone()),
        command: Some(vec![BINARY.into()]),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        env_from: placement.env_from_secret.as_ref().map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: secret.clone(), optional: Some(false) }),
                ..Default::default()
            }]
        }),
        resources: resources(placement),
        // A failed container without a termination message reports the end of its log (the error).
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

/// Requests = limits for CPU and memory (predictable scheduling of batch work); GPUs as `nvidia.com/gpu` limits.
fn resources(placement: &Placement) -> Option<ResourceRequirements> {
    let r = &placement.resources;
    let mut requests = BTreeMap::new();
    for (key, value) in [("cpu", &r.cpu), ("memory", &r.memory)] {
        if let Some(v) = value {
            requests.insert(key.to_string(), Quantity(v.clone()));
        }
    }
    let mut limits = requests.clone();
    if r.gpu > 0 {
        limits.insert("nvidia.com/gpu".into(), Quantity(r.gpu.to_string()));
    }
    if limits.is_empty() {
        return None;
    }
    Some(ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: Some(limits),
        ..Default::default()
    })
}

/// A pod spec around `container` with `placement`'s node selection.
pub fn pod_spec(placement: &Placement, container: Container, restart_policy: Option<&str>) -> PodSpec {
    PodSpec {
        containers: vec![container],
        restart_policy: restart_policy.map(String::from),
        node_selector: (!placement.node_selector.is_empty()).then(|| placement.node_selector.clone()),
        tolerations: (!placement.tolerations.is_empty()).then(|| {
            placement
                .tolerations
                .iter()
                .map(|t| Toleration {
                    key: t.key.clone(),
                    operator: t.operator.clone(),
                    value: t.value.clone(),
                    effect: t.effect.clone(),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    }
}

/// An environment variable read from the pod's own annotation (downward API).
pub fn env_from_annotation(name: &str, annotation: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: format!("metadata.annotations['{annotation}']"),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The execution device of pods placed with `placement`: CUDA when they get GPUs.
pub fn device(placement: &Placement) -> clip_cli::Device {
    if placement.resources.gpu > 0 {
        clip_cli::Device::Cuda(0)
    } else {
        clip_cli::Device::Cpu
    }
}

/// Sets the value after `flag` in `argv` (for values only the kubelet knows, such as `$(PARTITION_ID)`).
pub fn replace_value(argv: &mut [String], flag: &str, value: &str) {
    if let Some(at) = argv.iter().position(|a| a == flag) {
        if let Some(v) = argv.get_mut(at + 1) {
            *v = value.to_string();
        }
    }
}

/// The termination state of the last pod of Job `job` that ended with (`success`) or without success.
pub async fn last_termination(
    client: &kube::Client,
    namespace: &str,
    job: &str,
    success: bool,
) -> Result<Option<ContainerStateTerminated>, kube::Error> {
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
    let list = pods.list(&kube::api::ListParams::default().labels(&format!("job-name={job}"))).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.terminated.clone())
        .filter(|t| (t.exit_code == 0) == success)
        .max_by_key(|t| t.finished_at.as_ref().map(|f| f.0)))
}

/// `; last pod exited with code N: first line of its message` (empty when no pod reported).
pub fn describe_failure(terminated: Option<&ContainerStateTerminated>) -> String {
    let Some(t) = terminated else { return String::new() };
    let message = t.message.clone().or_else(|| t.reason.clone()).unwrap_or_default();
    // A log tail (FallbackToLogsOnError) ends with the error; a written message starts with it.
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let error_line = lines.iter().rev().find(|l| l.to_ascii_lowercase().starts_with("error"));
    let first_line = error_line.or(lines.first()).copied().unwrap_or("");
    let mut out = format!("; last pod exited with code {}", t.exit_code);
    if !first_line.is_empty() {
        out.push_str(": ");
        out.push_str(first_line);
    }
    out
}

/// Where a Job stands, from its conditions.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Neither Complete nor Failed yet.
    Running,
    /// Condition Complete.
    Succeeded,
    /// Condition Failed: its reason and the attempts made (`BackoffLimitExceeded after 2 attempt(s)`).
    Failed(String),
}

/// The state of `job`.
pub fn job_state(job: &k8s_openapi::api::batch::v1::Job) -> JobState {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let is = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if is("Complete").is_some() {
        return JobState::Succeeded;
    }
    if let Some(c) = is("Failed") {
        let attempts = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
        return JobState::Failed(format!(
            "{} after {attempts} attempt(s)",
            c.reason.clone().unwrap_or_else(|| "Failed".into())
        ));
    }
    JobState::Running
}
