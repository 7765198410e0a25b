//! Pillow-exact image resampling (`Image.resize` with BICUBIC/BILINEAR/NEAREST on 8-bit RGB).
//!
//! OpenCLIP preprocesses with PIL, and CLIP embeddings are sensitive to the resampling kernel, its support when
//! downscaling (antialiasing) and the fixed-point rounding Pillow applies between the two passes. This is a
//! line-for-line port of the algorithm in Pillow's `Resample.c` so our pixels match PIL's to the byte.

/// Which interpolation to use, named as in `preprocess_cfg.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// Keys cubic with a = -0.5 (PIL.Image.BICUBIC), the CLIP default.
    Bicubic,
    /// Triangle filter (PIL.Image.BILINEAR).
    Bilinear,
    /// Nearest neighbour (PIL.Image.NEAREST).
    Nearest,
}

impl Interpolation {
    /// Parses the `interpolation` value of an OpenCLIP preprocess config.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "bicubic" => Some(Self::Bicubic),
            "bilinear" => Some(Self::Bilinear),
            "nearest" => Some(Self::Nearest),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Bicubic => 2.0,
            Self::Bilinear => 1.0,
            Self::Nearest => 0.5,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Self::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Bilinear => (1.0 - x).max(0.0),
            Self::Nearest => {
                if x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point kernel weights of one pass over a run of output indices: for each, the first input index and the
/// weights. Each output index's weights depend only on the index and the two sizes, so computing a run of them gives
/// exactly the values Pillow computes for the whole line.
struct PassCoefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn precompute(
    in_size: usize,
    out_size: usize,
    outputs: std::ops::Range<usize>,
    filter: Interpolation,
) -> PassCoefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(outputs.len());
    let mut weights = vec![0i32; outputs.len() * ksize];
    let mut k = vec![0f64; ksize];
    for (i, xx) in outputs.enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero; clamping afterwards reproduces Pillow's bounds exactly.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax - xmin;
        let mut total = 0.0;
        for (x, w) in k.iter_mut().enumerate().take(count) {
            *w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
            total += *w;
        }
        let row = &mut weights[i * ksize..(i + 1) * ksize];
        for x in 0..count {
            let w = if total != 0.0 { k[x] / total } else { k[x] };
            let scaled = w * (1u32 << PRECISION_BITS) as f64;
            row[x] = if w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 };
        }
        bounds.push((xmin, count));
    }
    PassCoefficients { ksize, bounds, weights }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS) << 8 {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// A rectangle of an output image: columns `x..x + width`, rows `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First column.
    pub x: usize,
    /// First row.
    pub y: usize,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

impl Window {
    /// The whole of a `width x height` image.
    pub fn full(width: usize, height: usize) -> Self {
        Self { x: 0, y: 0, width, height }
    }
}

/// Resizes a packed RGB8 image (`width*height*3` bytes) to `out_w x out_h` exactly as Pillow does.
pub fn resize_rgb8(
    src: &[u8],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    filter: Interpolation,
) -> Vec<u8> {
    resize_rgb8_window(src, width, height, out_w, out_h, Window::full(out_w, out_h), filter)
}

/// The `window` of the image [`resize_rgb8`] would return, computing only that window: the bytes are the same as
/// cropping the full resize, but memory and time follow the window and the input rows it reads, never `out_w *
/// out_h` (a 1 x 1,000,000 image resized for a 224-pixel model would otherwise need 224 x 224,000,000 pixels).
/// `window` must lie inside the output.
pub fn resize_rgb8_window(
    src: &[u8],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    window: Window,
    filter: Interpolation,
) -> Vec<u8> {
    assert_eq!(src.len(), width * height * 3, "RGB buffer size does not match its dimensions");
    assert!(
        window.x + window.width <= out_w && window.y + window.height <= out_h,
        "window {window:?} outside the {out_w}x{out_h} output"
    );
    if window.width == 0 || window.height == 0 {
        return Vec::new();
    }
    let columns = window.x..window.x + window.width;
    let rows_out = window.y..window.y + window.height;
    if filter == Interpolation::Nearest {
        return resize_nearest(src, width, height, out_w, out_h, window);
    }
    let vertical = (out_h != height).then(|| precompute(height, out_h, rows_out.clone(), filter));
    // The input rows the vertical pass reads (the window's rows themselves when it is an identity).
    let (first_row, last_row) = match &vertical {
        Some(v) => {
            let (last_start, last_count) = v.bounds[v.bounds.len() - 1];
            (v.bounds[0].0, last_start + last_count)
        }
        None => (rows_out.start, rows_out.end),
    };
    let stride = window.width * 3;
    // Horizontal pass first, only over the rows the vertical pass reads (Pillow does the same).
    let mut rows = vec![0u8; (last_row - first_row) * stride];
    if out_w != width {
        let horizontal = precompute(width, out_w, columns, filter);
        for (ty, y) in (first_row..last_row).enumerate() {
            let in_row = &src[y * width * 3..(y + 1) * width * 3];
            let out_row = &mut rows[ty * stride..(ty + 1) * stride];
            for (xx, &(xmin, count)) in horizontal.bounds.iter().enumerate() {
                let k = &horizontal.weights[xx * horizontal.ksize..xx * horizontal.ksize + count];
                for c in 0..3 {
                    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &w) in k.iter().enumerate() {
                        acc += in_row[(xmin + i) * 3 + c] as i64 * w as i64;
                    }
                    out_row[xx * 3 + c] = clip8(acc);
                }
            }
        }
    } else {
        for (ty, y) in (first_row..last_row).enumerate() {
            let start = (y * width + window.x) * 3;
            rows[ty * stride..(ty + 1) * stride].copy_from_slice(&src[start..start + stride]);
        }
    }
    let Some(vertical) = vertical else {
        return rows;
    };
    let mut out = vec![0u8; stride * window.height];
    for (yy, &(ymin, count)) in vertical.bounds.iter().enumerate() {
        let k = &vertical.weights[yy * vertical.ksize..yy * vertical.ksize + count];
        let base = ymin - first_row;
        for x in 0..stride {
            let mut acc: i64 = 1 << (PRECISION_BITS - 1);
            for (i, &w) in k.iter().enumerate() {
                acc += rows[(base + i) * stride + x] as i64 * w as i64;
            }
            out[yy * stride + x] = clip8(acc);
        }
    }
    out
}

