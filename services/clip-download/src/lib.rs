//! img2dataset's core, for the users of clip-retrieval who have only URL lists: what `clip-retrieval download`
//! does to each fetched image before it is written to a shard. Work in progress (issue 19): this crate holds the
//! image step; the fetcher, the shard writer and the command come next.

pub mod resize;

pub use resize::{resize_image, DownloadImageError, ResizeMode, ResizeOptions, Resized};
