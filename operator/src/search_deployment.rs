//! The SearchDeployment controller: serves indices with `clip-retrieval back` as a Deployment behind a Service,
//! with an HPA (autoscaling/v2, or v2beta2 on older servers) and an optional Ingress. The indices' folders go into a
//! ConfigMap (`indices_paths.json`); the pod template carries the served index versions, so an IndexBuild that
//! completes again rolls the pods to the new index.

use crate::context::{owner_reference, Context, MANAGED_BY};
use crate::crd::{IndexBuild, SearchDeployment, SearchDeploymentSpec, SearchDeploymentStatus};
use crate::pods;
use crate::status::{is_true, set_condition};
use crate::{Error, Result};
use clip_cli::BackArgs;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, ContainerPort, HTTPGetAction, Probe, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Kind label in metrics and Events.
pub const KIND: &str = "SearchDeployment";
/// Label naming the SearchDeployment on its children and pods.
pub const LABEL: &str = "clip-retrieval.io/search-deployment";
/// Pod template annotation listing the served index versions (a change rolls the pods).
pub const VERSIONS_ANNOTATION: &str = "clip-retrieval.io/index-versions";
/// Where the ConfigMap with `indices_paths.json` is mounted.
pub const CONFIG_DIR: &str = "/etc/clip-retrieval";

/// Index name -> (folder, version) once every index is available (a sharded index's folder is empty: its parts
/// are in the second map); or why not.
enum Indices {
    Ready(BTreeMap<String, (String, String)>, Shards),
    Waiting(String),
    Invalid(String),
}

/// Sharded index name -> its part folders, in id order.
pub type Shards = BTreeMap<String, Vec<String>>;

/// Brings the Deployment, Service, HPA, Ingress and status in line with the spec.
pub async fn reconcile(sd: Arc<SearchDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let namespace = sd.namespace().ok_or_else(|| Error::MissingField(sd.name_any(), "namespace"))?;
    let old = sd.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = sd.metadata.generation;
    let mut rolled_to = None;
    let mut requeue = Duration::from_secs(300);
    match resolve(&ctx, &sd.spec, &namespace).await? {
        Indices::Invalid(message) => {
            set_condition(&mut status.conditions, "Failed", true, "InvalidSpec", &message);
            set_condition(&mut status.conditions, "Ready", false, "InvalidSpec", &message);
        }
        Indices::Waiting(message) => {
            set_condition(&mut status.conditions, "Failed", false, "Waiting", "");
            set_condition(&mut status.conditions, "Progressing", true, "WaitingForIndices", &message);
            if !is_true(&status.conditions, "Ready") {
                set_condition(&mut status.conditions, "Ready", false, "WaitingForIndices", &message);
            }
        }
        Indices::Ready(indices, shards) => {
            set_condition(&mut status.conditions, "Failed", false, "Valid", "");
            crate::shard_children::apply(&ctx, &sd, &namespace, &indices, &shards).await?;
            let deployment = apply_children(&ctx, &sd, &namespace, &indices, &shards).await?;
            rolled_to = observe_rollout(&sd, &deployment, &indices, &mut status);
            if !shards.is_empty() && status.loaded_indices == desired_versions(&indices) {
                // The front serves this generation only: shards of earlier ones go.
                crate::shard_children::remove_stale(&ctx, &sd, &namespace, &indices, &shards).await?;
            }
            requeue = assess_pods(&ctx, &sd, &namespace, &mut status).await?;
        }
    }
    crate::status::stamp(&mut status.conditions, sd.metadata.generation);
    if status != old {
        ctx.patch_status(sd.as_ref(), &status).await?;
        announce(&ctx, sd.as_ref(), &old, &status, rolled_to).await;
    }
    Ok(Action::requeue(requeue))
}

