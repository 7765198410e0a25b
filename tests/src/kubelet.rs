//! The test-only "process kubelet": it runs each pod bound to the fake node as a local process, the project's
//! binaries standing in for the images (`clip-retrieval`, `clip-operator`). It resolves the container's env
//! (values, downward API, Secrets via `envFrom`/`secretKeyRef`; a missing one leaves the container waiting in
//! `CreateContainerConfigError`, as a kubelet does), expands `$(VAR)` in args, materialises ConfigMap
//! volumes and the termination-message file in a folder per pod (rewriting those paths in the args), gives each pod
//! its own loopback port (the `--port N` / `:N` of the container port, recorded in the annotation
//! [`PORT_ANNOTATION`]), gives pods with a ServiceAccount a kubeconfig holding that account's token, probes
//! readiness over HTTP, and reports Running / Succeeded / Failed with the exit code and termination message.
//! Neither cluster DNS nor kube-proxy runs here: in a ConfigMap file, a Service URL `http://NAME.NS.svc:PORT`
//! becomes the loopback port of a ready pod that Service selects (the pod waits in Pending until there is one).

use crate::free_port;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// Annotation with the loopback port a pod's server listens on.
pub const PORT_ANNOTATION: &str = "test.clip-retrieval.io/port";
/// Annotation with the pod's process id (tests kill it to simulate a crash).
pub const PID_ANNOTATION: &str = "test.clip-retrieval.io/pid";

/// One running pod.
struct Running {
    child: Child,
    /// Kills `child` if this test process ends first: the kubelet lives in a static control plane that is never
    /// dropped, so without it a served pod (`clip-retrieval back`) outlived the tests.
    watchdog: Child,
    dir: PathBuf,
    termination: PathBuf,
    fallback_to_logs: bool,
    readiness: Option<(u16, String)>,
    ready: bool,
    namespace: String,
    name: String,
    is_job: bool,
    started: Instant,
}

/// Prefix of a start error a kubelet reports as the container's waiting reason (and retries).
const CONFIG_ERROR: &str = "CreateContainerConfigError: ";

/// A kubelet's words for a Secret it cannot read: `secret "NAME" not found` for a missing one.
fn config_error(name: &str, e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => format!("{CONFIG_ERROR}secret \"{name}\" not found"),
        other => format!("Secret {name}: {other}"),
    }
}

/// State of the process kubelet.
pub struct ProcessKubelet {
    client: Client,
    /// Folder of the pods' folders.
    root: PathBuf,
    /// The admin kubeconfig (to mint ServiceAccount kubeconfigs).
    kubeconfig: PathBuf,
    /// Where the project's binaries are.
    bin_dir: PathBuf,
    running: HashMap<String, Running>,
}

impl ProcessKubelet {
    /// A kubelet for node `super::kube::NODE` keeping pod folders under `root`.
    pub fn new(client: Client, root: PathBuf, kubeconfig: PathBuf, bin_dir: PathBuf) -> Self {
        ProcessKubelet { client, root, kubeconfig, bin_dir, running: HashMap::new() }
    }

