//! The `image` field of results: the picture at a result's local `image_path`, base64-encoded as JPEG like
//! clip-retrieval's back (JPEG files are sent as they are; other formats are re-encoded).
//!
//! Only files inside the index's image roots are read: a metadata column can hold any path, and the server must
//! not hand out files it can read but was never meant to serve. Paths are resolved (symlinks, `..`) before the
//! check, so a link inside a root that points outside it is refused too. Decoding uses the query images' limits.

use base64::Engine;
use clip_model::ImageLimits;
use std::path::{Path, PathBuf};

/// Largest image file inlined in a response.
const MAX_INLINE_BYTES: u64 = 16 << 20;

/// The folders result images may come from, resolved once at load.
#[derive(Debug, Clone, Default)]
pub struct ImageRoots {
    roots: Vec<PathBuf>,
}

impl ImageRoots {
    /// Resolves `folders` (relative ones against the working directory); a folder that does not exist is left out
    /// with a warning.
    pub fn resolve(folders: &[String]) -> Self {
        let roots = folders
            .iter()
            .filter_map(|f| match std::fs::canonicalize(f) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(folder = %f, error = %e, "image root not usable; results under it carry no image");
                    None
                }
            })
            .collect();
        Self { roots }
    }

    /// The resolved roots.
    pub fn folders(&self) -> &[PathBuf] {
        &self.roots
    }

    /// `path` resolved, when it lies inside a root.
    pub fn contain(&self, path: &Path) -> Option<PathBuf> {
        if self.roots.is_empty() {
            return None;
        }
        let resolved = std::fs::canonicalize(path).ok()?;
        if self.roots.iter().any(|r| resolved.starts_with(r)) {
            Some(resolved)
        } else {
            tracing::debug!(path = %path.display(), "result image outside the image roots; sent without it");
            None
        }
    }
}

/// Base64 JPEG of the image at `path`, or `None` when it is outside `roots` or not a readable local image within
/// `limits` (logged at debug).
pub fn base64_jpeg(path: &Path, roots: &ImageRoots, limits: &ImageLimits) -> Option<String> {
    let path = roots.contain(path)?;
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > MAX_INLINE_BYTES {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
    }
    let decoded = match clip_model::preprocess::decode_rgb(&bytes, limits) {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "result image not decodable; sent without it");
            return None;
        }
    };
    let rgb = image::RgbImage::from_raw(decoded.width as u32, decoded.height as u32, decoded.pixels)?;
    let mut jpeg = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90);
    rgb.write_with_encoder(encoder).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(&jpeg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_inside_the_roots_are_read_and_links_out_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (inside, outside) = (dir.path().join("images"), dir.path().join("secret"));
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let jpeg = b"\xff\xd8\xff\xe0 a jpeg";
        std::fs::write(inside.join("a.jpg"), jpeg).unwrap();
        std::fs::write(outside.join("b.jpg"), jpeg).unwrap();
        std::os::unix::fs::symlink(outside.join("b.jpg"), inside.join("link.jpg")).unwrap();
        let roots = ImageRoots::resolve(&[inside.display().to_string(), "/no/such/folder".into()]);
        assert_eq!(roots.folders().len(), 1);
        let limits = ImageLimits::default();
        assert!(base64_jpeg(&inside.join("a.jpg"), &roots, &limits).is_some());
        assert!(base64_jpeg(&outside.join("b.jpg"), &roots, &limits).is_none(), "outside the root");
        assert!(base64_jpeg(&inside.join("../secret/b.jpg"), &roots, &limits).is_none(), "dot-dot out");
        assert!(base64_jpeg(&inside.join("link.jpg"), &roots, &limits).is_none(), "symlink out");
        assert!(base64_jpeg(&inside.join("a.jpg"), &ImageRoots::default(), &limits).is_none(), "no roots");
    }
}