/// `Degraded` from the front's and the shards' pods (the front's first); `Failed` once one is stuck too long.
/// Returns when to look again.
async fn assess_pods(
    ctx: &Context,
    sd: &SearchDeployment,
    namespace: &str,
    status: &mut SearchDeploymentStatus,
) -> Result<Duration> {
    let name = child_name(sd);
    let mut stuck = None;
    for selector in [format!("{LABEL}={name}"), format!("{}={name}", crate::shard_children::SHARD_OF_LABEL)] {
        stuck = crate::health::stuck_pod(&ctx.client, namespace, &selector).await?;
        if stuck.is_some() {
            break;
        }
    }
    Ok(match crate::health::assess(&mut status.conditions, stuck.as_ref(), ctx.stuck_pod_timeout) {
        crate::health::Verdict::Failed(reason, message) => {
            set_condition(&mut status.conditions, "Failed", true, &reason, &message);
            Duration::from_secs(60)
        }
        crate::health::Verdict::Degraded(check_in) => check_in,
        crate::health::Verdict::Healthy => Duration::from_secs(300),
    })
}

/// Retries a failed reconcile after the back-off [`crate::outcome::reconcile_reporting`] counted.
pub fn error_policy(sd: Arc<SearchDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(crate::outcome::retry_delay(sd.as_ref(), error, &ctx))
}

/// What the schema cannot check, then each index's folder and version (an IndexBuild's last completion).
async fn resolve(ctx: &Context, spec: &SearchDeploymentSpec, namespace: &str) -> Result<Indices> {
    if spec.indices.is_empty() {
        return Ok(Indices::Invalid("spec.indices is empty: nothing to serve".into()));
    }
    if let Some(a) = &spec.autoscaling {
        if a.min_replicas > a.max_replicas {
            return Ok(Indices::Invalid(format!(
                "spec.autoscaling.minReplicas ({}) is above maxReplicas ({})",
                a.min_replicas, a.max_replicas
            )));
        }
    }
    if let Some(b) = &spec.pod_disruption_budget {
        if b.min_available.is_some() == b.max_unavailable.is_some() {
            return Ok(Indices::Invalid(
                "spec.podDisruptionBudget needs exactly one of minAvailable and maxUnavailable".into(),
            ));
        }
    }
    let builds: Api<IndexBuild> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = BTreeMap::new();
    let mut shards = Shards::new();
    for (name, source) in &spec.indices {
        match (&source.index_build, &source.uri) {
            (None, Some(_)) if source.sharded => {
                return Ok(Indices::Invalid(format!("spec.indices.{name}: sharded needs an indexBuild (its parts)")));
            }
            (None, Some(uri)) => {
                out.insert(name.clone(), (uri.clone(), uri.clone()));
            }
            (Some(build), None) => {
                let Some(ib) = builds.get_opt(build).await? else {
                    return Ok(Indices::Waiting(format!("index {name}: IndexBuild {build} does not exist (yet)")));
                };
                // The newest generation that finished: a rebuild in progress, or one that failed, changes nothing.
                let status = ib.status.clone().unwrap_or_default();
                let Some(built) = status.latest_complete.clone() else {
                    return Ok(Indices::Waiting(format!("index {name}: waiting for IndexBuild {build}")));
                };
                let version = format!("{build}@g{}", built.generation);
                match (source.sharded, ib.spec.shards > 1, ib.spec.merge) {
                    (true, true, _) if !built.parts.is_empty() => {
                        shards.insert(name.clone(), built.parts.clone());
                        out.insert(name.clone(), (String::new(), version));
                    }
                    (true, _, _) => {
                        return Ok(Indices::Invalid(format!(
                            "spec.indices.{name}: IndexBuild {build} has no parts to serve as shards (set its \
                             shards above 1)"
                        )))
                    }
                    (false, true, false) => {
                        return Ok(Indices::Invalid(format!(
                            "spec.indices.{name}: IndexBuild {build} keeps its parts unmerged: serve them with \
                             sharded: true"
                        )))
                    }
                    _ => {
                        out.insert(name.clone(), (built.folder.clone(), version));
                    }
                }
            }
            _ => return Ok(Indices::Invalid(format!("spec.indices.{name} needs exactly one of indexBuild and uri"))),
        }
    }
    Ok(Indices::Ready(out, shards))
}