    /// One pass over the node's pods.
    pub async fn step(&mut self) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let Ok(list) = pods.list(&ListParams::default().fields(&format!("spec.nodeName={}", crate::kube::NODE))).await
        else {
            return;
        };
        for pod in &list.items {
            let uid = pod.uid().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                if let Some(mut r) = self.running.remove(&uid) {
                    let _ = Command::new("kill").args(["-TERM", &r.child.id().to_string()]).status();
                    let _ = r.child.wait();
                }
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
                let _ = api
                    .delete(&pod.name_any(), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
                    .await;
                continue;
            }
            if phase == "Pending" && !self.running.contains_key(&uid) {
                match self.start(pod).await {
                    Ok(r) => {
                        self.running.insert(uid, r);
                    }
                    Err(e) => {
                        eprintln!("process kubelet: cannot start {}: {e}", pod.name_any());
                        if let Some(message) = e.strip_prefix(CONFIG_ERROR) {
                            self.report_waiting(pod, CONFIG_ERROR.trim_end_matches(": "), message).await;
                        }
                    }
                }
            }
        }
        self.reap().await;
    }

    /// Reports the container as waiting with `reason`, as a kubelet does for a pod it cannot start (and retries).
    async fn report_waiting(&self, pod: &Pod, reason: &str, message: &str) {
        let Some(c) = pod.spec.as_ref().and_then(|s| s.containers.first()) else { return };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let status = serde_json::json!({"status": {"containerStatuses": [{
            "name": c.name, "ready": false, "restartCount": 0, "image": c.image, "imageID": "",
            "state": {"waiting": {"reason": reason, "message": message}},
        }]}});
        let _ = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await;
    }

    async fn start(&self, pod: &Pod) -> Result<Running, String> {
        let namespace = pod.namespace().unwrap_or_default();
        let spec = pod.spec.as_ref().ok_or("no spec")?;
        let c = spec.containers.first().ok_or("no container")?;
        let dir = self.root.join(&namespace).join(pod.name_any());
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut env = self.env(pod, c, &namespace).await?;
        // Paths inside the "container" -> the pod's folder.
        let mut rewrites: Vec<(String, String)> = Vec::new();
        let mut scratch: Vec<(String, String)> = Vec::new();
        for mount in c.volume_mounts.clone().unwrap_or_default() {
            let volume = spec.volumes.iter().flatten().find(|v| v.name == mount.name).ok_or("volume of a mount")?;
            let local = dir.join(format!("volume-{}", mount.name));
            std::fs::create_dir_all(&local).map_err(|e| e.to_string())?;
            if let Some(cm) = &volume.config_map {
                let map = Api::<ConfigMap>::namespaced(self.client.clone(), &namespace)
                    .get(&cm.name)
                    .await
                    .map_err(|e| e.to_string())?;
                for (k, v) in map.data.unwrap_or_default() {
                    let v = self.resolve_services(&v).await?;
                    std::fs::write(local.join(k), v).map_err(|e| e.to_string())?;
                }
            }
            // An emptyDir at /tmp must not capture the host paths under /tmp that tests pass in args (a real
            // pod would not see those at all): emptyDirs move only env values (HOME, TMPDIR).
            if volume.empty_dir.is_some() {
                scratch.push((mount.mount_path.clone(), local.display().to_string()));
            } else {
                rewrites.push((mount.mount_path.clone(), local.display().to_string()));
            }
        }
        let termination = dir.join("termination-log");
        let termination_path = c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
        rewrites.push((termination_path, termination.display().to_string()));
        // Env values naming a mounted path (HOME, TMPDIR on the scratch emptyDirs) point into the pod's folder too.
        for value in env.values_mut() {
            for (from, to) in rewrites.iter().chain(&scratch) {
                if value == from || value.starts_with(&format!("{from}/")) {
                    *value = value.replacen(from.as_str(), to, 1);
                }
            }
        }
        let container_port = c.ports.as_ref().and_then(|p| p.first()).map(|p| p.container_port);
        let port = container_port.map(|_| free_port());
        let mut args: Vec<String> = c.args.clone().unwrap_or_default().iter().map(|a| expand(a, &env)).collect();
        for a in args.iter_mut() {
            for (from, to) in &rewrites {
                if a.starts_with(from.as_str()) {
                    *a = a.replacen(from.as_str(), to, 1);
                }
            }
        }
        if let (Some(n), Some(p)) = (container_port, port) {
            let n = n.to_string();
            for i in 0..args.len() {
                if args[i] == n && i > 0 && args[i - 1] == "--port" {
                    args[i] = p.to_string();
                } else if args[i].ends_with(&format!(":{n}")) {
                    args[i] = format!("{}:{p}", &args[i][..args[i].len() - n.len() - 1]);
                }
            }
        }
        let program = match c.command.as_ref().and_then(|c| c.first()).map(String::as_str) {
            Some(name @ ("clip-retrieval" | "clip-operator")) => self.bin_dir.join(name),
            other => return Err(format!("no local stand-in for the command {other:?}")),
        };
        if let Some(sa) = spec.service_account_name.as_deref().filter(|_| program.ends_with("clip-operator")) {
            let kubeconfig =
                crate::kube::service_account_kubeconfig(&self.client, &self.kubeconfig, &dir, &namespace, sa).await;
            env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
        }
        // What the images' ENV sets (docker/*.Dockerfile): the ONNX Runtime library and the shipped model.
        let root = crate::repo_root();
        env.entry("ORT_DYLIB_PATH".into())
            .or_insert_with(|| root.join(".cache/onnxruntime/libonnxruntime.so.1.32.0").display().to_string());
        env.entry("CLIP_RETRIEVAL_MODEL".into()).or_insert_with(|| crate::shipped_model().display().to_string());
        env.entry("HOME".into()).or_insert_with(|| dir.display().to_string());
        env.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
        let child = Command::new(&program)
            .args(&args)
            .env_clear()
            .envs(&env)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        let readiness =
            c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| Some((port?, h.path.clone()?)));
        let is_job = pod.owner_references().iter().any(|o| o.kind == "Job");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let mut annotations = serde_json::json!({ PID_ANNOTATION: child.id().to_string() });
        if let Some(p) = port {
            annotations[PORT_ANNOTATION] = serde_json::json!(p.to_string());
        }
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        api.patch(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| e.to_string())?;
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = serde_json::json!({"status": {
            "phase": "Running", "startTime": now, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": if readiness.is_none() && !is_job { "True" } else { "False" }}],
            "containerStatuses": [{"name": c.name, "ready": readiness.is_none() && !is_job, "restartCount": 0,
                                   "image": c.image, "imageID": "local", "state": {"running": {"startedAt": now}}}],
        }});
        api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|e| e.to_string())?;
        let watchdog = crate::kube::watchdog(std::slice::from_ref(&child));
        Ok(Running {
            child,
            watchdog,
            dir,
            termination,
            fallback_to_logs: c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"),
            ready: readiness.is_none() && !is_job,
            readiness,
            namespace,
            name: pod.name_any(),
            is_job,
            started: Instant::now(),
        })
    }

    /// The container's environment: values, downward API fields, Secret keys and whole Secrets.
    async fn env(&self, pod: &Pod, c: &Container, namespace: &str) -> Result<BTreeMap<String, String>, String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let decode = |s: &Secret, key: &str| -> Option<String> {
            s.data.as_ref()?.get(key).map(|b| String::from_utf8_lossy(&b.0).into_owned())
        };
        let mut env = BTreeMap::new();
        for from in c.env_from.clone().unwrap_or_default() {
            if let Some(r) = from.secret_ref {
                let secret = secrets.get(&r.name).await.map_err(|e| config_error(&r.name, e))?;
                for key in secret.data.clone().unwrap_or_default().keys() {
                    env.insert(key.clone(), decode(&secret, key).unwrap_or_default());
                }
            }
        }
        for var in c.env.clone().unwrap_or_default() {
            let value = match (&var.value, &var.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    if let Some(f) = &from.field_ref {
                        field(pod, &f.field_path)
                    } else if let Some(k) = &from.secret_key_ref {
                        let secret = secrets.get(&k.name).await.map_err(|e| config_error(&k.name, e))?;
                        decode(&secret, &k.key).unwrap_or_default()
                    } else {
                        String::new()
                    }
                }
                _ => String::new(),
            };
            env.insert(var.name, value);
        }
        Ok(env)
    }

    /// `text` with every `http://NAME.NS.svc:PORT` replaced by `http://127.0.0.1:<port>` of a ready pod selected by
    /// Service NAME in NS (the first by name); an error (the pod stays Pending) while there is none.
    async fn resolve_services(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find("http://") {
            out.push_str(&rest[..at + 7]);
            rest = &rest[at + 7..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ':'))
                .unwrap_or(rest.len());
            let authority = &rest[..end];
            let Some((host, _port)) = authority.split_once(':') else { continue };
            let labels: Vec<&str> = host.split('.').collect();
            if labels.len() != 3 || labels[2] != "svc" {
                continue;
            }
            let (name, namespace) = (labels[0], labels[1]);
            let service = Api::<k8s_openapi::api::core::v1::Service>::namespaced(self.client.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| format!("Service {namespace}/{name}: {e}"))?;
            let selector = service.spec.and_then(|s| s.selector).unwrap_or_default();
            let selector: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let pods = Api::<Pod>::namespaced(self.client.clone(), namespace)
                .list(&ListParams::default().labels(&selector.join(",")))
                .await
                .map_err(|e| e.to_string())?;
            let mut ready: Vec<&Pod> = pods
                .items
                .iter()
                .filter(|p| {
                    let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
                    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .collect();
            ready.sort_by_key(|p| p.name_any());
            let port = ready
                .first()
                .and_then(|p| p.annotations().get(PORT_ANNOTATION).cloned())
                .ok_or_else(|| format!("waiting for a ready pod behind Service {namespace}/{name}"))?;
            out.push_str(&format!("127.0.0.1:{port}"));
            rest = &rest[end..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Reports finished processes and readiness changes.
    async fn reap(&mut self) {
        let mut done = Vec::new();
        for (uid, r) in self.running.iter_mut() {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &r.namespace);
            match r.child.try_wait() {
                Ok(Some(exit)) => {
                    let code = exit.code().unwrap_or(137);
                    let mut message = std::fs::read_to_string(&r.termination).unwrap_or_default();
                    if message.is_empty() && code != 0 && r.fallback_to_logs {
                        let log = std::fs::read_to_string(r.dir.join("log")).unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(20).collect();
                        message = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
                    }
                    message.truncate(4096);
                    let now = k8s_openapi::jiff::Timestamp::now().to_string();
                    let status = serde_json::json!({"status": {
                        "phase": if code == 0 { "Succeeded" } else { "Failed" },
                        "conditions": [{"type": "Ready", "status": "False"}],
                        "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": "local", "imageID": "local",
                            "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                                      "message": message, "finishedAt": now}}}],
                    }});
                    let _ = api.patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&status)).await;
                    done.push(uid.clone());
                }
                Ok(None) if !r.is_job && !r.ready => {
                    if let Some((port, path)) = &r.readiness {
                        if crate::http_get(*port, path).map(|(code, _)| code == 200).unwrap_or(false) {
                            r.ready = true;
                            let status = serde_json::json!({"status": {
                                "conditions": [{"type": "Ready", "status": "True"}],
                                "containerStatuses": [{"name": "main", "ready": true, "restartCount": 0, "image": "local",
                                                       "imageID": "local", "state": {"running": {"startedAt": k8s_openapi::jiff::Timestamp::now().to_string()}}}],
                            }});
                            let _ = api.patch_status(&r.name, &PatchParams::default(), &Patch::Merge(&status)).await;
                            let _ = r.started;
                        }
                    }
                }
                _ => {}
            }
        }
        for uid in done {
            self.running.remove(&uid);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
    }
}

impl Drop for ProcessKubelet {
    fn drop(&mut self) {
        for r in self.running.values_mut() {
            let _ = r.child.kill();
        }
    }
}

/// A downward-API field of the pod.
fn field(pod: &Pod, path: &str) -> String {
    match path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        p if p.starts_with("metadata.annotations['") => {
            let key = p.trim_start_matches("metadata.annotations['").trim_end_matches("']");
            pod.annotations().get(key).cloned().unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// Kubernetes' `$(VAR)` expansion in args.
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = arg.to_string();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// Where the project's binaries are (beside the test executable's profile folder).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}
