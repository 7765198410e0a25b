//! Exact k-NN over streamed chunks (the ground truth of tuning) and recall of an approximate result against it.

use crate::error::Result;
use crate::faiss_index::{FaissIndex, Metric, Neighbours};

/// Running exact top-k of a fixed query set, fed one chunk of the collection at a time.
pub struct ExactTopK {
    queries: Vec<f32>,
    /// Global ids of the queries when they come from the collection (their own match is left out).
    query_ids: Vec<u64>,
    dim: usize,
    k: usize,
    metric: Metric,
    /// Per query: best `(id, score)` so far, best first.
    best: Vec<Vec<(i64, f32)>>,
}

impl ExactTopK {
    /// Starts with no candidate; `query_ids` are the queries' own row ids (excluded from their results).
    pub fn new(queries: Vec<f32>, query_ids: Vec<u64>, dim: usize, k: usize, metric: Metric) -> Self {
        let nq = queries.len() / dim.max(1);
        Self { queries, query_ids, dim, k, metric, best: vec![Vec::new(); nq] }
    }

    /// Searches one chunk whose first row has id `first_id`.
    pub fn add_chunk(&mut self, first_id: u64, rows: &[f32]) -> Result<()> {
        if self.best.is_empty() || rows.is_empty() {
            return Ok(());
        }
        let mut flat = FaissIndex::from_factory(self.dim, "Flat", self.metric)?;
        flat.add(rows)?;
        let found = flat.search(&self.queries, self.k + 1)?;
        for (q, best) in self.best.iter_mut().enumerate() {
            let own = self.query_ids.get(q).map(|&id| id as i64);
            best.extend(found.row(q).map(|(id, s)| (id + first_id as i64, s)).filter(|(id, _)| Some(*id) != own));
            self.metric.sort_best(best);
            best.truncate(self.k);
        }
        Ok(())
    }

    /// The exact neighbours found.
    pub fn finish(self) -> Neighbours {
        let k = self.k;
        let mut distances = Vec::with_capacity(self.best.len() * k);
        let mut ids = Vec::with_capacity(self.best.len() * k);
        for best in self.best {
            for i in 0..k {
                let (id, s) = best.get(i).copied().unwrap_or((-1, f32::NAN));
                distances.push(s);
                ids.push(id);
            }
        }
        Neighbours { k, distances, ids }
    }
}

/// Mean fraction of the exact top-`k` ids found in the approximate top-`k` (recall@k), leaving out each query's
/// own id from the approximate list when `query_ids` are given.
pub fn recall_at(approx: &Neighbours, exact: &Neighbours, k: usize, query_ids: &[u64]) -> f64 {
    let nq = exact.ids.len() / exact.k.max(1);
    if nq == 0 {
        return 1.0;
    }
    let mut total = 0.0;
    for q in 0..nq {
        let own = query_ids.get(q).map(|&id| id as i64);
        let truth: Vec<i64> = exact.row(q).map(|(id, _)| id).take(k).collect();
        let found: Vec<i64> = approx.row(q).map(|(id, _)| id).filter(|id| Some(*id) != own).take(k).collect();
        if truth.is_empty() {
            total += 1.0;
            continue;
        }
        total += truth.iter().filter(|id| found.contains(id)).count() as f64 / truth.len() as f64;
    }
    total / nq as f64
}
