//! `clip-retrieval evaluate`: the faithfulness gate. Embeds the same samples twice, at the reference precision and
//! at the one measured (the pipeline `inference` runs, float32 outputs), then compares them per tower
//! (`clip_inference::faithfulness`): cosine mean / p01 / min, and how much of each caption's top-k images survives.

use crate::convert;
use crate::inference::BarProgress;
use anyhow::{bail, Context, Result};
use clip_cli::EvaluateArgs;
use clip_data::npy::{read_matrix, NpyDtype, NpyMatrix};
use clip_data::Storage;
use clip_inference::faithfulness::{cosine_summary, mean_overlap, recall_of_own_row, top_k, CosineSummary, Gate};
use clip_inference::InferenceOptions;
use clip_model::TowerPrecisions;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `evaluate.json`, also printed as text.
#[derive(Debug, Serialize)]
struct Report {
    samples: usize,
    reference: Towers,
    candidate: Towers,
    image_cosine: Option<CosineSummary>,
    text_cosine: Option<CosineSummary>,
    top_k: usize,
    /// Share of each caption's reference top-k images the candidate also returns.
    text_to_image_overlap: Option<f64>,
    /// Share of captions whose own image is in their top-k, per precision.
    reference_recall: Option<f64>,
    candidate_recall: Option<f64>,
    gate: Gate,
    gate_failures: Vec<String>,
}

/// Which files one run used.
#[derive(Debug, Serialize)]
struct Towers {
    image: String,
    text: String,
}

/// One run's embeddings.
struct Embeddings {
    towers: Towers,
    image: Option<NpyMatrix>,
    text: Option<NpyMatrix>,
}

/// Runs the subcommand.
pub fn run(storage: &Storage, a: EvaluateArgs) -> Result<()> {
    let (image, text) = a.candidate_precisions();
    let candidate = TowerPrecisions { image: convert::precision(image), text: convert::precision(text) };
    let reference = TowerPrecisions::both(convert::precision(a.against_precision));
    if candidate == reference {
        bail!(
            "nothing to compare: both runs would be {} (pass --precision int8, or another --against_precision)",
            a.against_precision
        );
    }
    if a.subset_size == 0 || a.top_k == 0 {
        bail!("--subset_size and --top_k must be at least 1");
    }
    let temporary;
    let root = match &a.output_folder {
        Some(folder) if folder.starts_with("s3://") => bail!("--output_folder {folder}: evaluate writes locally"),
        Some(folder) => PathBuf::from(folder),
        None => {
            temporary = tempfile::tempdir().context("creating a temporary folder")?;
            temporary.path().to_path_buf()
        }
    };
    let reference = embed(storage, &a, reference, &root.join("reference"))?;
    let candidate = embed(storage, &a, candidate, &root.join("candidate"))?;
    let report = compare(&a, reference, candidate)?;
    print_report(&report);
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(root.join("evaluate.json"), json).with_context(|| format!("writing {}", root.display()))?;
    if !report.gate_failures.is_empty() && !a.no_gate {
        bail!("the gate failed: {} (--no_gate reports without failing)", report.gate_failures.join("; "));
    }
    Ok(())
}

/// One inference run into `folder` (float32, one partition, started afresh).
fn embed(storage: &Storage, a: &EvaluateArgs, precisions: TowerPrecisions, folder: &Path) -> Result<Embeddings> {
    let opts = InferenceOptions {
        input_dataset: a.input_dataset.clone(),
        output_folder: folder.display().to_string(),
        input_format: convert::input_format(a.input_format),
        batch_size: a.batch_size,
        num_prepro_workers: a.num_prepro_workers,
        enable_text: true,
        enable_image: true,
        enable_metadata: false,
        write_batch_size: a.subset_size,
        subset_size: Some(a.subset_size),
        wds_image_key: a.wds_image_key.clone(),
        wds_caption_key: a.wds_caption_key.clone(),
        output_partition_count: Some(1),
        wds_number_file_per_input_file: 10_000,
        partition_ids: None,
        dtype: NpyDtype::F32,
        max_sample_bytes: clip_data::DEFAULT_MAX_SAMPLE_BYTES,
        overwrite: true,
    };
    let (plan, count) = clip_inference::plan(storage, &opts)?;
    let model = convert::load_model_at(storage, &a.model, precisions)?;
    let towers = Towers {
        image: format!("{} ({})", relative(&model.image_file, &model.layout.root), precisions.image.name()),
        text: format!("{} ({})", relative(&model.text_file, &model.layout.root), precisions.text.name()),
    };
    let progress = BarProgress::new(a.no_progress);
    clip_inference::run_plan(storage, &model, &opts, &plan, count, &progress)?;
    progress.bar.finish_and_clear();
    let read = |sub: &str| -> Result<Option<NpyMatrix>> {
        let path = folder.join(format!("{sub}/{sub}_0.npy"));
        if !path.is_file() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(read_matrix(&bytes, &path.display().to_string())?))
    };
    Ok(Embeddings { towers, image: read("img_emb")?, text: read("text_emb")? })
}

