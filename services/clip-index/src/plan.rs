//! `index --plan`: what a build of `count` vectors of dimension `dim` under a memory budget would choose and cost
//! (resident and disk bytes, build time, peak RSS) without building it, and `index --measure_costs`: the machine
//! costs the plan extrapolates from, measured by timing the faiss operations a build runs (k-means, coarse
//! assignment, HNSW, each codec's encoding, OPQ, the exact top-k of tuning) and the embeddings' I/O.
//!
//! The model follows what `build_index` does: train on `training_rows` sampled vectors (faiss k-means, 25
//! iterations, always with a flat assigner, then the HNSW graph of the centroids for large `nlist`, then the codec),
//! then per added vector: read it, assign it to a list (flat: `nlist * dim`, HNSW: ~`log2(nlist) * dim`), encode
//! it, score it against the tuning queries, write its float16 re-rank row; then tune (bounded by the latency
//! budget per setting) and write. Each cost is a measured time per unit of work, so the plan scales them by the
//! work of the planned build; the measurement runs at one dimension and the plan scales linearly in `dim`
//! (quadratically for the OPQ rotation).

use crate::build::{peak_rss_bytes, proc_status_bytes, training_rows, BuildOptions};
use crate::choice::{choose, estimate_bytes, Codec, IndexChoice, HNSW_QUANTIZER_FROM};
use crate::error::{IndexError, Result};
use crate::faiss_index::{set_threads, FaissIndex, Metric};
use clip_data::npy::{NpyDtype, NpyWriter};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The costs measured on the machine this repository's README table comes from (`bench/index_costs.sh`).
pub const REFERENCE_COSTS: &str = include_str!("../../../bench/index_costs.json");

/// faiss k-means iterations (`ClusteringParameters::niter`).
const KMEANS_ITERATIONS: f64 = 25.0;
/// OPQ trains on at most this many vectors (`OPQMatrix::max_train_points`).
const OPQ_TRAIN_POINTS: u64 = 256 * 256;
/// Single queries tuning times per setting (`tune::measure`).
const TIMED_QUERIES: f64 = 200.0;

/// Seconds per unit of work on one machine, measured by [`measure_costs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineCosts {
    /// What was measured where: CPU model, threads, date, command.
    pub measured_on: String,
    /// faiss threads during the measurement.
    pub threads: usize,
    /// Dimension of the measured vectors.
    pub dim: usize,
    /// Vectors per measurement.
    pub count: u64,
    /// k-means: seconds per (training vector x list x dimension x iteration).
    pub kmeans: f64,
    /// Flat coarse assignment of added vectors: seconds per (vector x list x dimension).
    pub flat_assign: f64,
    /// HNSW32 graph of the centroids: seconds per (centroid x dimension x log2 centroids).
    pub hnsw_build: f64,
    /// HNSW32 coarse assignment: seconds per (vector x dimension x log2 lists).
    pub hnsw_assign: f64,
    /// Scalar-quantiser encoding (SQ8/SQ6/SQfp16) into inverted lists: seconds per (vector x dimension).
    pub sq_encode: f64,
    /// 4-bit fast-scan PQ encoding (residuals, lists): seconds per (vector x dimension).
    pub pq_encode: f64,
    /// PQ codebook training: seconds per (training vector x dimension).
    pub pq_train: f64,
    /// OPQ rotation training: seconds per (training vector x dimension^2).
    pub opq_train: f64,
    /// OPQ rotation of added vectors: seconds per (vector x dimension^2).
    pub opq_rotate: f64,
    /// Exact scores of added vectors against the tuning queries: seconds per (vector x query x dimension).
    pub exact: f64,
    /// Reading float16 embeddings and writing float16 re-rank rows: seconds per (vector x dimension).
    pub io: f64,
    /// Resident memory of the process before any data (code, faiss, allocator), in bytes.
    pub base_rss_bytes: u64,
}

