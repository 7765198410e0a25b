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
    kubelet: Kubelet,
}

/// Which kubelet plays the fake node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kubelet {
    /// [`FakeKubelet`]: pods change state without running.
    Fake,
    /// [`crate::kubelet::ProcessKubelet`]: pods run as local processes.
    Process,
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
        Self::shared_with(Kubelet::Fake)
    }

    /// The control plane of this test process with the process kubelet (pods run as local processes; see
    /// [`crate::kubelet`]). A test binary uses either this or [`ControlPlane::shared`].
    pub fn shared_running_processes() -> &'static ControlPlane {
        Self::shared_with(Kubelet::Process)
    }

    fn shared_with(kubelet: Kubelet) -> &'static ControlPlane {
        // Started on a plain thread: tests are async and the start blocks.
        let plane = SHARED.get_or_init(|| {
            std::thread::spawn(move || ControlPlane::start(kubelet)).join().expect("control plane start")
        });
        assert_eq!(plane.kubelet, kubelet, "one kubelet kind per test process");
        plane
    }

    fn start(kubelet: Kubelet) -> ControlPlane {
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
        let pods_dir = dir.join("pods");
        match kubelet {
            Kubelet::Fake => std::thread::spawn(move || FakeKubelet::run(&kubelet_config)),
            Kubelet::Process => std::thread::spawn(move || run_process_kubelet(&kubelet_config, pods_dir)),
        };
        ControlPlane { dir, kubeconfig, server, _processes: servers.into_iter().chain(watchdogs).collect(), kubelet }
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

    /// `helm` against this control plane, with its config and cache inside the control plane's folder.
    pub fn helm(&self) -> Command {
        let mut helm = helm(&self.dir.join("helm"));
        helm.env("KUBECONFIG", &self.kubeconfig);
        helm
    }

    /// A kubeconfig authenticating as ServiceAccount `name` of `namespace` (a token from the TokenRequest API),
    /// so that a process runs with exactly the RBAC a pod of that account would have.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        service_account_kubeconfig(&self.client().await, &self.kubeconfig, &self.dir, namespace, name).await
    }

    /// A log of one of the servers.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// `helm` with its config, cache and data under `home` (never the user's).
pub fn helm(home: &Path) -> Command {
    let mut helm = Command::new(kube_bin().join("helm"));
    helm.env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"));
    helm
}

/// Writes into `dir` a copy of the admin kubeconfig whose token is ServiceAccount `namespace/name`'s.
pub async fn service_account_kubeconfig(
    client: &Client,
    admin: &Path,
    dir: &Path,
    namespace: &str,
    name: &str,
) -> PathBuf {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}
    }))
    .expect("token request");
    let answer: k8s_openapi::api::authentication::v1::TokenRequest = accounts
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest for the ServiceAccount");
    let token = answer.status.and_then(|s| s.token).expect("a token in the TokenRequest status");
    let path = dir.join(format!("kubeconfig-{namespace}-{name}"));
    let text = std::fs::read_to_string(admin).expect("kubeconfig");
    std::fs::write(&path, text.replace(TOKEN, &token)).expect("write kubeconfig");
    path
}

fn run_process_kubelet(kubeconfig: &Path, pods_dir: PathBuf) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("kubelet runtime");
    runtime.block_on(async {
        let client = client_for(kubeconfig).await;
        register_node(&client).await;
        let bin = crate::kubelet::bin_dir();
        let mut kubelet = crate::kubelet::ProcessKubelet::new(client, pods_dir, kubeconfig.to_path_buf(), bin);
        loop {
            kubelet.step().await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
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
pub(crate) fn watchdog(children: &[std::process::Child]) -> std::process::Child {
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

/// Helpers of the operator and chart tests: the operator process, CRDs, our resources as dynamic objects, waits.
pub mod ops {
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

        /// Starts the operator with `kubeconfig` (e.g. a ServiceAccount's), watching `namespace` with its Lease there.
        pub fn start_as(plane: &ControlPlane, kubeconfig: &Path, namespace: &str, identity: &str) -> Operator {
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
}
