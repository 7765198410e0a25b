//! When the Jobs of EmbeddingJobs and IndexBuilds may run: `spec.suspend` (the user pauses the work) and
//! `spec.queueName` (a Kueue LocalQueue admits each Job).
//!
//! A queue's Jobs are created held and whoever admits them releases them; the operator only reads that and never
//! releases a Job itself, so it cannot race the queue (Kueue also re-suspends a Job it did not admit). Suspending
//! deletes the unfinished Jobs rather than setting their `spec.suspend`: a suspended Job's pods are deleted too, so
//! nothing more is lost, and it cannot fight a queue that would unsuspend an admitted Job.

use crate::capabilities::Capabilities;
use crate::context::Context;
use crate::crd::{Admission, Condition};
use crate::pods::{job_state, JobState};
use crate::status::{is_true, set_condition};
use crate::Result;
use k8s_openapi::api::batch::v1::Job;
use kube::{Api, ResourceExt};

/// Label Kueue reads the LocalQueue from.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// Servers without `Job.spec.suspend` (before 1.22): a held Job runs at parallelism 0 and keeps its real
/// parallelism here; admitting it means setting `spec.parallelism` back.
pub const HELD_PARALLELISM: &str = "clip-retrieval.io/held-parallelism";

/// Creates `job`, labelled for the resource's queue and held when it has one.
pub async fn create(ctx: &Context, namespace: &str, mut job: Job, admission: &Admission) -> Result<Job> {
    hold_for_queue(&mut job, admission, &ctx.caps);
    ctx.apply(namespace, &job).await
}

/// Labels `job` with the queue of `admission` and holds it: `spec.suspend` where the server has it, parallelism 0
/// otherwise.
pub fn hold_for_queue(job: &mut Job, admission: &Admission, caps: &Capabilities) {
    let Some(queue) = &admission.queue_name else { return };
    job.metadata.labels.get_or_insert_with(Default::default).insert(QUEUE_LABEL.into(), queue.clone());
    let spec = job.spec.get_or_insert_with(Default::default);
    if caps.job_suspend {
        spec.suspend = Some(true);
    } else {
        let parallelism = spec.parallelism.unwrap_or(1);
        job.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(HELD_PARALLELISM.into(), parallelism.to_string());
        spec.parallelism = Some(0);
    }
}

/// Whether `job` waits for admission (suspended, or held at parallelism 0).
pub fn is_held(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    let suspended = spec.and_then(|s| s.suspend) == Some(true);
    let parked = spec.and_then(|s| s.parallelism) == Some(0) && job.annotations().contains_key(HELD_PARALLELISM);
    suspended || parked
}

/// Reports in condition `Queued` which of the unfinished `jobs` wait for the queue; returns whether all of them do
/// (the resource's phase is then `Queued`).
pub fn report_queue(conditions: &mut Vec<Condition>, admission: &Admission, jobs: &[Job]) -> bool {
    let unfinished: Vec<&Job> =
        jobs.iter().filter(|j| j.metadata.deletion_timestamp.is_none() && job_state(j) == JobState::Running).collect();
    let held: Vec<String> = unfinished.iter().filter(|j| is_held(j)).map(|j| j.name_any()).collect();
    let Some(queue) = &admission.queue_name else {
        if is_true(conditions, "Queued") {
            set_condition(conditions, "Queued", false, "NoQueue", "spec.queueName was removed");
        }
        return false;
    };
    if held.is_empty() {
        if !unfinished.is_empty() || conditions.iter().any(|c| c.type_ == "Queued") {
            set_condition(conditions, "Queued", false, "Admitted", &format!("LocalQueue {queue} admitted the Jobs"));
        }
        return false;
    }
    let message = format!("{} Job(s) wait for admission by LocalQueue {queue}: {}", held.len(), held.join(", "));
    set_condition(conditions, "Queued", true, "WaitingForAdmission", &message);
    held.len() == unfinished.len()
}

/// The message of a suspended resource's conditions.
pub const SUSPENDED: &str = "spec.suspend is true: unfinished Jobs are stopped and none start; finished work is kept";

