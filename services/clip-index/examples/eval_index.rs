//! Evaluates an index folder through the search path `back` serves with (`LoadedIndex::search`: the tuned
//! parameters of its report and, for a compressed index, exact re-ranking of `k * k_factor` candidates from its
//! float16 vectors): recall@10 against the exact ids, QPS at batch 1 and batch 64, like `bench/eval_index.py` does
//! for a bare faiss file.
//!
//! cargo run --release -p clip-index --example eval_index -- QUERIES.npy GROUND_TRUTH_F32.npy INDEX_FOLDER OUT.json [THREADS=2]
//! (queries f16/f32 rows; ground truth: the exact top-10 ids per query, stored as float32)

use clip_index::{LoadedIndex, Modality};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err("usage: eval_index QUERIES.npy GROUND_TRUTH_F32.npy INDEX_FOLDER OUT.json [THREADS]".into());
    }
    let threads: usize = args.get(5).map(|t| t.parse()).transpose()?.unwrap_or(2);
    let queries = clip_data::npy::read_matrix(&std::fs::read(&args[1])?, &args[1])?;
    let truth = clip_data::npy::read_matrix(&std::fs::read(&args[2])?, &args[2])?;
    let index = LoadedIndex::open(std::path::Path::new(&args[3]), Modality::Image, false)?;
    clip_index::faiss_index::set_threads(threads);
    let d = queries.cols;
    let found = index.search(&queries.data, 10)?;
    let mut hits = 0usize;
    for q in 0..queries.rows {
        let exact: Vec<i64> = truth.data[q * truth.cols..][..10].iter().map(|&id| id as i64).collect();
        hits += found.row(q).filter(|(id, _)| exact.contains(id)).count();
    }
    let recall = hits as f64 / (queries.rows * 10) as f64;
    let qps = |batch: usize| -> Result<f64, clip_index::IndexError> {
        let (started, mut done) = (Instant::now(), 0usize);
        while started.elapsed() < Duration::from_secs(5) {
            for chunk in queries.data.chunks(batch * d) {
                index.search(chunk, 10)?;
                done += chunk.len() / d;
                if started.elapsed() >= Duration::from_secs(5) {
                    break;
                }
            }
        }
        Ok(done as f64 / started.elapsed().as_secs_f64())
    };
    let folder = std::path::Path::new(&args[3]);
    let bytes = |f: &str| std::fs::metadata(folder.join(f)).map(|m| m.len()).unwrap_or(0);
    let result = serde_json::json!({
        "recall_at_10": recall,
        "qps_batch1": qps(1)?,
        "qps_batch64": qps(64)?,
        "index_bytes": bytes("image.index"),
        "disk_bytes": bytes("image_vectors.npy"),
        "k_factor": index.k_factor,
    });
    std::fs::write(&args[4], result.to_string())?;
    println!("{result}");
    Ok(())
}
