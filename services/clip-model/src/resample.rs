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

/// Fixed-point kernel weights of one pass: for each output index, the first input index and the weights.
struct PassCoefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize, filter: Interpolation) -> PassCoefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
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
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
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

/// Resizes a packed RGB8 image (`width*height*3` bytes) to `out_w x out_h` exactly as Pillow does.
pub fn resize_rgb8(
    src: &[u8],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
    filter: Interpolation,
) -> Vec<u8> {
    assert_eq!(src.len(), width * height * 3, "RGB buffer size does not match its dimensions");
    if filter == Interpolation::Nearest {
        return resize_nearest(src, width, height, out_w, out_h);
    }
    let horizontal = precompute(width, out_w, filter);
    let vertical = precompute(height, out_h, filter);
    // Horizontal pass first, only over the rows the vertical pass reads (Pillow does the same).
    let (first_row, rows) = if out_w != width {
        let first = vertical.bounds[0].0;
        let (last_start, last_count) = vertical.bounds[out_h - 1];
        let last = last_start + last_count;
        let mut tmp = vec![0u8; (last - first) * out_w * 3];
        for (ty, y) in (first..last).enumerate() {
            let in_row = &src[y * width * 3..(y + 1) * width * 3];
            let out_row = &mut tmp[ty * out_w * 3..(ty + 1) * out_w * 3];
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
        (first, tmp)
    } else {
        (0, src.to_vec())
    };
    if out_h == height {
        return rows;
    }
    let mut out = vec![0u8; out_w * out_h * 3];
    let stride = out_w * 3;
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
fn resize_nearest(src: &[u8], width: usize, height: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let mut out = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        let sy = (((y as f64 + 0.5) * height as f64 / out_h as f64) as usize).min(height - 1);
        for x in 0..out_w {
            let sx = (((x as f64 + 0.5) * width as f64 / out_w as f64) as usize).min(width - 1);
            out[(y * out_w + x) * 3..(y * out_w + x) * 3 + 3]
                .copy_from_slice(&src[(sy * width + sx) * 3..(sy * width + sx) * 3 + 3]);
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

    #[test]
    fn bicubic_weights_sum_to_one_in_fixed_point() {
        let c = precompute(640, 224, Interpolation::Bicubic);
        for (i, &(_, n)) in c.bounds.iter().enumerate() {
            let s: i64 = c.weights[i * c.ksize..i * c.ksize + n].iter().map(|&w| w as i64).sum();
            assert!((s - (1 << PRECISION_BITS)).abs() <= n as i64, "row {i}: {s}");
        }
    }
}
