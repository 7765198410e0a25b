//! What each subcommand does: argument checks, then one call into the engine crates.

use crate::args::{Cli, Command, IndexArgs, IndexCombinerArgs, InferenceArgs, ModelArgs, SampleDatasetArgs};
use anyhow::{bail, Context, Result};
use clip_data::dataset_writer::{DatasetWriter, OwnedSample};
use clip_data::npy::NpyDtype;
use clip_data::{InputFormat, Location};
use clip_inference::{InferenceOptions, PartitionStats, Progress};
use clip_model::{ClipModel, ExecutionDevice, SessionOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// Dispatches a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inference(a) => inference(*a),
        Command::SampleDataset(a) => sample_dataset(a),
        Command::Index(a) => index(*a),
        Command::IndexCombiner(a) => index_combiner(a),
        Command::Filter(a) => crate::filter::filter(*a),
        Command::Back(a) => crate::back::back(*a),
        Command::End2end(a) => crate::back::end2end(*a),
    }
}

/// Loads the model named by the flags.
pub fn load_model(m: &ModelArgs) -> Result<ClipModel> {
    let folder = clip_search::model_source::resolve(m.clip_model.as_deref(), m.clip_cache_path.as_deref())?;
    let device: ExecutionDevice = m.device.parse().map_err(anyhow::Error::msg)?;
    let options = SessionOptions { device, intra_threads: m.num_threads };
    let model = ClipModel::load(&folder, options).with_context(|| format!("loading model {}", folder.display()))?;
    tracing::info!(model = %folder.display(), embed_dim = model.embed_dim(), trims_captions = model.trims_captions(), "model loaded");
    Ok(model)
}

/// An indicatif bar counting samples, with samples/s.
struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    fn new(hidden: bool) -> Self {
        let bar = if hidden { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} partition {prefix} [{elapsed_precise}] {pos} samples ({per_sec}) {msg}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Self { bar }
    }
}

impl Progress for BarProgress {
    fn partition_started(&self, name: &str, _expected: usize) {
        self.bar.set_prefix(name.to_string());
    }
    fn samples_done(&self, n: usize) {
        self.bar.inc(n as u64);
    }
    fn sample_skipped(&self, _input: &str, _reason: &str) {
        self.bar.set_message("(some inputs skipped, see log)");
    }
    fn partition_finished(&self, name: &str, stats: &PartitionStats) {
        self.bar.suspend(|| {
            tracing::info!(
                partition = name,
                samples = stats.sample_count,
                skipped = stats.skipped_count,
                seconds = format!("{:.1}", stats.total_duration),
                "partition written"
            )
        });
    }
}

fn inference(a: InferenceArgs) -> Result<()> {
    if a.use_mclip {
        bail!(
            "--use_mclip True is not supported: multilingual CLIP models have no ONNX export in the supported layout"
        );
    }
    if a.distribution_strategy != "sequential" {
        bail!("--distribution_strategy {:?} is not supported: partitions run sequentially; run several processes with --partition_ids to scale out", a.distribution_strategy);
    }
    let input_format: InputFormat = a.input_format.parse().map_err(anyhow::Error::msg)?;
    let dtype = match a.embedding_dtype.as_str() {
        "float16" | "f16" => NpyDtype::F16,
        "float32" | "f32" => NpyDtype::F32,
        other => bail!("--embedding_dtype {other:?}: expected float16 or float32"),
    };
    let opts = InferenceOptions {
        input_dataset: a.input_dataset,
        output_folder: a.output_folder,
        input_format,
        batch_size: a.batch_size,
        num_prepro_workers: a.num_prepro_workers,
        enable_text: a.enable_text,
        enable_image: a.enable_image,
        enable_metadata: a.enable_metadata,
        write_batch_size: a.write_batch_size,
        subset_size: a.subset_size,
        wds_image_key: a.wds_image_key,
        wds_caption_key: a.wds_caption_key,
        output_partition_count: a.output_partition_count,
        wds_number_file_per_input_file: a.wds_number_file_per_input_file,
        partition_ids: a.partition_ids,
        dtype,
    };
    // Check the input before paying for the model load.
    let (plan, count) = clip_inference::plan(&opts)?;
    tracing::info!(input = %opts.input_dataset, partitions = count, "dataset listed");
    let model = load_model(&a.model)?;
    let progress = BarProgress::new(a.no_progress);
    let summary = clip_inference::run_plan(&model, &opts, &plan, count, &progress)?;
    progress.bar.finish_and_clear();
    println!(
        "{} samples embedded in {:.1}s ({:.1} samples/s), {} skipped; partitions: {} computed, {} already done, {} total. Output: {}",
        summary.samples,
        summary.seconds,
        summary.samples as f64 / summary.seconds.max(1e-9),
        summary.skipped,
        summary.computed.len(),
        summary.already_done.len(),
        summary.partition_count,
        opts.output_folder
    );
    Ok(())
}

