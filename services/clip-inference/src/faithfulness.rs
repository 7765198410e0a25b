//! How far one precision's embeddings are from another's on the same samples: per-row cosine, and whether
//! text->image retrieval over the samples returns the same results. `clip-retrieval evaluate` prints these and
//! applies [`Gate`]; the math is here so that it is tested without a model.

use rayon::prelude::*;
use serde::Serialize;

/// Mean, 1st percentile and minimum of the per-row cosines between two embedding sets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CosineSummary {
    /// Rows compared.
    pub rows: usize,
    /// Mean cosine.
    pub mean: f64,
    /// 1st percentile (nearest rank): 99% of rows are at least this close.
    pub p01: f64,
    /// The farthest row.
    pub min: f64,
}

/// Per-row cosines of `a` and `b` (row-major, `dim` wide, same row count), summarised; `None` when empty.
pub fn cosine_summary(a: &[f32], b: &[f32], dim: usize) -> Option<CosineSummary> {
    assert_eq!(a.len(), b.len(), "both sets have the same rows");
    let mut cos: Vec<f64> = a.chunks_exact(dim).zip(b.chunks_exact(dim)).map(|(x, y)| cosine(x, y)).collect();
    if cos.is_empty() {
        return None;
    }
    cos.sort_by(f64::total_cmp);
    let rank = ((cos.len() as f64) * 0.01).ceil().max(1.0) as usize - 1;
    Some(CosineSummary {
        rows: cos.len(),
        mean: cos.iter().sum::<f64>() / cos.len() as f64,
        p01: cos[rank],
        min: cos[0],
    })
}

fn cosine(x: &[f32], y: &[f32]) -> f64 {
    let (mut dot, mut xx, mut yy) = (0f64, 0f64, 0f64);
    for (&p, &q) in x.iter().zip(y) {
        dot += p as f64 * q as f64;
        xx += p as f64 * p as f64;
        yy += q as f64 * q as f64;
    }
    if xx == 0.0 || yy == 0.0 {
        return 0.0;
    }
    dot / (xx.sqrt() * yy.sqrt())
}

/// Indices of the `k` rows of `docs` with the largest inner product with each row of `queries` (best first).
pub fn top_k(queries: &[f32], docs: &[f32], dim: usize, k: usize) -> Vec<Vec<usize>> {
    let doc_rows: Vec<&[f32]> = docs.chunks_exact(dim).collect();
    queries
        .par_chunks_exact(dim)
        .map(|q| {
            let mut scored: Vec<(f32, usize)> =
                doc_rows.iter().enumerate().map(|(i, d)| (q.iter().zip(*d).map(|(a, b)| a * b).sum(), i)).collect();
            let k = k.min(scored.len());
            if k == 0 {
                return Vec::new();
            }
            scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            scored.truncate(k);
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored.into_iter().map(|(_, i)| i).collect()
        })
        .collect()
}

/// Mean share of each query's reference results that the candidate also returns.
pub fn mean_overlap(reference: &[Vec<usize>], candidate: &[Vec<usize>]) -> f64 {
    let shares: Vec<f64> = reference
        .iter()
        .zip(candidate)
        .filter(|(r, _)| !r.is_empty())
        .map(|(r, c)| r.iter().filter(|i| c.contains(i)).count() as f64 / r.len() as f64)
        .collect();
    if shares.is_empty() {
        return 0.0;
    }
    shares.iter().sum::<f64>() / shares.len() as f64
}

/// Share of queries whose own row (caption i's image i) is among their results.
pub fn recall_of_own_row(results: &[Vec<usize>]) -> f64 {
    if results.is_empty() {
        return 0.0;
    }
    results.iter().enumerate().filter(|(i, r)| r.contains(i)).count() as f64 / results.len() as f64
}

/// The thresholds that call a cheaper precision usable in place of the reference.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Gate {
    /// Image cosine mean at least this.
    pub image_mean: f64,
    /// Image cosine 1st percentile at least this.
    pub image_p01: f64,
    /// Text cosine mean at least this.
    pub text_mean: f64,
    /// Text->image top-k overlap at least this.
    pub overlap: f64,
}

impl Default for Gate {
    fn default() -> Self {
        Self { image_mean: 0.995, image_p01: 0.98, text_mean: 0.99, overlap: 0.95 }
    }
}

impl Gate {
    /// The failed checks, as `what value < threshold`; empty when the gate passes. A tower not measured (`None`)
    /// is not checked.
    pub fn failures(
        &self,
        image: Option<CosineSummary>,
        text: Option<CosineSummary>,
        overlap: Option<f64>,
    ) -> Vec<String> {
        let mut failed = Vec::new();
        let mut check = |what: &str, value: f64, min: f64| {
            if value.is_nan() || value < min {
                failed.push(format!("{what} {value:.4} < {min}"));
            }
        };
        if let Some(i) = image {
            check("image cosine mean", i.mean, self.image_mean);
            check("image cosine p01", i.p01, self.image_p01);
        }
        if let Some(t) = text {
            check("text cosine mean", t.mean, self.text_mean);
        }
        if let Some(o) = overlap {
            check("text->image top-k overlap", o, self.overlap);
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosines_summarise_mean_percentile_and_minimum() {
        // 100 rows: 99 identical, one orthogonal.
        let dim = 2;
        let a: Vec<f32> = (0..100).flat_map(|_| [1.0, 0.0]).collect();
        let mut b = a.clone();
        b[0..2].copy_from_slice(&[0.0, 3.0]);
        let s = cosine_summary(&a, &b, dim).unwrap();
        assert_eq!((s.rows, s.min, s.p01), (100, 0.0, 0.0));
        assert!((s.mean - 0.99).abs() < 1e-12);
        b[0..2].copy_from_slice(&[2.0, 0.0]); // same direction, other length: cosine 1
        let s = cosine_summary(&a, &b, dim).unwrap();
        assert_eq!((s.mean, s.p01, s.min), (1.0, 1.0, 1.0));
        assert!(cosine_summary(&[], &[], dim).is_none());
    }

    #[test]
    fn top_k_orders_by_inner_product_and_overlap_counts_shared_results() {
        let docs = [1.0, 0.0, 0.0, 1.0, 0.7, 0.7];
        let got = top_k(&[1.0, 0.1, 0.0, 1.0], &docs, 2, 2);
        assert_eq!(got, vec![vec![0, 2], vec![1, 2]]);
        assert_eq!(top_k(&[1.0, 0.0], &docs, 2, 9)[0].len(), 3, "k is capped by the documents");
        assert_eq!(mean_overlap(&got, &got), 1.0);
        assert_eq!(mean_overlap(&got, &[vec![0, 1], vec![0, 2]]), 0.5);
        assert_eq!(recall_of_own_row(&got), 1.0);
        assert_eq!(recall_of_own_row(&[vec![1], vec![0]]), 0.0);
    }

    #[test]
    fn the_gate_names_each_failed_threshold() {
        let good = CosineSummary { rows: 10, mean: 0.999, p01: 0.99, min: 0.98 };
        let gate = Gate::default();
        assert!(gate.failures(Some(good), Some(good), Some(0.97)).is_empty());
        let bad = CosineSummary { mean: 0.97, p01: 0.5, ..good };
        let failed = gate.failures(Some(bad), Some(bad), Some(0.9));
        assert_eq!(failed.len(), 4, "{failed:?}");
        assert!(failed[1].starts_with("image cosine p01 0.5000 < 0.98"), "{failed:?}");
        assert!(gate.failures(None, None, Some(f64::NAN)).len() == 1, "NaN never passes");
    }
}
