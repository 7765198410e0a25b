//! The rules of the Pod Security Standards "restricted" profile (baseline included), checked on a pod spec the
//! way the PodSecurity admission controller checks them (Kubernetes 1.25+ `pod-security.kubernetes.io/enforce:
//! restricted`). Tests run it over every pod spec the operator can build, so a namespace enforcing the profile
//! admits every child; users who loosen their `podTemplate` on purpose are not checked at run time.

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};

/// Volume types the restricted profile allows.
const ALLOWED_VOLUMES: [&str; 8] =
    ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

/// Every rule `pod` breaks, one sentence each, naming the container or volume (empty: admitted).
pub fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        out.push("host namespaces (hostNetwork, hostPID, hostIPC) must not be used".into());
    }
    for v in pod.volumes.iter().flatten() {
        if let Some(kind) = volume_kind(v).filter(|k| !ALLOWED_VOLUMES.contains(k)) {
            out.push(format!("volume {:?} is of type {kind}, which the restricted profile does not allow", v.name));
        }
    }
    let pod_sc = pod.security_context.as_ref();
    if pod_sc.and_then(|s| s.run_as_user) == Some(0) {
        out.push("pod securityContext.runAsUser must not be 0".into());
    }
    if let Some(sysctls) = pod_sc.and_then(|s| s.sysctls.as_ref()).filter(|s| !s.is_empty()) {
        out.push(format!("{} sysctl(s) set; only the safe set is allowed and none is needed", sysctls.len()));
    }
    let pod_seccomp = pod_sc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str());
    let pod_non_root = pod_sc.and_then(|s| s.run_as_non_root);
    let containers = pod.containers.iter().chain(pod.init_containers.iter().flatten());
    for c in containers {
        out.extend(container_violations(c, pod_seccomp, pod_non_root));
    }
    out
}

fn container_violations(c: &Container, pod_seccomp: Option<&str>, pod_non_root: Option<bool>) -> Vec<String> {
    let mut out = Vec::new();
    let name = &c.name;
    let sc = c.security_context.as_ref();
    if sc.and_then(|s| s.privileged) == Some(true) {
        out.push(format!("container {name:?} must not be privileged"));
    }
    if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
        out.push(format!("container {name:?} must set securityContext.allowPrivilegeEscalation=false"));
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    if !caps.and_then(|c| c.drop.as_ref()).is_some_and(|d| d.iter().any(|x| x == "ALL")) {
        out.push(format!("container {name:?} must drop ALL capabilities"));
    }
    if let Some(added) = caps.and_then(|c| c.add.as_ref()) {
        for cap in added.iter().filter(|c| c.as_str() != "NET_BIND_SERVICE") {
            out.push(format!("container {name:?} adds capability {cap}; only NET_BIND_SERVICE may be added"));
        }
    }
    let non_root = sc.and_then(|s| s.run_as_non_root).or(pod_non_root);
    if non_root != Some(true) {
        out.push(format!("container {name:?} must run with runAsNonRoot=true (on the pod or the container)"));
    }
    if sc.and_then(|s| s.run_as_user) == Some(0) {
        out.push(format!("container {name:?} must not set runAsUser=0"));
    }
    let seccomp = sc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str()).or(pod_seccomp);
    if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
        out.push(format!("container {name:?} needs seccompProfile RuntimeDefault or Localhost (pod or container)"));
    }
    if c.ports.iter().flatten().any(|p| p.host_port.is_some_and(|h| h != 0)) {
        out.push(format!("container {name:?} must not use host ports"));
    }
    out
}

/// The source type of a volume, by its one set field (`None`: none set, which the API server refuses anyway).
fn volume_kind(v: &Volume) -> Option<&'static str> {
    let json = serde_json::to_value(v).ok()?;
    let kinds = [
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "gitRepo",
        "glusterfs",
        "hostPath",
        "image",
        "iscsi",
        "nfs",
        "persistentVolumeClaim",
        "photonPersistentDisk",
        "portworxVolume",
        "projected",
        "quobyte",
        "rbd",
        "scaleIO",
        "secret",
        "storageos",
        "vsphereVolume",
    ];
    kinds.into_iter().find(|k| json.get(k).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostPathVolumeSource, SecurityContext};

    #[test]
    fn an_unconfigured_pod_breaks_the_rules_it_should() {
        let pod = PodSpec {
            containers: vec![Container { name: "c".into(), ..Default::default() }],
            volumes: Some(vec![Volume {
                name: "host".into(),
                host_path: Some(HostPathVolumeSource { path: "/".into(), ..Default::default() }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let v = restricted_violations(&pod).join("\n");
        for rule in ["hostPath", "allowPrivilegeEscalation", "drop ALL", "runAsNonRoot", "seccompProfile"] {
            assert!(v.contains(rule), "missing {rule} in:\n{v}");
        }
        let mut root = pod.clone();
        root.volumes = None;
        root.containers[0].security_context = Some(SecurityContext { run_as_user: Some(0), ..Default::default() });
        assert!(restricted_violations(&root).join("\n").contains("runAsUser=0"));
    }
}
