//! Where data lives and how it is laid out: local and `s3://` storage, dataset readers (files, webdataset,
//! parquet) split into partitions, and clip-retrieval's output layout (`img_emb/`, `text_emb/`, `metadata/`,
//! `stats/`) with numpy-exact `.npy` files.

pub mod arrow_json;
pub mod braces;
pub mod dataset;
pub mod dataset_writer;
pub mod error;
pub mod extract;
pub mod metadata;
pub mod model_source;
pub mod npy;
pub mod storage;
pub mod url_list;

pub use dataset::{
    DatasetPlan, InputFormat, InputUnit, RawSample, ReadEvent, ReadOptions, SkippedInput, DEFAULT_MAX_SAMPLE_BYTES,
};
pub use error::{DataError, Result};
pub use storage::{Location, Storage};

/// Zero-padded partition number as clip-retrieval formats it: `int(log10(count)) + 1` digits.
pub fn partition_name(id: usize, count: usize) -> String {
    let width = (count.max(1) as f64).log10() as usize + 1;
    format!("{id:0width$}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_names_match_clip_retrieval() {
        assert_eq!(super::partition_name(0, 1), "0");
        assert_eq!(super::partition_name(3, 10), "03");
        assert_eq!(super::partition_name(7, 9), "7");
        assert_eq!(super::partition_name(42, 100), "042");
    }
}