impl MachineCosts {
    /// Parses a costs file; `name` is shown in errors.
    pub fn from_json(text: &str, name: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| IndexError::invalid(name, format!("not a costs file: {e}")))
    }
}

/// Seconds of each build stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSeconds {
    /// Training (k-means, HNSW graph, codec).
    pub train: f64,
    /// Adding every vector (read, assign, encode, exact scores, re-rank rows).
    pub add: f64,
    /// Tuning, at most.
    pub tune_at_most: f64,
    /// Shares of `add`: coarse assignment, encoding (OPQ rotation included), the exact top-k of the tuning
    /// queries, reading and re-rank I/O.
    pub add_parts: [(&'static str, f64); 4],
}

/// What a build would choose and cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildPlan {
    /// Vectors.
    pub count: u64,
    /// Dimension.
    pub dim: usize,
    /// The chosen structure.
    pub choice: IndexChoice,
    /// Vectors k-means trains on.
    pub training_vectors: u64,
    /// Bytes that must stay resident when served (the index).
    pub resident_bytes: u64,
    /// Bytes on disk: the index file plus the float16 re-rank vectors.
    pub disk_bytes: u64,
    /// The re-rank vectors' share of `disk_bytes`.
    pub rerank_bytes: u64,
    /// Time per stage.
    pub seconds: StageSeconds,
    /// Estimated wall time of the whole build.
    pub build_seconds: f64,
    /// Estimated peak resident memory of the build.
    pub peak_rss_bytes: u64,
}

/// Plans a build of `count` x `dim` with `opts` (budget, build memory, re-rank, metric) from `costs`.
pub fn plan(count: u64, dim: usize, opts: &BuildOptions, costs: &MachineCosts) -> Result<BuildPlan> {
    if count == 0 || dim == 0 {
        return Err(IndexError::invalid(format!("{count} x {dim}"), "--plan needs a positive --count and --dim"));
    }
    let choice = choose(count, dim, opts.max_index_memory)?;
    let (n, d) = (count as f64, dim as f64);
    let lists = choice.nlist as f64;
    let hnsw = choice.nlist >= HNSW_QUANTIZER_FROM;
    let rerank = opts.rerank == crate::RerankMode::Auto && choice.codec != Codec::Flat;
    let trained = if choice.nlist == 0 { 0 } else { training_rows(&choice, count, dim, opts.current_memory_available) };
    let t = trained as f64;
    // Costs were measured with `costs.threads` threads; faiss's work splits over threads nearly evenly.
    let thread_scale = costs.threads as f64 / opts.threads.max(1) as f64;

    let mut train = costs.kmeans * t * lists * d * KMEANS_ITERATIONS;
    if hnsw {
        train += costs.hnsw_build * lists * d * lists.log2();
    }
    let (encode, rotate) = match choice.codec {
        Codec::Flat => (0.0, 0.0),
        Codec::SqFp16 | Codec::Sq8 | Codec::Sq6 => (costs.sq_encode * d, 0.0),
        Codec::PqFastScan { opq, .. } => {
            train += costs.pq_train * t * d;
            let rotate = if opq {
                train += costs.opq_train * t.min(OPQ_TRAIN_POINTS as f64) * d * d;
                costs.opq_rotate * d * d
            } else {
                0.0
            };
            (costs.pq_encode * d, rotate)
        }
    };
    let assign = match (choice.nlist, hnsw) {
        (0, _) => 0.0,
        (_, true) => costs.hnsw_assign * d * lists.log2(),
        (_, false) => costs.flat_assign * lists * d,
    };
    let queries = opts.tuning_queries.min(count as usize) as f64;
    let io = costs.io * d * if rerank { 1.0 } else { 0.5 };
    let exact = costs.exact * queries * d;
    let add = n * (assign + encode + rotate + exact + io);
    let add_parts = [
        ("assignment", n * assign * thread_scale),
        ("encoding", n * (encode + rotate) * thread_scale),
        ("tuning's exact top-k", n * exact * thread_scale),
        ("I/O", n * io * thread_scale),
    ];
    // A setting costs one batch search of the queries (on every thread) and 200 timed single queries, each within
    // the latency budget but the last (nprobe doubles: at most twice it). Up to seven k_factors per nprobe, and
    // nprobe doubles, so all levels together cost at most twice the last one. Flat has nothing to tune.
    let per_setting = (queries / opts.threads.max(1) as f64 + TIMED_QUERIES) * 2.0 * opts.max_query_ms / 1000.0;
    let tune_at_most = if choice.nlist == 0 { 0.0 } else { 7.0 * 2.0 * per_setting };
    let seconds = StageSeconds { train: train * thread_scale, add: add * thread_scale, tune_at_most, add_parts };

    let resident_bytes = choice.estimated_bytes;
    let rerank_bytes = if rerank { count * dim as u64 * 2 + 128 } else { 0 };
    let chunk = crate::build::chunk_rows(dim, opts.current_memory_available) as u64;
    // Training holds the sample, faiss's copy and its assignment buffers; adding holds the growing index, one
    // chunk read (float32) plus the exact-score copy of it, the tuning queries and their running top-k.
    let training_peak = t as u64 * dim as u64 * 4 * 3 + estimate_bytes(choice.codec, 0, dim, choice.nlist);
    let adding_peak = resident_bytes + chunk * dim as u64 * 4 * 3 + queries as u64 * (dim as u64 * 4 + 11 * 12);
    Ok(BuildPlan {
        count,
        dim,
        training_vectors: trained as u64,
        resident_bytes,
        disk_bytes: resident_bytes + rerank_bytes,
        rerank_bytes,
        build_seconds: seconds.train + seconds.add + seconds.tune_at_most,
        seconds,
        peak_rss_bytes: costs.base_rss_bytes + training_peak.max(adding_peak),
        choice,
    })
}

