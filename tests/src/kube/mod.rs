//! A real Kubernetes control plane for the operator tests: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler v1.20.2 (built by `scripts/kube-testenv.sh` into the cache, linked at `.cache/kube/bin`), on
//! 127.0.0.1 with free ports, one fake Ready node, and a test kubelet that moves the pods bound to that node
//! through their lives without running them (see [`FakeKubelet`]).
//!
//! One control plane serves every test of a test process (each test works in its own namespace); a watchdog
//! process stops the servers when the test process exits. Parts: [`certificates`], [`fake_kubelet`], [`ops`]
//! (the operator process, CRDs and waits of the operator and chart tests).

mod certificates;
mod fake_kubelet;
pub mod ops;

use certificates::certificates;
use fake_kubelet::register_node;
pub use fake_kubelet::FakeKubelet;

use crate::{free_port, repo_root, wait_for_port};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
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