/// Index name -> version, as `status.loadedIndices` records a finished rollout.
fn desired_versions(indices: &BTreeMap<String, (String, String)>) -> BTreeMap<String, String> {
    indices.iter().map(|(n, (_, v))| (n.clone(), v.clone())).collect()
}

fn versions(indices: &BTreeMap<String, (String, String)>) -> String {
    indices.iter().map(|(name, (_, version))| format!("{name}={version}")).collect::<Vec<_>>().join(",")
}

/// Applies every child; returns the Deployment as the server has it.
async fn apply_children(
    ctx: &Context,
    sd: &SearchDeployment,
    namespace: &str,
    indices: &BTreeMap<String, (String, String)>,
    shards: &Shards,
) -> Result<Deployment> {
    ctx.apply(namespace, &config_map(sd, indices, shards)?).await?;
    let deployment = ctx.apply(namespace, &deployment(sd, indices)?).await?;
    ctx.apply(namespace, &service(sd)?).await?;
    let hpa_name = child_name(sd);
    let (hpa_resource, hpa) = hpa(sd, ctx.caps.hpa_api_version())?;
    let hpas: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &hpa_resource);
    match hpa {
        Some(obj) => {
            crate::context::apply_owned(&hpas, "HorizontalPodAutoscaler", &obj).await?;
        }
        None => crate::context::delete_if_present(&hpas, &hpa_name).await?,
    }
    apply_budget(ctx, sd, namespace, child_name(sd), labels(sd)).await?;
    let ingresses: Api<Ingress> = Api::namespaced(ctx.client.clone(), namespace);
    match ingress(sd)? {
        Some(obj) => {
            ctx.apply(namespace, &obj).await?;
        }
        None => crate::context::delete_if_present(&ingresses, &child_name(sd)).await?,
    }
    Ok(deployment)
}

/// Ready replicas, endpoint, and the versions served once the Deployment has rolled out; returns the versions
/// when this reconcile saw a rollout finish.
fn observe_rollout(
    sd: &SearchDeployment,
    deployment: &Deployment,
    indices: &BTreeMap<String, (String, String)>,
    status: &mut SearchDeploymentStatus,
) -> Option<String> {
    let s = deployment.status.clone().unwrap_or_default();
    let want = deployment.spec.replicas.unwrap_or(1);
    let current = s.observed_generation >= deployment.metadata.generation;
    let updated = s.updated_replicas.unwrap_or(0);
    let ready = s.ready_replicas.unwrap_or(0);
    let total = s.replicas.unwrap_or(0);
    status.ready_replicas = ready as u32;
    status.endpoint = Some(endpoint(sd));
    let rolled_out = current && updated >= want && total == updated && ready >= want;
    let desired = desired_versions(indices);
    if rolled_out {
        let changed = status.loaded_indices != desired;
        status.loaded_indices = desired;
        let message = format!("{ready}/{want} replicas serve {}", versions(indices));
        set_condition(&mut status.conditions, "Ready", ready > 0 || want == 0, "RolledOut", &message);
        set_condition(&mut status.conditions, "Progressing", false, "RolledOut", &message);
        return changed.then(|| versions(indices));
    }
    let message = format!("rolling out {}: {updated}/{want} updated, {ready} ready", versions(indices));
    set_condition(&mut status.conditions, "Progressing", true, "RollingOut", &message);
    if status.loaded_indices.is_empty() {
        set_condition(&mut status.conditions, "Ready", ready > 0, "RollingOut", &message);
    }
    None
}

