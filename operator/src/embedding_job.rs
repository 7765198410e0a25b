//! The EmbeddingJob controller: runs `clip-retrieval inference` over the dataset's partitions as parallel pods.
//!
//! On servers with per-index retry limits (1.29+) one Indexed Job runs every partition; elsewhere (CI's 1.20) each
//! partition is its own Job, created `parallelism` at a time, so that a failing partition is retried alone
//! (`backoffLimit = retriesPerPartition`). Finished partitions are recorded in status (`succeededPartitionIds`) and
//! never started again; the inference resume rules make a repeated partition harmless anyway.

use crate::context::{owner_reference, Context, MANAGED_BY};
use crate::crd::{EmbeddingJob, EmbeddingJobSpec, EmbeddingJobStatus};
use crate::health::Verdict;
use crate::pods::{self, job_state, JobState};
use crate::status::{format_ranges, parse_ranges, set_condition};
use crate::{Error, Result};
use clip_cli::InferenceArgs;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Kind label in metrics and Events.
pub const KIND: &str = "EmbeddingJob";
/// Label naming the EmbeddingJob on its Jobs.
pub const LABEL: &str = "clip-retrieval.io/embedding-job";
/// Label with the partition id (per-partition Jobs).
pub const PARTITION_LABEL: &str = "clip-retrieval.io/partition";
const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// Brings the partitions' Jobs and the status in line with the spec.
pub async fn reconcile(ej: Arc<EmbeddingJob>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    let namespace = ej.namespace().ok_or_else(|| Error::MissingField(ej.name_any(), "namespace"))?;
    let old = ej.status.clone().unwrap_or_default();
    let recheck = crate::outcome::failed_by_error(&old.conditions);
    if old.phase == "Complete" || (old.phase == "Failed" && !recheck) {
        return Ok(Action::await_change());
    }
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let jobs = jobs_api
        .list(&ListParams::default().labels(&format!("{LABEL}={}", crate::names::label_value(&ej.name_any()))))
        .await?
        .items;
    let indexed = ctx.caps.indexed_jobs_per_index_backoff;
    let mut status = old.clone();
    if recheck {
        crate::outcome::clear_failure(&mut status.phase, &mut status.conditions);
    }
    status.partitions_total = ej.spec.partitions;
    status.observed_generation = ej.metadata.generation;
    status.job_mode = Some(if indexed { "IndexedJob" } else { "JobPerPartition" }.into());
    let mut succeeded = parse_ranges(&old.succeeded_partition_ids);
    let (failed, running) =
        if indexed { observe_indexed(&jobs, &mut succeeded) } else { observe_per_partition(&jobs, &mut succeeded) };
    succeeded.retain(|p| *p < ej.spec.partitions);
    let mut failures = BTreeMap::new();
    for (partition, reason) in failed.into_iter().filter(|(p, _)| !succeeded.contains(p)) {
        let pod =
            pods::last_termination(&ctx.client, &namespace, &job_name(&ej, Some(partition), indexed), false).await?;
        failures.insert(partition, format!("{reason}{}", pods::describe_failure(pod.as_ref())));
    }
    let admission = &ej.spec.admission;
    let suspended = crate::admission::apply_suspend(&jobs_api, admission, &jobs, &mut status.conditions).await?;
    let mut jobs = jobs;
    let mut launched = 0;
    if !suspended && failures.is_empty() && succeeded.len() < ej.spec.partitions as usize {
        let started = launch(&ctx, &ej, &namespace, &jobs, &succeeded, running).await?;
        launched = started.len() as u32;
        jobs.extend(started);
    }
    status.succeeded_partition_ids = format_ranges(&succeeded);
    status.partitions_succeeded = succeeded.len() as u32;
    status.partitions_failed = failures.len() as u32;
    decide_phase(&ej.spec, &mut status, &failures, running + launched);
    if status.start_time.is_none() && (running + launched) > 0 {
        status.start_time = Some(crate::status::now());
    }
    let unfinished = !matches!(status.phase.as_str(), "Complete" | "Failed");
    let all_queued = crate::admission::report_queue(&mut status.conditions, admission, &jobs);
    if unfinished && suspended {
        status.phase = "Suspended".into();
        set_condition(&mut status.conditions, "Progressing", false, "Suspended", crate::admission::SUSPENDED);
    } else if unfinished && all_queued {
        status.phase = "Queued".into();
    }
    let mut requeue = Duration::from_secs(60);
    if unfinished && !suspended {
        let selector = format!("{LABEL}={}", crate::names::label_value(&ej.name_any()));
        match ctx.assess_pods(&namespace, &selector, &mut status.conditions).await? {
            Verdict::Failed(reason, message) => {
                crate::status::fail(&mut status.phase, &mut status.conditions, &reason, &message);
                pods::stop_jobs(&jobs_api, &jobs).await?;
            }
            Verdict::Degraded(check_in) => requeue = check_in,
            Verdict::Healthy => {}
        }
    }
    crate::status::stamp(&mut status.conditions, ej.metadata.generation);
    if status != old {
        ctx.patch_status(ej.as_ref(), &status).await?;
        announce(&ctx, ej.as_ref(), &old, &status, &failures).await;
        crate::outcome::announce_degraded(&ctx, ej.as_ref(), &old.conditions, &status.conditions).await;
    }
    Ok(match status.phase.as_str() {
        "Complete" | "Failed" => Action::await_change(),
        _ => Action::requeue(requeue),
    })
}

