//! Helpers of the operator and chart tests: the operator process, CRDs, our resources as dynamic objects, waits.

use super::ControlPlane;
use crate::{free_port, http_get, repo_root, wait_for_port};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `clip-operator` process watching one namespace; killed when dropped.
pub struct Operator {
    child: Child,
    /// Port of its /metrics, /healthz, /readyz.
    pub port: u16,
    log: std::path::PathBuf,
}

impl Operator {
    /// Starts the operator as the admin user.
    pub fn start(plane: &ControlPlane, namespace: &str, identity: &str) -> Operator {
        Operator::start_as(plane, &plane.kubeconfig, namespace, identity)
    }

    /// Starts the operator as the admin user with extra flags.
    pub fn start_with(plane: &ControlPlane, namespace: &str, identity: &str, flags: &[&str]) -> Operator {
        Operator::launch(plane, &plane.kubeconfig, namespace, identity, flags)
    }

    /// Starts the operator with `kubeconfig` (e.g. a ServiceAccount's), watching `namespace` with its Lease there.
    pub fn start_as(plane: &ControlPlane, kubeconfig: &Path, namespace: &str, identity: &str) -> Operator {
        Operator::launch(plane, kubeconfig, namespace, identity, &[])
    }

    fn launch(plane: &ControlPlane, kubeconfig: &Path, namespace: &str, identity: &str, flags: &[&str]) -> Operator {
        let exe = std::env::current_exe().expect("test executable");
        let bin = exe.parent().and_then(Path::parent).expect("target/<profile>").join("clip-operator");
        assert!(bin.is_file(), "{} not built", bin.display());
        let port = free_port();
        let log = plane.dir.join("logs").join(format!("operator-{namespace}-{identity}-{port}.log"));
        let child = Command::new(bin)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .args(["--namespace", namespace, "--lease-namespace", namespace, "--identity", identity])
            .args(["--lease-duration-seconds", "4", "--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("operator log"))
            .spawn()
            .expect("start clip-operator");
        wait_for_port(port, Duration::from_secs(20));
        Operator { child, port, log }
    }

    /// Its `/metrics` text (empty when unreachable).
    pub fn metrics(&self) -> String {
        http_get(self.port, "/metrics").map(|(_, body)| body).unwrap_or_default()
    }

    /// Whether it holds the Lease now.
    pub fn is_leader(&self) -> bool {
        self.metrics().lines().any(|l| l.trim() == "clip_operator_leader 1")
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Applies the CRDs from `crds/` (as users do) and waits until they are served.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (file, _) in clip_operator::crds() {
        let text = std::fs::read_to_string(repo_root().join("crds").join(file)).expect("crds/ file");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("CRD YAML");
        let params = PatchParams::apply("clip-tests").force();
        api.patch(&crd.name_any(), &params, &Patch::Apply(&crd)).await.expect("apply CRD");
    }
    for (file, _) in clip_operator::crds() {
        let name = format!("{}.clip-retrieval.io", file.trim_end_matches(".yaml"));
        wait_until(Duration::from_secs(30), &format!("CRD {name} established"), || async {
            let crd = api.get(&name).await.ok()?;
            let conditions = crd.status?.conditions?;
            conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        })
        .await;
    }
}

/// Polls `check` every 200 ms until it returns Some, or panics with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Test setup: the shared control plane, CRDs, a fresh namespace and a client.
pub async fn setup(prefix: &str) -> (&'static ControlPlane, Client, String) {
    let plane = ControlPlane::shared();
    let client = plane.client().await;
    install_crds(&client).await;
    let namespace = plane.namespace(prefix).await;
    (plane, client, namespace)
}

/// The ApiResource of one of our kinds.
pub fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("clip-retrieval.io", "v1alpha1", kind),
        &format!("{}s", kind.to_lowercase()),
    )
}

/// A dynamic Api of one of our kinds in `namespace`.
pub fn custom(client: &Client, namespace: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &resource(kind))
}

/// Creates one of our resources from its spec.
pub async fn create(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    spec: Value,
) -> Result<DynamicObject, kube::Error> {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "clip-retrieval.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec,
    }))
    .expect("object");
    custom(client, namespace, kind).create(&PostParams::default(), &obj).await
}

/// The status of one of our resources (null when absent).
pub async fn status(client: &Client, namespace: &str, kind: &str, name: &str) -> Value {
    custom(client, namespace, kind).get(name).await.map(|o| o.data["status"].clone()).unwrap_or(Value::Null)
}

/// Waits for `status.phase`, panicking with the last status after `timeout`.
pub async fn wait_phase(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
    phase: &str,
    timeout: Duration,
) -> Value {
    let start = Instant::now();
    loop {
        let s = status(client, namespace, kind, name).await;
        if s["phase"] == phase {
            return s;
        }
        assert!(start.elapsed() < timeout, "{kind} {name} not {phase} after {timeout:?}: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The condition of `type_` in a status (null when absent).
pub fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == type_)).unwrap_or(&Value::Null)
}

/// Every Job of the namespace.
pub async fn jobs(client: &Client, namespace: &str) -> Vec<Job> {
    Api::<Job>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.expect("jobs").items
}

/// The pods matching a label selector.
pub async fn pods_with(client: &Client, namespace: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .expect("pods")
        .items
}

/// Reasons of the Events regarding `name`.
pub async fn event_reasons(client: &Client, namespace: &str, name: &str) -> Vec<String> {
    let events =
        Api::<Event>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.expect("events");
    events
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// Whether a Job is Complete or Failed.
pub fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True"))
}
