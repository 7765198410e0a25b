//! `clip-retrieval inference`: typed flags -> `InferenceOptions`, the dataset listed before the model loads, then
//! the pipeline with an indicatif bar.

use crate::convert;
use anyhow::{bail, Result};
use clip_cli::{DistributionStrategy, EmbeddingDtype, InferenceArgs};
use clip_data::npy::NpyDtype;
use clip_data::Storage;
use clip_inference::{InferenceOptions, PartitionStats, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Runs the subcommand.
pub fn run(storage: &Storage, a: InferenceArgs) -> Result<()> {
    let opts = options(&a)?;
    // Check the input before paying for the model load.
    let (plan, count) = clip_inference::plan(storage, &opts)?;
    tracing::info!(input = %opts.input_dataset, partitions = count, "dataset listed");
    let model = convert::load_model(storage, &a.model)?;
    let progress = BarProgress::new(a.no_progress);
    let summary = clip_inference::run_plan(storage, &model, &opts, &plan, count, &progress)?;
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

/// The pipeline's options; refuses the clip-retrieval modes that do not exist here.
fn options(a: &InferenceArgs) -> Result<InferenceOptions> {
    if a.use_mclip {
        bail!(
            "--use_mclip True is not supported: multilingual CLIP models have no ONNX export in the supported layout"
        );
    }
    if a.distribution_strategy == DistributionStrategy::Pyspark {
        bail!("--distribution_strategy \"pyspark\" is not supported: partitions run sequentially; run several processes with --partition_ids to scale out");
    }
    Ok(InferenceOptions {
        input_dataset: a.input_dataset.clone(),
        output_folder: a.output_folder.clone(),
        input_format: convert::input_format(a.input_format),
        batch_size: a.batch_size,
        num_prepro_workers: a.num_prepro_workers,
        enable_text: a.enable_text,
        enable_image: a.enable_image,
        enable_metadata: a.enable_metadata,
        write_batch_size: a.write_batch_size,
        subset_size: a.subset_size,
        wds_image_key: a.wds_image_key.clone(),
        wds_caption_key: a.wds_caption_key.clone(),
        max_sample_bytes: a.max_sample_bytes.bytes(),
        overwrite: a.overwrite,
        output_partition_count: a.output_partition_count,
        wds_number_file_per_input_file: a.wds_number_file_per_input_file,
        partition_ids: a.partition_ids.clone(),
        dtype: match a.embedding_dtype {
            EmbeddingDtype::Float16 => NpyDtype::F16,
            EmbeddingDtype::Float32 => NpyDtype::F32,
        },
    })
}

/// An indicatif bar counting samples, with samples/s.
pub(crate) struct BarProgress {
    pub(crate) bar: ProgressBar,
}

impl BarProgress {
    pub(crate) fn new(hidden: bool) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_modes_name_the_flag() {
        let mut a = InferenceArgs::new("in", "out");
        assert_eq!(options(&a).unwrap().dtype, NpyDtype::F16);
        a.distribution_strategy = DistributionStrategy::Pyspark;
        assert!(options(&a).unwrap_err().to_string().contains("--partition_ids"));
        a.distribution_strategy = DistributionStrategy::Sequential;
        a.use_mclip = true;
        assert!(options(&a).unwrap_err().to_string().contains("--use_mclip"));
    }
}