/// Retries a failed reconcile after the back-off [`crate::outcome::reconcile_reporting`] counted.
pub fn error_policy(ej: Arc<EmbeddingJob>, error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(crate::outcome::retry_delay(ej.as_ref(), error, &ctx))
}

/// Per-partition Jobs: adds finished partitions to `succeeded`; returns the failed ones and how many run.
fn observe_per_partition(jobs: &[Job], succeeded: &mut BTreeSet<u32>) -> (Vec<(u32, String)>, u32) {
    let mut failed = Vec::new();
    let mut running = 0;
    for job in jobs {
        let Some(partition) = job.labels().get(PARTITION_LABEL).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        match job_state(job) {
            JobState::Succeeded => {
                succeeded.insert(partition);
            }
            JobState::Failed(reason) => failed.push((partition, reason)),
            JobState::Running => running += 1,
        }
    }
    (failed, running)
}

/// One Indexed Job: its `completedIndexes` / `failedIndexes`.
fn observe_indexed(jobs: &[Job], succeeded: &mut BTreeSet<u32>) -> (Vec<(u32, String)>, u32) {
    let Some(job) = jobs.iter().find(|j| !j.labels().contains_key(PARTITION_LABEL)) else {
        return (Vec::new(), 0);
    };
    let status = job.status.clone().unwrap_or_default();
    succeeded.extend(parse_ranges(status.completed_indexes.as_deref().unwrap_or("")));
    let failed = parse_ranges(status.failed_indexes.as_deref().unwrap_or(""))
        .into_iter()
        .map(|p| (p, "its retries were used up".to_string()))
        .collect();
    let running = if job_state(job) == JobState::Running { 1 } else { 0 };
    (failed, running)
}

/// Starts Jobs for partitions that have none, up to `parallelism` running; returns the Jobs started.
async fn launch(
    ctx: &Context,
    ej: &EmbeddingJob,
    namespace: &str,
    jobs: &[Job],
    succeeded: &BTreeSet<u32>,
    running: u32,
) -> Result<Vec<Job>> {
    let admission = &ej.spec.admission;
    if ctx.caps.indexed_jobs_per_index_backoff {
        if jobs.iter().any(|j| !j.labels().contains_key(PARTITION_LABEL)) {
            return Ok(Vec::new());
        }
        return Ok(vec![crate::admission::create(ctx, namespace, indexed_job(ej)?, admission).await?]);
    }
    let existing: BTreeSet<u32> =
        jobs.iter().filter_map(|j| j.labels().get(PARTITION_LABEL).and_then(|p| p.parse().ok())).collect();
    let free = ej.spec.parallelism.saturating_sub(running);
    let todo = (0..ej.spec.partitions).filter(|p| !succeeded.contains(p) && !existing.contains(p));
    let mut started = Vec::new();
    for partition in todo.take(free as usize) {
        started.push(crate::admission::create(ctx, namespace, partition_job(ej, partition)?, admission).await?);
    }
    Ok(started)
}

