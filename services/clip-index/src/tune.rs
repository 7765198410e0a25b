//! Search-parameter tuning: the setting with the best recall@10 whose single-query latency stays within the budget.
//!
//! IVF indices are probed with growing `nprobe` (and a matching `quantizer_efSearch` for an HNSW quantiser) until
//! the latency budget is spent or recall stops improving; with re-rank vectors, each `nprobe` is tried with a
//! growing `k_factor` (candidates re-scored exactly per result) too, and latency is that of the whole search,
//! re-scoring included. Flat has nothing to tune.

use crate::error::Result;
use crate::exact::recall_at;
use crate::faiss_index::{FaissIndex, Neighbours};
use crate::vectors::{search_reranked, StoredVectors};
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
    /// Candidates fetched per result and re-scored exactly (1: no re-ranking).
    #[serde(default = "one")]
    pub k_factor: usize,
}

fn one() -> usize {
    1
}

/// `k_factor`s tried per `nprobe` when the index has re-rank vectors.
const K_FACTORS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// What a search runs on: the compressed index and, when the folder has them, its exact vectors.
pub struct Searchable<'a> {
    /// The faiss index (its parameters are set by tuning).
    pub index: &'a mut FaissIndex,
    /// The re-rank vectors.
    pub vectors: Option<&'a StoredVectors>,
}

impl Searchable<'_> {
    fn search(&self, queries: &[f32], k: usize, k_factor: usize) -> Result<Neighbours> {
        match self.vectors {
            Some(v) => search_reranked(self.index, v, k_factor, queries, k),
            None => self.index.search(queries, k),
        }
    }
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

/// The tuning of an index that holds no vectors yet (`--train_only`): nothing measured, defaults applied; each part
/// built from it is tuned on its own vectors.
pub fn untuned() -> Tuning {
    let chosen = Measured { params: Vec::new(), recall_at_10: 0.0, query_ms: 0.0, k_factor: 1 };
    Tuning { chosen, tried: Vec::new(), meets_min_recall: true }
}

/// Applies a parameter set to an index.
pub fn apply(index: &mut FaissIndex, params: &[(String, f64)]) -> Result<()> {
    for (name, value) in params {
        index.set_parameter(name, *value)?;
    }
    Ok(())
}

/// Measures `params` (and `k_factor`) on the queries: recall@10 from one batch search, latency from single-query
/// searches.
pub fn measure(
    target: &mut Searchable<'_>,
    params: &[(String, f64)],
    k_factor: usize,
    queries: &[f32],
    exact: &Neighbours,
    query_ids: &[u64],
) -> Result<Measured> {
    apply(target.index, params)?;
    let d = target.index.dim();
    // One extra result: a query taken from the collection finds itself, which recall leaves out.
    let found = target.search(queries, RECALL_K + 1, k_factor)?;
    let recall = recall_at(&found, exact, RECALL_K, query_ids);
    let timed = (queries.len() / d).min(200);
    let start = Instant::now();
    for q in queries.chunks_exact(d).take(timed) {
        target.search(q, RECALL_K, k_factor)?;
    }
    let query_ms = start.elapsed().as_secs_f64() * 1000.0 / timed.max(1) as f64;
    Ok(Measured { params: params.to_vec(), recall_at_10: recall, query_ms, k_factor })
}

