//! k-NN indices for CLIP embeddings, built with faiss the way autofaiss does (exact when it fits, otherwise the most
//! accurate IVF codec within a memory budget, tuned for recall under a latency budget), loaded memory-mapped for
//! serving, merged from parts; and the memory-mapped metadata row store that maps index ids to metadata rows.
//!
//! Files are the ones clip-retrieval users have: `image.index` / `text.index` read by Python faiss, `metadata/` as
//! parquet. Reports (`image.json`) and `metadata.arrow` are ours.

pub mod append;
pub mod build;
pub mod choice;
pub mod embeddings;
pub mod error;
pub mod exact;
pub mod faiss_index;
pub mod folder;
pub mod generations;
mod half_dot;
pub mod merge;
mod mmap;
pub mod ondisk;
pub mod plan;
pub mod report;
pub mod row_store;
pub mod tune;
pub mod vectors;

pub use build::{build_index, BuildOptions, BuildProgress, NoProgress, RerankMode};
pub use choice::{choose, parse_memory, IndexChoice};
pub use embeddings::EmbeddingSource;
pub use error::{IndexError, Result};
pub use faiss_index::{FaissIndex, Metric, Neighbours};
pub use folder::{
    build_folder, is_complete, mark_complete, open_or_build_row_store, open_row_store, FolderBuild, FolderReport,
    LoadedIndex, Modality, COMPLETION_MARKER,
};
pub use report::{IndexReport, RerankReport};
pub use row_store::RowStore;
pub use vectors::StoredVectors;
