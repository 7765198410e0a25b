//! The image step of a download, as img2dataset's resizer does it: decode under the image limits (transparency over
//! white), check the size, resize to `--image_size` by `--resize_mode`, re-encode as JPEG. Resampling is Pillow's
//! antialiased bicubic (the port in clip-model) where img2dataset uses OpenCV's INTER_AREA to shrink and LANCZOS4 to
//! enlarge: pixels differ slightly, sizes and crops do not. Every output is bounded before it is allocated: a
//! resize whose result would exceed `max_output_pixels` (an extreme aspect ratio under `keep_ratio`) is refused.

use clip_model::preprocess::{decode_rgb_over_white, RgbImage};
use clip_model::resample::{resize_rgb8_window, Interpolation, Window};
use clip_model::ImageLimits;

/// img2dataset's `--resize_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Keep the size (still decoded, checked and re-encoded).
    No,
    /// The shorter side becomes `image_size`, the aspect ratio kept.
    KeepRatio,
    /// As `KeepRatio`, then the centre `image_size` square.
    CenterCrop,
    /// The longer side becomes `image_size`, then white borders make it square.
    Border,
}

/// What the image step does.
#[derive(Debug, Clone)]
pub struct ResizeOptions {
    /// Target side (`--image_size`, img2dataset's default 256).
    pub image_size: usize,
    /// How to reach it.
    pub mode: ResizeMode,
    /// Leave images already no larger than the target as they are (`--resize_only_if_bigger`).
    pub resize_only_if_bigger: bool,
    /// JPEG quality (`--encode_quality`, default 95).
    pub encode_quality: u8,
    /// Most pixels an output may have (`keep_ratio` on a 1 x 100000 image would make 256 x 25.6M).
    pub max_output_pixels: u64,
}

impl Default for ResizeOptions {
    fn default() -> Self {
        Self {
            image_size: 256,
            mode: ResizeMode::Border,
            resize_only_if_bigger: false,
            encode_quality: 95,
            max_output_pixels: 1 << 26,
        }
    }
}

/// An image ready for a shard.
#[derive(Debug, Clone)]
pub struct Resized {
    /// The JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Output width.
    pub width: usize,
    /// Output height.
    pub height: usize,
    /// The fetched image's width (after EXIF orientation).
    pub original_width: usize,
    /// The fetched image's height.
    pub original_height: usize,
}

/// Why a fetched image is not stored; `reason()` is the key it is counted under in the shard's stats.
#[derive(Debug, thiserror::Error)]
pub enum DownloadImageError {
    /// Not decodable (not an image, truncated, unsupported).
    #[error("image decoding error: {0}")]
    Decode(String),
    /// Over `--max_image_pixels` from its header, or its resize would be over the output bound.
    #[error("image too large: {0}")]
    TooLarge(String),
}

impl DownloadImageError {
    /// The stats key: `decode` or `too_large`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Decode(_) => "decode",
            Self::TooLarge(_) => "too_large",
        }
    }
}

/// Decodes, resizes and re-encodes one fetched image.
pub fn resize_image(bytes: &[u8], o: &ResizeOptions, limits: &ImageLimits) -> Result<Resized, DownloadImageError> {
    let img = decode_rgb_over_white(bytes, limits).map_err(|e| match e {
        clip_model::ModelError::ImageTooLarge { .. } => DownloadImageError::TooLarge(e.to_string()),
        other => DownloadImageError::Decode(other.to_string()),
    })?;
    let (ow, oh) = (img.width, img.height);
    let out = fit(&img, o)?;
    let jpeg = encode_jpeg(&out, o.encode_quality)?;
    Ok(Resized { jpeg, width: out.width, height: out.height, original_width: ow, original_height: oh })
}

/// The resized (and cropped or bordered) pixels.
fn fit(img: &RgbImage, o: &ResizeOptions) -> Result<RgbImage, DownloadImageError> {
    let size = o.image_size;
    let (w, h) = (img.width, img.height);
    let (short, long) = (w.min(h), w.max(h));
    let scaled = |by: usize| {
        let s = size as f64 / by as f64;
        (((w as f64 * s).round() as usize).max(1), ((h as f64 * s).round() as usize).max(1))
    };
    let (target, window) = match o.mode {
        ResizeMode::No => return Ok(img.clone()),
        ResizeMode::KeepRatio | ResizeMode::CenterCrop if o.resize_only_if_bigger && short <= size => {
            return Ok(img.clone())
        }
        ResizeMode::Border if o.resize_only_if_bigger && long <= size => return Ok(img.clone()),
        ResizeMode::KeepRatio => {
            let (tw, th) = scaled(short);
            ((tw, th), Window::full(tw, th))
        }
        ResizeMode::CenterCrop => {
            let (tw, th) = scaled(short);
            let (cw, ch) = (size.min(tw), size.min(th));
            ((tw, th), Window { x: (tw - cw) / 2, y: (th - ch) / 2, width: cw, height: ch })
        }
        ResizeMode::Border => {
            let (tw, th) = scaled(long);
            ((tw, th), Window::full(tw, th))
        }
    };
    let pixels = window.width as u64 * window.height as u64;
    if pixels > o.max_output_pixels {
        return Err(DownloadImageError::TooLarge(format!(
            "{w}x{h} resized to {}x{} is over {} pixels (aspect ratio too large)",
            window.width, window.height, o.max_output_pixels
        )));
    }
    let part = resize_rgb8_window(&img.pixels, w, h, target.0, target.1, window, Interpolation::Bicubic);
    let part = RgbImage { width: window.width, height: window.height, pixels: part };
    Ok(if o.mode == ResizeMode::Border { pad_white(&part, size) } else { part })
}

