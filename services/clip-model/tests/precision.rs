//! The shipped model's int8 towers (`models/tiny-clip/*/model.int8.onnx`, written by models/scripts/quantize.py)
//! load and run close to fp32, and asking for int8 where a folder has none is an error naming the file.

use clip_model::{ClipModel, ModelError, Precision, TowerPrecisions};
use std::path::{Path, PathBuf};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-clip")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn int8_towers_load_and_embed_close_to_fp32() {
    let fp32 = ClipModel::load(&shipped(), Default::default()).unwrap();
    let int8 = ClipModel::load_at(&shipped(), Default::default(), TowerPrecisions::both(Precision::Int8)).unwrap();
    assert!(int8.image_file.ends_with("visual/model.int8.onnx"), "{}", int8.image_file.display());
    assert!(int8.text_file.ends_with("textual/model.int8.onnx"));
    assert!(fp32.image_file.ends_with("visual/model.onnx"), "no fused file is shipped, so fp32 is model.onnx");
    let captions = ["a small red circle on a white background", "a large blue square on a black background"];
    let (t32, t8) = (fp32.encode_texts(&captions).unwrap(), int8.encode_texts(&captions).unwrap());
    let mut pixels = Vec::new();
    for i in 0..4 {
        pixels.extend(fp32.preprocess_image(&clip_synthetic::render(1, i).jpeg()).unwrap());
    }
    let (i32_, i8_) = (fp32.encode_images(&pixels).unwrap(), int8.encode_images(&pixels).unwrap());
    for (a, b) in t32.iter().zip(&t8).chain(i32_.iter().zip(&i8_)) {
        let c = cosine(a, b);
        assert!(c > 0.999 && c < 1.0 + 1e-5, "int8 vs fp32 cosine {c}");
        assert_ne!(a, b, "the int8 graph really ran: its embeddings are not bit-identical");
    }
}

#[test]
fn int8_on_a_folder_without_int8_files_names_the_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        "config.json",
        "visual/model.onnx",
        "visual/preprocess_cfg.json",
        "textual/model.onnx",
        "textual/tokenizer.json",
    ];
    for file in files {
        let to = dir.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(shipped().join(file), to).unwrap();
    }
    let text_only = TowerPrecisions { image: Precision::Fp32, text: Precision::Int8 };
    let err = ClipModel::load_at(dir.path(), Default::default(), text_only).err().expect("no int8 text tower");
    assert!(matches!(&err, ModelError::MissingFile { path, .. } if path.ends_with("textual/model.int8.onnx")), "{err}");
    assert!(err.to_string().contains("quantize.py") && err.to_string().contains("--text_precision"), "{err}");
    assert!(ClipModel::load_at(dir.path(), Default::default(), TowerPrecisions::default()).is_ok());
}
