//! Image bytes -> the normalised CHW float tensor a CLIP image tower expects, as OpenCLIP does it with PIL.
//!
//! Steps: decode (any of jpeg/png/webp/bmp/tiff/gif), apply the EXIF orientation, convert to 8-bit RGB (alpha
//! dropped, grey replicated, CMYK and 16-bit converted), resize (Pillow-exact kernel), center crop or pad,
//! scale to [0, 1] and normalise per channel.
//!
//! Hostile images are bounded before any allocation: the pixel count is read from the header and checked against
//! [`ImageLimits`] (Pillow's decompression-bomb threshold by default), the decoder runs under `image::Limits`, and
//! resize + crop computes only the pixels that survive the crop, so memory follows the model's input size whatever
//! the aspect ratio (a 1 x 1,000,000 image is 3 MB decoded, not 150 GB resized).

use crate::config::{PreprocessConfig, ResizeMode};
use crate::error::{ModelError, Result};
use crate::resample::{resize_rgb8_window, Window};
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

/// Pillow's `Image.MAX_IMAGE_PIXELS * 2`: above it PIL refuses an image as a decompression bomb.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 178_956_970;

/// Bounds on what one image may cost to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most pixels (width x height, from the header) an image may have; larger ones are refused undecoded.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_pixels: DEFAULT_MAX_IMAGE_PIXELS }
    }
}

impl ImageLimits {
    /// The decoder's own limits: no side or buffer beyond what `max_pixels` of 16-bit RGBA can need.
    fn decoder_limits(&self) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_pixels.min(u32::MAX as u64) as u32);
        limits.max_image_height = Some(self.max_pixels.min(u32::MAX as u64) as u32);
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8).max(1 << 20));
        limits
    }
}

/// Decodes encoded image bytes to upright RGB8, as `ImageOps.exif_transpose(Image.open(b)).convert("RGB")`,
/// refusing images over `limits` from their header.
pub fn decode_rgb(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
    packed(to_rgb8_like_pil(decode_upright(bytes, limits)?))
}