/// Stops the unfinished `jobs` when `admission` says suspend, setting condition `Suspended`; returns whether the
/// resource is suspended. Resuming sets it False; the controller then starts Jobs as usual.
pub async fn apply_suspend(
    api: &Api<Job>,
    admission: &Admission,
    jobs: &[Job],
    conditions: &mut Vec<Condition>,
) -> Result<bool> {
    if !admission.suspend {
        if is_true(conditions, "Suspended") {
            set_condition(conditions, "Suspended", false, "Resumed", "spec.suspend is false");
        }
        return Ok(false);
    }
    crate::pods::stop_jobs(api, jobs).await?;
    set_condition(conditions, "Suspended", true, "Suspended", SUSPENDED);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Condition;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn job(name: &str, parallelism: i32) -> Job {
        Job {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(JobSpec { parallelism: Some(parallelism), ..Default::default() }),
            status: None,
        }
    }

    fn queue(name: &str) -> Admission {
        Admission { suspend: false, queue_name: Some(name.into()) }
    }

    fn queued(conditions: &[Condition]) -> (String, String, String) {
        let c = conditions.iter().find(|c| c.type_ == "Queued").expect("a Queued condition");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn a_queued_job_is_labelled_and_suspended_where_the_server_can() {
        let mut j = job("a", 3);
        hold_for_queue(&mut j, &queue("gpu"), &Capabilities::for_version(1, 30));
        assert_eq!(j.labels()[QUEUE_LABEL], "gpu");
        let spec = j.spec.as_ref().unwrap();
        assert_eq!((spec.suspend, spec.parallelism), (Some(true), Some(3)));
        assert!(is_held(&j));
        j.spec.as_mut().unwrap().suspend = Some(false);
        assert!(!is_held(&j), "admitted: Kueue set suspend false");
    }

    #[test]
    fn before_1_22_a_queued_job_is_held_at_parallelism_zero() {
        let mut j = job("a", 3);
        hold_for_queue(&mut j, &queue("gpu"), &Capabilities::for_version(1, 20));
        let spec = j.spec.as_ref().unwrap();
        assert_eq!((spec.suspend, spec.parallelism), (None, Some(0)), "1.20 drops spec.suspend");
        assert_eq!(j.annotations()[HELD_PARALLELISM], "3");
        assert!(is_held(&j));
        j.spec.as_mut().unwrap().parallelism = Some(3);
        assert!(!is_held(&j), "admitted: parallelism set back");
    }

    #[test]
    fn without_a_queue_jobs_are_left_as_built() {
        let mut j = job("a", 2);
        hold_for_queue(&mut j, &Admission::default(), &Capabilities::for_version(1, 30));
        assert_eq!(j, job("a", 2));
        assert!(!is_held(&job("b", 0)), "parallelism 0 without the annotation is not a hold");
    }

    #[test]
    fn the_queued_condition_names_the_waiting_jobs() {
        let caps = Capabilities::for_version(1, 30);
        let (mut a, mut b) = (job("a", 1), job("b", 1));
        hold_for_queue(&mut a, &queue("gpu"), &caps);
        hold_for_queue(&mut b, &queue("gpu"), &caps);
        let mut conditions = Vec::new();
        assert!(report_queue(&mut conditions, &queue("gpu"), &[a.clone(), b.clone()]));
        let (status, reason, message) = queued(&conditions);
        assert_eq!((status.as_str(), reason.as_str()), ("True", "WaitingForAdmission"));
        assert_eq!(message, "2 Job(s) wait for admission by LocalQueue gpu: a, b");
        b.spec.as_mut().unwrap().suspend = Some(false);
        assert!(!report_queue(&mut conditions, &queue("gpu"), &[a.clone(), b.clone()]), "one runs: not all queued");
        assert_eq!(queued(&conditions).2, "1 Job(s) wait for admission by LocalQueue gpu: a");
        a.spec.as_mut().unwrap().suspend = Some(false);
        assert!(!report_queue(&mut conditions, &queue("gpu"), &[a, b]));
        assert_eq!(queued(&conditions).0, "False");
        assert_eq!(queued(&conditions).1, "Admitted");
        let mut plain = Vec::new();
        assert!(!report_queue(&mut plain, &Admission::default(), &[job("c", 1)]));
        assert!(plain.is_empty(), "no queue, no condition");
    }
}
