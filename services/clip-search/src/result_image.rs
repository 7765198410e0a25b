//! The `image` field of results: the picture at a result's local `image_path`, base64-encoded as JPEG like
//! clip-retrieval's back (JPEG files are sent as they are; other formats are re-encoded).

use base64::Engine;
use std::path::Path;

/// Largest image file inlined in a response.
const MAX_INLINE_BYTES: u64 = 16 << 20;

/// Base64 JPEG of the image at `path`, or `None` when it is not a readable local image (logged at debug).
pub fn base64_jpeg(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_INLINE_BYTES {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
    }
    let decoded = match image::load_from_memory(&bytes) {
        Ok(i) => i.to_rgb8(),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "result image not decodable; sent without it");
            return None;
        }
    };
    let mut jpeg = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90);
    decoded.write_with_encoder(encoder).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(&jpeg))
}
