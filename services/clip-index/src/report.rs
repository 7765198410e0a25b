//! `image.json` / `text.json`: what was built, how it was tuned, and what it costs; read back when serving to apply
//! the tuned search parameters.

use crate::build::BuildOptions;
use crate::choice::IndexChoice;
use crate::error::{IndexError, Result};
use crate::faiss_index::{FaissIndex, Metric};
use crate::tune::Tuning;
use serde::{Deserialize, Serialize};

/// Row count of one embedding partition included in the index (to append new partitions later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRows {
    /// Partition number.
    pub number: usize,
    /// Rows.
    pub rows: usize,
}

/// The report of one built index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexReport {
    /// faiss factory string (autofaiss calls it `index_key`).
    pub index_key: String,
    /// Tuned search parameters as autofaiss writes them: `nprobe=16,quantizer_efSearch=32`.
    pub index_param: String,
    /// Distance.
    pub metric: Metric,
    /// Vector dimension.
    pub dim: usize,
    /// Vectors in the index.
    pub count: u64,
    /// Inverted lists (0 when not IVF).
    pub nlist: usize,
    /// recall@10 of the tuned index against exact search on held-out queries.
    pub recall_at_10: f64,
    /// Mean single-query latency of the tuned index, in milliseconds.
    pub query_ms: f64,
    /// Every setting tuning measured.
    pub tuning: Tuning,
    /// Size of the index file (its memory when loaded without mmap), in bytes.
    pub index_bytes: u64,
    /// What the choice estimated, in bytes.
    pub estimated_bytes: u64,
    /// The budget given, in bytes.
    pub max_index_memory_usage: u64,
    /// Build wall time in seconds.
    pub build_seconds: f64,
    /// Peak resident memory of the building process, in bytes.
    pub peak_rss_bytes: u64,
    /// Wall seconds of each build stage (what `index --plan` predicts); zeros for reports written before.
    #[serde(default)]
    pub stage_seconds: StageTimes,
    /// Partitions included, in id order.
    pub partitions: Vec<PartitionRows>,
    /// Folders the results' `image_path`s may be read from (`back --image_roots` defaults to these): the local
    /// input of the inference run, from the embeddings folder's `plan.json`. Empty when unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_roots: Vec<String>,
    /// Bytes the index folder holds on disk beyond the index file and not counted in `max_index_memory_usage`
    /// (the re-rank vectors): read only for candidates, never required resident.
    #[serde(default)]
    pub disk_bytes: u64,
    /// The re-rank vectors and the tuned candidates per result; absent for exact (Flat) indices, `--rerank off`
    /// and folders built elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<RerankReport>,
}

/// Wall seconds of the stages of one build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTimes {
    /// Training (k-means, codec).
    pub train: f64,
    /// Adding the vectors (with the exact top-k of the tuning queries and the re-rank rows).
    pub add: f64,
    /// Tuning the search parameters.
    pub tune: f64,
    /// Writing the index file.
    pub write: f64,
}

/// How a compressed index is re-ranked when served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerankReport {
    /// The float16 `.npy` beside the index (`image_vectors.npy`).
    pub vectors_file: String,
    /// Candidates fetched per result and re-scored exactly.
    pub k_factor: usize,
    /// Size of the vectors file.
    pub disk_bytes: u64,
}

impl IndexReport {
    /// Assembles the report after a build.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        choice: &IndexChoice,
        opts: &BuildOptions,
        index: &FaissIndex,
        tuning: Tuning,
        index_bytes: u64,
        build_seconds: f64,
        peak_rss_bytes: u64,
        partitions: Vec<PartitionRows>,
    ) -> Self {
        Self {
            index_key: choice.factory.clone(),
            index_param: params_string(&tuning.chosen.params),
            metric: opts.metric,
            dim: index.dim(),
            count: index.len(),
            nlist: index.nlist().unwrap_or(0),
            recall_at_10: tuning.chosen.recall_at_10,
            query_ms: tuning.chosen.query_ms,
            tuning,
            index_bytes,
            estimated_bytes: choice.estimated_bytes,
            max_index_memory_usage: opts.max_index_memory,
            build_seconds,
            peak_rss_bytes,
            stage_seconds: StageTimes::default(),
            partitions,
            image_roots: Vec::new(),
            disk_bytes: 0,
            rerank: None,
        }
    }

    /// Reads a report file's JSON.
    pub fn from_json(bytes: &[u8], name: &str) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| IndexError::invalid(name, format!("not an index report: {e}")))
    }
}

/// `name=value,...` as autofaiss writes `index_param`.
pub fn params_string(params: &[(String, f64)]) -> String {
    params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Parses `nprobe=16,quantizer_efSearch=32`.
pub fn parse_params(text: &str) -> Result<Vec<(String, f64)>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').ok_or_else(|| IndexError::invalid(text, "expected name=value pairs"))?;
            let v = v.trim().parse().map_err(|_| IndexError::invalid(text, format!("{k}: not a number")))?;
            Ok((k.trim().to_string(), v))
        })
        .collect()
}
