//! The shards of a SearchDeployment's sharded indices: per part of the IndexBuild, a ConfigMap (`indices_paths.json`
//! naming only that part), a Deployment of `back` pods (each downloads only its part), a Service and, when asked,
//! an HPA. Names carry a tag of the index version, so a new IndexBuild generation gets new shards beside the old
//! ones: the front rolls to them once they are ready (its readiness needs every shard), and the old generation's
//! shards are deleted only after the front has rolled, so a front pod always queries one generation. Shard pods do
//! not carry the front's label (`search_deployment::LABEL`): the front's Service must not select them.

use crate::context::{Context, MANAGED_BY};
use crate::crd::SearchDeployment;
use crate::search_deployment::{back_deployment, back_service, config_map_of, hpa_of, Shards, VERSIONS_ANNOTATION};
use crate::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{DynamicObject, ListParams};
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;

/// Label naming the SearchDeployment on its shards' children (not [`LABEL`]: the front's Service selects that).
pub const SHARD_OF_LABEL: &str = "clip-retrieval.io/shard-of";
/// Label naming one shard (its Deployment's selector).
pub const SHARD_LABEL: &str = "clip-retrieval.io/shard";
/// Label with the version tag of a shard's generation.
pub const GENERATION_LABEL: &str = "clip-retrieval.io/shard-generation";

/// An 8-hex-digit tag of `version` (FNV-1a: stable across builds of the operator, unlike std's hasher).
pub fn version_tag(version: &str) -> String {
    crate::names::tag(version)
}

/// Shard `i` of `index` at `version`: a DNS-1035 name (lowercase, `-`, at most 63 characters, ending with the
/// tag and the shard number so that it stays unique when the rest is cut).
pub fn shard_name(sd: &SearchDeployment, index: &str, version: &str, i: usize) -> String {
    let suffix = format!("-{}-{i}", version_tag(version));
    let base: String = format!("{}-{index}", sd.name_any())
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let keep = 63 - suffix.len();
    let base = base.get(..keep.min(base.len())).unwrap_or(&base).trim_matches('-').to_string();
    let base = if base.starts_with(|c: char| c.is_ascii_lowercase()) { base } else { format!("s{base}") };
    format!("{base}{suffix}")
}

/// The in-cluster URLs of the shards' Services, in id order (what the front's `indices_paths.json` lists).
pub fn urls(sd: &SearchDeployment, index: &str, version: &str, parts: usize) -> Vec<String> {
    let namespace = sd.namespace().unwrap_or_default();
    (0..parts)
        .map(|i| format!("http://{}.{namespace}.svc:{}", shard_name(sd, index, version, i), sd.spec.port))
        .collect()
}

fn labels(sd: &SearchDeployment, name: &str, version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        ("app.kubernetes.io/name".to_string(), "clip-retrieval-shard".to_string()),
        (SHARD_OF_LABEL.to_string(), crate::names::label_value(&sd.name_any())),
        (SHARD_LABEL.to_string(), name.to_string()),
        (GENERATION_LABEL.to_string(), version_tag(version)),
    ])
}

/// The ConfigMap, Deployment and Service of one shard serving `folder` as `index`.
pub fn shard_objects(
    sd: &SearchDeployment,
    index: &str,
    version: &str,
    i: usize,
    folder: &str,
) -> Result<(ConfigMap, Deployment, Service)> {
    let name = shard_name(sd, index, version, i);
    let labels = labels(sd, &name, version);
    let config_name = crate::names::child(&name, "-indices");
    let config = config_map_of(
        sd,
        config_name.clone(),
        labels.clone(),
        &serde_json::json!({ index: crate::search_deployment::built_folder_entry(folder) }),
    )?;
    let replicas = sd.spec.shard_autoscaling.is_none().then_some(sd.spec.shard_replicas as i32);
    let annotations = BTreeMap::from([(VERSIONS_ANNOTATION.to_string(), format!("{index}={version}#{i}"))]);
    let deployment = back_deployment(sd, name.clone(), labels.clone(), &config_name, replicas, annotations)?;
    let service = back_service(sd, name, labels)?;
    Ok((config, deployment, service))
}

