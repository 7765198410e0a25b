//! `clip-retrieval back` flags: clip-retrieval's knn service options (kept, some without effect) plus the limits,
//! the UI's settings and the query batching of this implementation.

use crate::values::{parse_bool, ByteSize, ColumnList, Seconds};
use crate::CommandArgs;
use clap::{ArgAction, Args};
use serde::Serialize;
use std::path::PathBuf;

/// `clip-retrieval back`.
#[derive(Debug, Args, Serialize, Clone, PartialEq)]
#[command(rename_all = "snake_case")]
pub struct BackArgs {
    /// JSON object: index name -> index folder (local or s3://), or name -> per-index options.
    #[arg(long, default_value = "indices_paths.json")]
    pub indices_paths: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 1234)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// Map index files instead of reading them into memory (default for every index).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_faiss_memory_mapping: bool,
    /// Metadata columns returned: a comma list or a Python/JSON list (default url,image_path,caption,NSFW).
    #[arg(long)]
    pub columns_to_return: Option<ColumnList>,
    /// Model folder for indices that do not name one (default: the shipped models/tiny-clip).
    #[arg(long)]
    pub clip_model: Option<String>,
    /// Load the safety model for every index (from --safety_model or <model>/filters/safety.onnx).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub provide_safety_model: bool,
    /// Load the violence detector (from --violence_detector or <model>/filters/violence_detection.npy).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub provide_violence_detector: bool,
    /// Load aesthetic embeddings (from --aesthetic_embeddings or <model>/filters/aesthetic/).
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub provide_aesthetic_embeddings: bool,
    /// ONNX safety classifier over embeddings (first output column = probability of unsafe).
    #[arg(long)]
    pub safety_model: Option<String>,
    /// .npy of prompt embeddings [k, dim]; results closest to row 1 are violent.
    #[arg(long)]
    pub violence_detector: Option<String>,
    /// Folder of rating0.npy .. rating9.npy aesthetic embeddings.
    #[arg(long)]
    pub aesthetic_embeddings: Option<String>,
    /// /config.json defaultBackend for the UI (default: the URL the page came from).
    #[arg(long)]
    pub default_backend: Option<String>,
    /// /config.json defaultIndex for the UI.
    #[arg(long)]
    pub default_index: Option<String>,
    /// /config.json urlColumn for the UI.
    #[arg(long, default_value = "url")]
    pub url_column: String,
    /// The built web UI folder (default: front/dist above the executable or the working directory).
    #[arg(long)]
    pub front_dist: Option<PathBuf>,
    /// Cap on num_images per request.
    #[arg(long, default_value_t = 1000)]
    pub max_num_images: usize,
    /// Cap on num_result_ids per request (and ids per /metadata request).
    #[arg(long, default_value_t = 10_000)]
    pub max_num_result_ids: usize,
    /// Largest request body (e.g. 20M).
    #[arg(long, default_value_t = ByteSize::mib(20))]
    pub max_body_size: ByteSize,
    /// Whole-request time limit in seconds.
    #[arg(long, default_value_t = Seconds(60.0))]
    pub request_timeout: Seconds,
    /// Allow image_url queries to loopback, private and link-local addresses.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub allow_private_urls: bool,
    /// Send image_url fetches through HTTP(S)_PROXY (off: a proxy resolves names past the private-address guard,
    /// so it must enforce egress itself).
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub image_url_use_proxy: bool,
    /// Folders result images (image_path) may be read from, comma-separated, for every index that does not set
    /// image_roots (default: the input folder recorded when the index was built; none: results carry no image).
    #[arg(long, value_delimiter = ',')]
    pub image_roots: Option<Vec<String>>,
    /// image_url download time limit in seconds.
    #[arg(long, default_value_t = Seconds(10.0))]
    pub image_url_timeout: Seconds,
    /// Largest image_url download (e.g. 20M).
    #[arg(long, default_value_t = ByteSize::mib(20))]
    pub image_url_max_size: ByteSize,
    /// Searches running at once (default: one per core).
    #[arg(long)]
    pub search_threads: Option<usize>,
    /// Most queries encoded together in one model run.
    #[arg(long, default_value_t = 64)]
    pub max_encode_batch: usize,
    /// Text query embeddings kept per model, most recently used (0: no cache); hits and misses in /metrics.
    #[arg(long, default_value_t = 10_000)]
    pub text_cache_size: usize,
    /// Most pixels (width x height, read from the header) a query image may have; larger ones get a 400.
    #[arg(long, default_value_t = crate::model::MAX_IMAGE_PIXELS)]
    pub max_image_pixels: u64,
    /// Where s3:// index folders are copied (default ~/.cache/clip-retrieval/indices-cache).
    #[arg(long)]
    pub cache_path: Option<String>,
    /// Sharded indices (`{"shards": [urls]}` in indices_paths): time limit of one call to a shard, in seconds; a
    /// shard that takes longer fails the request with a 503 naming it (or is left out, below).
    #[arg(long, default_value_t = Seconds(10.0))]
    pub shard_timeout: Seconds,
    /// Sharded indices: answer from the other shards when one fails or times out, and say which in the
    /// `x-clip-retrieval-partial` header (per index: `allow_partial_results` in indices_paths; per request too).
    #[arg(long)]
    pub allow_partial_results: bool,
    /// Refuse to serve an index folder without its `_COMPLETE` marker (written last by `index` and
    /// `index_combiner`) for every index that does not set `require_completion_marker` itself.
    #[arg(long, default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub require_completion_marker: bool,
    /// Accepted for compatibility with clip-retrieval; no effect (metadata is an Arrow row store).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_hdf5: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub reorder_metadata_by_ivf_index: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub use_jit: Option<bool>,
    /// Accepted for compatibility; no effect.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub use_arrow: Option<bool>,
    /// Accepted for compatibility; no multilingual model is available (use_mclip requests use the CLIP text tower).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    pub enable_mclip_option: Option<bool>,
}

impl CommandArgs for BackArgs {
    const NAME: &'static str = "back";
}

impl BackArgs {
    /// Serves the indices listed in `indices_paths`, every other flag at its default.
    pub fn new(indices_paths: &str) -> Self {
        crate::parse_known(&[&format!("--indices_paths={indices_paths}")])
    }

    /// The compatibility flags that were given although they have no effect, by name.
    pub fn ignored_flags(&self) -> Vec<&'static str> {
        [
            ("enable_hdf5", self.enable_hdf5),
            ("reorder_metadata_by_ivf_index", self.reorder_metadata_by_ivf_index),
            ("use_jit", self.use_jit),
            ("use_arrow", self.use_arrow),
            ("enable_mclip_option", self.enable_mclip_option),
        ]
        .into_iter()
        .filter_map(|(flag, value)| value.map(|_| flag))
        .collect()
    }
}