/// Pillow's NEAREST: source index is the floor of the scaled pixel center.
fn resize_nearest(src: &[u8], width: usize, height: usize, out_w: usize, out_h: usize, window: Window) -> Vec<u8> {
    let mut out = vec![0u8; window.width * window.height * 3];
    for (oy, y) in (window.y..window.y + window.height).enumerate() {
        let sy = (((y as f64 + 0.5) * height as f64 / out_h as f64) as usize).min(height - 1);
        for (ox, x) in (window.x..window.x + window.width).enumerate() {
            let sx = (((x as f64 + 0.5) * width as f64 / out_w as f64) as usize).min(width - 1);
            let o = (oy * window.width + ox) * 3;
            out[o..o + 3].copy_from_slice(&src[(sy * width + sx) * 3..(sy * width + sx) * 3 + 3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|v| v as u8).collect();
        assert_eq!(resize_rgb8(&src, 4, 3, 4, 3, Interpolation::Bicubic), src);
    }

    #[test]
    fn constant_image_stays_constant_when_scaled() {
        let src = vec![77u8; 50 * 30 * 3];
        for (w, h) in [(10, 6), (200, 120), (7, 31)] {
            let out = resize_rgb8(&src, 50, 30, w, h, Interpolation::Bicubic);
            assert!(out.iter().all(|&v| v == 77), "{w}x{h}");
        }
    }

    fn pattern(width: usize, height: usize) -> Vec<u8> {
        (0..width * height * 3).map(|i| ((i * 7919) % 251) as u8).collect()
    }

    #[test]
    fn a_window_is_the_crop_of_the_full_resize_for_every_filter_and_direction() {
        let (w, h) = (37, 23);
        let src = pattern(w, h);
        for filter in [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Nearest] {
            for (ow, oh) in [(80, 50), (11, 7), (37, 50), (80, 23), (19, 61)] {
                let full = resize_rgb8(&src, w, h, ow, oh, filter);
                for window in [
                    Window { x: 3, y: 2, width: 5, height: 4 },
                    Window::full(ow, oh),
                    Window { x: ow - 1, y: 0, width: 1, height: oh },
                ] {
                    let part = resize_rgb8_window(&src, w, h, ow, oh, window, filter);
                    let expected: Vec<u8> = (window.y..window.y + window.height)
                        .flat_map(|y| full[(y * ow + window.x) * 3..(y * ow + window.x + window.width) * 3].to_vec())
                        .collect();
                    assert_eq!(part, expected, "{filter:?} {w}x{h} -> {ow}x{oh} {window:?}");
                }
            }
        }
    }

    #[test]
    fn a_window_of_an_absurd_upscale_needs_only_the_window() {
        // 1 x 1000 to 224 x 224000: the full output would be 150 MB; the window is 224 x 224.
        let src = pattern(1, 1000);
        let window = Window { x: 0, y: 111_888, width: 224, height: 224 };
        let part = resize_rgb8_window(&src, 1, 1000, 224, 224_000, window, Interpolation::Bicubic);
        assert_eq!(part.len(), 224 * 224 * 3);
        // Every column of a 1-pixel-wide source is the same.
        assert!(part.chunks_exact(224 * 3).all(|row| row.chunks_exact(3).all(|p| p == &row[..3])));
    }

    #[test]
    fn bicubic_weights_sum_to_one_in_fixed_point() {
        let c = precompute(640, 224, 0..224, Interpolation::Bicubic);
        for (i, &(_, n)) in c.bounds.iter().enumerate() {
            let s: i64 = c.weights[i * c.ksize..i * c.ksize + n].iter().map(|&w| w as i64).sum();
            assert!((s - (1 << PRECISION_BITS)).abs() <= n as i64, "row {i}: {s}");
        }
    }
}
