//! Benchmark of the metadata row store: N rows (image_path, caption, width, height) written as parquet partitions,
//! converted to `metadata.arrow`, then 1000 random ids fetched from the memory map, timed, with RSS before/after.
//!
//!     cargo run --release -p clip-index --example row_store_bench -- [ROWS=10000000] [PARTITION_ROWS=1000000]

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use clip_data::Location;
use clip_index::row_store::{metadata_partitions, write_row_store};
use clip_index::RowStore;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Instant;

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a number")).collect();
    let rows = args.first().copied().unwrap_or(10_000_000);
    let per = args.get(1).copied().unwrap_or(1_000_000);
    let storage = clip_data::Storage::from_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let meta = dir.path().join("metadata");
    let parts = rows.div_ceil(per);
    let schema = Arc::new(Schema::new(vec![
        Field::new("image_path", DataType::Utf8, true),
        Field::new("caption", DataType::Utf8, true),
        Field::new("width", DataType::Int64, true),
        Field::new("height", DataType::Int64, true),
    ]));
    let start = Instant::now();
    let mut expected = Vec::new();
    for p in 0..parts {
        let n = per.min(rows - p * per);
        let ids = p * per..p * per + n;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(ids.clone().map(|i| format!("s3://bucket/images/{i:09}.jpg")))),
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| format!("a photo number {i} of something colourful on a plain background")),
            )),
            Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| (i % 1024) as i64))),
            Arc::new(Int64Array::from_iter_values(ids.map(|i| (i % 768) as i64))),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).expect("batch");
        let target = Location::Local(meta.join(format!("metadata_{p}.parquet")));
        clip_data::metadata::write_parquet(&storage, &target, &batch).expect("parquet");
        expected.push((p, n));
    }
    println!("{rows} rows of parquet written in {:.1}s", start.elapsed().as_secs_f64());
    let start = Instant::now();
    let store_path = dir.path().join("metadata.arrow");
    let partitions = metadata_partitions(&storage, &Location::Local(meta)).expect("partitions");
    write_row_store(&storage, &partitions, &expected, &Location::Local(store_path.clone())).expect("row store");
    let size = std::fs::metadata(&store_path).expect("store").len();
    println!("metadata.arrow built in {:.1}s ({:.0} MB)", start.elapsed().as_secs_f64(), size as f64 / 1e6);

    let before = rss_mb();
    let start = Instant::now();
    let store = RowStore::open(&store_path).expect("open");
    println!("opened in {:.1} ms, RSS +{:.1} MB", start.elapsed().as_secs_f64() * 1e3, rss_mb() - before);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for round in 0..3 {
        let ids: Vec<u64> = (0..1000).map(|_| rng.random_range(0..rows as u64)).collect();
        let before = rss_mb();
        let start = Instant::now();
        let got = store.get(&ids, None).expect("get");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        assert!(got
            .iter()
            .zip(&ids)
            .all(|(r, id)| r.as_ref().unwrap()["image_path"].as_str().unwrap().ends_with(&format!("{id:09}.jpg"))));
        println!("round {round}: 1000 random rows of {rows} in {ms:.1} ms, RSS +{:.1} MB", rss_mb() - before);
    }
}
