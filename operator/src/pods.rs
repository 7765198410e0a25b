//! The container every child runs: the `clip-retrieval` binary of the user's image with the subcommand's arguments,
//! the placement (resources, node selection, tolerations) and environment of the resource, and the pod around it:
//! restricted by default (Pod Security "restricted": non-root, RuntimeDefault seccomp, no capabilities, no
//! privilege escalation; also a read-only root filesystem and no API token), with the user's `podTemplate` merged on.

use crate::crd::{Placement, PodTemplate};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerStateTerminated, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource,
    ObjectFieldSelector, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecretEnvSource, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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

/// Writable places under a read-only root filesystem: an emptyDir each, unless the pod template mounts a volume
/// there. `HOME` points at the cache, where model and index copies go (`~/.cache/clip-retrieval`).
pub const SCRATCH: [(&str, &str); 2] = [("scratch-tmp", "/tmp"), ("scratch-cache", "/var/cache/clip-retrieval")];

/// A pod template: `labels` (the operator's, which win over the user's) and `annotations` on the metadata, and a
/// pod spec around `container` with `placement`'s node selection and pod template, restricted by default.
pub fn pod_template(
    placement: &Placement,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    container: Container,
    restart_policy: Option<&str>,
) -> PodTemplateSpec {
    let user = placement.pod_template.clone().unwrap_or_default();
    let mut all_labels = user.labels.clone();
    all_labels.extend(labels);
    let mut all_annotations = user.annotations.clone();
    all_annotations.extend(annotations);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(all_labels),
            annotations: (!all_annotations.is_empty()).then_some(all_annotations),
            ..Default::default()
        }),
        spec: Some(pod_spec(placement, &user, container, restart_policy)),
    }
}

/// The restricted pod security context, with the user's set fields over it.
fn pod_security(user: Option<&PodSecurityContext>) -> PodSecurityContext {
    let mut sc = user.cloned().unwrap_or_default();
    sc.run_as_non_root.get_or_insert(true);
    sc.seccomp_profile.get_or_insert(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() });
    sc
}

/// The restricted container security context, with the user's set fields over it.
fn container_security(user: Option<&SecurityContext>) -> SecurityContext {
    let mut sc = user.cloned().unwrap_or_default();
    sc.allow_privilege_escalation.get_or_insert(false);
    sc.privileged.get_or_insert(false);
    sc.read_only_root_filesystem.get_or_insert(true);
    sc.run_as_non_root.get_or_insert(true);
    sc.capabilities.get_or_insert(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() });
    sc
}

/// The container's security context, scratch mounts and environment, and the pod's user volumes and mounts.
fn apply_template(user: &PodTemplate, container: &mut Container, pod: &mut PodSpec) {
    container.security_context = Some(container_security(user.container_security_context.as_ref()));
    let mut mounts = container.volume_mounts.take().unwrap_or_default();
    mounts.extend(user.volume_mounts.iter().cloned());
    let mut volumes = pod.volumes.take().unwrap_or_default();
    volumes.extend(user.volumes.iter().cloned());
    for (name, path) in SCRATCH {
        if mounts.iter().any(|m| m.mount_path.trim_end_matches('/') == path) {
            continue;
        }
        mounts.push(VolumeMount { name: name.into(), mount_path: path.into(), ..Default::default() });
        volumes.push(Volume {
            name: name.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    }
    let env = container.env.get_or_insert_with(Vec::new);
    for (name, value) in [("HOME", SCRATCH[1].1), ("TMPDIR", SCRATCH[0].1)] {
        if !env.iter().any(|e| e.name == name) {
            env.push(EnvVar { name: name.into(), value: Some(value.into()), ..Default::default() });
        }
    }
    container.volume_mounts = Some(mounts);
    pod.volumes = Some(volumes);
}

/// The pod spec of [`pod_template`], `user` being `placement`'s pod template. Volumes and mounts the caller set on
/// `container` before are kept (the user's are added after them).
fn pod_spec(
    placement: &Placement,
    user: &PodTemplate,
    mut container: Container,
    restart_policy: Option<&str>,
) -> PodSpec {
    let mut pod = PodSpec {
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
        service_account_name: user.service_account_name.clone(),
        automount_service_account_token: Some(user.automount_service_account_token.unwrap_or(false)),
        image_pull_secrets: (!user.image_pull_secrets.is_empty()).then(|| user.image_pull_secrets.clone()),
        affinity: user.affinity.clone(),
        priority_class_name: user.priority_class_name.clone(),
        runtime_class_name: user.runtime_class_name.clone(),
        topology_spread_constraints: (!user.topology_spread_constraints.is_empty())
            .then(|| user.topology_spread_constraints.clone()),
        security_context: Some(pod_security(user.security_context.as_ref())),
        ..Default::default()
    };
    apply_template(user, &mut container, &mut pod);
    pod.containers = vec![container];
    pod
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

/// Deletes the unfinished Jobs among `jobs` (with their pods): a resource that failed stops its work.
pub async fn stop_jobs(
    api: &kube::Api<k8s_openapi::api::batch::v1::Job>,
    jobs: &[k8s_openapi::api::batch::v1::Job],
) -> crate::Result<()> {
    for job in jobs.iter().filter(|j| job_state(j) == JobState::Running) {
        let name = kube::ResourceExt::name_any(job);
        crate::context::delete_if_present(api, &name).await?;
    }
    Ok(())
}
