//! img2dataset's core, for the users of clip-retrieval who have only URL lists: what `clip-retrieval download`
//! does to each URL: fetch it under limits, then turn the body into the image a shard stores. Work in progress
//! (issue 19): the fetch and image steps are here; the concurrent shard writer and the command come next.

pub mod fetch;
pub mod resize;

pub use fetch::{FetchError, FetchOptions, Fetcher};
pub use resize::{resize_image, DownloadImageError, ResizeMode, ResizeOptions, Resized};
