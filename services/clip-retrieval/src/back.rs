//! `clip-retrieval back` and `end2end`: flags turned into the engine's and server's options, then the server run
//! on a tokio runtime until SIGTERM/Ctrl-C.

use crate::args::{BackArgs, Cli, End2endArgs};
use anyhow::{bail, Context, Result};
use clap::Parser;
use clip_search::{EncoderLimits, EngineOptions, FetchRules, IndexOptions, SearchEngine};
use clip_server::HttpOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs the server.
pub fn back(a: BackArgs) -> Result<()> {
    let defaults = index_defaults(&a)?;
    let indices = clip_search::read_indices_paths(Path::new(&a.indices_paths), &defaults)?;
    warn_ignored(&a);
    let engine = engine_options(&a)?;
    let http = HttpOptions {
        max_body_bytes: memory(&a.max_body_size, "--max_body_size")? as usize,
        request_timeout: seconds(a.request_timeout, "--request_timeout")?,
        front_dist: a.front_dist.clone().or_else(find_front_dist),
        default_backend: a.default_backend.clone(),
        default_index: a.default_index.clone(),
        url_column: a.url_column.clone(),
    };
    match &http.front_dist {
        Some(d) if d.join("index.html").is_file() => tracing::info!(ui = %d.display(), "serving the web UI at /"),
        _ => tracing::info!("no built web UI found (front/dist): / shows how to build it"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let host = a.host.clone();
    runtime.block_on(clip_server::serve(
        &host,
        a.port,
        http,
        move || SearchEngine::load(&indices, engine),
        |addr| {
            let shown =
                if addr.ip().is_unspecified() { format!("127.0.0.1:{}", addr.port()) } else { addr.to_string() };
            println!("clip-retrieval back listening on http://{shown}/ (indices loading; GET /readyz)");
        },
    ))?;
    Ok(())
}

fn index_defaults(a: &BackArgs) -> Result<IndexOptions> {
    let mut d = IndexOptions {
        clip_model: a.clip_model.clone(),
        enable_faiss_memory_mapping: a.enable_faiss_memory_mapping,
        provide_safety_model: a.provide_safety_model,
        provide_violence_detector: a.provide_violence_detector,
        provide_aesthetic_embeddings: a.provide_aesthetic_embeddings,
        safety_model: a.safety_model.clone(),
        violence_detector: a.violence_detector.clone(),
        aesthetic_embeddings: a.aesthetic_embeddings.clone(),
        ..Default::default()
    };
    if let Some(c) = &a.columns_to_return {
        d.columns_to_return = parse_columns(c)?;
    }
    Ok(d)
}

/// `url,caption`, `["url", "caption"]` or `['url', 'caption']` (as Python fire passes lists).
fn parse_columns(text: &str) -> Result<Vec<String>> {
    let t = text.trim();
    let inner = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(t);
    let columns: Vec<String> = inner
        .split(',')
        .map(|c| c.trim().trim_matches(|ch| ch == '"' || ch == '\'').to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if columns.is_empty() {
        bail!("--columns_to_return {text:?}: no column names");
    }
    Ok(columns)
}

fn engine_options(a: &BackArgs) -> Result<EngineOptions> {
    let defaults = EngineOptions::default();
    Ok(EngineOptions {
        encoder: EncoderLimits { max_batch: a.max_encode_batch.max(1), ..EncoderLimits::default() },
        fetch: FetchRules {
            timeout: seconds(a.image_url_timeout, "--image_url_timeout")?,
            max_bytes: memory(&a.image_url_max_size, "--image_url_max_size")? as usize,
            allow_private: a.allow_private_urls,
        },
        max_num_images: a.max_num_images,
        max_num_result_ids: a.max_num_result_ids,
        search_threads: a.search_threads.unwrap_or(defaults.search_threads),
        cache_folder: a.cache_path.clone().map(PathBuf::from).unwrap_or(defaults.cache_folder),
    })
}

fn warn_ignored(a: &BackArgs) {
    let ignored = [
        ("enable_hdf5", a.enable_hdf5),
        ("reorder_metadata_by_ivf_index", a.reorder_metadata_by_ivf_index),
        ("use_jit", a.use_jit),
        ("use_arrow", a.use_arrow),
        ("enable_mclip_option", a.enable_mclip_option),
    ];
    for (flag, value) in ignored {
        if value.is_some() {
            tracing::warn!(flag, "accepted for compatibility with clip-retrieval; it has no effect here");
        }
    }
}

fn memory(text: &str, flag: &str) -> Result<u64> {
    clip_index::parse_memory(text).with_context(|| format!("{flag} {text:?}"))
}

fn seconds(value: f64, flag: &str) -> Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        bail!("{flag} {value}: expected a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

/// `front/dist` above the executable or the working directory (where `npm run build` writes it).
fn find_front_dist() -> Option<PathBuf> {
    let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
    starts
        .into_iter()
        .flatten()
        .flat_map(|s| s.ancestors().map(|d| d.join("front/dist")).collect::<Vec<_>>())
        .find(|d| d.join("index.html").is_file())
}

/// Runs a subcommand exactly as a user would type it (so end2end and the CLI cannot drift apart).
fn run_step(args: &[String]) -> Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("clip-retrieval".to_string()).chain(args.iter().cloned()))
        .map_err(|e| anyhow::anyhow!("end2end step {args:?}: {e}"))?;
    eprintln!("end2end: clip-retrieval {}", args.join(" "));
    crate::commands::run(cli)
}

/// inference -> index -> back, on the given dataset or the synthetic sample.
pub fn end2end(a: End2endArgs) -> Result<()> {
    let out = PathBuf::from(&a.output_folder);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize().with_context(|| format!("resolving {}", out.display()))?;
    let s = |p: &Path| p.display().to_string();
    let (dataset, format) = match &a.input_dataset {
        Some(d) => (d.clone(), a.input_format.clone()),
        None => {
            let d = out.join("dataset");
            if !d.is_dir() {
                run_step(&[
                    "sample-dataset".into(),
                    "--output_folder".into(),
                    s(&d),
                    "--count".into(),
                    a.sample_count.to_string(),
                    "--seed".into(),
                    "7".into(),
                ])?;
            }
            (s(&d), "files".to_string())
        }
    };
    let embeddings = out.join("embeddings");
    let index = out.join("index");
    let mut model = Vec::new();
    if let Some(m) = &a.clip_model {
        model = vec!["--clip_model".to_string(), m.clone()];
    }
    let progress: Vec<String> = if a.no_progress { vec!["--no_progress".into()] } else { vec![] };
    let mut inference = vec![
        "inference".into(),
        "--input_dataset".into(),
        dataset,
        "--input_format".into(),
        format,
        "--output_folder".into(),
        s(&embeddings),
        "--enable_metadata".into(),
        "True".into(),
        "--batch_size".into(),
        a.batch_size.to_string(),
    ];
    inference.extend(model.iter().cloned());
    inference.extend(progress.iter().cloned());
    run_step(&inference)?;
    let mut index_step = vec![
        "index".into(),
        "--embeddings_folder".into(),
        s(&embeddings),
        "--index_folder".into(),
        s(&index),
        "--max_index_memory_usage".into(),
        a.max_index_memory_usage.clone(),
    ];
    index_step.extend(progress.iter().cloned());
    run_step(&index_step)?;
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
    let mut back = vec![
        "back".into(),
        "--indices_paths".into(),
        s(&paths),
        "--port".into(),
        a.port.to_string(),
        "--host".into(),
        a.host.clone(),
    ];
    if let Some(d) = &a.front_dist {
        back.extend(["--front_dist".to_string(), s(d)]);
    }
    run_step(&back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_as_comma_list_or_python_list() {
        assert_eq!(parse_columns("url,caption").unwrap(), vec!["url", "caption"]);
        assert_eq!(parse_columns("['url', 'caption']").unwrap(), vec!["url", "caption"]);
        assert_eq!(parse_columns(r#"["image_path"]"#).unwrap(), vec!["image_path"]);
        assert!(parse_columns("[]").is_err());
    }
}
