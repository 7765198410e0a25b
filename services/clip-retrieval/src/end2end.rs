//! `clip-retrieval end2end`: sample-dataset (when no input is given) -> inference -> index -> indices_paths.json
//! -> back, each step built as the typed args a user's command line would give (and logged as that command line).

use anyhow::{Context, Result};
use clip_cli::{BackArgs, CommandArgs, End2endArgs, IndexArgs, InferenceArgs, InputFormat, SampleDatasetArgs};
use clip_data::Storage;
use std::path::{Path, PathBuf};

/// Logs the step as the command line that runs it alone.
fn announce<T: CommandArgs>(args: &T) {
    eprintln!("end2end: clip-retrieval {}", args.to_argv().join(" "));
}

/// inference -> index -> back, on the given dataset or the synthetic sample.
pub fn run(storage: &Storage, a: End2endArgs) -> Result<()> {
    let out = PathBuf::from(&a.output_folder);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize().with_context(|| format!("resolving {}", out.display()))?;
    let s = |p: &Path| p.display().to_string();
    let (dataset, format) = match &a.input_dataset {
        Some(d) => (d.clone(), a.input_format),
        None => {
            let d = out.join("dataset");
            if !d.is_dir() {
                let sample = SampleDatasetArgs { count: a.sample_count, seed: 7, ..SampleDatasetArgs::new(&s(&d)) };
                announce(&sample);
                crate::sample_dataset::run(storage, sample)?;
            }
            (s(&d), InputFormat::Files)
        }
    };
    let embeddings = s(&out.join("embeddings"));
    let index = out.join("index");
    let mut inference = InferenceArgs::new(&dataset, &embeddings);
    inference.input_format = format;
    inference.enable_metadata = true;
    inference.batch_size = a.batch_size;
    inference.model.clip_model = a.clip_model.clone();
    inference.no_progress = a.no_progress;
    announce(&inference);
    crate::inference::run(storage, inference)?;
    let mut index_step = IndexArgs::new(&embeddings, &s(&index));
    index_step.max_index_memory_usage = a.max_index_memory_usage;
    index_step.no_progress = a.no_progress;
    announce(&index_step);
    crate::index::run(storage, index_step)?;
    let paths = out.join("indices_paths.json");
    let mut entry = serde_json::json!({ "indice_folder": s(&index) });
    if let Some(m) = &a.clip_model {
        entry["clip_model"] = serde_json::Value::from(m.clone());
    }
    let config = serde_json::json!({ "end2end": entry });
    std::fs::write(&paths, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", paths.display()))?;
    eprintln!("end2end: index in {}, indices paths in {}", index.display(), paths.display());
    if !a.run_back {
        return Ok(());
    }
    let mut back = BackArgs::new(&s(&paths));
    back.port = a.port;
    back.host = a.host.clone();
    back.front_dist = a.front_dist.clone();
    announce(&back);
    crate::back::run(storage, back)
}