async fn announce(
    ctx: &Context,
    sd: &SearchDeployment,
    old: &SearchDeploymentStatus,
    new: &SearchDeploymentStatus,
    rolled_to: Option<String>,
) {
    let changed = |t: &str| {
        let find = |s: &SearchDeploymentStatus| {
            s.conditions.iter().find(|c| c.type_ == t).map(|c| (c.status.clone(), c.reason.clone()))
        };
        find(old) != find(new)
    };
    if changed("Failed") && is_true(&new.conditions, "Failed") {
        if let Some(c) = new.conditions.iter().find(|c| c.type_ == "Failed") {
            ctx.event(sd, KIND, true, &c.reason, c.message.clone()).await;
        }
    }
    crate::outcome::announce_degraded(ctx, sd, &old.conditions, &new.conditions).await;
    if changed("Progressing") {
        if let Some(c) = new.conditions.iter().find(|c| c.type_ == "Progressing" && c.status == "True") {
            ctx.event(sd, KIND, false, &c.reason, c.message.clone()).await;
        }
    }
    if let Some(versions) = rolled_to {
        ctx.event(sd, KIND, false, "RolledOut", format!("serving {versions}")).await;
    }
}

/// `http://<name>.<namespace>.svc:<port>`, and the Ingress URL when there is one.
fn endpoint(sd: &SearchDeployment) -> String {
    let service = format!("http://{}.{}.svc:{}", child_name(sd), sd.namespace().unwrap_or_default(), sd.spec.port);
    match &sd.spec.ingress {
        Some(i) => {
            let scheme = if i.tls_secret_name.is_some() { "https" } else { "http" };
            format!("{scheme}://{}{} ({service})", i.host, i.path)
        }
        None => service,
    }
}

/// The name of the front's Deployment, Service, HPA and Ingress, and the label value naming `sd` (the resource's
/// name, cut to 63 characters with a tag when longer).
pub fn child_name(sd: &SearchDeployment) -> String {
    crate::names::label_value(&sd.name_any())
}

fn labels(sd: &SearchDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        ("app.kubernetes.io/name".to_string(), "clip-retrieval-back".to_string()),
        (LABEL.to_string(), child_name(sd)),
    ])
}

fn meta(sd: &SearchDeployment, name: String) -> Result<ObjectMeta> {
    meta_with(sd, name, labels(sd))
}

/// Metadata of a child of `sd` called `name` with `labels`, owned by `sd`.
pub fn meta_with(sd: &SearchDeployment, name: String, labels: BTreeMap<String, String>) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: sd.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![owner_reference(sd)?]),
        ..Default::default()
    })
}

/// `indices_paths.json` (name -> folder, an IndexBuild's folder with `require_completion_marker`, or for a
/// sharded index name -> its shards' Service URLs), as `back --indices_paths` reads it.
pub fn config_map(
    sd: &SearchDeployment,
    indices: &BTreeMap<String, (String, String)>,
    shards: &Shards,
) -> Result<ConfigMap> {
    let paths: serde_json::Map<String, serde_json::Value> = indices
        .iter()
        .map(|(n, (folder, version))| {
            let mut entry = match shards.get(n) {
                Some(parts) => serde_json::json!({
                    "shards": crate::shard_children::urls(sd, n, version, parts.len()),
                    "allow_partial_results": sd.spec.allow_partial_results,
                }),
                None if from_build(sd, n) => built_folder_entry(folder),
                None => serde_json::Value::from(folder.clone()),
            };
            if let Some(precision) = sd.spec.indices.get(n).and_then(|s| s.precision) {
                if let serde_json::Value::String(folder) = entry {
                    entry = serde_json::json!({"indice_folder": folder});
                }
                entry["precision"] = serde_json::to_value(precision).unwrap_or_default();
            }
            (n.clone(), entry)
        })
        .collect();
    config_map_of(sd, crate::names::child(&sd.name_any(), "-indices"), labels(sd), &serde_json::Value::Object(paths))
}

/// Whether index `name` comes from an IndexBuild (its folders carry completion markers).
fn from_build(sd: &SearchDeployment, name: &str) -> bool {
    sd.spec.indices.get(name).is_some_and(|s| s.index_build.is_some())
}

