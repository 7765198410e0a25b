//! Runs the operator: HTTP endpoint, capability detection, leader election, then the three controllers until
//! SIGTERM/Ctrl-C (the Lease is released on the way out) or until leadership is lost (exit, to be restarted).

use crate::capabilities::Capabilities;
use crate::context::{Context, MANAGED_BY};
use crate::crd::{EmbeddingJob, IndexBuild, SearchDeployment};
use crate::http::{self, Health};
use crate::leader::LeaseLock;
use crate::metrics::Metrics;
use crate::{embedding_job, index_build, search_deployment};
use clip_shutdown::CancellationToken;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only this namespace (all namespaces when None).
    pub namespace: Option<String>,
    /// Namespace of the leader Lease.
    pub lease_namespace: String,
    /// Name of the leader Lease.
    pub lease_name: String,
    /// This replica's name in the Lease and in Events.
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub metrics_addr: SocketAddr,
    /// How long a pod may be stuck (missing Secret, image pull, crash loop) before its resource fails.
    pub stuck_pod_timeout: Duration,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The API server could not be reached or refused.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The HTTP endpoint could not listen.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// Address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another replica took the Lease (or it could not be renewed in time).
    #[error("lost the leader Lease {0}")]
    LostLease(String),
}

/// Runs until a signal (Ok) or a lost Lease (Err).
pub async fn run(client: Client, settings: Settings) -> Result<(), RunError> {
    let shutdown = clip_shutdown::on_signal();
    let metrics = Metrics::default();
    let health = Health { metrics: metrics.clone(), connected: Default::default() };
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|source| RunError::Listen { addr: settings.metrics_addr, source })?;
    tracing::info!(addr = %listener.local_addr().map_err(|source| RunError::Listen { addr: settings.metrics_addr, source })?, "metrics and health endpoint");
    tokio::spawn(http::serve(listener, health.clone()));
    let caps = Capabilities::detect(&client).await?;
    health.connected.store(true, Ordering::Relaxed);
    tracing::info!(?caps, hpa = caps.hpa_api_version(), "API server capabilities");
    let lock = LeaseLock::new(
        client.clone(),
        &settings.lease_namespace,
        &settings.lease_name,
        &settings.identity,
        settings.lease_duration,
    );
    tokio::select! {
        acquired = acquire(&lock) => acquired?,
        _ = shutdown.cancelled() => return Ok(()),
    }
    metrics.leader.set(1);
    tracing::info!(identity = %settings.identity, lease = %settings.lease_name, "leading");
    let mut context = Context::new(client.clone(), caps, metrics.clone(), settings.identity.clone());
    context.stuck_pod_timeout = settings.stuck_pod_timeout;
    let ctx = Arc::new(context);
    let result = tokio::select! {
        _ = controllers(client, settings.namespace.as_deref(), ctx, shutdown) => Ok(()),
        lost = keep_lease(&lock) => Err(lost),
    };
    metrics.leader.set(0);
    if result.is_ok() {
        lock.release().await;
    }
    result
}

/// Waits until this replica holds the Lease.
async fn acquire(lock: &LeaseLock) -> Result<(), kube::Error> {
    loop {
        match lock.try_acquire_or_renew().await {
            Ok(true) => return Ok(()),
            Ok(false) => tracing::debug!("another replica leads; waiting"),
            Err(e) => tracing::warn!(error = %e, "leader election"),
        }
        tokio::time::sleep(lock.renew_period()).await;
    }
}