impl BuildPlan {
    /// The plan as `name: value` lines (the first number of each line is in the unit its name says).
    pub fn render(&self, costs_source: &str, costs: &MachineCosts) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let hours = |s: f64| s / 3600.0;
        let s = &self.seconds;
        [
            format!("plan: {} vectors x {}", self.count, self.dim),
            format!("structure: {}", self.choice.factory),
            format!("training vectors: {}", self.training_vectors),
            format!(
                "resident bytes: {} ({:.2} GiB, what --max_index_memory_usage bounds)",
                self.resident_bytes,
                gib(self.resident_bytes)
            ),
            format!(
                "disk bytes: {} ({:.2} GiB: the index plus {:.2} GiB of float16 re-rank vectors)",
                self.disk_bytes,
                gib(self.disk_bytes),
                gib(self.rerank_bytes)
            ),
            format!("train seconds: {:.0}", s.train),
            format!(
                "add seconds: {:.0} ({})",
                s.add,
                s.add_parts.iter().map(|(what, secs)| format!("{what} {secs:.0}")).collect::<Vec<_>>().join(", ")
            ),
            format!("tune seconds: {:.0} (at most)", s.tune_at_most),
            format!("build seconds: {:.0} ({:.1} h)", self.build_seconds, hours(self.build_seconds)),
            format!("peak rss bytes: {} ({:.2} GiB)", self.peak_rss_bytes, gib(self.peak_rss_bytes)),
            format!("costs: {costs_source}: {}", costs.measured_on),
        ]
        .join("\n")
    }
}