/// The `indices_paths.json` entry of an IndexBuild's folder: `back` refuses it without its completion marker, so
/// a pod restarted onto a half-written or failed build does not serve it.
pub fn built_folder_entry(folder: &str) -> serde_json::Value {
    serde_json::json!({"indice_folder": folder, "require_completion_marker": true})
}

/// A ConfigMap `name` holding `indices_paths.json`.
pub fn config_map_of(
    sd: &SearchDeployment,
    name: String,
    labels: BTreeMap<String, String>,
    paths: &serde_json::Value,
) -> Result<ConfigMap> {
    let json = serde_json::to_string_pretty(paths).map_err(|source| Error::Serialise { what: "indices", source })?;
    Ok(ConfigMap {
        metadata: meta_with(sd, name, labels)?,
        data: Some(BTreeMap::from([("indices_paths.json".to_string(), json)])),
        ..Default::default()
    })
}

/// The `clip-retrieval back` arguments.
pub fn back_args(spec: &SearchDeploymentSpec) -> Result<Vec<String>> {
    let mut args = BackArgs::new(&format!("{CONFIG_DIR}/indices_paths.json"));
    args.port = u16::try_from(spec.port).map_err(|_| Error::InvalidSpec(format!("port {} > 65535", spec.port)))?;
    args.clip_model = spec.model.clone();
    // The port is pinned: probes and the Service target it, whatever the image's default.
    let mut pins = vec!["port"];
    typed_back_options(spec, &mut args, &mut pins);
    crate::command_line::render(&args, &pins, &spec.extra_args)
}

/// The spec's typed `back` options onto `args`, each set one pinned.
fn typed_back_options(spec: &SearchDeploymentSpec, args: &mut BackArgs, pins: &mut Vec<&'static str>) {
    use crate::command_line::pin_if;
    if !spec.columns_to_return.is_empty() {
        args.columns_to_return = Some(clip_cli::ColumnList(spec.columns_to_return.clone()));
    }
    let set = |pins: &mut Vec<&'static str>, value: Option<bool>, target: &mut bool, name: &'static str| {
        if let Some(on) = value {
            *target = on;
        }
        pin_if(pins, value.is_some(), name);
    };
    set(pins, spec.enable_faiss_memory_mapping, &mut args.enable_faiss_memory_mapping, "enable_faiss_memory_mapping");
    let safety = spec.provide_safety_model.or(spec.safety_model.as_ref().map(|_| true));
    set(pins, safety, &mut args.provide_safety_model, "provide_safety_model");
    let violence = spec.provide_violence_detector.or(spec.violence_detector.as_ref().map(|_| true));
    set(pins, violence, &mut args.provide_violence_detector, "provide_violence_detector");
    let aesthetic = spec.provide_aesthetic_embeddings.or(spec.aesthetic_embeddings.as_ref().map(|_| true));
    set(pins, aesthetic, &mut args.provide_aesthetic_embeddings, "provide_aesthetic_embeddings");
    args.safety_model = spec.safety_model.clone();
    args.violence_detector = spec.violence_detector.clone();
    args.aesthetic_embeddings = spec.aesthetic_embeddings.clone();
    if let Some(n) = spec.max_num_images {
        args.max_num_images = n as usize;
    }
    pin_if(pins, spec.max_num_images.is_some(), "max_num_images");
    if let Some(n) = spec.max_num_result_ids {
        args.max_num_result_ids = n as usize;
    }
    pin_if(pins, spec.max_num_result_ids.is_some(), "max_num_result_ids");
    if let Some(seconds) = spec.request_timeout_seconds {
        args.request_timeout = clip_cli::Seconds(seconds);
    }
    pin_if(pins, spec.request_timeout_seconds.is_some(), "request_timeout");
}

