//! `clip-operator`: the operator's entry point (a thin shell over `clip_operator::run`).

use clap::Parser;
use clip_operator::run::{run, Settings};
use std::net::SocketAddr;
use std::time::Duration;

/// Reconciles EmbeddingJob, IndexBuild and SearchDeployment resources.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Namespace of the leader Lease (default: the pod's namespace, else "default").
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "clip-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Seconds a pod may wait on a missing Secret/ConfigMap, an image pull or a crash loop before its resource
    /// fails (it is `Degraded` meanwhile).
    #[arg(long, env = "CLIP_OPERATOR_STUCK_POD_TIMEOUT_SECONDS", default_value_t = 600)]
    stuck_pod_timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "operator".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let settings = Settings {
        namespace: args.namespace,
        lease_namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity,
        lease_duration: Duration::from_secs(args.lease_duration_seconds.max(3)),
        metrics_addr: args.metrics_addr,
        stuck_pod_timeout: Duration::from_secs(args.stuck_pod_timeout_seconds),
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clip-operator: no Kubernetes client configuration (KUBECONFIG or in-cluster): {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(client, settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
