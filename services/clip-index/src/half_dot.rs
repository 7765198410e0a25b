//! Scores of a float32 query against float16 stored rows: the inner loop of re-ranking, run for `k * k_factor`
//! candidates of every query. `half`'s slice conversion calls an out-of-line F16C routine per 8 values and a plain
//! `.sum()` is one serial chain of additions; together they were a third of a query's time (perf, 1M vectors). Here
//! one pass converts and multiply-adds with AVX2 + FMA + F16C when the CPU has them (the features faiss is built
//! with, README "Requirements"), else a portable loop of independent accumulators. This is the only module beside
//! `faiss_index` allowed `unsafe`: the intrinsics read the rows through raw pointers.
#![allow(unsafe_code)]

use crate::faiss_index::Metric;
use half::f16;

/// Which implementation this CPU runs, decided once per batch of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX2 + FMA + F16C.
    Avx2,
    /// Any CPU.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return Kernel::Avx2;
        }
        Kernel::Portable
    }

    /// Inner product (`Metric::Ip`) or squared distance (`Metric::L2`) of `query` and `row` (same length).
    pub fn score(self, query: &[f32], row: &[f16], metric: Metric) -> f32 {
        assert_eq!(query.len(), row.len(), "query and row dimensions differ");
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only returned by `detect` when the CPU has AVX2, FMA and F16C.
            Kernel::Avx2 => unsafe { x86::score(query, row, metric == Metric::L2) },
            _ => portable(query, row, metric == Metric::L2),
        }
    }
}

/// Eight independent sums, so the compiler can keep them in one vector register.
fn portable(query: &[f32], row: &[f16], l2: bool) -> f32 {
    let mut acc = [0f32; 8];
    let (q8, q_rest) = query.split_at(query.len() / 8 * 8);
    let (r8, r_rest) = row.split_at(q8.len());
    for (q, r) in q8.chunks_exact(8).zip(r8.chunks_exact(8)) {
        for lane in 0..8 {
            let x = r[lane].to_f32();
            acc[lane] += if l2 { (q[lane] - x) * (q[lane] - x) } else { q[lane] * x };
        }
    }
    let tail: f32 = q_rest
        .iter()
        .zip(r_rest)
        .map(|(&q, r)| {
            let x = r.to_f32();
            if l2 {
                (q - x) * (q - x)
            } else {
                q * x
            }
        })
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `query` and `row` have the same length.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn score(query: &[f32], row: &[f16], l2: bool) -> f32 {
        let n = query.len().min(row.len());
        let (q, r) = (query.as_ptr(), row.as_ptr() as *const u16);
        // Two accumulators hide the FMA latency; 512 dimensions are 32 steps of 16 values.
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n, so both 8-value loads of each slice are in bounds.
            let (x0, x1, y0, y1) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(r.add(i) as *const __m128i)),
                    _mm256_cvtph_ps(_mm_loadu_si128(r.add(i + 8) as *const __m128i)),
                    _mm256_loadu_ps(q.add(i)),
                    _mm256_loadu_ps(q.add(i + 8)),
                )
            };
            if l2 {
                let (d0, d1) = (_mm256_sub_ps(y0, x0), _mm256_sub_ps(y1, x1));
                a0 = _mm256_fmadd_ps(d0, d0, a0);
                a1 = _mm256_fmadd_ps(d1, d1, a1);
            } else {
                a0 = _mm256_fmadd_ps(y0, x0, a0);
                a1 = _mm256_fmadd_ps(y1, x1, a1);
            }
            i += 16;
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(a0, a1)) };
        let mut sum: f32 = lanes.iter().sum();
        for j in i..n {
            let x = row[j].to_f32();
            sum += if l2 { (query[j] - x) * (query[j] - x) } else { query[j] * x };
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(query: &[f32], row: &[f16], l2: bool) -> f64 {
        query
            .iter()
            .zip(row)
            .map(|(&q, r)| {
                let (q, x) = (q as f64, r.to_f64());
                if l2 {
                    (q - x) * (q - x)
                } else {
                    q * x
                }
            })
            .sum()
    }

    #[test]
    fn every_kernel_matches_the_exact_score_for_any_length() {
        let kernels = [Kernel::detect(), Kernel::Portable];
        for dim in [1usize, 7, 8, 15, 16, 17, 512, 515] {
            let query: Vec<f32> = (0..dim).map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0).collect();
            let row: Vec<f16> = (0..dim).map(|i| f16::from_f32(((i * 53 % 89) as f32 - 44.0) / 60.0)).collect();
            for metric in [Metric::Ip, Metric::L2] {
                let want = exact(&query, &row, metric == Metric::L2);
                for k in kernels {
                    let got = k.score(&query, &row, metric) as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{k:?} {metric:?} dim {dim}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
