//! The IndexBuild controller: waits for a referenced EmbeddingJob to be Complete, then runs `clip-retrieval index`
//! as a Job (one per spec generation: editing the spec builds again) and reports what the build wrote in its
//! summary (`--report_path /dev/termination-log`, read back from the pod's termination message).

use crate::context::{owner_reference, Context, MANAGED_BY};
use crate::crd::{EmbeddingJob, IndexBuild, IndexBuildSpec, IndexBuildStatus};
use crate::health::Verdict;
use crate::pods;
use crate::status::set_condition;
use crate::{Error, Result};
use clip_cli::{CommandArgs, IndexArgs};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Kind label in metrics and Events.
pub const KIND: &str = "IndexBuild";
/// Label naming the IndexBuild on its Jobs.
pub const LABEL: &str = "clip-retrieval.io/index-build";
/// Label with the spec generation a Job builds.
pub const GENERATION_LABEL: &str = "clip-retrieval.io/build-generation";
/// Where the build writes its summary: the container's termination message.
pub const REPORT_PATH: &str = "/dev/termination-log";

/// Where the embeddings come from, once known.
enum Embeddings {
    Ready(String),
    Waiting(String),
    Failed(String),
}

/// Brings the build Job and the status in line with the spec.
pub async fn reconcile(ib: Arc<IndexBuild>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let namespace = ib.namespace().ok_or_else(|| Error::MissingField(ib.name_any(), "namespace"))?;
    let old = ib.status.clone().unwrap_or_default();
    let generation = ib.metadata.generation;
    let recheck = crate::outcome::failed_by_error(&old.conditions);
    if matches!(old.phase.as_str(), "Complete" | "Failed") && old.observed_generation == generation && !recheck {
        return Ok(Action::await_change());
    }
    let mut status = old.clone();
    if recheck {
        crate::outcome::clear_failure(&mut status.phase, &mut status.conditions);
    }
    if status.observed_generation != generation {
        // A new spec: a new build (the last one's results stay until it completes).
        status.phase = String::new();
        status.stage = String::new();
        status.parts.clear();
        status.parts_done = None;
        stop_superseded(&ctx, &ib, &namespace).await?;
    }
    status.observed_generation = generation;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!("{LABEL}={}", crate::names::label_value(&ib.name_any()));
    let admission = &ib.spec.admission;
    let mine = jobs.list(&ListParams::default().labels(&selector)).await?.items;
    if crate::admission::apply_suspend(&jobs, admission, &mine, &mut status.conditions).await? {
        status.phase = "Suspended".into();
        set_condition(&mut status.conditions, "Progressing", false, "Suspended", crate::admission::SUSPENDED);
    } else {
        build(&ctx, &ib, &namespace, &mut status).await?;
    }
    let mut requeue = Duration::from_secs(60);
    let mine = jobs.list(&ListParams::default().labels(&selector)).await?.items;
    let all_queued = crate::admission::report_queue(&mut status.conditions, admission, &mine);
    if status.phase == "Running" && all_queued {
        status.phase = "Queued".into();
    } else if status.phase == "Running" {
        match ctx.assess_pods(&namespace, &selector, &mut status.conditions).await? {
            Verdict::Failed(reason, message) => {
                fail(&mut status, &reason, &message);
                pods::stop_jobs(&jobs, &mine).await?;
            }
            Verdict::Degraded(check_in) => requeue = check_in,
            Verdict::Healthy => {}
        }
    }
    if status.phase == "Complete" && old.phase != "Complete" {
        prune_old_generations(&ctx, &ib, &namespace, &status).await?;
    }
    crate::status::stamp(&mut status.conditions, generation);
    if status != old {
        ctx.patch_status(ib.as_ref(), &status).await?;
        crate::outcome::announce_degraded(&ctx, ib.as_ref(), &old.conditions, &status.conditions).await;
        if status.phase != old.phase {
            let message = status.conditions.iter().rev().find(|c| c.status == "True" || c.type_ == "Progressing");
            let note = message.map(|c| c.message.clone()).unwrap_or_default();
            ctx.event(ib.as_ref(), KIND, status.phase == "Failed", &status.phase, note).await;
        }
    }
    Ok(match status.phase.as_str() {
        "Complete" | "Failed" => Action::await_change(),
        _ => Action::requeue(requeue),
    })
}