fn sample_dataset(a: SampleDatasetArgs) -> Result<()> {
    let folder = Location::parse(&a.output_folder);
    let mut writer = match a.output_format.as_str() {
        "files" => DatasetWriter::files(folder),
        "webdataset" => DatasetWriter::webdataset(folder, a.shard_size),
        "parquet" => DatasetWriter::parquet(folder, a.shard_size),
        other => bail!("--output_format {other:?}: expected files, webdataset or parquet"),
    };
    let bar = ProgressBar::new(a.count);
    for i in a.start..a.start + a.count {
        let s = clip_synthetic::render(a.seed, i);
        writer.write(OwnedSample {
            key: s.key.clone(),
            image: s.jpeg(),
            image_ext: "jpg".into(),
            caption: s.caption.clone(),
            metadata: s.metadata(),
        })?;
        bar.inc(1);
    }
    writer.finish()?;
    bar.finish_and_clear();
    println!("wrote {} samples ({}) to {}", a.count, a.output_format, a.output_folder);
    Ok(())
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

fn index(a: IndexArgs) -> Result<()> {
    let mut options = clip_index::BuildOptions {
        max_index_memory: clip_index::parse_memory(&a.max_index_memory_usage).context("--max_index_memory_usage")?,
        current_memory_available: clip_index::parse_memory(&a.current_memory_available)
            .context("--current_memory_available")?,
        metric: clip_index::Metric::parse(&a.metric).context("--metric")?,
        index_key: a.index_key,
        max_query_ms: a.max_index_query_time_ms,
        min_recall: a.min_recall,
        ..Default::default()
    };
    if let Some(n) = a.nb_cores {
        options.threads = n;
    }
    let job = clip_index::FolderBuild {
        embeddings_folder: Location::parse(&a.embeddings_folder),
        index_folder: Location::parse(&a.index_folder),
        image_subfolder: a.image_subfolder,
        text_subfolder: a.text_subfolder,
        modalities: a.modalities,
        copy_metadata: a.copy_metadata,
        options,
        trained_index_folder: a.trained_index_folder,
    };
    let bar = if a.no_progress { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{elapsed_precise}] {bar:30} {pos}/{len} rows ({per_sec})")
            .expect("valid template"),
    );
    let progress = IndexBar { bar };
    let report = clip_index::build_folder(&job, &progress)?;
    progress.bar.finish_and_clear();
    for (modality, r) in &report.indices {
        println!(
            "{}.index: {} vectors, {} ({}), recall@10 {:.3} at {:.2} ms/query, {:.1} MB (budget {:.1} MB), built in {:.1}s",
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

/// The `--report_path` summary: `{"indices": {"image": {"index_key", "index_bytes", "recall_at_10", "count"}, ...},
/// "metadata_rows": n}`. Kept small: a pod's termination message holds at most 4 KiB.
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
    serde_json::json!({ "indices": indices, "metadata_rows": report.metadata_rows })
}

fn index_combiner(a: IndexCombinerArgs) -> Result<()> {
    let parts: Vec<std::path::PathBuf> = a.input_folders.iter().map(std::path::PathBuf::from).collect();
    let out = std::path::PathBuf::from(&a.output_folder);
    let mut merged = 0;
    for modality in [clip_index::Modality::Image, clip_index::Modality::Text] {
        if let Some(m) = clip_index::merge::merge_modality(&parts, &out, modality)? {
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
    Ok(())
}