/// As [`decode_rgb`], with transparency composited over white instead of dropped (img2dataset's alpha matting:
/// `alpha / 255 * rgb + 255 - alpha`, rounded half to even as numpy's `rint`), for images stored to be looked at rather than embedded.
pub fn decode_rgb_over_white(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage> {
    let img = decode_upright(bytes, limits)?;
    if !img.color().has_alpha() {
        return packed(to_rgb8_like_pil(img));
    }
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    let over_white = |c: u8, a: u8| round_half_even(a as f64 / 255.0 * c as f64 + 255.0 - a as f64).clamp(0, 255) as u8;
    let raw: Vec<u8> =
        rgba.into_raw().chunks_exact(4).flat_map(|p| [0, 1, 2].map(|i| over_white(p[i], p[3]))).collect();
    packed(image::RgbImage::from_raw(w, h, raw).expect("same dimensions"))
}

fn packed(rgb: image::RgbImage) -> Result<RgbImage> {
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    if width == 0 || height == 0 {
        return Err(ModelError::Decode("image has zero width or height".into()));
    }
    Ok(RgbImage { width, height, pixels: rgb.into_raw() })
}

/// Decodes under `limits` (refusing from the header what is over them) and applies the EXIF orientation.
fn decode_upright(bytes: &[u8], limits: &ImageLimits) -> Result<DynamicImage> {
    let mut reader =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| ModelError::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ModelError::Decode("unrecognised image format".into()));
    }
    reader.limits(limits.decoder_limits());
    let mut decoder = reader.into_decoder().map_err(|e| ModelError::Decode(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(ModelError::ImageTooLarge { width: w, height: h, max_pixels: limits.max_pixels });
    }
    // A broken EXIF block must not lose an otherwise good image: fall back to no rotation.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| ModelError::Decode(e.to_string()))?;
    img.apply_orientation(orientation);
    Ok(img)
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

/// Resizes `img` to `w x h` (Pillow-exact) and crops or pads that to `out_w x out_h` around the center, as
/// torchvision's `CenterCrop` (padding with `fill`), computing only the pixels inside the crop.
fn resize_and_center_crop(
    img: &RgbImage,
    (w, h): (usize, usize),
    (out_w, out_h): (usize, usize),
    fill: u8,
    cfg: &PreprocessConfig,
) -> RgbImage {
    let (w, h) = (w.max(1), h.max(1));
    let top = round_half_even((h as f64 - out_h as f64) / 2.0);
    let left = round_half_even((w as f64 - out_w as f64) / 2.0);
    // The part of the resized image that lands inside the output.
    let (x0, x1) = (left.max(0), (left + out_w as i64).min(w as i64));
    let (y0, y1) = (top.max(0), (top + out_h as i64).min(h as i64));
    let mut pixels = vec![fill; out_w * out_h * 3];
    if x0 < x1 && y0 < y1 {
        let window = Window { x: x0 as usize, y: y0 as usize, width: (x1 - x0) as usize, height: (y1 - y0) as usize };
        let part = resize_rgb8_window(&img.pixels, img.width, img.height, w, h, window, cfg.interpolation);
        let (dx, dy) = ((x0 - left) as usize, (y0 - top) as usize);
        let row = window.width * 3;
        for (r, src) in part.chunks_exact(row).enumerate() {
            let start = ((dy + r) * out_w + dx) * 3;
            pixels[start..start + row].copy_from_slice(src);
        }
    }
    RgbImage { width: out_w, height: out_h, pixels }
}

/// Resizes and crops an RGB image to the model's input size following `resize_mode`.
pub fn fit_to_model(img: &RgbImage, cfg: &PreprocessConfig) -> RgbImage {
    let (th, tw) = cfg.size;
    match cfg.resize_mode {
        ResizeMode::Squash => resize_and_center_crop(img, (tw, th), (tw, th), 0, cfg),
        ResizeMode::Shortest => {
            let size = if th == tw {
                shortest_side_size(img.width, img.height, th)
            } else {
                // OpenCLIP's ResizeKeepRatio(longest=0): scale so both sides cover the target.
                let ratio = (img.width as f64 / tw as f64).min(img.height as f64 / th as f64);
                ((img.width as f64 / ratio).round() as usize, (img.height as f64 / ratio).round() as usize)
            };
            resize_and_center_crop(img, size, (tw, th), 0, cfg)
        }
        ResizeMode::Longest => {
            let ratio = (img.width as f64 / tw as f64).max(img.height as f64 / th as f64);
            let size = ((img.width as f64 / ratio).round() as usize, (img.height as f64 / ratio).round() as usize);
            resize_and_center_crop(img, size, (tw, th), cfg.fill_color, cfg)
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
pub fn preprocess_image(bytes: &[u8], cfg: &PreprocessConfig, limits: &ImageLimits) -> Result<Vec<f32>> {
    let rgb = decode_rgb(bytes, limits)?;
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
        assert!(matches!(decode_rgb(b"not an image at all", &ImageLimits::default()), Err(ModelError::Decode(_))));
    }

    #[test]
    fn an_image_over_the_pixel_limit_is_refused_from_its_header() {
        let bomb = clip_synthetic::hostile::zero_png(40_000, 40_000);
        let err = decode_rgb(&bomb, &ImageLimits::default()).unwrap_err();
        assert!(matches!(err, ModelError::ImageTooLarge { width: 40_000, height: 40_000, .. }), "{err}");
        assert!(err.to_string().contains("1600000000 pixels, over the limit of 178956970"), "{err}");
        let small = ImageLimits { max_pixels: 99 };
        assert!(matches!(
            decode_rgb(&clip_synthetic::hostile::zero_png(10, 10), &small),
            Err(ModelError::ImageTooLarge { .. })
        ));
    }

    fn config(mode: ResizeMode) -> PreprocessConfig {
        PreprocessConfig {
            size: (24, 24),
            mean: [0.5; 3],
            std: [0.25; 3],
            interpolation: crate::resample::Interpolation::Bicubic,
            resize_mode: mode,
            fill_color: 9,
        }
    }

    /// The old path: resize the whole image, then crop or pad it.
    fn resize_then_crop(img: &RgbImage, (w, h): (usize, usize), (ow, oh): (usize, usize), fill: u8) -> RgbImage {
        let (w, h) = (w.max(1), h.max(1));
        let bicubic = crate::resample::Interpolation::Bicubic;
        let full = crate::resample::resize_rgb8(&img.pixels, img.width, img.height, w, h, bicubic);
        let top = round_half_even((h as f64 - oh as f64) / 2.0);
        let left = round_half_even((w as f64 - ow as f64) / 2.0);
        let mut pixels = vec![fill; ow * oh * 3];
        for y in 0..oh {
            for x in 0..ow {
                let (sy, sx) = (y as i64 + top, x as i64 + left);
                if (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx) {
                    let s = (sy as usize * w + sx as usize) * 3;
                    pixels[(y * ow + x) * 3..(y * ow + x) * 3 + 3].copy_from_slice(&full[s..s + 3]);
                }
            }
        }
        RgbImage { width: ow, height: oh, pixels }
    }

    #[test]
    fn cropping_while_resizing_gives_the_pixels_of_resize_then_crop() {
        for (w, h) in [(50, 30), (30, 50), (7, 90), (90, 7), (24, 24), (13, 13)] {
            let img = RgbImage { width: w, height: h, pixels: (0..w * h * 3).map(|i| (i * 31 % 256) as u8).collect() };
            let short = shortest_side_size(w, h, 24);
            assert_eq!(
                fit_to_model(&img, &config(ResizeMode::Shortest)).pixels,
                resize_then_crop(&img, short, (24, 24), 0).pixels
            );
            let ratio = (w as f64 / 24.0).max(h as f64 / 24.0);
            let long = ((w as f64 / ratio).round() as usize, (h as f64 / ratio).round() as usize);
            assert_eq!(
                fit_to_model(&img, &config(ResizeMode::Longest)).pixels,
                resize_then_crop(&img, long, (24, 24), 9).pixels
            );
        }
    }

    #[test]
    fn a_one_pixel_wide_million_pixel_image_is_fitted_without_resizing_it_whole() {
        let png = clip_synthetic::hostile::gradient_png(1, 1_000_000);
        let cfg = config(ResizeMode::Shortest);
        let started = std::time::Instant::now();
        let out = preprocess_image(&png, &cfg, &ImageLimits::default()).unwrap();
        assert_eq!(out.len(), 3 * 24 * 24);
        assert!(started.elapsed().as_secs() < 5, "took {:?}", started.elapsed());
    }
}