/// The Deployment of query servers (no replica count under autoscaling: the HPA owns it).
pub fn deployment(sd: &SearchDeployment, indices: &BTreeMap<String, (String, String)>) -> Result<Deployment> {
    let spec = &sd.spec;
    let replicas = spec.autoscaling.is_none().then_some(spec.replicas as i32);
    let annotations = BTreeMap::from([(VERSIONS_ANNOTATION.to_string(), versions(indices))]);
    let config = crate::names::child(&sd.name_any(), "-indices");
    back_deployment(sd, child_name(sd), labels(sd), &config, replicas, annotations)
}

/// A Deployment `name` of `back` pods labelled `labels`, reading `indices_paths.json` from ConfigMap `config`.
pub fn back_deployment(
    sd: &SearchDeployment,
    name: String,
    labels: BTreeMap<String, String>,
    config: &str,
    replicas: Option<i32>,
    annotations: BTreeMap<String, String>,
) -> Result<Deployment> {
    let spec = &sd.spec;
    let mut container = pods::container("back", &spec.placement, back_args(spec)?, vec![]);
    let port = spec.port as i32;
    // Server-side apply on 1.20 needs `protocol`: it is part of these lists' merge keys.
    container.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }]);
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction { path: Some(path.into()), port: IntOrString::Int(port), ..Default::default() }),
        period_seconds: Some(period),
        ..Default::default()
    };
    container.readiness_probe = Some(probe("/readyz", 5));
    container.liveness_probe = Some(Probe { failure_threshold: Some(6), ..probe("/healthz", 10) });
    container.volume_mounts = Some(vec![VolumeMount {
        name: "indices".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }]);
    let mut template = pods::pod_template(&spec.placement, labels.clone(), annotations, container, None);
    let pod = template.spec.as_mut().expect("pod_template sets a spec");
    pod.volumes.get_or_insert_with(Vec::new).insert(
        0,
        Volume {
            name: "indices".into(),
            config_map: Some(ConfigMapVolumeSource { name: config.to_string(), ..Default::default() }),
            ..Default::default()
        },
    );
    Ok(Deployment {
        metadata: meta_with(sd, name, labels.clone())?,
        spec: DeploymentSpec {
            replicas,
            selector: LabelSelector { match_labels: Some(labels.clone()), ..Default::default() },
            template,
            ..Default::default()
        },
        status: None,
    })
}

/// The ClusterIP Service in front of the pods.
pub fn service(sd: &SearchDeployment) -> Result<Service> {
    back_service(sd, child_name(sd), labels(sd))
}

/// A ClusterIP Service `name` on the spec's port, selecting pods labelled `labels`.
pub fn back_service(sd: &SearchDeployment, name: String, labels: BTreeMap<String, String>) -> Result<Service> {
    Ok(Service {
        metadata: meta_with(sd, name, labels.clone())?,
        spec: Some(ServiceSpec {
            selector: Some(labels),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: sd.spec.port as i32,
                protocol: Some("TCP".into()),
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// The HPA (None without autoscaling) as a dynamic object of `api_version`: autoscaling/v2 and v2beta2 have the
/// same fields for a CPU utilisation target.
pub fn hpa(sd: &SearchDeployment, api_version: &str) -> Result<(ApiResource, Option<DynamicObject>)> {
    hpa_of(sd, api_version, child_name(sd), labels(sd), sd.spec.autoscaling.as_ref())
}

/// The HPA `name` scaling Deployment `name` as `autoscaling` says (None without it).
pub fn hpa_of(
    sd: &SearchDeployment,
    api_version: &str,
    name: String,
    labels: BTreeMap<String, String>,
    autoscaling: Option<&crate::crd::Autoscaling>,
) -> Result<(ApiResource, Option<DynamicObject>)> {
    let (group, version) = api_version.split_once('/').expect("group/version");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, "HorizontalPodAutoscaler"));
    let Some(a) = autoscaling else { return Ok((resource, None)) };
    let mut obj = DynamicObject::new(&name, &resource);
    obj.metadata = meta_with(sd, name.clone(), labels)?;
    obj.data = serde_json::json!({
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization}
            }}]
        }
    });
    Ok((resource, Some(obj)))
}

