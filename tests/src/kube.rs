//! A real Kubernetes control plane for the operator tests: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler v1.20.2 (built by `scripts/kube-testenv.sh` into the cache, linked at `.cache/kube/bin`), on
//! 127.0.0.1 with free ports, one fake Ready node, and a test kubelet that moves the pods bound to that node
//! through their lives without running them (see [`FakeKubelet`]).
//!
//! One control plane serves every test of a test process (each test works in its own namespace); a watchdog
//! process stops the servers when the test process exits.

use crate::{free_port, repo_root, wait_for_port};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Name of the fake node pods are scheduled to.
pub const NODE: &str = "fake-node-1";
const TOKEN: &str = "clip-test-admin-token";

/// The running control plane.
pub struct ControlPlane {
    /// Folder of certificates, data and logs (kept for the process's life).
    pub dir: PathBuf,
    /// kubeconfig for the admin user.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// The servers and their watchdog (never waited for: they live as long as the test process).
    _processes: Vec<std::process::Child>,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

/// Folder of the control plane binaries (`scripts/kube-testenv.sh`).
pub fn kube_bin() -> PathBuf {
    let bin = repo_root().join(".cache/kube/bin");
    assert!(bin.join("kube-apiserver").is_file(), "{} missing: run scripts/setup.sh", bin.display());
    bin
}

impl ControlPlane {
    /// The control plane of this test process, started on first use (about 10 s).
    pub fn shared() -> &'static ControlPlane {
        // Started on a plain thread: tests are async and the start blocks.
        SHARED.get_or_init(|| std::thread::spawn(ControlPlane::start).join().expect("control plane start"))
    }

