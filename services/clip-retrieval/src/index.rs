//! `clip-retrieval index` and `index_combiner`: typed flags -> the folder build (bars per stage, a printed
//! summary, the operator's `--report_path` JSON), and the merge of part folders.

use crate::convert;
use anyhow::{bail, Context, Result};
use clip_cli::{IndexArgs, IndexCombinerArgs};
use clip_data::{Location, Storage};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Runs `index` (or, with `--plan` / `--measure_costs`, plans or measures instead of building).
pub fn run(storage: &Storage, a: IndexArgs) -> Result<()> {
    if let Some(out) = &a.measure_costs {
        return measure_costs(&a, out);
    }
    if a.plan {
        return plan(&a);
    }
    let mut a = a;
    // A part built in a pod reads the trained indices from the object store: one local copy first.
    let scratch = tempfile::Builder::new().prefix(".clip-trained-").tempdir().context("temporary folder")?;
    if let Some(trained) = &a.trained_index_folder {
        let local = local_folder(storage, &trained.to_string_lossy(), scratch.path())
            .with_context(|| format!("--trained_index_folder {}", trained.display()))?;
        a.trained_index_folder = Some(local);
    }
    let job = folder_build(&a);
    // A rebuild into a finished folder: it is not complete again until this build is.
    let folder = Location::parse(&a.index_folder);
    if clip_index::is_complete(storage, &folder)? {
        storage.delete(&folder.join(clip_index::COMPLETION_MARKER))?;
    }
    let bar = if a.no_progress { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{elapsed_precise}] {bar:30} {pos}/{len} rows ({per_sec})")
            .expect("valid template"),
    );
    let progress = IndexBar { bar };
    let report = clip_index::build_folder(storage, &job, &progress)?;
    progress.bar.finish_and_clear();
    // Last: a reader that finds the marker finds every file of this build.
    clip_index::mark_complete(storage, &Location::parse(&a.index_folder), &build_summary(&report))?;
    for (modality, r) in &report.indices {
        let rerank = match &r.rerank {
            Some(rr) => format!(
                ", re-ranked (k_factor {}) from {} ({:.1} MB on disk)",
                rr.k_factor,
                rr.vectors_file,
                rr.disk_bytes as f64 / 1e6
            ),
            None => String::new(),
        };
        println!(
            "{}.index: {} vectors, {} ({}), recall@10 {:.3} at {:.2} ms/query, {:.1} MB (budget {:.1} MB){rerank}, built in {:.1}s",
            modality.name(),
            r.count,
            r.index_key,
            if r.index_param.is_empty() { "exact" } else { &r.index_param },
            r.recall_at_10,
            r.query_ms,
            r.index_bytes as f64 / 1e6,
            r.max_index_memory_usage as f64 / 1e6,
            r.build_seconds
        );
    }
    if let Some(rows) = report.metadata_rows {
        println!("metadata.arrow: {rows} rows");
    }
    println!("index folder: {}", a.index_folder);
    if let Some(path) = &a.report_path {
        std::fs::write(path, build_summary(&report).to_string())
            .with_context(|| format!("--report_path {}: cannot write", path.display()))?;
    }
    Ok(())
}

/// `--plan`: the plan of a build of `--count` x `--dim` with these flags, from the measured costs.
fn plan(a: &IndexArgs) -> Result<()> {
    let (Some(count), Some(dim)) = (a.count, a.dim) else { bail!("--plan needs --count and --dim") };
    let (source, text) = match &a.costs {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).with_context(|| format!("--costs {}: cannot read", path.display()))?,
        ),
        None => ("bench/index_costs.json (built in)".to_string(), clip_index::plan::REFERENCE_COSTS.to_string()),
    };
    let costs = clip_index::plan::MachineCosts::from_json(&text, &source)?;
    let options = folder_build(a).options;
    let plan = clip_index::plan::plan(count, dim, &options, &costs)?;
    println!("{}", plan.render(&source, &costs));
    if options.threads != costs.threads {
        println!("note: costs were measured with {} threads, scaled to --nb_cores {}", costs.threads, options.threads);
    }
    Ok(())
}

/// `--measure_costs FILE`: times a build's operations on this machine and writes them for `--plan --costs FILE`.
fn measure_costs(a: &IndexArgs, out: &Path) -> Result<()> {
    let (count, dim) = (a.count.unwrap_or(100_000), a.dim.unwrap_or(512));
    let threads = folder_build(a).options.threads;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let measured_on = format!(
        "{cpu}, {threads} threads, {} x {dim}, {} UTC, by `clip-retrieval index --measure_costs`",
        count,
        chrono::Utc::now().format("%Y-%m-%d %H:%M")
    );
    println!("measuring faiss and I/O costs with {count} x {dim} random vectors on {threads} threads ...");
    let costs = clip_index::plan::measure_costs(count, dim, threads, measured_on)?;
    let json = serde_json::to_string_pretty(&costs)?;
    std::fs::write(out, format!("{json}\n"))
        .with_context(|| format!("--measure_costs {}: cannot write", out.display()))?;
    println!("{json}\ncosts written to {}", out.display());
    Ok(())
}

