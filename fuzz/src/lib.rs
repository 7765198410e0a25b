//! Fuzz entry points: one function per parser that reads untrusted bytes, each taking any input and panicking only
//! when the code under it breaks an invariant (a panic inside our code or a dependency, an allocation past its
//! bound, output of the wrong shape, a window resize that differs from the full one). `cargo fuzz` drives them
//! (`fuzz_targets/`); `tests/corpus.rs` replays every committed corpus file through them, so each crash found
//! stays a regression test.

use arrow::buffer::Buffer;
use clip_data::dataset::{read_tar, ReadEvent, ReadOptions};
use clip_data::Location;
use clip_model::config::ResizeMode;
use clip_model::preprocess::{decode_rgb, fit_to_model};
use clip_model::resample::{resize_rgb8, resize_rgb8_window, Interpolation, Window};
use clip_model::{ImageLimits, PreprocessConfig};

/// A fuzz entry point: any bytes in, a panic only on a broken invariant.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus folder.
pub const TARGETS: [(&str, Target); 5] = [
    ("image_preprocess", image_preprocess),
    ("webdataset_tar", webdataset_tar),
    ("npy_header", npy_header),
    ("knn_request", knn_request),
    ("metadata_arrow", metadata_arrow),
];

/// Pixel limit while fuzzing: the check is the same code as the default's, and smaller images keep executions fast.
pub const FUZZ_MAX_PIXELS: u64 = 1 << 20;

/// Per-member cap while fuzzing the tar reader.
pub const FUZZ_MAX_SAMPLE_BYTES: u64 = 1 << 16;

/// A cheap hash of the input, to pick sizes and windows deterministically from it.
fn mix(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn config(resize_mode: ResizeMode, size: (usize, usize), interpolation: Interpolation) -> PreprocessConfig {
    PreprocessConfig {
        size,
        mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
        std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
        interpolation,
        resize_mode,
        fill_color: 0,
    }
}

/// Image bytes -> decode under the limits -> every resize mode; plus the window resize against the full resize.
pub fn image_preprocess(data: &[u8]) {
    let limits = ImageLimits { max_pixels: FUZZ_MAX_PIXELS };
    let Ok(rgb) = decode_rgb(data, &limits) else { return };
    assert!(
        (rgb.width * rgb.height) as u64 <= limits.max_pixels,
        "{}x{} decoded over the limit",
        rgb.width,
        rgb.height
    );
    assert_eq!(rgb.pixels.len(), rgb.width * rgb.height * 3);
    let modes = [(ResizeMode::Shortest, (224, 224)), (ResizeMode::Longest, (24, 32)), (ResizeMode::Squash, (17, 9))];
    for (mode, size) in modes {
        let fitted = fit_to_model(&rgb, &config(mode, size, Interpolation::Bicubic));
        assert_eq!((fitted.height, fitted.width), size, "{mode:?}");
        assert_eq!(fitted.pixels.len(), size.0 * size.1 * 3);
    }
    if rgb.width * rgb.height <= 4096 {
        window_matches_full_resize(&rgb.pixels, rgb.width, rgb.height, mix(data));
    }
}

/// A window of the resize is byte-identical to the same crop of the full resize, for every kernel.
fn window_matches_full_resize(src: &[u8], width: usize, height: usize, seed: u64) {
    let pick = |shift: u32, n: usize| ((seed >> shift) as usize % n.max(1)) + 1;
    let (out_w, out_h) = (pick(0, 96), pick(8, 96));
    let (x, y) = (pick(16, out_w) - 1, pick(24, out_h) - 1);
    let window = Window { x, y, width: pick(32, out_w - x), height: pick(40, out_h - y) };
    for filter in [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Nearest] {
        let full = resize_rgb8(src, width, height, out_w, out_h, filter);
        let part = resize_rgb8_window(src, width, height, out_w, out_h, window, filter);
        let expected: Vec<u8> = (window.y..window.y + window.height)
            .flat_map(|r| full[(r * out_w + window.x) * 3..(r * out_w + window.x + window.width) * 3].to_vec())
            .collect();
        assert!(part == expected, "{filter:?} {width}x{height} -> {out_w}x{out_h}, {window:?}");
    }
}

/// A webdataset shard: every sample within the member cap, the reader stopping when asked.
pub fn webdataset_tar(data: &[u8]) {
    let options = ReadOptions {
        enable_image: true,
        enable_text: true,
        enable_metadata: true,
        image_key: "jpg".into(),
        caption_key: "txt".into(),
        max_sample_bytes: FUZZ_MAX_SAMPLE_BYTES,
    };
    let shard = Location::Local("fuzz.tar".into());
    // Half the inputs stop after the first event, as a consumer shutting down does.
    let stop_early = mix(data) & 1 == 1;
    let mut events = 0usize;
    read_tar(data, &shard, data.len() as u64, &options, &mut |event| {
        events += 1;
        if let ReadEvent::Sample(s) = &event {
            let image = s.image.as_ref().map_or(0, Vec::len) as u64;
            let caption = s.caption.as_ref().map_or(0, String::len) as u64;
            assert!(image <= FUZZ_MAX_SAMPLE_BYTES, "image member of {image} bytes passed the cap");
            // Lossy UTF-8 may grow a caption: at most 3 bytes per byte read.
            assert!(caption <= 3 * FUZZ_MAX_SAMPLE_BYTES, "caption of {caption} bytes passed the cap");
        }
        !stop_early
    });
    assert!(!stop_early || events <= 1, "the reader went on after being told to stop");
}

/// An npy file: its header and data read whole, the data matching the shape.
pub fn npy_header(data: &[u8]) {
    let _ = clip_data::npy::read_header(data, "fuzz.npy");
    if let Ok(m) = clip_data::npy::read_matrix(data, "fuzz.npy") {
        assert_eq!(m.data.len(), m.rows * m.cols, "matrix data does not match its shape");
        assert!(m.cols > 0);
    }
}

/// A `/knn-service` or `/metadata` body: parsed or refused, and every accepted number in range.
pub fn knn_request(data: &[u8]) {
    if let Ok(q) = clip_server::wire::knn_query(data) {
        if let clip_search::QueryInput::Embedding(e) = &q.input {
            assert!(e.iter().all(|x| x.is_finite()), "a non-finite embedding value was accepted");
        }
        if let Some((score, weight)) = q.aesthetic {
            assert!(score <= 9 && weight.is_finite(), "aesthetic ({score}, {weight}) accepted");
        }
    }
    let _ = clip_server::wire::metadata_query(data);
}

/// A `metadata.arrow` file: opened or refused at load; lookups on an opened one are rows or errors.
pub fn metadata_arrow(data: &[u8]) {
    // RowStore turns a panic inside arrow-ipc's decoder into an error (catch_unwind); libFuzzer's panic hook would
    // abort before unwinding, so the default hook is put back. A panic that escapes still crashes the run: it
    // cannot unwind out of libfuzzer-sys's `extern "C"` entry point, so the process aborts and libFuzzer saves it.
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let Ok(store) = clip_index::RowStore::from_buffer("fuzz.arrow", Buffer::from(data.to_vec())) else { return };
    let len = store.len();
    let ids = [0, 1, len / 2, len.saturating_sub(1), len, u64::MAX];
    if let Ok(rows) = store.get(&ids, None) {
        assert_eq!(rows.len(), ids.len());
        assert!(rows[4].is_none() && rows[5].is_none(), "a row past the end was returned");
    }
    let _ = store.columns();
}