    fn start() -> ControlPlane {
        let dir = std::env::temp_dir().join(format!("clip-kube-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).expect("control plane dir");
        certificates(&dir);
        let bin = kube_bin();
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let mut servers = Vec::new();
        let mut watchdogs = Vec::new();
        let etcd = format!("http://127.0.0.1:{etcd_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        servers.push(spawn(
            &dir,
            "etcd",
            Command::new(bin.join("etcd")).args([
                "--name=t",
                &format!("--data-dir={}", dir.join("etcd").display()),
                &format!("--listen-client-urls={etcd}"),
                &format!("--advertise-client-urls={etcd}"),
                &format!("--listen-peer-urls={peer}"),
                &format!("--initial-advertise-peer-urls={peer}"),
                &format!("--initial-cluster=t={peer}"),
                "--unsafe-no-fsync",
            ]),
        ));
        watchdogs.push(watchdog(&servers));
        wait_for_port(etcd_port, Duration::from_secs(20));
        let pem = |name: &str| dir.join(name).display().to_string();
        servers.push(spawn(
            &dir,
            "apiserver",
            Command::new(bin.join("kube-apiserver")).args([
                &format!("--etcd-servers={etcd}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                "--insecure-port=0",
                &format!("--tls-cert-file={}", pem("apiserver.crt")),
                &format!("--tls-private-key-file={}", pem("apiserver.key")),
                &format!("--client-ca-file={}", pem("ca.crt")),
                &format!("--token-auth-file={}", pem("tokens.csv")),
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                &format!("--service-account-key-file={}", pem("sa.pub")),
                &format!("--service-account-signing-key-file={}", pem("sa.key")),
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--disable-admission-plugins=TaintNodesByCondition",
                "--profiling=false",
            ]),
        ));
        watchdogs.push(watchdog(&servers));
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: test, cluster: {{server: \"{server}\", certificate-authority: \"{}\"}}}}]\n\
                 users: [{{name: admin, user: {{token: {TOKEN}}}}}]\ncontexts: [{{name: test, context: {{cluster: test, user: admin}}}}]\n\
                 current-context: test\n",
                pem("ca.crt")
            ),
        )
        .expect("kubeconfig");
        wait_ready(&dir, &kubeconfig, Duration::from_secs(60));
        let common = |port: u16| {
            vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--bind-address=127.0.0.1".to_string(),
                "--port=0".to_string(),
                format!("--secure-port={port}"),
                "--leader-elect=false".to_string(),
            ]
        };
        servers.push(spawn(
            &dir,
            "controller-manager",
            Command::new(bin.join("kube-controller-manager")).args(common(free_port())).args([
                "--controllers=*,-nodelifecycle,-nodeipam,-cloud-node-lifecycle,-route,-service",
                &format!("--service-account-private-key-file={}", pem("sa.key")),
                &format!("--root-ca-file={}", pem("ca.crt")),
                // Pods of a failed Job attempt are retried after 10 s, 20 s, ... in 1.20 (not configurable).
            ]),
        ));
        servers.push(spawn(&dir, "scheduler", Command::new(bin.join("kube-scheduler")).args(common(free_port()))));
        watchdogs.push(watchdog(&servers));
        let kubelet_config = kubeconfig.clone();
        std::thread::spawn(move || FakeKubelet::run(&kubelet_config));
        ControlPlane { dir, kubeconfig, server, _processes: servers.into_iter().chain(watchdogs).collect() }
    }

    /// A client of the admin user (build one per test: a client belongs to the runtime that made it).
    pub async fn client(&self) -> Client {
        client_for(&self.kubeconfig).await
    }

    /// A fresh namespace (with its default ServiceAccount, which pods need) named `<prefix>-<n>`.
    pub async fn namespace(&self, prefix: &str) -> String {
        let client = self.client().await;
        let name = format!("{prefix}-{}", std::process::id() % 100000);
        let ns = Namespace {
            metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
        let sa: Api<ServiceAccount> = Api::namespaced(client, &name);
        let start = Instant::now();
        while sa.get_opt("default").await.ok().flatten().is_none() {
            assert!(start.elapsed() < Duration::from_secs(30), "no default ServiceAccount in {name}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        name
    }

    /// A log of one of the servers.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// Waits until the API server answers and has created the `default` namespace.
fn wait_ready(dir: &Path, kubeconfig: &Path, timeout: Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let start = Instant::now();
        loop {
            let client = client_for(kubeconfig).await;
            if Api::<Namespace>::all(client).get_opt("default").await.ok().flatten().is_some() {
                return;
            }
            assert!(start.elapsed() < timeout, "API server not ready after {timeout:?}: see {}/logs", dir.display());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// A client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Client {
    // Two rustls providers are linked into the tests (kube's ring, the AWS SDK's aws-lc-rs): pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await.expect("kubeconfig");
    Client::try_from(config).expect("client")
}

fn spawn(dir: &Path, name: &str, command: &mut Command) -> std::process::Child {
    let log = std::fs::File::create(dir.join("logs").join(format!("{name}.log"))).expect("log file");
    command.stdout(Stdio::null()).stderr(log).spawn().unwrap_or_else(|e| panic!("start {name}: {e}"))
}

/// A shell that kills `children` once this test process is gone (statics are never dropped).
fn watchdog(children: &[std::process::Child]) -> std::process::Child {
    let list: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill {} 2>/dev/null; sleep 2; kill -9 {} 2>/dev/null",
        std::process::id(),
        list.join(" "),
        list.join(" ")
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("watchdog")
}

/// CA, API server certificate, service-account key pair and the admin token, with the openssl CLI.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
        "-subj",
        "/CN=kube-apiserver",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        .expect("ext.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "apiserver.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    openssl(&["genrsa", "-out", "sa.key", "2048"]);
    openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
    std::fs::write(dir.join("tokens.csv"), format!("{TOKEN},admin,admin-uid,\"system:masters\"\n")).expect("tokens");
}

/// Plays the kubelet of [`NODE`] without running containers: a pod bound to the node becomes Running; a Job's pod
/// then terminates after `FAKE_RUN_SECONDS` (default 1) with exit code `FAKE_EXIT_CODE` (default 0) when its
/// `--partition_ids` is listed in `FAKE_FAIL_PARTITIONS` (or that variable is absent), else 0, and the
/// termination message `FAKE_TERMINATION_MESSAGE`; other pods become Ready and stay Running. The variables are
/// read from the pod's container env, which the operator copies from the resource's `env`.
pub struct FakeKubelet;

impl FakeKubelet {
    fn run(kubeconfig: &Path) {
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

async fn register_node(client: &Client) {
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
    let is_job = pod.owner_references().iter().any(|o| o.kind == "Job");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let name = pod.spec.as_ref().and_then(|s| s.containers.first()).map(|c| c.name.clone()).unwrap_or_default();
    let Some(since) = started.get(&uid).copied() else {
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