fn relative(file: &Path, root: &Path) -> String {
    file.strip_prefix(root).unwrap_or(file).display().to_string()
}

fn compare(a: &EvaluateArgs, reference: Embeddings, candidate: Embeddings) -> Result<Report> {
    let pair = |r: &Option<NpyMatrix>, c: &Option<NpyMatrix>, what: &str| -> Result<Option<CosineSummary>> {
        match (r, c) {
            (Some(r), Some(c)) if r.rows != c.rows || r.cols != c.cols => {
                bail!("the two runs embedded different {what} shapes: {}x{} and {}x{}", r.rows, r.cols, c.rows, c.cols)
            }
            (Some(r), Some(c)) => Ok(cosine_summary(&r.data, &c.data, r.cols)),
            _ => Ok(None),
        }
    };
    let image_cosine = pair(&reference.image, &candidate.image, "image")?;
    let text_cosine = pair(&reference.text, &candidate.text, "caption")?;
    let samples = image_cosine.or(text_cosine).map(|s| s.rows).unwrap_or(0);
    if samples == 0 {
        bail!("{}: no sample was embedded (see the log for skipped inputs)", a.input_dataset);
    }
    let retrieval = |e: &Embeddings| match (&e.text, &e.image) {
        (Some(t), Some(i)) => Some(top_k(&t.data, &i.data, t.cols, a.top_k)),
        _ => None,
    };
    let (ref_results, cand_results) = (retrieval(&reference), retrieval(&candidate));
    let text_to_image_overlap = ref_results.as_ref().zip(cand_results.as_ref()).map(|(r, c)| mean_overlap(r, c));
    let gate = Gate::default();
    Ok(Report {
        samples,
        reference: reference.towers,
        candidate: candidate.towers,
        image_cosine,
        text_cosine,
        top_k: a.top_k,
        text_to_image_overlap,
        reference_recall: ref_results.as_deref().map(recall_of_own_row),
        candidate_recall: cand_results.as_deref().map(recall_of_own_row),
        gate_failures: gate.failures(image_cosine, text_cosine, text_to_image_overlap),
        gate,
    })
}

fn print_report(r: &Report) {
    println!(
        "{} samples; reference: {}, {}; measured: {}, {}",
        r.samples, r.reference.image, r.reference.text, r.candidate.image, r.candidate.text
    );
    for (tower, s) in [("image", r.image_cosine), ("text", r.text_cosine)] {
        match s {
            Some(s) => println!("{tower} cosine: mean {:.4} p01 {:.4} min {:.4}", s.mean, s.p01, s.min),
            None => println!("{tower} cosine: not measured (no {tower} embeddings)"),
        }
    }
    if let (Some(o), Some(rr), Some(cr)) = (r.text_to_image_overlap, r.reference_recall, r.candidate_recall) {
        println!("text->image top-{} overlap: {o:.4}", r.top_k);
        println!("text->image recall@{} (own image): reference {rr:.4}, measured {cr:.4}", r.top_k);
    }
    let g = &r.gate;
    let verdict = if r.gate_failures.is_empty() {
        "PASSED".to_string()
    } else {
        format!("FAILED ({})", r.gate_failures.join("; "))
    };
    println!(
        "gate (image mean >= {}, image p01 >= {}, text mean >= {}, overlap >= {}): {verdict}",
        g.image_mean, g.image_p01, g.text_mean, g.overlap
    );
}