/// The build job of the flags.
fn folder_build(a: &IndexArgs) -> clip_index::FolderBuild {
    let mut options = clip_index::BuildOptions {
        max_index_memory: a.max_index_memory_usage.bytes(),
        current_memory_available: a.current_memory_available.bytes(),
        metric: convert::metric(a.metric),
        index_key: a.index_key.clone(),
        max_query_ms: a.max_index_query_time_ms,
        min_recall: a.min_recall,
        rerank: match a.rerank {
            clip_cli::values::Rerank::Auto => clip_index::RerankMode::Auto,
            clip_cli::values::Rerank::Off => clip_index::RerankMode::Off,
        },
        ..Default::default()
    };
    if let Some(n) = a.nb_cores {
        options.threads = n;
    }
    clip_index::FolderBuild {
        embeddings_folder: Location::parse(&a.embeddings_folder),
        index_folder: Location::parse(&a.index_folder),
        image_subfolder: a.image_subfolder.clone(),
        text_subfolder: a.text_subfolder.clone(),
        modalities: a.modalities.iter().copied().map(convert::modality).collect(),
        copy_metadata: a.copy_metadata,
        options,
        trained_index_folder: a.trained_index_folder.clone(),
        train_only: a.train_only,
        partition_ids: a.partition_ids.as_ref().map(|p| p.0.clone()),
        append: a.append,
    }
}

/// An indicatif bar per build stage (training, adding, tuning).
struct IndexBar {
    bar: ProgressBar,
}

impl clip_index::BuildProgress for IndexBar {
    fn stage(&self, name: &str, total: u64) {
        self.bar.set_prefix(name.to_string());
        self.bar.set_length(total);
        self.bar.set_position(0);
    }
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
}

/// A local folder for a folder flag: itself, or an s3:// folder copied under `scratch`.
fn local_folder(storage: &Storage, spec: &str, scratch: &Path) -> Result<PathBuf> {
    Ok(storage.materialize_folder(&Location::parse(spec), scratch)?)
}

/// The `--report_path` summary: `{"indices": {"image": {"index_key", "index_bytes", "recall_at_10", "count"}, ...},
/// "metadata_rows": n, "partitions": [[first, last, rows], ...]}` (runs of consecutive partitions with the same
/// row count: the operator slices a distributed build from a `--train_only` summary). Kept small: a pod's
/// termination message holds at most 4 KiB.
fn build_summary(report: &clip_index::FolderReport) -> serde_json::Value {
    let indices: serde_json::Map<String, serde_json::Value> = report
        .indices
        .iter()
        .map(|(modality, r)| {
            let summary = serde_json::json!({
                "index_key": r.index_key, "index_bytes": r.index_bytes, "recall_at_10": r.recall_at_10, "count": r.count,
            });
            (modality.name().to_string(), summary)
        })
        .collect();
    let partitions = report.indices.first().map(|(_, r)| partition_runs(&r.partitions)).unwrap_or_default();
    serde_json::json!({ "indices": indices, "metadata_rows": report.metadata_rows, "partitions": partitions })
}

/// `[[first, last, rows]]`: consecutive partition numbers holding the same number of rows, as one entry.
fn partition_runs(partitions: &[clip_index::report::PartitionRows]) -> Vec<[u64; 3]> {
    let mut runs: Vec<[u64; 3]> = Vec::new();
    for p in partitions {
        let (number, rows) = (p.number as u64, p.rows as u64);
        match runs.last_mut() {
            Some(run) if run[1] + 1 == number && run[2] == rows => run[1] = number,
            _ => runs.push([number, number, rows]),
        }
    }
    runs
}

/// `prune_generations`: deletes the old generations and prints what it did as JSON.
pub fn prune_generations(storage: &Storage, a: clip_cli::PruneGenerationsArgs) -> Result<()> {
    let root = Location::parse(&a.index_root);
    let report = clip_index::generations::prune(storage, &root, &a.keep_generations, a.dry_run)
        .with_context(|| format!("pruning the generations of {}", a.index_root))?;
    println!("{}", serde_json::json!({"index_root": a.index_root, "dry_run": a.dry_run, "report": report}));
    Ok(())
}