/// Runs this generation's build once its embeddings are ready.
async fn build(ctx: &Context, ib: &IndexBuild, namespace: &str, status: &mut IndexBuildStatus) -> Result<()> {
    match embeddings(ctx, &ib.spec, namespace).await? {
        Embeddings::Failed(message) => fail(status, "InvalidSpec", &message),
        Embeddings::Waiting(message) => {
            status.phase = "Waiting".into();
            set_condition(&mut status.conditions, "Progressing", false, "WaitingForEmbeddings", &message);
        }
        Embeddings::Ready(folder) if ib.spec.shards > 1 => {
            crate::distributed_build::run(ctx, ib, namespace, &folder, status).await?
        }
        Embeddings::Ready(folder) => run_build(ctx, ib, namespace, &folder, status).await?,
    }
    Ok(())
}

/// Retries a failed reconcile after the back-off [`crate::outcome::reconcile_reporting`] counted.
pub fn error_policy(ib: Arc<IndexBuild>, error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(crate::outcome::retry_delay(ib.as_ref(), error, &ctx))
}

/// Marks the build Failed with `reason`.
pub fn fail(status: &mut IndexBuildStatus, reason: &str, message: &str) {
    crate::status::fail(&mut status.phase, &mut status.conditions, reason, message);
}

/// The embeddings folder: a URI, or the output of a Complete EmbeddingJob (exactly one may be given).
async fn embeddings(ctx: &Context, spec: &IndexBuildSpec, namespace: &str) -> Result<Embeddings> {
    match (&spec.embeddings.embedding_job, &spec.embeddings.uri) {
        (Some(_), Some(_)) | (None, None) => {
            Ok(Embeddings::Failed("spec.embeddings needs exactly one of embeddingJob and uri".into()))
        }
        (None, Some(uri)) => Ok(Embeddings::Ready(uri.clone())),
        (Some(name), None) => {
            let api: Api<EmbeddingJob> = Api::namespaced(ctx.client.clone(), namespace);
            let Some(ej) = api.get_opt(name).await? else {
                return Ok(Embeddings::Waiting(format!("EmbeddingJob {name} does not exist (yet)")));
            };
            let phase = ej.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
            Ok(match phase {
                "Complete" => Embeddings::Ready(ej.spec.output.clone()),
                "Failed" => Embeddings::Failed(format!("EmbeddingJob {name} failed")),
                _ => Embeddings::Waiting(format!("waiting for EmbeddingJob {name} to complete")),
            })
        }
    }
}

/// Starts the build Job if needed and reports its state.
async fn run_build(
    ctx: &Context,
    ib: &IndexBuild,
    namespace: &str,
    folder: &str,
    status: &mut IndexBuildStatus,
) -> Result<()> {
    let name = job_name(ib);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let wanted = build_job(ib, folder)?;
    let job = match jobs.get_opt(&name).await? {
        Some(job) => {
            crate::context::check_owner("Job", &wanted.metadata, &job.metadata)?;
            job
        }
        None => crate::admission::create(ctx, namespace, wanted.clone(), &ib.spec.admission).await?,
    };
    status.job_name = Some(name.clone());
    match pods::job_state(&job) {
        pods::JobState::Succeeded => {
            let pod = pods::last_termination(&ctx.client, namespace, &name, true).await?;
            let report = pod.and_then(|t| t.message).unwrap_or_default();
            apply_report(status, &report);
            status.phase = "Complete".into();
            status.completion_time = Some(crate::status::now());
            record_complete(ib, status, Vec::new());
            set_condition(&mut status.conditions, "Progressing", false, "Built", "index built");
            let summary = summary(status);
            set_condition(&mut status.conditions, "Complete", true, "Built", &summary);
            set_condition(&mut status.conditions, "Failed", false, "Built", "");
        }
        pods::JobState::Failed(_) => {
            let pod = pods::last_termination(&ctx.client, namespace, &name, false).await?;
            fail(status, "BuildFailed", &format!("Job {name} failed{}", pods::describe_failure(pod.as_ref())));
        }
        pods::JobState::Running => {
            status.phase = "Running".into();
            set_condition(&mut status.conditions, "Progressing", true, "Building", &format!("Job {name} running"));
        }
    }
    Ok(())
}

