//! The synthetic captioned dataset: coloured shapes of three sizes on plain backgrounds, with noise.
//!
//! Every sample is a pure function of `(seed, index)`, so a training set, a held-out set (another seed) and the demo
//! data are reproducible. Captions read like "a small red circle on a grey background"; the attributes are kept as
//! JSON metadata so tests know the ground truth of every image.

pub mod hostile;

use image::{ImageEncoder, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Shape colours and their nominal RGB.
pub const COLORS: [(&str, [u8; 3]); 6] = [
    ("red", [220, 30, 30]),
    ("green", [30, 170, 50]),
    ("blue", [35, 70, 225]),
    ("yellow", [240, 215, 25]),
    ("purple", [140, 40, 180]),
    ("orange", [245, 135, 20]),
];

/// Shapes drawn.
pub const SHAPES: [&str; 4] = ["circle", "square", "triangle", "diamond"];

/// Size words and the shape's half-extent as a fraction of the image's shorter side.
pub const SIZES: [(&str, f32); 3] = [("small", 0.12), ("medium", 0.2), ("large", 0.3)];

/// Background names and their nominal RGB.
pub const BACKGROUNDS: [(&str, [u8; 3]); 3] =
    [("white", [245, 245, 245]), ("grey", [128, 128, 128]), ("black", [15, 15, 15])];

/// Ground truth of one rendered sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShapeAttributes {
    /// One of [`COLORS`].
    pub color: &'static str,
    /// One of [`SHAPES`].
    pub shape: &'static str,
    /// One of [`SIZES`].
    pub size: &'static str,
    /// One of [`BACKGROUNDS`].
    pub background: &'static str,
}

impl ShapeAttributes {
    /// The caption of a sample with these attributes.
    pub fn caption(&self) -> String {
        format!("a {} {} {} on a {} background", self.size, self.color, self.shape, self.background)
    }
}

/// One rendered sample.
#[derive(Debug, Clone)]
pub struct SyntheticSample {
    /// Stable key, e.g. `000000042`.
    pub key: String,
    /// The rendered image.
    pub image: RgbImage,
    /// The caption.
    pub caption: String,
    /// What the image shows.
    pub attributes: ShapeAttributes,
}

impl SyntheticSample {
    /// The image as JPEG bytes (quality 92).
    pub fn jpeg(&self) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
            .write_image(self.image.as_raw(), self.image.width(), self.image.height(), image::ExtendedColorType::Rgb8)
            .expect("encoding an in-memory RGB image cannot fail");
        out
    }

    /// The metadata JSON object stored beside the image.
    pub fn metadata(&self) -> serde_json::Value {
        serde_json::to_value(&self.attributes).expect("plain struct")
    }
}

fn jitter(rng: &mut ChaCha8Rng, rgb: [u8; 3], amount: i32) -> [u8; 3] {
    rgb.map(|v| (v as i32 + rng.random_range(-amount..=amount)).clamp(0, 255) as u8)
}

/// Signed inside test of a point for a shape centred at the origin with half-extent `r`.
fn inside(shape: &str, x: f32, y: f32, r: f32) -> bool {
    match shape {
        "circle" => x * x + y * y <= r * r,
        "square" => x.abs() <= r * 0.85 && y.abs() <= r * 0.85,
        "diamond" => x.abs() + y.abs() <= r,
        _ => {
            // Upward triangle with apex at (0, -r) and base at y = +r.
            y <= r && y >= -r && x.abs() <= (y + r) * 0.5
        }
    }
}

/// Renders sample `index` of the dataset seeded with `seed` (96-256 px a side).
pub fn render(seed: u64, index: u64) -> SyntheticSample {
    render_sized(seed, index, None)
}

