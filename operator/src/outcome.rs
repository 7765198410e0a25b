//! What a failed reconcile tells the user, in one place for the three controllers: an error retrying cannot fix
//! (a spec the CLI refuses, a child name taken by another object, an object the API server rejects) sets the
//! `Failed` condition with its reason and message; an error that persists across retries (API server refusing or
//! unreachable) sets `Degraded` with the API's reason and message and the next retry's delay. Both are published
//! as Warning Events when they change. A successful reconcile recomputes `Degraded` (see [`crate::health`]).

use crate::context::Context;
use crate::crd::{Condition, EmbeddingJob, IndexBuild, SearchDeployment};
use crate::status::{set_condition, stamp};
use crate::{Error, Result};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Consecutive failures of a retried error before it is reported as `Degraded` (one blip is not).
pub const DEGRADED_AFTER: u32 = 2;

/// Failure reasons the error path writes: a resource failed with one of these is reconciled again (after the
/// back-off), since the spec or the cluster may have been fixed; other failures (a partition or build that
/// failed past its retries) are final for their spec generation.
pub const RECHECKED_FAILURES: [&str; 3] = ["InvalidSpec", "Conflict", "Invalid"];

/// A resource whose status the error path reports on.
pub trait Reported:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + Debug + DeserializeOwned
{
    /// Kind label in metrics and Events.
    const KIND: &'static str;
    /// Whether the status has a `phase` that a permanent failure sets to `Failed`.
    const PHASED: bool;
    /// The conditions the status has now.
    fn conditions(&self) -> Vec<Condition>;
}

impl Reported for EmbeddingJob {
    const KIND: &'static str = crate::embedding_job::KIND;
    const PHASED: bool = true;
    fn conditions(&self) -> Vec<Condition> {
        self.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()
    }
}

impl Reported for IndexBuild {
    const KIND: &'static str = crate::index_build::KIND;
    const PHASED: bool = true;
    fn conditions(&self) -> Vec<Condition> {
        self.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()
    }
}

impl Reported for SearchDeployment {
    const KIND: &'static str = crate::search_deployment::KIND;
    const PHASED: bool = false;
    fn conditions(&self) -> Vec<Condition> {
        self.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()
    }
}

/// Whether `conditions` say the resource failed through the error path (so it is worth reconciling again).
pub fn failed_by_error(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Failed" && c.status == "True" && RECHECKED_FAILURES.contains(&c.reason.as_str()))
}

/// Forgets a failure the error path reported (the spec or the cluster may have been fixed): the reconcile computes
/// the phase again, and the failure comes back if it persists.
pub fn clear_failure(phase: &mut String, conditions: &mut Vec<Condition>) {
    phase.clear();
    conditions.retain(|c| c.type_ != "Failed");
}

/// Runs `reconcile` and reports its error: a success forgets the object's failures; a permanent error fails the
/// resource and is checked again after the back-off; any other error is returned for `error_policy` to retry,
/// marking the resource `Degraded` once it persists.
pub async fn reconcile_reporting<K, F, Fut>(obj: Arc<K>, ctx: Arc<Context>, reconcile: F) -> Result<Action>
where
    K: Reported,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    let key = crate::backoff::key(obj.as_ref());
    let generation = obj.meta().generation;
    if let Some(wait) = ctx.backoff.hold(&key, generation) {
        // Triggered before the retry is due (e.g. by the failure's own status write): wait for it.
        return Ok(Action::requeue(wait));
    }
    let error = match reconcile(obj.clone(), ctx.clone()).await {
        Ok(action) => {
            ctx.backoff.succeeded(&key);
            return Ok(action);
        }
        Err(error) => error,
    };
    let (wait, failures) = ctx.backoff.failed(&key, generation);
    if error.is_permanent() {
        tracing::warn!(kind = K::KIND, name = %obj.name_any(), %error, "failed");
        ctx.metrics.error(K::KIND, &error);
        let mut conditions = obj.conditions();
        let (reason, message) = (error.reason(), error.message());
        set_condition(&mut conditions, "Progressing", false, &reason, &message);
        set_condition(&mut conditions, "Failed", true, &reason, &message);
        report(&ctx, obj.as_ref(), conditions, K::PHASED.then_some("Failed"), &reason, &message).await;
        return Ok(Action::requeue(wait));
    }
    if failures >= DEGRADED_AFTER {
        let mut conditions = obj.conditions();
        let reason = error.reason();
        let message = format!("{} (failure {failures}, next try in {}s)", error.message(), wait.as_secs());
        set_condition(&mut conditions, "Degraded", true, &reason, &message);
        report(&ctx, obj.as_ref(), conditions, None, &reason, &message).await;
    }
    Err(error)
}

/// Writes `conditions` (and `phase`) to the status, with a Warning Event when the reason or message is new. A
/// failure to write is logged: the API server may be what fails.
async fn report<K: Reported>(
    ctx: &Context,
    obj: &K,
    mut conditions: Vec<Condition>,
    phase: Option<&str>,
    reason: &str,
    message: &str,
) {
    let before = obj.conditions();
    let generation = obj.meta().generation;
    stamp(&mut conditions, generation);
    if conditions == before {
        return;
    }
    let mut status = serde_json::json!({ "conditions": conditions, "observedGeneration": generation });
    if let Some(phase) = phase {
        status["phase"] = phase.into();
    }
    if let Err(e) = ctx.patch_status(obj, &status).await {
        tracing::warn!(kind = K::KIND, name = %obj.name_any(), error = %e, "could not report the failure in status");
    }
    let seen = |c: &&Condition| c.reason == reason && c.status == "True";
    if !before.iter().filter(seen).any(|c| c.message == message || c.type_ == "Degraded") {
        ctx.event(obj, K::KIND, true, reason, message.to_string()).await;
    }
}

/// The retry delay `error_policy` returns: the one [`reconcile_reporting`] counted.
pub fn retry_delay<K: Reported>(obj: &K, error: &Error, ctx: &Context) -> Duration {
    let (wait, failures) = ctx.backoff.current(&crate::backoff::key(obj));
    tracing::warn!(kind = K::KIND, name = %obj.name_any(), %error, failures, retry_in_s = wait.as_secs(), "reconcile failed");
    ctx.metrics.error(K::KIND, error);
    wait
}

/// A Warning Event when `Degraded` turned True or changed reason between `old` and `new`.
pub async fn announce_degraded<K: Reported>(ctx: &Context, obj: &K, old: &[Condition], new: &[Condition]) {
    let degraded = |cs: &[Condition]| cs.iter().find(|c| c.type_ == "Degraded" && c.status == "True").cloned();
    if let Some(c) = degraded(new) {
        if degraded(old).map(|o| o.reason) != Some(c.reason.clone()) {
            ctx.event(obj, K::KIND, true, &c.reason, c.message).await;
        }
    }
}
