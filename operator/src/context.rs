//! What every reconcile shares: the client, the server's capabilities, metrics, and the Event recorder; plus the
//! two writes all controllers make (server-side apply of a child, a status patch) and Event publishing.

use crate::capabilities::Capabilities;
use crate::metrics::Metrics;
use crate::{Error, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "clip-operator";
/// Label on every child (watches select on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "clip-operator");

/// Shared state of the controllers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// What the server supports.
    pub caps: Capabilities,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Consecutive reconcile failures per object (retry delays).
    pub backoff: crate::backoff::Backoff,
    /// How long a pod may be stuck before its resource fails ([`crate::health`]).
    pub stuck_pod_timeout: std::time::Duration,
    reporter: Reporter,
}

impl Context {
    /// A context for `client`; `instance` names this replica in Events.
    pub fn new(client: Client, caps: Capabilities, metrics: Metrics, instance: String) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(instance) };
        let stuck_pod_timeout = std::time::Duration::from_secs(600);
        Context { client, caps, metrics, backoff: Default::default(), stuck_pod_timeout, reporter }
    }

    /// Creates or updates `child` (server-side apply, forced: the operator owns these fields), refusing an
    /// existing object of that name that the child's owner does not control ([`Error::Conflict`]).
    pub async fn apply<K>(&self, namespace: &str, child: &K) -> Result<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        apply_owned(&api, &K::kind(&()), child).await
    }

    /// The pods `selector` selects, assessed into `conditions` ([`crate::health::assess`]).
    pub async fn assess_pods(
        &self,
        namespace: &str,
        selector: &str,
        conditions: &mut Vec<crate::crd::Condition>,
    ) -> Result<crate::health::Verdict> {
        let stuck = crate::health::stuck_pod(&self.client, namespace, selector).await?;
        Ok(crate::health::assess(conditions, stuck.as_ref(), self.stuck_pod_timeout))
    }

    /// Replaces the status of `obj` (merge patch of the status subresource).
    pub async fn patch_status<K>(&self, obj: &K, status: &impl Serialize) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + DeserializeOwned + Clone + Debug,
    {
        let namespace = obj.namespace().ok_or_else(|| Error::MissingField(obj.name_any(), "namespace"))?;
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        let patch = serde_json::json!({ "status": status });
        api.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// Publishes an Event on `obj` (failures are logged, never fail the reconcile).
    pub async fn event<K>(&self, obj: &K, kind: &'static str, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        self.metrics.event(kind, reason);
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        // A recorder per Event: a shared one folds Events with the same reason into a series that keeps the first
        // note ("serving index v1" would hide "serving index v2"). Events are only sent on transitions, so
        // there is nothing to fold.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish an Event");
        }
    }
}

/// Server-side applies `child` through `api` unless an object of its name exists that `child`'s controlling owner
/// does not control: a forced apply would adopt it, and garbage collection would delete it with the resource.
pub async fn apply_owned<K>(api: &Api<K>, kind: &str, child: &K) -> Result<K>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = child.name_any();
    if let Some(existing) = api.get_opt(&name).await? {
        check_owner(kind, child.meta(), existing.meta())?;
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(child)).await?)
}

/// `Err(Conflict)` unless `existing` is controlled by the controller of `child`.
pub fn check_owner(kind: &str, child: &ObjectMeta, existing: &ObjectMeta) -> Result<()> {
    let controller = |m: &ObjectMeta| m.owner_references.iter().flatten().find(|o| o.controller == Some(true)).cloned();
    let Some(owner) = controller(child) else { return Ok(()) };
    if existing.owner_references.iter().flatten().any(|o| o.uid == owner.uid) {
        return Ok(());
    }
    let held_by = match controller(existing) {
        Some(o) => format!("belongs to {} {}", o.kind, o.name),
        None => "is not managed by the operator".to_string(),
    };
    Err(Error::Conflict(format!(
        "{kind} {} already exists and {held_by}: {} {} would take it over; rename the {} or delete that {kind}",
        existing.name.as_deref().unwrap_or_default(),
        owner.kind,
        owner.name,
        owner.kind,
    )))
}

/// An owner reference making `owner` the controller of a child (garbage collection on delete).
pub fn owner_reference<K: Resource<DynamicType = ()>>(
    owner: &K,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    owner.controller_owner_ref(&()).ok_or_else(|| Error::MissingField(owner.name_any(), "metadata.uid"))
}

/// Deletes `name` (in the background); absent is fine.
pub async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(uid: &str, kind: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "clip-retrieval.io/v1alpha1".into(),
                kind: kind.into(),
                name: name.into(),
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn only_objects_the_owner_controls_are_applied_over() {
        let child = owned_by("uid-1", "SearchDeployment", "web");
        assert!(check_owner("Service", &child, &owned_by("uid-1", "SearchDeployment", "web")).is_ok());
        let by_hand = ObjectMeta { name: Some("web".into()), ..Default::default() };
        let err = check_owner("Service", &child, &by_hand).unwrap_err();
        assert!(err.is_permanent() && err.reason() == "Conflict");
        assert_eq!(
            err.to_string(),
            "Service web already exists and is not managed by the operator: SearchDeployment web would take it \
             over; rename the SearchDeployment or delete that Service"
        );
        let other = check_owner("Service", &child, &owned_by("uid-2", "SearchDeployment", "web")).unwrap_err();
        assert!(other.to_string().contains("belongs to SearchDeployment web"), "{other}");
    }
}
