//! Image bytes -> the normalised CHW float tensor a CLIP image tower expects, as OpenCLIP does it with PIL.
//!
//! Steps: decode (any of jpeg/png/webp/bmp/tiff/gif), apply the EXIF orientation, convert to 8-bit RGB (alpha
//! dropped, grey replicated, CMYK and 16-bit converted), resize (Pillow-exact kernel), center crop or pad,
//! scale to [0, 1] and normalise per channel.

use crate::config::{PreprocessConfig, ResizeMode};
use crate::error::{ModelError, Result};
use crate::resample::resize_rgb8;
use image::{DynamicImage, ImageDecoder, ImageReader};
use std::io::Cursor;

/// An 8-bit RGB image, row-major, 3 bytes a pixel.
#[derive(Debug, Clone)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

/// Decodes encoded image bytes to upright RGB8, as `ImageOps.exif_transpose(Image.open(b)).convert("RGB")`.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    let reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ModelError::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ModelError::Decode("unrecognised image format".into()));
    }
    let mut decoder = reader.into_decoder().map_err(|e| ModelError::Decode(e.to_string()))?;
    // A broken EXIF block must not lose an otherwise good image: fall back to no rotation.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| ModelError::Decode(e.to_string()))?;
    img.apply_orientation(orientation);
    let rgb = to_rgb8_like_pil(img);
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    if width == 0 || height == 0 {
        return Err(ModelError::Decode("image has zero width or height".into()));
    }
    Ok(RgbImage { width, height, pixels: rgb.into_raw() })
}

/// PIL takes the high byte of 16-bit samples where `image` rounds; keep PIL's choice for parity.
fn to_rgb8_like_pil(img: DynamicImage) -> image::RgbImage {
    match img {
        DynamicImage::ImageRgb16(buf) => {
            let (w, h) = buf.dimensions();
            image::RgbImage::from_raw(w, h, buf.into_raw().into_iter().map(|v| (v >> 8) as u8).collect())
                .expect("same dimensions")
        }
        DynamicImage::ImageRgba16(buf) => {
            let (w, h) = buf.dimensions();
            let raw: Vec<u8> =
                buf.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).map(|v| (v >> 8) as u8).collect();
            image::RgbImage::from_raw(w, h, raw).expect("same dimensions")
        }
        other => other.to_rgb8(),
    }
}

/// Python's `round()`: halves go to the even neighbour (torchvision's center crop uses it).
fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        (r - x.signum()) as i64
    } else {
        r as i64
    }
}

/// Output size of torchvision's `Resize(size)` (shortest side) with its integer truncation.
fn shortest_side_size(w: usize, h: usize, target: usize) -> (usize, usize) {
    if w <= h {
        (target, (target as f64 * h as f64 / w as f64) as usize)
    } else {
        ((target as f64 * w as f64 / h as f64) as usize, target)
    }
}

/// Crops (or pads with `fill`) to `out_w x out_h` around the center, as torchvision's `CenterCrop`.
fn center_crop(img: &RgbImage, out_w: usize, out_h: usize, fill: u8) -> RgbImage {
    let top = round_half_even((img.height as f64 - out_h as f64) / 2.0);
    let left = round_half_even((img.width as f64 - out_w as f64) / 2.0);
    let mut pixels = vec![fill; out_w * out_h * 3];
    for y in 0..out_h {
        let sy = y as i64 + top;
        if sy < 0 || sy >= img.height as i64 {
            continue;
        }
        for x in 0..out_w {
            let sx = x as i64 + left;
            if sx < 0 || sx >= img.width as i64 {
                continue;
            }
            let s = (sy as usize * img.width + sx as usize) * 3;
            pixels[(y * out_w + x) * 3..(y * out_w + x) * 3 + 3].copy_from_slice(&img.pixels[s..s + 3]);
        }
    }
    RgbImage { width: out_w, height: out_h, pixels }
}

fn resized(img: &RgbImage, w: usize, h: usize, cfg: &PreprocessConfig) -> RgbImage {
    let (w, h) = (w.max(1), h.max(1));
    RgbImage { width: w, height: h, pixels: resize_rgb8(&img.pixels, img.width, img.height, w, h, cfg.interpolation) }
}

/// Resizes and crops an RGB image to the model's input size following `resize_mode`.
pub fn fit_to_model(img: &RgbImage, cfg: &PreprocessConfig) -> RgbImage {
    let (th, tw) = cfg.size;
    match cfg.resize_mode {
        ResizeMode::Squash => resized(img, tw, th, cfg),
        ResizeMode::Shortest => {
            let (w, h) = if th == tw {
                shortest_side_size(img.width, img.height, th)
            } else {
                // OpenCLIP's ResizeKeepRatio(longest=0): scale so both sides cover the target.
                let ratio = (img.width as f64 / tw as f64).min(img.height as f64 / th as f64);
                ((img.width as f64 / ratio).round() as usize, (img.height as f64 / ratio).round() as usize)
            };
            center_crop(&resized(img, w, h, cfg), tw, th, 0)
        }
        ResizeMode::Longest => {
            let ratio = (img.width as f64 / tw as f64).max(img.height as f64 / th as f64);
            let (w, h) = ((img.width as f64 / ratio).round() as usize, (img.height as f64 / ratio).round() as usize);
            center_crop(&resized(img, w, h, cfg), tw, th, cfg.fill_color)
        }
    }
}

/// Writes the normalised CHW float tensor of a model-sized RGB image into `out` (`3 * h * w` floats).
pub fn normalize_into(img: &RgbImage, cfg: &PreprocessConfig, out: &mut [f32]) {
    let plane = img.width * img.height;
    assert_eq!(out.len(), plane * 3, "output buffer does not match the image size");
    for c in 0..3 {
        let (mean, std) = (cfg.mean[c], cfg.std[c]);
        let dst = &mut out[c * plane..(c + 1) * plane];
        for (i, d) in dst.iter_mut().enumerate() {
            *d = (img.pixels[i * 3 + c] as f32 / 255.0 - mean) / std;
        }
    }
}

/// Decodes and preprocesses one encoded image into the model's input tensor (`3 * h * w` floats, CHW).
pub fn preprocess_image(bytes: &[u8], cfg: &PreprocessConfig) -> Result<Vec<f32>> {
    let rgb = decode_rgb(bytes)?;
    let fitted = fit_to_model(&rgb, cfg);
    let mut out = vec![0f32; fitted.width * fitted.height * 3];
    normalize_into(&fitted, cfg, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding_goes_to_even() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(-0.5), 0);
        assert_eq!(round_half_even(2.4), 2);
    }

    #[test]
    fn shortest_side_matches_torchvision() {
        assert_eq!(shortest_side_size(640, 480, 224), (298, 224));
        assert_eq!(shortest_side_size(100, 333, 224), (224, 745));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(decode_rgb(b"not an image at all"), Err(ModelError::Decode(_))));
    }
}