/// Renders sample `index` with its longer side scaled to `long_side` pixels when given (web-sized images, e.g.
/// 768): the same shape, colours, caption and aspect ratio as [`render`], drawn at that resolution.
pub fn render_sized(seed: u64, index: u64, long_side: Option<u32>) -> SyntheticSample {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    let (color, rgb) = COLORS[rng.random_range(0..COLORS.len())];
    let shape = SHAPES[rng.random_range(0..SHAPES.len())];
    let (size, extent) = SIZES[rng.random_range(0..SIZES.len())];
    let (background, bg_rgb) = BACKGROUNDS[rng.random_range(0..BACKGROUNDS.len())];
    let width = rng.random_range(96..=256u32);
    let height = rng.random_range(96..=256u32);
    let short = width.min(height) as f32;
    let r = short * extent * rng.random_range(0.9..1.1);
    // Keep the shape inside the central square so a center crop never cuts it.
    let margin = r + 2.0;
    let (cx0, cy0) = ((width as f32 - short) / 2.0, (height as f32 - short) / 2.0);
    let cx = cx0 + rng.random_range(margin..(short - margin).max(margin + 1.0));
    let cy = cy0 + rng.random_range(margin..(short - margin).max(margin + 1.0));
    let fg = jitter(&mut rng, rgb, 20);
    let bg = jitter(&mut rng, bg_rgb, 12);
    let noise = rng.random_range(0..=14i32);
    // Scaling after every draw above keeps the sample's content; only the per-pixel noise draws grow in number.
    let scale = long_side.map_or(1.0, |side| side.max(1) as f32 / width.max(height) as f32);
    let (width, height) =
        (((width as f32 * scale).round() as u32).max(1), ((height as f32 * scale).round() as u32).max(1));
    let (r, cx, cy) = (r * scale, cx * scale, cy * scale);
    let mut img = RgbImage::new(width, height);
    for (x, y, px) in img.enumerate_pixels_mut() {
        // 2x2 supersampling for smooth edges.
        let mut hits = 0;
        for (dx, dy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
            hits += inside(shape, x as f32 + dx - cx, y as f32 + dy - cy, r) as i32;
        }
        let mut c = [0u8; 3];
        for ch in 0..3 {
            let v = (fg[ch] as i32 * hits + bg[ch] as i32 * (4 - hits)) / 4;
            let n = if noise > 0 { rng.random_range(-noise..=noise) } else { 0 };
            c[ch] = (v + n).clamp(0, 255) as u8;
        }
        *px = Rgb(c);
    }
    let attributes = ShapeAttributes { color, shape, size, background };
    SyntheticSample { key: format!("{index:09}"), image: img, caption: attributes.caption(), attributes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_renderings_keep_the_sample_and_its_aspect_ratio() {
        let small = render(3, 7);
        let large = render_sized(3, 7, Some(768));
        assert_eq!(large.caption, small.caption);
        assert_eq!(large.image.width().max(large.image.height()), 768);
        let ratio = |i: &RgbImage| i.width() as f32 / i.height() as f32;
        assert!((ratio(&large.image) - ratio(&small.image)).abs() < 0.02);
        assert_eq!(render_sized(3, 7, None).image, small.image);
    }

    #[test]
    fn rendering_is_deterministic_and_seed_dependent() {
        let a = render(1, 5);
        assert_eq!(a.image, render(1, 5).image);
        assert_eq!(a.caption, render(1, 5).caption);
        assert_ne!(a.image, render(2, 5).image);
    }

    #[test]
    fn the_shape_colour_dominates_its_center() {
        for i in 0..20 {
            let s = render(7, i);
            let rgb = COLORS.iter().find(|c| c.0 == s.attributes.color).unwrap().1;
            // The caption must describe the image: count pixels close to the nominal colour.
            let close = s.image.pixels().filter(|p| (0..3).all(|c| (p[c] as i32 - rgb[c] as i32).abs() < 50)).count();
            assert!(close > 100, "sample {i} ({}) has only {close} pixels of its colour", s.caption);
        }
    }
}
