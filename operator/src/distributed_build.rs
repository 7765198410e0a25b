//! IndexBuilds with `shards > 1`: one training Job (`index --train_only`, a sample across every partition), then
//! one add Job per contiguous slice of the partitions (`index --trained_index_folder --partition_ids`), run in
//! parallel and retried alone when one fails, then a merge Job (`index_combiner`) unless the parts are served as
//! shards. The slices come from the training Job's summary (its termination message lists the partitions and their
//! rows), so the operator never reads the embeddings; each part's row offset is known before it runs.

use crate::crd::{IndexBuild, IndexBuildStatus, IndexPart};
use crate::index_build::{fail, generation_folder, index_job, record_complete, summary_args};
use crate::pods::{self, JobState};
use crate::status::set_condition;
use crate::{Error, Result};
use clip_cli::values::PartitionIds;
use clip_cli::{CommandArgs, IndexArgs, IndexCombinerArgs};
use k8s_openapi::api::batch::v1::Job;
use kube::{Api, ResourceExt};

/// Where the trained index and the parts of `output` go: beside it, so that serving `output` never downloads them.
pub fn parts_root(output: &str) -> String {
    format!("{}-parts", output.trim_end_matches('/'))
}

/// The training Job's folder.
pub fn trained_folder(output: &str) -> String {
    format!("{}/trained", parts_root(output))
}

/// Part `i`'s folder.
pub fn part_folder(output: &str, i: usize) -> String {
    format!("{}/{i}", parts_root(output))
}

fn generation(ib: &IndexBuild) -> i64 {
    ib.metadata.generation.unwrap_or(0)
}

/// The training Job of this spec generation.
pub fn train_job_name(ib: &IndexBuild) -> String {
    crate::names::child(&ib.name_any(), &format!("-train-g{}", generation(ib)))
}

/// Part `i`'s Job at `attempt` (a retry is a new Job beside the failed one, which stays for its logs).
pub fn part_job_name(ib: &IndexBuild, i: usize, attempt: u32) -> String {
    crate::names::child(&ib.name_any(), &format!("-part{i}-g{}-a{attempt}", generation(ib)))
}

/// The merge Job of this spec generation.
pub fn merge_job_name(ib: &IndexBuild) -> String {
    crate::names::child(&ib.name_any(), &format!("-merge-g{}", generation(ib)))
}

/// `index --train_only` into the trained folder.
pub fn train_args(ib: &IndexBuild, embeddings: &str) -> Result<Vec<String>> {
    let mut args: IndexArgs = summary_args(&ib.spec, embeddings, &trained_folder(&generation_folder(ib)))?;
    args.train_only = true;
    crate::index_build::render_index(&ib.spec, &args)
}

/// `index --trained_index_folder <trained> --partition_ids <slice>` into the part's folder.
pub fn part_args(ib: &IndexBuild, embeddings: &str, part: &IndexPart) -> Result<Vec<String>> {
    let mut args: IndexArgs = summary_args(&ib.spec, embeddings, &part.folder)?;
    args.trained_index_folder = Some(trained_folder(&generation_folder(ib)).into());
    args.partition_ids = Some(
        part.partitions
            .parse::<PartitionIds>()
            .map_err(|e| Error::InvalidSpec(format!("status.parts partitions {e}")))?,
    );
    crate::index_build::render_index(&ib.spec, &args)
}

/// `index_combiner` of every part, in id order, into `output`.
pub fn merge_args(ib: &IndexBuild) -> Vec<String> {
    let status = ib.status.clone().unwrap_or_default();
    IndexCombinerArgs {
        input_folders: status.parts.iter().map(|p| p.folder.clone()).collect(),
        input_folder: None,
        output_folder: generation_folder(ib),
    }
    .to_argv()
}

/// At most `shards` contiguous slices of the partitions listed as `[first, last, rows]` runs (a `--train_only`
/// summary), balanced by rows: each slice ends once it reaches its share of what is left. Part `i`'s row offset is
/// the rows of the slices before it, as `index_combiner` numbers the merge.
pub fn slice_partitions(runs: &[[u64; 3]], shards: u32, output: &str) -> Vec<IndexPart> {
    let partitions: Vec<(usize, u64)> =
        runs.iter().flat_map(|&[first, last, rows]| (first..=last).map(move |n| (n as usize, rows))).collect();
    let mut left_rows: u64 = partitions.iter().map(|(_, r)| r).sum();
    let mut parts = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let (mut rows, mut offset) = (0u64, 0u64);
    for (i, &(number, n)) in partitions.iter().enumerate() {
        current.push(number);
        rows += n;
        let slices_left = (shards as usize).saturating_sub(parts.len()).max(1) as u64;
        let partitions_left = partitions.len() - i - 1;
        let share = left_rows.div_ceil(slices_left);
        let last = partitions_left == 0;
        // Enough rows, and partitions remain for the slices still to make (one each at least).
        let full = rows >= share && partitions_left >= (slices_left as usize - 1) && slices_left > 1;
        if full || last || partitions_left < slices_left as usize - 1 {
            parts.push(IndexPart {
                partitions: PartitionIds(std::mem::take(&mut current)).to_string(),
                rows,
                row_offset: offset,
                folder: part_folder(output, parts.len()),
                phase: "Pending".into(),
                ..Default::default()
            });
            left_rows -= rows;
            offset += rows;
            rows = 0;
        }
    }
    parts
}

