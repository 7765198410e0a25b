//! The query engine behind `clip-retrieval back`: the indices named in `indices_paths.json` loaded with their
//! models and filters, and one knn query end to end (encode, batched across concurrent requests -> faiss search ->
//! dedup/violence/safety -> metadata rows), as clip-retrieval's back computes it. No HTTP here: the server crate
//! turns requests into [`KnnQuery`] values and answers into JSON.

pub mod config;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod filter;
pub mod filters;
pub mod resource;
pub mod result_image;
pub mod shards;

pub use clip_index::Modality;
pub use config::{parse_indices_paths, read_indices_paths, IndexOptions, DEFAULT_COLUMNS};
pub use encoder::{EncoderLimits, QueryEncoder};
pub use engine::{EngineOptions, KnnAnswer, KnnQuery, QueryInput, SearchEngine, Stage};
pub use error::{Result, SearchError};
pub use fetch::FetchRules;
pub use shards::{ShardObserver, ShardOptions};
