//! Resolving `--clip_model` to a local model folder: a path, an s3:// folder (copied to a cache), or the shipped model.

use crate::error::{DataError, Result};
use crate::storage::{Location, Storage};
use std::path::{Path, PathBuf};

/// Folder name of the model shipped in the repository.
pub const SHIPPED_MODEL: &str = "models/tiny-clip";

/// The shipped model: `CLIP_RETRIEVAL_MODEL`, or `models/tiny-clip` above the executable or the working directory.
fn shipped_model() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CLIP_RETRIEVAL_MODEL") {
        return Some(PathBuf::from(p));
    }
    let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join(SHIPPED_MODEL);
            if candidate.join("config.json").is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Turns the flag into a local folder, downloading s3:// folders into `cache`.
pub fn resolve(storage: &Storage, clip_model: Option<&str>, cache: Option<&str>) -> Result<PathBuf> {
    let Some(spec) = clip_model else {
        return shipped_model().ok_or_else(|| {
            DataError::Config(format!(
                "no --clip_model given and the shipped {SHIPPED_MODEL} was not found; set CLIP_RETRIEVAL_MODEL"
            ))
        });
    };
    let folder = Location::parse(spec);
    if let Location::Local(p) = &folder {
        if !p.is_dir() {
            return Err(DataError::Config(format!(
                "--clip_model {spec:?}: no such folder. Models are folders in the immich/OpenCLIP ONNX layout (local \
                 or s3://); for a named checkpoint such as ViT-B/32, export one while online with \
                 models/scripts/export_openclip.py --model ViT-B-32 --pretrained <tag> --out <folder>"
            )));
        }
    }
    let root = cache.map(PathBuf::from).unwrap_or_else(default_cache);
    storage.materialize_folder(&folder, &root)
}

/// `~/.cache/clip-retrieval/models`, where s3:// models are copied.
pub fn default_cache() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| Path::new("/tmp").to_path_buf());
    home.join(".cache/clip-retrieval/models")
}