/// Applies the PodDisruptionBudget `name` over the pods labelled `selector`, or deletes it when the spec has none.
pub async fn apply_budget(
    ctx: &Context,
    sd: &SearchDeployment,
    namespace: &str,
    name: String,
    selector: BTreeMap<String, String>,
) -> Result<()> {
    let (resource, pdb) = pdb_of(sd, ctx.caps.pdb_api_version(), name.clone(), selector)?;
    let pdbs: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    match pdb {
        Some(obj) => crate::context::apply_owned(&pdbs, "PodDisruptionBudget", &obj).await.map(|_| ()),
        None => crate::context::delete_if_present(&pdbs, &name).await,
    }
}

/// The PodDisruptionBudget resource of `api_version` (`policy/v1` or `policy/v1beta1`).
pub fn pdb_resource(api_version: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').expect("group/version");
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, "PodDisruptionBudget"))
}

/// The PodDisruptionBudget `name` of `api_version` over the pods labelled `selector` (None without
/// `spec.podDisruptionBudget`).
pub fn pdb_of(
    sd: &SearchDeployment,
    api_version: &str,
    name: String,
    selector: BTreeMap<String, String>,
) -> Result<(ApiResource, Option<DynamicObject>)> {
    let resource = pdb_resource(api_version);
    let Some(budget) = &sd.spec.pod_disruption_budget else { return Ok((resource, None)) };
    let mut obj = DynamicObject::new(&name, &resource);
    obj.metadata = meta_with(sd, name, selector.clone())?;
    let mut spec = serde_json::json!({"selector": {"matchLabels": selector}});
    if let Some(min) = &budget.min_available {
        spec["minAvailable"] = serde_json::to_value(min).expect("IntOrString serialises");
    }
    if let Some(max) = &budget.max_unavailable {
        spec["maxUnavailable"] = serde_json::to_value(max).expect("IntOrString serialises");
    }
    obj.data = serde_json::json!({ "spec": spec });
    Ok((resource, Some(obj)))
}

