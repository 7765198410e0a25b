//! Which faiss index to build for `n` vectors of dimension `d` under a memory budget, and how much memory it takes.
//!
//! The rule, like autofaiss's but filling the budget rather than picking from a fixed list: the exact Flat index when
//! `n * d * 4` bytes fit; otherwise an IVF index whose codec is the most accurate that fits the bytes left per vector
//! after the coarse quantiser and the 8-byte ids: SQfp16, SQ8, SQ6, then 4-bit fast-scan PQ (residual-coded, OPQ
//! rotation for heavy compression) with as many sub-quantisers as fit. Large `nlist` uses an HNSW coarse quantiser
//! so that probing stays fast.

use crate::error::{IndexError, Result};
use serde::{Deserialize, Serialize};

/// The codec of an IVF index (what each vector is stored as).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// Exact vectors, no IVF: `4 * d` bytes.
    Flat,
    /// Half floats: `2 * d` bytes.
    SqFp16,
    /// 8-bit scalar quantisation: `d` bytes.
    Sq8,
    /// 6-bit scalar quantisation: `0.75 * d` bytes.
    Sq6,
    /// 4-bit fast-scan product quantisation with `m` sub-quantisers: `m / 2` bytes.
    PqFastScan {
        /// Number of sub-quantisers.
        m: usize,
        /// Whether an OPQ rotation precedes the IVF.
        opq: bool,
    },
}

/// A chosen index: faiss factory string and what it will cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexChoice {
    /// faiss `index_factory` description, e.g. `IVF4096,SQ8`.
    pub factory: String,
    /// The codec.
    pub codec: Codec,
    /// Inverted lists (0 for Flat).
    pub nlist: usize,
    /// Estimated bytes of the whole index in memory (and on disk).
    pub estimated_bytes: u64,
}

/// Parses a memory size as clip-retrieval and autofaiss write them: `4G`, `16GB`, `512M`, `1.5G`, `1000000` (bytes).
/// Units are powers of 1024.
pub fn parse_memory(text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').unwrap_or(&t);
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let scale: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(IndexError::invalid(text, "memory size must look like 4G, 512M, 16GB or a byte count")),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| IndexError::invalid(text, "memory size must look like 4G, 512M, 16GB or a byte count"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(IndexError::invalid(text, "memory size must be positive"));
    }
    Ok((value * scale as f64) as u64)
}

/// Inverted lists for `n` vectors: about `2 * sqrt(n)` rounded to a power of two (k-means training cost grows with
/// `nlist`, and 2 cores must build 1M vectors in minutes), with at least 39 training points per list (faiss's
/// minimum for stable k-means).
pub fn nlist_for(n: u64) -> usize {
    let target = (2.0 * (n as f64).sqrt()).max(1.0);
    let mut nlist = 1usize << (target.log2().round() as u32);
    while nlist > 1 && (nlist as u64) * 39 > n {
        nlist /= 2;
    }
    nlist
}

/// HNSW coarse quantiser above this many lists (a flat quantiser costs `nlist * d` per query).
pub(crate) const HNSW_QUANTIZER_FROM: usize = 32_768;
/// Bytes of an id in an inverted list.
const ID_BYTES: f64 = 8.0;

fn quantizer_bytes(nlist: usize, d: usize) -> u64 {
    let centroids = (nlist * d * 4) as u64;
    // HNSW32 graph: 2 * 32 neighbours on level 0 (int32) plus upper levels and bookkeeping.
    let graph = if nlist >= HNSW_QUANTIZER_FROM { nlist as u64 * (64 * 4 + 40) } else { 0 };
    // Each inverted list is two std::vectors.
    centroids + graph + nlist as u64 * 64
}

fn code_bytes(codec: Codec, d: usize) -> f64 {
    match codec {
        Codec::Flat => 4.0 * d as f64,
        Codec::SqFp16 => 2.0 * d as f64,
        Codec::Sq8 => d as f64,
        Codec::Sq6 => (6 * d).div_ceil(8) as f64,
        Codec::PqFastScan { m, .. } => m.div_ceil(2) as f64,
    }
}

fn fixed_bytes(codec: Codec, d: usize) -> u64 {
    match codec {
        Codec::PqFastScan { m, opq } => {
            let rotation = if opq { (d * d * 4) as u64 } else { 0 };
            rotation + (m * 16 * (d / m) * 4) as u64 + 4096
        }
        _ => (d * 2 * 4) as u64 + 4096,
    }
}

/// Estimated bytes of an index with this codec.
pub fn estimate_bytes(codec: Codec, n: u64, d: usize, nlist: usize) -> u64 {
    if codec == Codec::Flat {
        return n * (4 * d) as u64 + 4096;
    }
    let per_vector = code_bytes(codec, d) + ID_BYTES;
    // Fast-scan lists are padded to blocks of 32 codes.
    let padding = match codec {
        Codec::PqFastScan { m, .. } => (nlist as u64) * 16 * m.div_ceil(2) as u64,
        _ => 0,
    };
    (n as f64 * per_vector) as u64 + quantizer_bytes(nlist, d) + fixed_bytes(codec, d) + padding
}

