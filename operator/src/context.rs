//! What every reconcile shares: the client, the server's capabilities, metrics, and the Event recorder; plus the
//! two writes all controllers make (server-side apply of a child, a status patch) and Event publishing.

use crate::capabilities::Capabilities;
use crate::metrics::Metrics;
use crate::{Error, Result};
use kube::api::{Patch, PatchParams};
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
    reporter: Reporter,
}

impl Context {
    /// A context for `client`; `instance` names this replica in Events.
    pub fn new(client: Client, caps: Capabilities, metrics: Metrics, instance: String) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(instance) };
        Context { client, caps, metrics, backoff: Default::default(), reporter }
    }

    /// Creates or updates `child` (server-side apply, forced: the operator owns these fields).
    pub async fn apply<K>(&self, namespace: &str, child: &K) -> Result<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        Ok(api.patch(&child.name_any(), &params, &Patch::Apply(child)).await?)
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

/// An owner reference making `owner` the controller of a child (garbage collection on delete).
pub fn owner_reference<K: Resource<DynamicType = ()>>(
    owner: &K,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    owner.controller_owner_ref(&()).ok_or_else(|| Error::MissingField(owner.name_any(), "metadata.uid"))
}
