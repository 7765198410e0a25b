//! `clip-retrieval back`: typed flags -> the engine's and the HTTP layer's options, then the server on a tokio
//! runtime until SIGTERM/Ctrl-C.

use anyhow::{Context, Result};
use clip_cli::BackArgs;
use clip_data::Storage;
use clip_search::{EncoderLimits, EngineOptions, FetchRules, IndexOptions, SearchEngine};
use clip_server::HttpOptions;
use std::path::{Path, PathBuf};

/// Runs the server.
pub fn run(storage: &Storage, a: BackArgs) -> Result<()> {
    let indices = clip_search::read_indices_paths(Path::new(&a.indices_paths), &index_defaults(&a))?;
    for flag in a.ignored_flags() {
        tracing::warn!(flag, "accepted for compatibility with clip-retrieval; it has no effect here");
    }
    let engine = engine_options(&a);
    let http = http_options(&a);
    match &http.front_dist {
        Some(d) if d.join("index.html").is_file() => tracing::info!(ui = %d.display(), "serving the web UI at /"),
        _ => tracing::info!("no built web UI found (front/dist): / shows how to build it"),
    }
    let storage = storage.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async move {
        clip_server::serve(
            &a.host,
            a.port,
            http,
            move |observer| {
                let mut engine = engine;
                engine.shards.observer = Some(observer);
                SearchEngine::load(&storage, &indices, engine)
            },
            |addr| {
                let shown =
                    if addr.ip().is_unspecified() { format!("127.0.0.1:{}", addr.port()) } else { addr.to_string() };
                println!("clip-retrieval back listening on http://{shown}/ (indices loading; GET /readyz)");
            },
            clip_shutdown::on_signal(),
        )
        .await
    })?;
    Ok(())
}

/// Options of the indices that indices_paths.json does not set itself.
fn index_defaults(a: &BackArgs) -> IndexOptions {
    let mut d = IndexOptions {
        clip_model: a.clip_model.clone(),
        enable_faiss_memory_mapping: a.enable_faiss_memory_mapping,
        provide_safety_model: a.provide_safety_model,
        provide_violence_detector: a.provide_violence_detector,
        provide_aesthetic_embeddings: a.provide_aesthetic_embeddings,
        safety_model: a.safety_model.clone(),
        violence_detector: a.violence_detector.clone(),
        aesthetic_embeddings: a.aesthetic_embeddings.clone(),
        image_roots: a.image_roots.clone(),
        allow_partial_results: a.allow_partial_results,
        require_completion_marker: a.require_completion_marker,
        ..Default::default()
    };
    if let Some(c) = &a.columns_to_return {
        d.columns_to_return = c.0.clone();
    }
    d
}

fn engine_options(a: &BackArgs) -> EngineOptions {
    let defaults = EngineOptions::default();
    EngineOptions {
        encoder: EncoderLimits {
            max_batch: a.max_encode_batch.max(1),
            text_cache: a.text_cache_size,
            image: clip_model::ImageLimits { max_pixels: a.max_image_pixels },
            ..EncoderLimits::default()
        },
        fetch: FetchRules {
            timeout: a.image_url_timeout.duration(),
            max_bytes: a.image_url_max_size.bytes() as usize,
            allow_private: a.allow_private_urls,
            use_proxy: a.image_url_use_proxy,
        },
        max_num_images: a.max_num_images,
        max_num_result_ids: a.max_num_result_ids,
        search_threads: a.search_threads.unwrap_or(defaults.search_threads),
        cache_folder: a.cache_path.clone().map(PathBuf::from).unwrap_or(defaults.cache_folder),
        shards: clip_search::ShardOptions { timeout: a.shard_timeout.duration(), observer: None },
    }
}

fn http_options(a: &BackArgs) -> HttpOptions {
    HttpOptions {
        max_body_bytes: a.max_body_size.bytes() as usize,
        request_timeout: a.request_timeout.duration(),
        front_dist: a.front_dist.clone().or_else(find_front_dist),
        default_backend: a.default_backend.clone(),
        default_index: a.default_index.clone(),
        url_column: a.url_column.clone(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use clip_cli::CommandArgs;

    #[test]
    fn flags_become_engine_and_http_options() {
        let a = BackArgs::parse_flags([
            "--max-body-size",
            "3M",
            "--request_timeout",
            "2.5",
            "--image_url_max_size=1K",
            "--columns_to_return",
            "['url', 'caption']",
            "--max_encode_batch",
            "0",
        ])
        .unwrap();
        let http = http_options(&a);
        assert_eq!(http.max_body_bytes, 3 << 20);
        assert_eq!(http.request_timeout.as_millis(), 2500);
        let engine = engine_options(&a);
        assert_eq!(engine.fetch.max_bytes, 1024);
        assert_eq!(engine.encoder.max_batch, 1, "a zero batch would never encode");
        assert_eq!(index_defaults(&a).columns_to_return, ["url", "caption"]);
    }
}