/// Tunes `target` (left with the chosen faiss parameters applied; the chosen `k_factor` is in the result).
pub fn tune(
    target: &mut Searchable<'_>,
    hnsw_quantizer: bool,
    queries: &[f32],
    exact: &Neighbours,
    query_ids: &[u64],
    max_query_ms: f64,
    min_recall: f64,
) -> Result<Tuning> {
    let k_factors: &[usize] = if target.vectors.is_some() { &K_FACTORS } else { &K_FACTORS[..1] };
    let Some(nlist) = target.index.nlist() else {
        // Flat: exact already; nothing to probe or re-rank.
        let m = measure(target, &[], 1, queries, exact, query_ids)?;
        return Ok(Tuning { meets_min_recall: m.recall_at_10 >= min_recall, chosen: m.clone(), tried: vec![m] });
    };
    let mut tried: Vec<Measured> = Vec::new();
    let mut nprobe = 1usize;
    let mut best_of_last_nprobe: Option<f64> = None;
    loop {
        let mut params = vec![("nprobe".to_string(), nprobe as f64)];
        if hnsw_quantizer {
            params.push(("quantizer_efSearch".to_string(), (2 * nprobe).max(32) as f64));
        }
        let mut first_over_time = false;
        let mut best_here: f64 = 0.0;
        for (i, &k_factor) in k_factors.iter().enumerate() {
            let m = measure(target, &params, k_factor, queries, exact, query_ids)?;
            tracing::debug!(nprobe, k_factor, recall = m.recall_at_10, ms = m.query_ms, "tuning");
            let over_time = m.query_ms > max_query_ms;
            first_over_time |= over_time && i == 0;
            let gain = m.recall_at_10 - best_here;
            best_here = best_here.max(m.recall_at_10);
            tried.push(m);
            // More candidates stop paying once recall is (almost) all the probed lists can give.
            if over_time || best_here >= 0.999 || (i > 0 && gain < 1e-3) {
                break;
            }
        }
        let plateau = best_of_last_nprobe.is_some_and(|p| best_here - p < 1e-4 && best_here >= 0.999);
        best_of_last_nprobe = Some(best_here);
        if first_over_time || plateau || nprobe >= nlist {
            break;
        }
        nprobe = (nprobe * 2).min(nlist);
    }
    // Best recall within the time budget (the fastest of equals); the fastest setting when none is within it.
    let within: Vec<&Measured> = tried.iter().filter(|m| m.query_ms <= max_query_ms).collect();
    let chosen = within
        .iter()
        .copied()
        .max_by(|a, b| a.recall_at_10.total_cmp(&b.recall_at_10).then(b.query_ms.total_cmp(&a.query_ms)))
        .unwrap_or(&tried[0])
        .clone();
    apply(target.index, &chosen.params)?;
    Ok(Tuning { meets_min_recall: chosen.recall_at_10 >= min_recall, chosen, tried })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::ExactTopK;
    use crate::faiss_index::Metric;
    use rand::{Rng, SeedableRng};

    /// 4000 normalised 16-d vectors around 40 centres, an IVF64 index (`factory`) over them, and the exact top-10 of 50 of them.
    fn ivf_fixture(factory: &str) -> (FaissIndex, Vec<f32>, Neighbours, Vec<u64>) {
        let dim = 16;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let centres: Vec<Vec<f32>> = (0..40).map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
        let mut rows = Vec::with_capacity(4000 * dim);
        for i in 0..4000 {
            let c = &centres[i % centres.len()];
            let v: Vec<f32> = c.iter().map(|x| x + rng.random_range(-0.3..0.3)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            rows.extend(v.iter().map(|x| x / norm));
        }
        let mut index = FaissIndex::from_factory(dim, factory, Metric::Ip).unwrap();
        index.train(&rows).unwrap();
        index.add(&rows).unwrap();
        let query_ids: Vec<u64> = (0..50).map(|i| i * 79).collect();
        let queries: Vec<f32> =
            query_ids.iter().flat_map(|&id| rows[id as usize * dim..(id as usize + 1) * dim].to_vec()).collect();
        let mut exact = ExactTopK::new(queries.clone(), query_ids.clone(), dim, RECALL_K, Metric::Ip);
        exact.add_chunk(0, &rows).unwrap();
        (index, queries, exact.finish(), query_ids)
    }

    fn nprobes(t: &Tuning) -> Vec<f64> {
        t.tried.iter().map(|m| m.params[0].1).collect()
    }

    #[test]
    fn with_time_to_spare_nprobe_doubles_until_recall_plateaus_and_the_best_is_applied() {
        let (mut index, queries, exact, ids) = ivf_fixture("IVF64,Flat");
        let t = tune(&mut Searchable { index: &mut index, vectors: None }, false, &queries, &exact, &ids, 1e9, 0.9)
            .unwrap();
        let probes = nprobes(&t);
        assert_eq!(probes[..3], [1.0, 2.0, 4.0], "nprobe doubles: {probes:?}");
        assert!(probes.windows(2).all(|w| w[1] == (w[0] * 2.0).min(64.0)), "{probes:?}");
        let best = t.tried.iter().map(|m| m.recall_at_10).fold(0.0, f64::max);
        assert_eq!(t.chosen.recall_at_10, best);
        assert!(t.chosen.recall_at_10 >= 0.99 && t.meets_min_recall, "{:?}", t.chosen);
        // The index keeps the chosen setting: measuring it again gives the same recall.
        let again =
            measure(&mut Searchable { index: &mut index, vectors: None }, &t.chosen.params, 1, &queries, &exact, &ids)
                .unwrap();
        assert_eq!(again.recall_at_10, t.chosen.recall_at_10);
    }

    #[test]
    fn with_no_time_the_first_setting_is_kept_and_min_recall_is_reported_unmet() {
        let (mut index, queries, exact, ids) = ivf_fixture("IVF64_HNSW8,Flat");
        let t = tune(&mut Searchable { index: &mut index, vectors: None }, true, &queries, &exact, &ids, 0.0, 0.999)
            .unwrap();
        assert_eq!(nprobes(&t), [1.0], "the first setting over budget stops the search");
        assert_eq!(t.chosen.params[1], ("quantizer_efSearch".to_string(), 32.0));
        assert!(!t.meets_min_recall, "nprobe=1 over 64 lists does not reach 0.999: {:?}", t.chosen);
    }

    #[test]
    fn flat_indices_are_measured_once_with_no_parameters() {
        let mut index = FaissIndex::from_factory(4, "Flat", Metric::Ip).unwrap();
        let rows: Vec<f32> = (0..400).map(|i| ((i * 37 % 101) as f32).sin()).collect();
        index.add(&rows).unwrap();
        let mut exact = ExactTopK::new(rows[..40].to_vec(), (0..10).collect(), 4, RECALL_K, Metric::Ip);
        exact.add_chunk(0, &rows).unwrap();
        let ids: Vec<u64> = (0..10).collect();
        let t = tune(
            &mut Searchable { index: &mut index, vectors: None },
            false,
            &rows[..40],
            &exact.finish(),
            &ids,
            1e9,
            0.5,
        )
        .unwrap();
        assert_eq!(t.tried.len(), 1);
        assert!(t.chosen.params.is_empty());
        assert!(t.chosen.recall_at_10 > 0.9, "{:?}", t.chosen);
    }
}