/// Measures this machine's costs with `count` random vectors of dimension `dim` and `threads` faiss threads.
pub fn measure_costs(count: u64, dim: usize, threads: usize, measured_on: String) -> Result<MachineCosts> {
    if count < 20_000 || dim < 16 || !dim.is_multiple_of(8) {
        return Err(IndexError::invalid(
            format!("{count} x {dim}"),
            "--measure_costs needs --count >= 20000 and a --dim that is a multiple of 8 (>= 16)",
        ));
    }
    let base_rss_bytes = proc_status_bytes("VmRSS");
    set_threads(threads);
    let (n, d) = (count as usize, dim);
    let data = random_unit_rows(n, d, 1);
    let rows = |k: usize| &data[..k * d];
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let started = Instant::now();
        f()?;
        Ok(started.elapsed().as_secs_f64().max(1e-9))
    };
    let (nf, df) = (n as f64, d as f64);

    // k-means with a flat assigner: IVF256 trained on 64 points per list (as build_index samples).
    let lists = 256usize;
    let trained = lists * 64;
    let mut ivf = FaissIndex::from_factory(d, &format!("IVF{lists},Flat"), Metric::Ip)?;
    let kmeans = time(&mut || ivf.train(rows(trained)))? / (trained as f64 * lists as f64 * df * KMEANS_ITERATIONS);
    // Coarse assignment alone: the flat index of the centroids searched for every vector.
    let centroids = ivf.ivf_centroids()?.unwrap_or_default();
    let mut flat = FaissIndex::from_factory(d, "Flat", Metric::Ip)?;
    flat.add(&centroids)?;
    let flat_assign = time(&mut || flat.search(&data, 1).map(drop))? / (nf * lists as f64 * df);

    // HNSW32 over as many centroids as the smallest HNSW-quantised index has.
    let graph_points = HNSW_QUANTIZER_FROM.min(n);
    let log_points = (graph_points as f64).log2();
    let mut graph = FaissIndex::from_factory(d, "HNSW32", Metric::Ip)?;
    let hnsw_build = time(&mut || graph.add(rows(graph_points)))? / (graph_points as f64 * df * log_points);
    graph.set_parameter("efSearch", 16.0)?;
    let hnsw_assign = time(&mut || graph.search(&data, 1).map(drop))? / (nf * df * log_points);
    drop(graph);

    // Encoding into one list (assignment is free), scalar and fast-scan PQ, with and without OPQ.
    let encode_cost = |factory: &str| -> Result<(f64, f64)> {
        let mut index = FaissIndex::from_factory(d, factory, Metric::Ip)?;
        let train = time(&mut || index.train(rows(trained)))?;
        let add = time(&mut || index.add(&data))?;
        Ok((train, add))
    };
    let (_, sq_add) = encode_cost("IVF1,SQ8")?;
    let m = d / 8;
    let (pq_train_s, pq_add) = encode_cost(&format!("IVF1,PQ{m}x4fsr"))?;
    let (opq_train_s, opq_add) = encode_cost(&format!("OPQ{m}_{d},IVF1,PQ{m}x4fsr"))?;

    // The exact top-k of tuning, as a build runs it: 1000 queries against the data in build-sized chunks.
    let queries = 1000usize;
    let chunk = crate::build::chunk_rows(d, BuildOptions::default().current_memory_available);
    let query_ids: Vec<u64> = (0..queries as u64).collect();
    let mut exact_top =
        crate::exact::ExactTopK::new(data[..queries * d].to_vec(), query_ids, d, crate::tune::RECALL_K, Metric::Ip);
    let exact = time(&mut || {
        for (i, rows) in data.chunks(chunk * d).enumerate() {
            exact_top.add_chunk((i * chunk) as u64, rows)?;
        }
        Ok(())
    })? / (nf * queries as f64 * df);

    let io = time(&mut || npy_round_trip(&data, d))? / (nf * df);
    let peak = peak_rss_bytes();
    tracing::info!(peak_rss_bytes = peak, "costs measured");
    Ok(MachineCosts {
        measured_on,
        threads,
        dim,
        count,
        kmeans,
        flat_assign,
        hnsw_build,
        hnsw_assign,
        sq_encode: sq_add / (nf * df),
        pq_encode: pq_add / (nf * df),
        pq_train: pq_train_s / (trained as f64 * df),
        opq_train: ((opq_train_s - pq_train_s).max(0.0)) / (trained as f64 * df * df),
        opq_rotate: ((opq_add - pq_add).max(0.0)) / (nf * df * df),
        exact,
        io,
        base_rss_bytes,
    })
}