/// The Ingress (None when not asked for).
pub fn ingress(sd: &SearchDeployment) -> Result<Option<Ingress>> {
    let Some(i) = &sd.spec.ingress else { return Ok(None) };
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: child_name(sd),
            port: Some(ServiceBackendPort { number: Some(sd.spec.port as i32), ..Default::default() }),
        }),
        ..Default::default()
    };
    Ok(Some(Ingress {
        metadata: meta(sd, child_name(sd))?,
        spec: Some(IngressSpec {
            ingress_class_name: i.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(i.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath { path: Some(i.path.clone()), path_type: "Prefix".into(), backend }],
                }),
            }]),
            tls: i.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS { hosts: Some(vec![i.host.clone()]), secret_name: Some(secret.clone()) }]
            }),
            ..Default::default()
        }),
        status: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hpa_uses_the_api_version_the_server_has_and_disappears_without_autoscaling() {
        let spec = serde_json::json!({
            "indices": {"a": {"uri": "s3://x"}}, "image": "img",
            "autoscaling": {"minReplicas": 2, "maxReplicas": 5}
        });
        let mut sd = SearchDeployment::new("web", serde_json::from_value(spec).unwrap());
        sd.metadata.namespace = Some("ns".into());
        sd.metadata.uid = Some("uid".into());
        for version in ["autoscaling/v2", "autoscaling/v2beta2"] {
            let (resource, hpa) = hpa(&sd, version).unwrap();
            assert_eq!(resource.api_version, version);
            let hpa = hpa.unwrap();
            assert_eq!(hpa.data["spec"]["minReplicas"], 2);
            assert_eq!(hpa.data["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
        }
        let indices = BTreeMap::from([("a".to_string(), ("s3://x".to_string(), "s3://x".to_string()))]);
        assert_eq!(deployment(&sd, &indices).unwrap().spec.replicas, None, "the HPA owns the replica count");
        sd.spec.autoscaling = None;
        sd.spec.replicas = 3;
        assert!(hpa(&sd, "autoscaling/v2").unwrap().1.is_none());
        assert_eq!(deployment(&sd, &indices).unwrap().spec.replicas, Some(3));
    }

    #[test]
    fn the_pdb_selects_the_deployments_pods_in_the_servers_api_version() {
        let spec = serde_json::json!({"indices": {"a": {"uri": "s3://x"}}, "image": "img",
                                      "podDisruptionBudget": {"maxUnavailable": "25%"}});
        let mut sd = SearchDeployment::new("web", serde_json::from_value(spec).unwrap());
        sd.metadata.namespace = Some("ns".into());
        sd.metadata.uid = Some("uid".into());
        let indices = BTreeMap::from([("a".to_string(), ("s3://x".to_string(), "s3://x".to_string()))]);
        let selector = deployment(&sd, &indices).unwrap().spec.selector.match_labels.unwrap();
        for version in ["policy/v1", "policy/v1beta1"] {
            let (resource, pdb) = pdb_of(&sd, version, child_name(&sd), labels(&sd)).unwrap();
            assert_eq!(resource.api_version, version);
            let pdb = pdb.unwrap();
            assert_eq!(pdb.data["spec"]["maxUnavailable"], "25%");
            assert!(pdb.data["spec"].get("minAvailable").is_none());
            assert_eq!(pdb.data["spec"]["selector"]["matchLabels"], serde_json::to_value(&selector).unwrap());
        }
        sd.spec.pod_disruption_budget = None;
        assert!(pdb_of(&sd, "policy/v1", child_name(&sd), labels(&sd)).unwrap().1.is_none());
    }

    fn ready_condition(status: &SearchDeploymentStatus, kind: &str) -> (String, String) {
        let c = status.conditions.iter().find(|c| c.type_ == kind).unwrap_or_else(|| panic!("no {kind} condition"));
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_recorded_rollout_reports_progress_then_the_versions_it_serves() {
        use crate::fixtures::deployment;
        let mut sd = SearchDeployment::new(
            "search",
            serde_json::from_value(serde_json::json!({"indices": {"a": {"uri": "s3://x"}}, "image": "img"})).unwrap(),
        );
        sd.metadata.namespace = Some("ns".into());
        let indices = BTreeMap::from([("a".to_string(), ("s3://x".to_string(), "v2".to_string()))]);
        let mut status = SearchDeploymentStatus::default();

        // Half the replicas updated, one ready: still rolling out, and Ready because one replica serves.
        assert_eq!(observe_rollout(&sd, &deployment(2, 1, 1, 2), &indices, &mut status), None);
        assert_eq!(ready_condition(&status, "Progressing"), ("True".into(), "RollingOut".into()));
        assert_eq!(ready_condition(&status, "Ready"), ("True".into(), "RollingOut".into()));
        assert!(status.loaded_indices.is_empty());
        assert_eq!(status.ready_replicas, 1);

        // A status of the previous generation is not a finished rollout, whatever its counts say.
        assert_eq!(observe_rollout(&sd, &deployment(2, 2, 2, 1), &indices, &mut status), None);

        let done = observe_rollout(&sd, &deployment(2, 2, 2, 2), &indices, &mut status);
        assert!(done.as_deref().is_some_and(|v| v.contains("v2")), "{done:?}");
        assert_eq!(status.loaded_indices.get("a").map(String::as_str), Some("v2"));
        assert_eq!(ready_condition(&status, "Progressing"), ("False".into(), "RolledOut".into()));
        // Seen again, the same rollout is not announced twice.
        assert_eq!(observe_rollout(&sd, &deployment(2, 2, 2, 2), &indices, &mut status), None);
    }
}