/// Applies every shard of every sharded index at its current version.
pub async fn apply(
    ctx: &Context,
    sd: &SearchDeployment,
    namespace: &str,
    indices: &BTreeMap<String, (String, String)>,
    shards: &Shards,
) -> Result<()> {
    for (index, parts) in shards {
        let version = &indices[index].1;
        for (i, folder) in parts.iter().enumerate() {
            let (config, deployment, service) = shard_objects(sd, index, version, i, folder)?;
            ctx.apply(namespace, &config).await?;
            ctx.apply(namespace, &deployment).await?;
            ctx.apply(namespace, &service).await?;
            let name = shard_name(sd, index, version, i);
            let autoscaling = sd.spec.shard_autoscaling.as_ref();
            let (resource, hpa) =
                hpa_of(sd, ctx.caps.hpa_api_version(), name.clone(), labels(sd, &name, version), autoscaling)?;
            let hpas: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
            match hpa {
                Some(obj) => {
                    crate::context::apply_owned(&hpas, "HorizontalPodAutoscaler", &obj).await?;
                }
                None => crate::context::delete_if_present(&hpas, &name).await?,
            }
            let selector = labels(sd, &name, version);
            crate::search_deployment::apply_budget(ctx, sd, namespace, name, selector).await?;
        }
    }
    Ok(())
}

/// Deletes the shards' children that belong to no current (index, version, part): the generations the front no
/// longer serves.
pub async fn remove_stale(
    ctx: &Context,
    sd: &SearchDeployment,
    namespace: &str,
    indices: &BTreeMap<String, (String, String)>,
    shards: &Shards,
) -> Result<()> {
    let current: Vec<String> = shards
        .iter()
        .flat_map(|(index, parts)| (0..parts.len()).map(|i| shard_name(sd, index, &indices[index].1, i)))
        .collect();
    let selector =
        ListParams::default().labels(&format!("{SHARD_OF_LABEL}={}", crate::names::label_value(&sd.name_any())));
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let configs: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    for d in deployments.list(&selector).await?.items {
        let name = d.name_any();
        if current.contains(&name) {
            continue;
        }
        tracing::info!(shard = %name, "deleting a shard of a generation the front no longer serves");
        crate::context::delete_if_present(&deployments, &name).await?;
        crate::context::delete_if_present(&services, &name).await?;
        crate::context::delete_if_present(&configs, &crate::names::child(&name, "-indices")).await?;
        let pdb = crate::search_deployment::pdb_resource(ctx.caps.pdb_api_version());
        let pdbs: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &pdb);
        crate::context::delete_if_present(&pdbs, &name).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd() -> SearchDeployment {
        let spec = serde_json::json!({"indices": {"laion": {"indexBuild": "laion", "sharded": true}}, "image": "img",
                                      "shardReplicas": 2});
        let mut sd = SearchDeployment::new("search", serde_json::from_value(spec).unwrap());
        sd.metadata.namespace = Some("ns".into());
        sd.metadata.uid = Some("uid".into());
        sd
    }

    #[test]
    fn shard_names_are_dns_labels_unique_per_generation_and_part() {
        let sd = sd();
        let a = shard_name(&sd, "LAION_5B", "laion@2026-12-01T10:00:00Z", 0);
        assert!(a.starts_with("search-laion-5b-") && a.ends_with("-0"), "{a}");
        assert_ne!(a, shard_name(&sd, "LAION_5B", "laion@2026-12-02T10:00:00Z", 0), "a new generation, new shards");
        assert_ne!(a, shard_name(&sd, "LAION_5B", "laion@2026-12-01T10:00:00Z", 1));
        let long = shard_name(&sd, &"x".repeat(100), "v", 12);
        assert!(long.len() <= 63 && long.ends_with("-12"), "{long}");
        assert_eq!(version_tag("v"), version_tag("v"));
        let urls = urls(&sd, "laion", "v", 2);
        assert_eq!(urls[1], format!("http://{}.ns.svc:1234", shard_name(&sd, "laion", "v", 1)));
    }

    #[test]
    fn a_shard_serves_only_its_part_and_is_not_behind_the_front_service() {
        let sd = sd();
        let (config, deployment, service) = shard_objects(&sd, "laion", "v", 1, "s3://b/idx-parts/1").unwrap();
        let paths: serde_json::Value = serde_json::from_str(&config.data.unwrap()["indices_paths.json"]).unwrap();
        assert_eq!(
            paths,
            serde_json::json!({"laion": {"indice_folder": "s3://b/idx-parts/1", "require_completion_marker": true}})
        );
        let spec = deployment.spec;
        assert_eq!(spec.replicas, Some(2));
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        let front = crate::search_deployment::LABEL;
        assert!(!pod_labels.contains_key(front), "the front's Service must not select shard pods");
        assert_eq!(service.spec.unwrap().selector.unwrap(), pod_labels);
    }
}