/// Runs `index_combiner`.
pub fn combine(storage: &Storage, a: IndexCombinerArgs) -> Result<()> {
    if let Some(blocks) = &a.input_folder {
        return combine_blocks(Path::new(blocks), Path::new(&a.output_folder));
    }
    // Parts on the object store are copied to local disk (the merge reads them as faiss files); an s3:// output
    // is merged locally and then uploaded.
    let scratch = tempfile::Builder::new().prefix(".clip-combine-").tempdir().context("temporary folder")?;
    let parts: Vec<PathBuf> = a
        .input_folders
        .iter()
        .map(|p| local_folder(storage, p, &scratch.path().join("parts")).with_context(|| format!("part {p}")))
        .collect::<Result<_>>()?;
    let target = Location::parse(&a.output_folder);
    let out = match &target {
        Location::Local(p) => p.clone(),
        Location::S3 { .. } => scratch.path().join("merged"),
    };
    let mut merged = 0;
    for modality in [clip_index::Modality::Image, clip_index::Modality::Text] {
        if let Some(m) = clip_index::merge::merge_modality(storage, &parts, &out, modality)? {
            println!("{}.index: {} vectors from {} parts", modality.name(), m.count, m.parts);
            merged += 1;
        }
    }
    if merged == 0 {
        bail!("none of {:?} holds image.index or text.index", a.input_folders);
    }
    if let Some(rows) = clip_index::merge::merge_row_stores(&parts, &out)? {
        println!("metadata.arrow: {rows} rows");
    }
    if let Location::S3 { .. } = target {
        let files = storage.upload_folder(&out, &target)?;
        println!("uploaded {files} files to {target}");
    }
    let summary = serde_json::json!({"merged_from": a.input_folders});
    clip_index::mark_complete(storage, &target, &summary)?;
    print_peak_rss();
    Ok(())
}

/// clip-retrieval's `index_combiner --input_folder blocks/`: every `*.index` block, in name order, merged on disk
/// into `output/populated.index` + `output/merged_index.ivfdata` (ids as the blocks store them, as faiss's
/// `merge_ondisk` keeps them).
fn combine_blocks(blocks: &Path, output: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(blocks)
        .with_context(|| format!("--input_folder {}", blocks.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "index"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("--input_folder {}: no *.index blocks", blocks.display());
    }
    let merged = clip_index::ondisk::merge_ondisk(&files, output, false)?;
    println!(
        "{}: {} vectors from {} blocks ({} + {}, {:.1} MB)",
        output.display(),
        merged.count,
        files.len(),
        clip_index::folder::POPULATED_INDEX,
        clip_index::ondisk::IVFDATA_FILE,
        merged.ivfdata_bytes as f64 / 1e6
    );
    print_peak_rss();
    Ok(())
}

/// The merge's peak resident memory, for users sizing the machine (the on-disk merge streams lists).
fn print_peak_rss() {
    println!("peak RSS: {:.1} MB", clip_index::build::peak_rss_bytes() as f64 / 1e6);
}

/// Runs `parquet_to_arrow`.
pub fn parquet_to_arrow(storage: &Storage, a: clip_cli::ParquetToArrowArgs) -> Result<()> {
    let columns = a.columns_to_return.as_ref().map(|c| c.0.as_slice());
    let (files, rows) = clip_index::row_store::parquet_to_arrow(
        storage,
        &Location::parse(&a.parquet_folder),
        &Location::parse(&a.output_arrow_folder),
        columns,
    )?;
    for f in &files {
        println!("{f}");
    }
    println!("{rows} rows");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_runs_are_compact() {
        let p = |number, rows| clip_index::report::PartitionRows { number, rows };
        let runs = partition_runs(&[p(0, 10), p(1, 10), p(2, 10), p(3, 7), p(5, 7), p(6, 7)]);
        assert_eq!(runs, [[0, 2, 10], [3, 3, 7], [5, 6, 7]]);
    }

    #[test]
    fn flags_become_the_build_job() {
        let mut a = IndexArgs::new("s3://b/emb", "idx");
        a.max_index_memory_usage = "512M".parse().unwrap();
        a.modalities = vec![clip_cli::Modality::Text];
        a.nb_cores = Some(3);
        let job = folder_build(&a);
        assert_eq!(job.options.max_index_memory, 512 << 20);
        assert_eq!(job.options.current_memory_available, 16 << 30);
        assert_eq!(job.options.threads, 3);
        assert_eq!(job.modalities, vec![clip_index::Modality::Text]);
        assert!(matches!(job.embeddings_folder, Location::S3 { .. }));
    }
}