/// Records the generation just built as the one to serve.
pub fn record_complete(ib: &IndexBuild, status: &mut IndexBuildStatus, parts: Vec<String>) {
    let generation = ib.metadata.generation.unwrap_or(0);
    let retained = &mut status.retained_generations;
    retained.retain(|g| *g != generation);
    retained.insert(0, generation);
    retained.truncate(ib.spec.keep_generations as usize);
    status.latest_complete = Some(crate::crd::BuiltGeneration {
        generation,
        folder: generation_folder(ib),
        parts,
        completion_time: status.completion_time.clone().unwrap_or_else(crate::status::now),
    });
}

/// After a build finished: a Job deleting the index root's generations older than the retained ones
/// (`clip-retrieval prune_generations`), unless everything is kept or nothing older can exist.
async fn prune_old_generations(
    ctx: &Context,
    ib: &IndexBuild,
    namespace: &str,
    status: &IndexBuildStatus,
) -> Result<()> {
    let generation = ib.metadata.generation.unwrap_or(0);
    if ib.spec.keep_generations == 0 || generation < 2 || status.retained_generations.is_empty() {
        return Ok(());
    }
    let name = crate::names::child(&ib.name_any(), &format!("-prune-g{generation}"));
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    if jobs.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    let job = index_job(ib, &name, prune_args(ib, status))?;
    crate::admission::create(ctx, namespace, job, &ib.spec.admission).await?;
    let kept: Vec<String> = status.retained_generations.iter().map(|g| format!("g{g}")).collect();
    let note = format!("Job {name} deletes the generations under {} older than {}", ib.spec.output, kept.join(", "));
    ctx.event(ib, KIND, false, "PruningGenerations", note).await;
    Ok(())
}

/// `prune_generations` of the output root, keeping the retained generations.
pub fn prune_args(ib: &IndexBuild, status: &IndexBuildStatus) -> Vec<String> {
    clip_cli::PruneGenerationsArgs {
        index_root: ib.spec.output.trim_end_matches('/').to_string(),
        keep_generations: status.retained_generations.iter().map(|g| *g as u64).collect(),
        dry_run: false,
    }
    .to_argv()
}

/// Deletes the Jobs of earlier spec generations still running: two generations never build at once.
async fn stop_superseded(ctx: &Context, ib: &IndexBuild, namespace: &str) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("{LABEL}={}", crate::names::label_value(&ib.name_any()));
    let current = ib.metadata.generation.unwrap_or(0).to_string();
    let mut earlier = jobs.list(&ListParams::default().labels(&selector)).await?.items;
    earlier.retain(|j| j.labels().get(GENERATION_LABEL) != Some(&current));
    if earlier.iter().any(|j| pods::job_state(j) == pods::JobState::Running) {
        tracing::info!(name = %ib.name_any(), generation = %current, "stopping the Jobs of the superseded generation");
    }
    pods::stop_jobs(&jobs, &earlier).await
}

/// Copies the build summary (`{"indices": {"image": {...}, "text": {...}}}`) into the status; a missing or
/// unreadable summary leaves the fields empty (the build itself succeeded).
pub fn apply_report(status: &mut IndexBuildStatus, report: &str) {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(report) else {
        tracing::warn!(report, "the build's summary is not JSON; status keeps no index details");
        return;
    };
    let indices = &json["indices"];
    let main = if indices["image"].is_object() { &indices["image"] } else { &indices["text"] };
    status.index_key = main["index_key"].as_str().map(String::from);
    status.recall_at10 = main["recall_at_10"].as_f64();
    status.vectors = main["count"].as_u64();
    let bytes: u64 =
        indices.as_object().map(|m| m.values().filter_map(|v| v["index_bytes"].as_u64()).sum()).unwrap_or(0);
    status.index_bytes = (bytes > 0).then_some(bytes);
}

fn summary(status: &IndexBuildStatus) -> String {
    format!(
        "{} over {} vectors, recall@10 {}, {} bytes",
        status.index_key.as_deref().unwrap_or("unknown index"),
        status.vectors.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
        status.recall_at10.map(|r| format!("{r:.3}")).unwrap_or_else(|| "?".into()),
        status.index_bytes.map(|b| b.to_string()).unwrap_or_else(|| "?".into()),
    )
}

/// Name of the build Job of the current spec generation.
pub fn job_name(ib: &IndexBuild) -> String {
    crate::names::child(&ib.name_any(), &format!("-build-g{}", ib.metadata.generation.unwrap_or(0)))
}