fn decide_phase(
    spec: &EmbeddingJobSpec,
    status: &mut EmbeddingJobStatus,
    failures: &BTreeMap<u32, String>,
    active: u32,
) {
    let done = status.partitions_succeeded;
    let progress = format!("{done}/{} partitions done", spec.partitions);
    if !failures.is_empty() {
        let list: Vec<String> = failures.iter().map(|(p, m)| format!("partition {p}: {m}")).collect();
        status.phase = "Failed".into();
        set_condition(&mut status.conditions, "Progressing", false, "PartitionFailed", &progress);
        set_condition(&mut status.conditions, "Failed", true, "PartitionFailed", &list.join("; "));
    } else if done == spec.partitions {
        status.phase = "Complete".into();
        status.completion_time.get_or_insert_with(crate::status::now);
        set_condition(&mut status.conditions, "Progressing", false, "Complete", &progress);
        set_condition(&mut status.conditions, "Complete", true, "AllPartitionsSucceeded", &progress);
    } else {
        status.phase = if active > 0 || done > 0 { "Running" } else { "Pending" }.into();
        set_condition(&mut status.conditions, "Progressing", true, "PartitionsRunning", &progress);
        set_condition(&mut status.conditions, "Complete", false, "PartitionsRunning", &progress);
    }
}

/// Events for phase transitions and newly failed partitions.
async fn announce(
    ctx: &Context,
    ej: &EmbeddingJob,
    old: &EmbeddingJobStatus,
    new: &EmbeddingJobStatus,
    failures: &BTreeMap<u32, String>,
) {
    if old.phase != new.phase {
        let warning = new.phase == "Failed";
        let note = match new.phase.as_str() {
            "Failed" if failures.is_empty() => condition_message(new, "Failed"),
            "Failed" => format!("{} partition(s) failed past their retries", failures.len()),
            _ => format!("{}/{} partitions done", new.partitions_succeeded, new.partitions_total),
        };
        ctx.event(ej, KIND, warning, &new.phase, note).await;
    }
    if new.partitions_succeeded > old.partitions_succeeded && new.phase == "Running" {
        let note = format!("{}/{} partitions done", new.partitions_succeeded, new.partitions_total);
        ctx.event(ej, KIND, false, "PartitionsSucceeded", note).await;
    }
    for (partition, message) in failures {
        if old.partitions_failed == 0 {
            ctx.event(ej, KIND, true, "PartitionFailed", format!("partition {partition}: {message}")).await;
        }
    }
}

fn condition_message(status: &EmbeddingJobStatus, type_: &str) -> String {
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| c.message.clone()).unwrap_or_default()
}

/// Name of the Job of `partition` (or of the Indexed Job when `indexed`).
pub fn job_name(ej: &EmbeddingJob, partition: Option<u32>, indexed: bool) -> String {
    match partition {
        Some(p) if !indexed => crate::names::child(&ej.name_any(), &format!("-p{p}")),
        _ => crate::names::child(&ej.name_any(), "-inference"),
    }
}

/// The `clip-retrieval inference` arguments for partition `partition`, or for the partition in `$(PARTITION_ID)`
/// (the Indexed Job's completion index, expanded by the kubelet) when `None`; `extraArgs` appended and checked.
pub fn inference_args(spec: &EmbeddingJobSpec, partition: Option<u32>) -> Result<Vec<String>> {
    use crate::command_line::pin_if;
    let mut args = InferenceArgs::new(&spec.input, &spec.output);
    args.input_format = spec.input_format;
    args.output_partition_count = Some(spec.partitions as usize);
    args.partition_ids = Some(vec![partition.unwrap_or(0) as usize]);
    args.batch_size = spec.batch_size as usize;
    args.enable_metadata = true;
    args.no_progress = true;
    args.model.clip_model = spec.model.clone();
    args.model.device = pods::device(&spec.placement);
    // Everything the spec sets is written out, defaults included: the image's defaults may differ.
    let mut pins = vec!["input_format", "batch_size", "enable_metadata"];
    if let Some(key) = &spec.wds_image_key {
        args.wds_image_key = key.clone();
    }
    pin_if(&mut pins, spec.wds_image_key.is_some(), "wds_image_key");
    if let Some(key) = &spec.wds_caption_key {
        args.wds_caption_key = key.clone();
    }
    pin_if(&mut pins, spec.wds_caption_key.is_some(), "wds_caption_key");
    if let Some(dtype) = spec.embedding_dtype {
        args.embedding_dtype = dtype;
    }
    pin_if(&mut pins, spec.embedding_dtype.is_some(), "embedding_dtype");
    if let Some(p) = spec.precision {
        args.model.precision = p;
    }
    pin_if(&mut pins, spec.precision.is_some(), "precision");
    args.model.image_precision = spec.image_precision;
    args.model.text_precision = spec.text_precision;
    if let Some(on) = spec.enable_image {
        args.enable_image = on;
    }
    pin_if(&mut pins, spec.enable_image.is_some(), "enable_image");
    if let Some(on) = spec.enable_text {
        args.enable_text = on;
    }
    pin_if(&mut pins, spec.enable_text.is_some(), "enable_text");
    let mut argv = crate::command_line::render(&args, &pins, &spec.extra_args)?;
    if partition.is_none() {
        pods::replace_value(&mut argv, "--partition_ids", "$(PARTITION_ID)");
    }
    Ok(argv)
}