fn factory_for(codec: Codec, d: usize, nlist: usize) -> String {
    let ivf = if nlist >= HNSW_QUANTIZER_FROM { format!("IVF{nlist}_HNSW32") } else { format!("IVF{nlist}") };
    match codec {
        Codec::Flat => "Flat".to_string(),
        Codec::SqFp16 => format!("{ivf},SQfp16"),
        Codec::Sq8 => format!("{ivf},SQ8"),
        Codec::Sq6 => format!("{ivf},SQ6"),
        Codec::PqFastScan { m, opq: true } => format!("OPQ{m}_{d},{ivf},PQ{m}x4fsr"),
        Codec::PqFastScan { m, opq: false } => format!("{ivf},PQ{m}x4fsr"),
    }
}

/// Fast-scan PQ sub-quantiser counts for dimension `d`, most accurate first: even divisors of `d`, at most `d`.
fn pq_candidates(d: usize) -> Vec<usize> {
    (2..=d).rev().filter(|m| d.is_multiple_of(*m) && m.is_multiple_of(2)).collect()
}

/// The most accurate index of `n` vectors of dimension `d` that fits in `budget` bytes.
pub fn choose(n: u64, d: usize, budget: u64) -> Result<IndexChoice> {
    let flat = estimate_bytes(Codec::Flat, n, d, 0);
    if flat <= budget {
        return Ok(IndexChoice { factory: "Flat".into(), codec: Codec::Flat, nlist: 0, estimated_bytes: flat });
    }
    let nlist = nlist_for(n);
    let mut ladder = vec![Codec::SqFp16, Codec::Sq8, Codec::Sq6];
    // OPQ pays off when each sub-quantiser covers several dimensions.
    ladder.extend(pq_candidates(d).into_iter().map(|m| Codec::PqFastScan { m, opq: m * 4 <= d }));
    for codec in ladder {
        // Fewer lists (down to ~sqrt(n)/2) shrink the quantiser and the fast-scan padding: better a finer codec with
        // longer lists than a coarser one.
        let mut lists = nlist;
        loop {
            let bytes = estimate_bytes(codec, n, d, lists);
            if bytes <= budget {
                return Ok(IndexChoice {
                    factory: factory_for(codec, d, lists),
                    codec,
                    nlist: lists,
                    estimated_bytes: bytes,
                });
            }
            if lists < 2 || (lists as f64) < (n as f64).sqrt() {
                break;
            }
            lists /= 2;
        }
    }
    let smallest = pq_candidates(d).last().copied().unwrap_or(2);
    let need = estimate_bytes(Codec::PqFastScan { m: smallest, opq: false }, n, d, nlist);
    Err(IndexError::Budget {
        budget: format!("{budget} bytes"),
        reason: format!("the smallest index of {n} vectors of dimension {d} needs about {need} bytes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_like_autofaiss() {
        assert_eq!(parse_memory("4G").unwrap(), 4 << 30);
        assert_eq!(parse_memory("16GB").unwrap(), 16 << 30);
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_memory("1000").unwrap(), 1000);
        assert!(parse_memory("4X").unwrap_err().to_string().contains("4X"));
        assert!(parse_memory("-1G").is_err());
    }

    #[test]
    fn flat_when_it_fits() {
        let c = choose(10_000, 512, 64 << 20).unwrap();
        assert_eq!(c.factory, "Flat");
        assert!(c.estimated_bytes >= 10_000 * 2048);
    }

    #[test]
    fn codec_degrades_with_the_budget_and_always_fits() {
        let n = 1_000_000;
        let mut last = f64::INFINITY;
        for mb in [1500u64, 800, 600, 300, 100, 40, 20] {
            let budget = mb << 20;
            let c = choose(n, 512, budget).unwrap();
            assert!(c.estimated_bytes <= budget, "{c:?} over {mb} MB");
            let bytes = code_bytes(c.codec, 512);
            assert!(bytes <= last, "{c:?} more accurate with less memory");
            last = bytes;
            // Less than half the budget unused: the choice fills it.
            assert!(c.estimated_bytes * 2 > budget || matches!(c.codec, Codec::SqFp16), "{c:?} wastes {mb} MB");
        }
        assert_eq!(choose(n, 512, 1500 << 20).unwrap().factory, "IVF2048,SQfp16");
        assert_eq!(choose(n, 512, 600 << 20).unwrap().factory, "IVF2048,SQ8");
        assert_eq!(choose(n, 512, 100 << 20).unwrap().factory, "OPQ128_512,IVF2048,PQ128x4fsr");
        // 4 bits per dimension almost fits 256 MiB with 2048 lists: fewer lists make room for it.
        assert_eq!(choose(n, 512, 256 << 20).unwrap().factory, "IVF512,PQ512x4fsr");
        assert!(choose(n, 512, 20 << 20).unwrap().factory.starts_with("OPQ"));
    }

    #[test]
    fn large_collections_use_an_hnsw_quantizer_and_impossible_budgets_say_why() {
        let c = choose(200_000_000, 512, 16 << 30).unwrap();
        assert!(choose(400_000_000, 512, 64 << 30).unwrap().factory.contains("_HNSW32"), "{c:?}");
        let err = choose(1_000_000_000, 512, 1 << 30).unwrap_err().to_string();
        assert!(err.contains("needs about"), "{err}");
    }

    #[test]
    fn nlist_scales_with_sqrt_n_and_has_enough_training_points() {
        assert_eq!(nlist_for(1_000_000), 2048);
        assert_eq!(nlist_for(100), 2);
        assert!(nlist_for(5_000) * 39 <= 5_000);
        assert_eq!(nlist_for(1), 1);
    }
}