/// `[[first, last, rows]]` from a build summary (`--report_path`).
pub fn partition_runs(summary: &str) -> Vec<[u64; 3]> {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(summary) else { return Vec::new() };
    json["partitions"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter_map(|r| Some([r[0].as_u64()?, r[1].as_u64()?, r[2].as_u64()?]))
                .filter(|[first, last, _]| first <= last)
                .collect()
        })
        .unwrap_or_default()
}

/// Advances a distributed build one step: starts what the status says is next, reads what finished.
pub async fn run(
    ctx: &crate::context::Context,
    ib: &IndexBuild,
    namespace: &str,
    embeddings: &str,
    status: &mut IndexBuildStatus,
) -> Result<()> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    status.phase = "Running".into();
    if status.parts.is_empty() {
        status.stage = "Training".into();
        let name = train_job_name(ib);
        let job = get_or_create(ctx, &jobs, namespace, ib, &name, train_args(ib, embeddings)?).await?;
        status.job_name = Some(name.clone());
        match pods::job_state(&job) {
            JobState::Running => {
                set_condition(&mut status.conditions, "Progressing", true, "Training", &format!("Job {name} running"));
                return Ok(());
            }
            JobState::Failed(_) => {
                let pod = pods::last_termination(&ctx.client, namespace, &name, false).await?;
                fail(status, "TrainingFailed", &format!("Job {name} failed{}", pods::describe_failure(pod.as_ref())));
                return Ok(());
            }
            JobState::Succeeded => {
                let pod = pods::last_termination(&ctx.client, namespace, &name, true).await?;
                let summary = pod.and_then(|t| t.message).unwrap_or_default();
                crate::index_build::apply_report(status, &summary);
                status.parts = slice_partitions(&partition_runs(&summary), ib.spec.shards, &generation_folder(ib));
                if status.parts.is_empty() {
                    fail(status, "TrainingFailed", &format!("Job {name}'s summary lists no embedding partitions"));
                    return Ok(());
                }
                let note = format!("trained; {} parts over {} rows", status.parts.len(), total_rows(status));
                ctx.event(ib, crate::index_build::KIND, false, "Trained", note).await;
            }
        }
    }
    if !add_parts(ctx, &jobs, ib, namespace, embeddings, status).await? {
        return Ok(());
    }
    if ib.spec.merge {
        status.stage = "Merging".into();
        let name = merge_job_name(ib);
        let job = get_or_create(ctx, &jobs, namespace, ib, &name, merge_args_of(ib, status)).await?;
        status.job_name = Some(name.clone());
        match pods::job_state(&job) {
            JobState::Running => {
                set_condition(&mut status.conditions, "Progressing", true, "Merging", &format!("Job {name} running"));
                return Ok(());
            }
            JobState::Failed(_) => {
                let pod = pods::last_termination(&ctx.client, namespace, &name, false).await?;
                fail(status, "MergeFailed", &format!("Job {name} failed{}", pods::describe_failure(pod.as_ref())));
                return Ok(());
            }
            JobState::Succeeded => {}
        }
    }
    complete(ib, status, ib.spec.merge);
    Ok(())
}

fn merge_args_of(ib: &IndexBuild, status: &IndexBuildStatus) -> Vec<String> {
    let mut with_parts = ib.clone();
    with_parts.status = Some(status.clone());
    merge_args(&with_parts)
}

fn total_rows(status: &IndexBuildStatus) -> u64 {
    status.parts.iter().map(|p| p.rows).sum()
}