/// Writes `data` as a float16 npy and reads it back as float32, as a build reads embeddings and writes re-rank rows.
fn npy_round_trip(data: &[f32], dim: usize) -> Result<()> {
    let dir = tempfile::tempdir().map_err(IndexError::io("temporary folder"))?;
    let path = dir.path().join("rows.npy");
    let file = std::fs::File::create(&path).map_err(IndexError::io(path.display()))?;
    let mut writer = NpyWriter::new(std::io::BufWriter::with_capacity(1 << 20, file), NpyDtype::F16, dim)
        .map_err(IndexError::io(path.display()))?;
    writer.write_rows(data).map_err(IndexError::io(path.display()))?;
    use std::io::Write;
    writer.finish().and_then(|mut b| b.flush()).map_err(IndexError::io(path.display()))?;
    let stored = crate::vectors::StoredVectors::open(&path)?;
    let ids: Vec<i64> = (0..stored.len() as i64).collect();
    let back = stored.read(&ids)?;
    if back.len() != data.len() {
        return Err(IndexError::invalid(path.display(), "read back a different number of values"));
    }
    Ok(())
}

fn random_unit_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut data: Vec<f32> = (0..n * d).map(|_| rng.random::<f32>() - 0.5).collect();
    for row in data.chunks_exact_mut(d) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= norm);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs() -> MachineCosts {
        MachineCosts::from_json(REFERENCE_COSTS, "bench/index_costs.json").unwrap()
    }

    fn opts(budget: &str) -> BuildOptions {
        BuildOptions { max_index_memory: crate::parse_memory(budget).unwrap(), threads: 2, ..Default::default() }
    }

    #[test]
    fn the_plan_chooses_what_a_build_would_and_counts_the_rerank_vectors_on_disk() {
        let p = plan(1_000_000_000, 768, &opts("64G"), &costs()).unwrap();
        assert_eq!(p.choice, choose(1_000_000_000, 768, 64 << 30).unwrap());
        assert!(p.resident_bytes <= 64 << 30);
        assert_eq!(p.rerank_bytes, 1_000_000_000 * 768 * 2 + 128);
        assert_eq!(p.disk_bytes, p.resident_bytes + p.rerank_bytes);
        assert!(p.choice.factory.contains("_HNSW32"), "{}", p.choice.factory);
        assert!(p.peak_rss_bytes > p.resident_bytes);
    }

    #[test]
    fn adding_scales_with_the_count_and_flat_needs_no_training() {
        let c = costs();
        let small = plan(10_000_000, 512, &opts("4G"), &c).unwrap();
        let big = plan(20_000_000, 512, &opts("8G"), &c).unwrap();
        assert_eq!(small.choice.codec, big.choice.codec);
        let ratio = big.seconds.add / small.seconds.add;
        // Twice the vectors, and a flat quantiser with ~sqrt(2) times the lists.
        assert!((2.0..3.5).contains(&ratio), "add time ratio {ratio}");
        let flat = plan(100_000, 512, &opts("4G"), &c).unwrap();
        assert_eq!((flat.choice.factory.as_str(), flat.training_vectors, flat.rerank_bytes), ("Flat", 0, 0));
        assert_eq!(flat.seconds.train, 0.0);
    }

    #[test]
    fn an_impossible_budget_is_refused_with_what_it_needs() {
        let e = plan(1_000_000_000, 768, &opts("1G"), &costs()).unwrap_err().to_string();
        assert!(e.contains("needs about"), "{e}");
    }
}