fn labels(ej: &EmbeddingJob, partition: Option<u32>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (LABEL.to_string(), crate::names::label_value(&ej.name_any())),
    ]);
    if let Some(p) = partition {
        labels.insert(PARTITION_LABEL.into(), p.to_string());
    }
    labels
}

/// The Job computing one partition, retried alone up to `retriesPerPartition` times.
pub fn partition_job(ej: &EmbeddingJob, partition: u32) -> Result<Job> {
    let container =
        pods::container("inference", &ej.spec.placement, inference_args(&ej.spec, Some(partition))?, vec![]);
    let spec = JobSpec {
        backoff_limit: Some(ej.spec.retries_per_partition as i32),
        completions: Some(1),
        parallelism: Some(1),
        template: template(ej, Some(partition), container),
        ..Default::default()
    };
    job(ej, Some(partition), spec)
}

/// The Indexed Job running every partition (`backoffLimitPerIndex` = `retriesPerPartition`).
pub fn indexed_job(ej: &EmbeddingJob) -> Result<Job> {
    let env = vec![pods::env_from_annotation("PARTITION_ID", COMPLETION_INDEX_ANNOTATION)];
    let container = pods::container("inference", &ej.spec.placement, inference_args(&ej.spec, None)?, env);
    let spec = JobSpec {
        completion_mode: Some("Indexed".into()),
        completions: Some(ej.spec.partitions as i32),
        parallelism: Some(ej.spec.parallelism.min(ej.spec.partitions) as i32),
        backoff_limit_per_index: Some(ej.spec.retries_per_partition as i32),
        // Every partition runs even when one fails; the EmbeddingJob fails when any index has.
        backoff_limit: Some(i32::MAX),
        template: template(ej, None, container),
        ..Default::default()
    };
    job(ej, None, spec)
}

fn template(
    ej: &EmbeddingJob,
    partition: Option<u32>,
    container: k8s_openapi::api::core::v1::Container,
) -> PodTemplateSpec {
    pods::pod_template(&ej.spec.placement, labels(ej, partition), BTreeMap::new(), container, Some("Never"))
}