/// Runs every part not complete yet; a failed part runs again (alone, as a new Job) while it has retries.
/// Returns whether every part is complete.
async fn add_parts(
    ctx: &crate::context::Context,
    jobs: &Api<Job>,
    ib: &IndexBuild,
    namespace: &str,
    embeddings: &str,
    status: &mut IndexBuildStatus,
) -> Result<bool> {
    status.stage = "Adding".into();
    for i in 0..status.parts.len() {
        if status.parts[i].phase == "Complete" {
            continue;
        }
        let attempt = status.parts[i].attempts.max(1);
        status.parts[i].attempts = attempt;
        let name = part_job_name(ib, i, attempt);
        let args = part_args(ib, embeddings, &status.parts[i])?;
        let job = get_or_create(ctx, jobs, namespace, ib, &name, args).await?;
        status.parts[i].job_name = Some(name.clone());
        match pods::job_state(&job) {
            JobState::Running => status.parts[i].phase = "Running".into(),
            JobState::Succeeded => {
                let pod = pods::last_termination(&ctx.client, namespace, &name, true).await?;
                let mut built = IndexBuildStatus::default();
                crate::index_build::apply_report(&mut built, &pod.and_then(|t| t.message).unwrap_or_default());
                status.parts[i].recall_at10 = built.recall_at10;
                status.parts[i].phase = "Complete".into();
            }
            JobState::Failed(why) => {
                let pod = pods::last_termination(&ctx.client, namespace, &name, false).await?;
                let failure = format!("part {i}: Job {name} failed ({why}){}", pods::describe_failure(pod.as_ref()));
                if attempt > ib.spec.part_retries {
                    status.parts[i].phase = "Failed".into();
                    fail(status, "PartFailed", &format!("{failure}; no retries left"));
                    return Ok(false);
                }
                status.parts[i].attempts = attempt + 1;
                status.parts[i].phase = "Retrying".into();
                ctx.event(ib, crate::index_build::KIND, true, "PartRetried", format!("{failure}; running it again"))
                    .await;
            }
        }
    }
    let done = status.parts.iter().filter(|p| p.phase == "Complete").count();
    status.parts_done = Some(format!("{done}/{}", status.parts.len()));
    let all = done == status.parts.len();
    if !all {
        let message = format!("{done}/{} parts added", status.parts.len());
        set_condition(&mut status.conditions, "Progressing", true, "Adding", &message);
    }
    Ok(all)
}

/// The build is done: the merged folder (or the parts) hold every row.
fn complete(ib: &IndexBuild, status: &mut IndexBuildStatus, merged: bool) {
    status.stage = "Done".into();
    status.phase = "Complete".into();
    status.completion_time = Some(crate::status::now());
    let parts = status.parts.iter().map(|p| p.folder.clone()).collect();
    record_complete(ib, status, parts);
    status.vectors = Some(total_rows(status));
    status.recall_at10 = status.parts.iter().filter_map(|p| p.recall_at10).reduce(f64::min);
    let what = if merged { "merged into the output folder" } else { "kept as parts, to serve as shards" };
    let message = format!("{} parts over {} rows, {what}", status.parts.len(), total_rows(status));
    set_condition(&mut status.conditions, "Progressing", false, "Built", &message);
    set_condition(&mut status.conditions, "Complete", true, "Built", &message);
    set_condition(&mut status.conditions, "Failed", false, "Built", "");
}

async fn get_or_create(
    ctx: &crate::context::Context,
    jobs: &Api<Job>,
    namespace: &str,
    ib: &IndexBuild,
    name: &str,
    args: Vec<String>,
) -> Result<Job> {
    let wanted = index_job(ib, name, args)?;
    match jobs.get_opt(name).await? {
        Some(job) => {
            crate::context::check_owner("Job", &wanted.metadata, &job.metadata)?;
            Ok(job)
        }
        None => crate::admission::create(ctx, namespace, wanted, &ib.spec.admission).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_contiguous_balanced_and_numbered_like_the_merge() {
        let parts = slice_partitions(&[[0, 8, 100], [9, 9, 40]], 3, "s3://b/idx");
        let slices: Vec<&str> = parts.iter().map(|p| p.partitions.as_str()).collect();
        assert_eq!(slices, ["0-3", "4-6", "7-9"]);
        assert_eq!(parts.iter().map(|p| p.rows).collect::<Vec<_>>(), [400, 300, 240]);
        assert_eq!(parts.iter().map(|p| p.row_offset).collect::<Vec<_>>(), [0, 400, 700]);
        assert_eq!(parts[2].folder, "s3://b/idx-parts/2");
        // Fewer partitions than shards: one part each.
        let few = slice_partitions(&[[0, 1, 5]], 4, "o");
        assert_eq!(few.iter().map(|p| p.partitions.as_str()).collect::<Vec<_>>(), ["0", "1"]);
        // Gaps in the numbering are kept; every partition lands in exactly one part.
        let gaps = slice_partitions(&[[0, 1, 10], [3, 3, 10], [7, 8, 10]], 2, "o");
        assert_eq!(gaps.iter().map(|p| p.partitions.as_str()).collect::<Vec<_>>(), ["0-1,3", "7-8"]);
        assert_eq!(slice_partitions(&[], 3, "o"), vec![]);
    }

    #[test]
    fn the_training_summary_gives_the_partition_runs() {
        let summary = r#"{"indices": {"image": {"count": 0}}, "partitions": [[0, 2, 200], [3, 3, 17]]}"#;
        assert_eq!(partition_runs(summary), [[0, 2, 200], [3, 3, 17]]);
        assert!(partition_runs("Error: out of memory").is_empty());
    }
}
