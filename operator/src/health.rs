//! Pods that cannot start: a missing Secret or ConfigMap (`CreateContainerConfigError`), an image that cannot be
//! pulled, a container that keeps crashing. The kubelet retries these forever and the Job or Deployment shows
//! nothing; the resource reports the pod's reason and message in a `Degraded` condition, and fails (reason = the
//! pod's) once the condition has held longer than the operator's `--stuck-pod-timeout-seconds`.

use crate::crd::Condition;
use crate::status::set_condition;
use crate::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use std::time::Duration;

/// Waiting reasons that do not resolve by waiting.
pub const STUCK_REASONS: [&str; 7] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
];

/// A pod whose container waits for a reason in [`STUCK_REASONS`].
#[derive(Debug, Clone, PartialEq)]
pub struct StuckPod {
    /// Pod name.
    pub pod: String,
    /// The kubelet's reason (`CreateContainerConfigError`, ...).
    pub reason: String,
    /// The kubelet's message (`secret "s3" not found`).
    pub message: String,
}

/// The first stuck pod (by name) among those `selector` selects, if any.
pub async fn stuck_pod(client: &Client, namespace: &str, selector: &str) -> Result<Option<StuckPod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut list = pods.list(&ListParams::default().labels(selector)).await?.items;
    list.sort_by_key(|p| p.name_any());
    Ok(list.iter().find_map(stuck))
}

/// Whether `pod` is stuck, and why.
pub fn stuck(pod: &Pod) -> Option<StuckPod> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let containers = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    containers.filter_map(|c| c.state.as_ref()?.waiting.as_ref()).find_map(|w| {
        let reason = w.reason.clone().filter(|r| STUCK_REASONS.contains(&r.as_str()))?;
        Some(StuckPod { pod: pod.name_any(), reason, message: w.message.clone().unwrap_or_default() })
    })
}

/// What the pods' health means for the resource.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Nothing stuck (a former `Degraded` from pods is cleared).
    Healthy,
    /// A pod is stuck: `Degraded` is set; check again after the returned delay.
    Degraded(Duration),
    /// Stuck past the timeout: fail the resource with this reason and message.
    Failed(String, String),
}

/// Sets `Degraded` from `stuck` and decides whether the resource fails: when `Degraded` has been True (for a
/// stuck pod) for longer than `timeout`.
pub fn assess(conditions: &mut Vec<Condition>, stuck: Option<&StuckPod>, timeout: Duration) -> Verdict {
    let Some(s) = stuck else {
        if conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "True") {
            set_condition(conditions, "Degraded", false, "Recovered", "");
        }
        return Verdict::Healthy;
    };
    let message = format!("pod {}: {}: {}", s.pod, s.reason, s.message);
    let was_stuck = conditions.iter().find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == s.reason);
    let since = was_stuck.and_then(|c| c.last_transition_time.clone());
    set_condition(conditions, "Degraded", true, &s.reason, &message);
    let held = since.as_deref().and_then(seconds_since).unwrap_or(0);
    if held >= timeout.as_secs() {
        return Verdict::Failed(
            s.reason.clone(),
            format!("{message} (for {held}s, over the {}s limit)", timeout.as_secs()),
        );
    }
    let left = timeout.as_secs() - held;
    Verdict::Degraded(Duration::from_secs(left.clamp(1, 30)))
}

/// Seconds from an RFC 3339 time to now.
fn seconds_since(time: &str) -> Option<u64> {
    let then: k8s_openapi::jiff::Timestamp = time.parse().ok()?;
    let now = k8s_openapi::jiff::Timestamp::now();
    u64::try_from(now.as_second() - then.as_second()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting_pod(reason: &str, message: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ej-p0-abcde"},
            "status": {"containerStatuses": [{"name": "inference", "ready": false, "restartCount": 0, "image": "i",
                "imageID": "", "state": {"waiting": {"reason": reason, "message": message}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn config_and_image_errors_are_stuck_container_creation_is_not() {
        let s = stuck(&waiting_pod("CreateContainerConfigError", "secret \"s3\" not found")).unwrap();
        assert_eq!((s.pod.as_str(), s.reason.as_str()), ("ej-p0-abcde", "CreateContainerConfigError"));
        assert_eq!(s.message, "secret \"s3\" not found");
        assert!(stuck(&waiting_pod("ImagePullBackOff", "Back-off pulling image")).is_some());
        assert_eq!(stuck(&waiting_pod("ContainerCreating", "")), None);
        assert_eq!(stuck(&Pod::default()), None);
    }

    #[test]
    fn a_stuck_pod_degrades_then_fails_after_the_timeout_and_recovery_clears_it() {
        let s = stuck(&waiting_pod("CreateContainerConfigError", "secret \"s3\" not found")).unwrap();
        let mut conditions = Vec::new();
        let timeout = Duration::from_secs(600);
        assert_eq!(assess(&mut conditions, Some(&s), timeout), Verdict::Degraded(Duration::from_secs(30)));
        let degraded = &conditions[0];
        assert_eq!((degraded.type_.as_str(), degraded.status.as_str()), ("Degraded", "True"));
        assert_eq!(degraded.message, "pod ej-p0-abcde: CreateContainerConfigError: secret \"s3\" not found");
        // Held since long ago: over the limit.
        conditions[0].last_transition_time = Some("2020-01-01T00:00:00Z".into());
        match assess(&mut conditions, Some(&s), timeout) {
            Verdict::Failed(reason, message) => {
                assert_eq!(reason, "CreateContainerConfigError");
                assert!(message.contains("over the 600s limit"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(assess(&mut conditions, None, timeout), Verdict::Healthy);
        assert_eq!((conditions[0].status.as_str(), conditions[0].reason.as_str()), ("False", "Recovered"));
        let mut clean = Vec::new();
        assert_eq!(assess(&mut clean, None, timeout), Verdict::Healthy);
        assert!(clean.is_empty(), "no Degraded condition on a resource that never had one");
    }
}