fn job(ej: &EmbeddingJob, partition: Option<u32>, spec: JobSpec) -> Result<Job> {
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(ej, partition, partition.is_none())),
            namespace: ej.namespace(),
            labels: Some(labels(ej, partition)),
            owner_references: Some(vec![owner_reference(ej)?]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_resource(spec: serde_json::Value) -> EmbeddingJob {
        let mut ej = EmbeddingJob::new("laion", serde_json::from_value(spec).expect("spec"));
        ej.metadata.namespace = Some("ns".into());
        ej.metadata.uid = Some("uid-1".into());
        ej
    }

    #[test]
    fn an_indexed_job_reads_its_partition_from_the_completion_index() {
        let ej = job_resource(serde_json::json!({
            "input": "s3://in", "output": "s3://out", "partitions": 8, "parallelism": 3, "retriesPerPartition": 2,
            "image": "img"
        }));
        let job = indexed_job(&ej).unwrap();
        let spec = job.spec.unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("laion-inference"));
        assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
        assert_eq!((spec.completions, spec.parallelism, spec.backoff_limit_per_index), (Some(8), Some(3), Some(2)));
        let container = &spec.template.spec.unwrap().containers[0];
        let args = container.args.clone().unwrap();
        let at = args.iter().position(|a| a == "--partition_ids").unwrap();
        assert_eq!(args[at + 1], "$(PARTITION_ID)");
        let env = &container.env.as_ref().unwrap()[0];
        assert_eq!(env.name, "PARTITION_ID");
        let path = &env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path;
        assert_eq!(path, "metadata.annotations['batch.kubernetes.io/job-completion-index']");
    }

    #[test]
    fn an_indexed_job_reports_completed_and_failed_indexes() {
        let job = Job {
            status: Some(k8s_openapi::api::batch::v1::JobStatus {
                completed_indexes: Some("0-2,5".into()),
                failed_indexes: Some("4".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut succeeded = BTreeSet::from([7]);
        let (failed, running) = observe_indexed(&[job], &mut succeeded);
        assert_eq!(succeeded, BTreeSet::from([0, 1, 2, 5, 7]));
        assert_eq!(failed.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [4]);
        assert_eq!(running, 1);
    }

    fn partition_ids(ps: &[(u32, String)]) -> Vec<u32> {
        ps.iter().map(|(p, _)| *p).collect()
    }

    #[test]
    fn recorded_partition_jobs_are_sorted_into_succeeded_failed_and_running() {
        use crate::fixtures::partition_job;
        let mut unlabelled = partition_job(9, "complete");
        unlabelled.metadata.labels.as_mut().unwrap().remove(PARTITION_LABEL);
        let jobs = [partition_job(0, "complete"), partition_job(1, "failed"), partition_job(2, "running"), unlabelled];
        let mut succeeded = BTreeSet::from([5]);
        let (failed, running) = observe_per_partition(&jobs, &mut succeeded);
        assert_eq!(succeeded, BTreeSet::from([0, 5]), "earlier successes are kept, unlabelled Jobs ignored");
        assert_eq!(partition_ids(&failed), [1]);
        assert_eq!(failed[0].1, "BackoffLimitExceeded after 3 attempt(s)");
        assert_eq!(running, 1);
    }

    fn phase_after(partitions: u32, succeeded: u32, failures: &[(u32, &str)], active: u32) -> EmbeddingJobStatus {
        let spec: EmbeddingJobSpec = serde_json::from_value(serde_json::json!({
            "input": "s3://in", "output": "s3://out", "partitions": partitions, "image": "img"
        }))
        .unwrap();
        let mut status = EmbeddingJobStatus { partitions_succeeded: succeeded, ..Default::default() };
        let failures = failures.iter().map(|(p, m)| (*p, m.to_string())).collect();
        decide_phase(&spec, &mut status, &failures, active);
        status
    }

    fn condition<'a>(status: &'a EmbeddingJobStatus, kind: &str) -> (&'a str, &'a str) {
        let c = status.conditions.iter().find(|c| c.type_ == kind).unwrap_or_else(|| panic!("no {kind} condition"));
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn the_phase_follows_the_partitions() {
        let pending = phase_after(4, 0, &[], 0);
        assert_eq!(pending.phase, "Pending");
        assert_eq!(condition(&pending, "Progressing"), ("True", "PartitionsRunning"));
        assert_eq!(phase_after(4, 0, &[], 2).phase, "Running");
        assert_eq!(phase_after(4, 3, &[], 0).phase, "Running", "finished partitions count as progress");
        let complete = phase_after(4, 4, &[], 0);
        assert_eq!(complete.phase, "Complete");
        assert!(complete.completion_time.is_some());
        assert_eq!(condition(&complete, "Complete"), ("True", "AllPartitionsSucceeded"));
        assert_eq!(condition(&complete, "Progressing"), ("False", "Complete"));
    }

    #[test]
    fn one_failed_partition_fails_the_job_and_names_it() {
        let failed = phase_after(4, 3, &[(2, "BackoffLimitExceeded after 3 attempt(s): exit code 1")], 0);
        assert_eq!(failed.phase, "Failed");
        assert_eq!(condition(&failed, "Failed"), ("True", "PartitionFailed"));
        let message = &failed.conditions.iter().find(|c| c.type_ == "Failed").unwrap().message;
        assert!(message.contains("partition 2: BackoffLimitExceeded"), "{message}");
        assert!(failed.completion_time.is_none());
    }
}