/// Renews the Lease; returns when it is lost (another holder, or no successful renewal for a whole period).
async fn keep_lease(lock: &LeaseLock) -> RunError {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(lock.renew_period()).await;
        match lock.try_acquire_or_renew().await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => return RunError::LostLease("another replica holds it".into()),
            Err(e) => {
                tracing::warn!(error = %e, "renewing the leader Lease");
                if last_ok.elapsed() > lock.renew_period() * 2 {
                    return RunError::LostLease(format!("not renewed in time: {e}"));
                }
            }
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The three controllers, until a shutdown signal.
async fn controllers(client: Client, namespace: Option<&str>, ctx: Arc<Context>, shutdown: CancellationToken) {
    let children = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let all = watcher::Config::default();

    let jobs = Controller::new(api::<EmbeddingJob>(&client, namespace), all.clone());
    let job_store = jobs.store();
    let embedding_jobs = jobs
        .owns(api::<Job>(&client, namespace), children.clone())
        .watches(api::<Pod>(&client, namespace), children.clone(), move |pod: Pod| {
            labelled(&job_store.state(), &pod, embedding_job::LABEL)
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            |o, c| crate::outcome::reconcile_reporting(o, c, embedding_job::reconcile),
            embedding_job::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let builds = Controller::new(api::<IndexBuild>(&client, namespace), all.clone());
    let build_store = builds.store();
    let build_pods = build_store.clone();
    let index_builds = builds
        .owns(api::<Job>(&client, namespace), children.clone())
        .watches(api::<Pod>(&client, namespace), children.clone(), move |pod: Pod| {
            labelled(&build_pods.state(), &pod, index_build::LABEL)
        })
        .watches(api::<EmbeddingJob>(&client, namespace), all.clone(), move |ej: EmbeddingJob| {
            referencing(&build_store.state(), &ej, |ib: &IndexBuild| ib.spec.embeddings.embedding_job.clone())
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            |o, c| crate::outcome::reconcile_reporting(o, c, index_build::reconcile),
            index_build::error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {});

    let searches = Controller::new(api::<SearchDeployment>(&client, namespace), all.clone());
    let search_store = searches.store();
    let search_pods = search_store.clone();
    let search_deployments = searches
        .watches(api::<Pod>(&client, namespace), children.clone(), move |pod: Pod| {
            let mut refs = labelled(&search_pods.state(), &pod, search_deployment::LABEL);
            refs.extend(labelled(&search_pods.state(), &pod, crate::shard_children::SHARD_OF_LABEL));
            refs
        })
        .owns(api::<Deployment>(&client, namespace), children.clone())
        .owns(api::<Service>(&client, namespace), children.clone())
        .owns(api::<ConfigMap>(&client, namespace), children.clone())
        .owns(api::<Ingress>(&client, namespace), children)
        .watches(api::<IndexBuild>(&client, namespace), all, move |ib: IndexBuild| {
            referencing(&search_store.state(), &ib, |sd: &SearchDeployment| {
                sd.spec.indices.values().find(|s| s.index_build.as_deref() == Some(&ib.name_any()))?.index_build.clone()
            })
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            |o, c| crate::outcome::reconcile_reporting(o, c, search_deployment::reconcile),
            search_deployment::error_policy,
            ctx,
        )
        .for_each(|_| async {});

    tokio::join!(embedding_jobs, index_builds, search_deployments);
}

/// The objects of `store` in `pod`'s namespace whose label value (the name, cut to 63 characters) `pod` has
/// under `label`: a pod's state (stuck on a missing Secret, say) is reconciled by the resource that made it.
fn labelled<K>(store: &[Arc<K>], pod: &Pod, label: &str) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let Some(value) = pod.labels().get(label) else { return Vec::new() };
    store
        .iter()
        .filter(|k| k.namespace() == pod.namespace() && crate::names::label_value(&k.name_any()) == *value)
        .map(|k| ObjectRef::from_obj(k.as_ref()))
        .collect()
}

/// The objects of `store` in `target`'s namespace whose `reference` names `target`.
fn referencing<K, T>(store: &[Arc<K>], target: &T, reference: impl Fn(&K) -> Option<String>) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
    T: Resource,
{
    store
        .iter()
        .filter(|k| k.namespace() == target.namespace() && reference(k).as_deref() == Some(target.name_any().as_str()))
        .map(|k| ObjectRef::from_obj(k.as_ref()))
        .collect()
}
