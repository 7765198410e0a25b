//! Search-parameter tuning: the setting with the best recall@10 whose single-query latency stays within the budget.
//!
//! IVF indices are probed with growing `nprobe` (and a matching `quantizer_efSearch` for an HNSW quantiser) until
//! the latency budget is spent or recall stops improving; Flat has nothing to tune.

use crate::error::Result;
use crate::exact::recall_at;
use crate::faiss_index::{FaissIndex, Neighbours};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Recall is measured at this k, as autofaiss does.
pub const RECALL_K: usize = 10;

/// One measured setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// faiss parameters, e.g. `[("nprobe", 16.0)]`.
    pub params: Vec<(String, f64)>,
    /// recall@10 against exact search.
    pub recall_at_10: f64,
    /// Mean latency of one query searched alone, in milliseconds.
    pub query_ms: f64,
}

/// What tuning chose and everything it tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tuning {
    /// The chosen setting.
    pub chosen: Measured,
    /// Every setting measured, in order.
    pub tried: Vec<Measured>,
    /// Whether the chosen setting reaches `--min_recall`.
    pub meets_min_recall: bool,
}

/// Applies a parameter set to an index.
pub fn apply(index: &mut FaissIndex, params: &[(String, f64)]) -> Result<()> {
    for (name, value) in params {
        index.set_parameter(name, *value)?;
    }
    Ok(())
}

/// Measures `params` on the queries: recall@10 from one batch search, latency from single-query searches.
pub fn measure(
    index: &mut FaissIndex,
    params: &[(String, f64)],
    queries: &[f32],
    exact: &Neighbours,
    query_ids: &[u64],
) -> Result<Measured> {
    apply(index, params)?;
    let d = index.dim();
    // One extra result: a query taken from the collection finds itself, which recall leaves out.
    let found = index.search(queries, RECALL_K + 1)?;
    let recall = recall_at(&found, exact, RECALL_K, query_ids);
    let timed = (queries.len() / d).min(200);
    let start = Instant::now();
    for q in queries.chunks_exact(d).take(timed) {
        index.search(q, RECALL_K)?;
    }
    let query_ms = start.elapsed().as_secs_f64() * 1000.0 / timed.max(1) as f64;
    Ok(Measured { params: params.to_vec(), recall_at_10: recall, query_ms })
}

/// Tunes `index` (left with the chosen parameters applied).
pub fn tune(
    index: &mut FaissIndex,
    hnsw_quantizer: bool,
    queries: &[f32],
    exact: &Neighbours,
    query_ids: &[u64],
    max_query_ms: f64,
    min_recall: f64,
) -> Result<Tuning> {
    let Some(nlist) = index.nlist() else {
        let m = measure(index, &[], queries, exact, query_ids)?;
        return Ok(Tuning { meets_min_recall: m.recall_at_10 >= min_recall, chosen: m.clone(), tried: vec![m] });
    };
    let mut tried: Vec<Measured> = Vec::new();
    let mut nprobe = 1usize;
    loop {
        let mut params = vec![("nprobe".to_string(), nprobe as f64)];
        if hnsw_quantizer {
            params.push(("quantizer_efSearch".to_string(), (2 * nprobe).max(32) as f64));
        }
        let m = measure(index, &params, queries, exact, query_ids)?;
        let over_time = m.query_ms > max_query_ms;
        let plateau = tried.last().is_some_and(|p| m.recall_at_10 - p.recall_at_10 < 1e-4 && m.recall_at_10 >= 0.999);
        tracing::debug!(nprobe, recall = m.recall_at_10, ms = m.query_ms, "tuning");
        tried.push(m);
        if over_time || plateau || nprobe >= nlist {
            break;
        }
        nprobe = (nprobe * 2).min(nlist);
    }
    // Best recall within the time budget; the fastest setting when none is within it.
    let within: Vec<&Measured> = tried.iter().filter(|m| m.query_ms <= max_query_ms).collect();
    let chosen = within
        .iter()
        .copied()
        .max_by(|a, b| a.recall_at_10.total_cmp(&b.recall_at_10).then(b.query_ms.total_cmp(&a.query_ms)))
        .unwrap_or(&tried[0])
        .clone();
    apply(index, &chosen.params)?;
    Ok(Tuning { meets_min_recall: chosen.recall_at_10 >= min_recall, chosen, tried })
}