/// `img` centred on a white `size x size` square (the extra row or column, if odd, at the bottom or right).
fn pad_white(img: &RgbImage, size: usize) -> RgbImage {
    let (w, h) = (img.width.min(size), img.height.min(size));
    let (left, top) = ((size - w) / 2, (size - h) / 2);
    let mut pixels = vec![255u8; size * size * 3];
    for y in 0..h {
        let src = &img.pixels[y * img.width * 3..(y * img.width + w) * 3];
        let at = ((top + y) * size + left) * 3;
        pixels[at..at + w * 3].copy_from_slice(src);
    }
    RgbImage { width: size, height: size, pixels }
}

fn encode_jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, DownloadImageError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode(&img.pixels, img.width as u32, img.height as u32, image::ExtendedColorType::Rgb8)
        .map_err(|e| DownloadImageError::Decode(format!("re-encoding: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, rgba: [u8; 4]) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(w, h, image::Rgba(rgba));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn run(bytes: &[u8], mode: ResizeMode, size: usize) -> Result<Resized, DownloadImageError> {
        let o = ResizeOptions { image_size: size, mode, ..Default::default() };
        resize_image(bytes, &o, &ImageLimits::default())
    }

    fn decoded(r: &Resized) -> image::RgbImage {
        image::load_from_memory(&r.jpeg).unwrap().to_rgb8()
    }

    #[test]
    fn each_mode_gives_img2datasets_sizes() {
        let wide = png(400, 200, [10, 200, 30, 255]);
        let sizes = |mode| {
            let r = run(&wide, mode, 100).unwrap();
            assert_eq!((r.original_width, r.original_height), (400, 200));
            let d = decoded(&r);
            assert_eq!((d.width() as usize, d.height() as usize), (r.width, r.height), "the JPEG has the stated size");
            (r.width, r.height)
        };
        assert_eq!(sizes(ResizeMode::No), (400, 200));
        assert_eq!(sizes(ResizeMode::KeepRatio), (200, 100));
        assert_eq!(sizes(ResizeMode::CenterCrop), (100, 100));
        assert_eq!(sizes(ResizeMode::Border), (100, 100));
        let small = png(40, 20, [0, 0, 0, 255]);
        let o = ResizeOptions { image_size: 100, resize_only_if_bigger: true, ..Default::default() };
        let r = resize_image(&small, &o, &ImageLimits::default()).unwrap();
        assert_eq!((r.width, r.height), (40, 20), "resize_only_if_bigger leaves a small image as it is");
    }

    #[test]
    fn border_pads_with_white_and_transparency_becomes_white() {
        let r = run(&png(400, 200, [0, 0, 0, 255]), ResizeMode::Border, 100).unwrap();
        let d = decoded(&r);
        assert!(d.get_pixel(50, 5).0.iter().all(|&c| c > 240), "top border white: {:?}", d.get_pixel(50, 5));
        assert!(d.get_pixel(50, 50).0.iter().all(|&c| c < 15), "the image itself stays black");
        let clear = run(&png(50, 50, [0, 0, 0, 0]), ResizeMode::No, 100).unwrap();
        assert!(decoded(&clear).get_pixel(25, 25).0.iter().all(|&c| c > 240), "transparent black is white");
    }

    #[test]
    fn garbage_and_extreme_shapes_are_counted_reasons_not_panics() {
        assert_eq!(run(b"<html>404</html>", ResizeMode::Border, 64).unwrap_err().reason(), "decode");
        let needle = png(1, 20_000, [1, 2, 3, 255]);
        let err = run(&needle, ResizeMode::KeepRatio, 256).unwrap_err();
        assert_eq!(err.reason(), "too_large", "{err}");
        assert_eq!(run(&needle, ResizeMode::CenterCrop, 256).unwrap().width, 256, "a crop needs only its window");
        let bomb = clip_synthetic::hostile::zero_png(100_000, 100_000);
        assert_eq!(run(&bomb, ResizeMode::Border, 64).unwrap_err().reason(), "too_large");
    }
}