/// Where spec generation N of `ib` is built: `<output>/g<N>`.
pub fn generation_folder(ib: &IndexBuild) -> String {
    format!("{}/g{}", ib.spec.output.trim_end_matches('/'), ib.metadata.generation.unwrap_or(0))
}

/// The `clip-retrieval index` arguments of this generation.
pub fn index_args(ib: &IndexBuild, folder: &str) -> Result<Vec<String>> {
    render_index(&ib.spec, &summary_args(&ib.spec, folder, &generation_folder(ib))?)
}

/// `args` as argv with the spec's typed options pinned and its `extraArgs` appended and checked (every index Job).
pub fn render_index(spec: &IndexBuildSpec, args: &IndexArgs) -> Result<Vec<String>> {
    use crate::command_line::pin_if;
    let mut pins = vec!["max_index_memory_usage"];
    pin_if(&mut pins, spec.metric.is_some(), "metric");
    pin_if(&mut pins, spec.max_index_query_time_ms.is_some(), "max_index_query_time_ms");
    pin_if(&mut pins, spec.min_recall.is_some(), "min_recall");
    crate::command_line::render(args, &pins, &spec.extra_args)
}

/// `index` of `folder` into `output` with the spec's budget, modalities and pod memory, writing its summary to the
/// termination message (every build Job's flags; a distributed build adds its stage's).
pub fn summary_args(spec: &IndexBuildSpec, folder: &str, output: &str) -> Result<IndexArgs> {
    let mut args = IndexArgs::new(folder, output);
    args.max_index_memory_usage =
        spec.max_index_memory_usage.parse().map_err(|e| Error::InvalidSpec(format!("maxIndexMemoryUsage {e}")))?;
    args.modalities = spec.modalities.clone();
    args.report_path = Some(REPORT_PATH.into());
    args.no_progress = true;
    args.index_key = spec.index_key.clone();
    if let Some(metric) = spec.metric {
        args.metric = metric;
    }
    if let Some(ms) = spec.max_index_query_time_ms {
        args.max_index_query_time_ms = ms;
    }
    if let Some(recall) = spec.min_recall {
        args.min_recall = recall;
    }
    if let Some(memory) = &spec.placement.resources.memory {
        // The build sizes its training sample to the pod's memory (Kubernetes quantity -> the CLI's syntax).
        let bytes = crate::quantity::bytes(memory, "resources.memory").map_err(Error::InvalidSpec)?;
        args.current_memory_available = clip_cli::ByteSize(bytes);
    }
    Ok(args)
}

/// The Job building the index of `folder`.
pub fn build_job(ib: &IndexBuild, folder: &str) -> Result<Job> {
    index_job(ib, &job_name(ib), index_args(ib, folder)?)
}

/// A Job `name` of the IndexBuild running `clip-retrieval <args>`, its summary read from the termination message.
pub fn index_job(ib: &IndexBuild, name: &str, args: Vec<String>) -> Result<Job> {
    let labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (LABEL.to_string(), crate::names::label_value(&ib.name_any())),
        (GENERATION_LABEL.to_string(), ib.metadata.generation.unwrap_or(0).to_string()),
    ]);
    let mut container = pods::container("index", &ib.spec.placement, args, vec![]);
    container.termination_message_path = Some(REPORT_PATH.into());
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: ib.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner_reference(ib)?]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            template: pods::pod_template(&ib.spec.placement, labels, BTreeMap::new(), container, Some("Never")),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_summary_fills_the_status() {
        let mut status = IndexBuildStatus::default();
        apply_report(
            &mut status,
            r#"{"indices": {"image": {"index_key": "IVF64,Flat", "index_bytes": 1000, "recall_at_10": 0.97, "count": 400},
                "text": {"index_key": "Flat", "index_bytes": 500, "recall_at_10": 1.0, "count": 400}}, "metadata_rows": 400}"#,
        );
        assert_eq!(status.index_key.as_deref(), Some("IVF64,Flat"));
        assert_eq!((status.index_bytes, status.vectors, status.recall_at10), (Some(1500), Some(400), Some(0.97)));
        let mut empty = IndexBuildStatus::default();
        apply_report(&mut empty, "Error: out of memory");
        assert_eq!(empty, IndexBuildStatus::default());
    }
}
