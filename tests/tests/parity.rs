//! Parity with the reference implementation (PyTorch + open_clip, `models/scripts/make_parity_fixtures.py`):
//! token ids identical, caption cosine >= 0.9999, image cosine >= 0.999; and immich-style exports (fixed batch 1,
//! int32 tokens at 77, TorchScript) load and agree with our dynamic export of the same weights.

use clip_model::{ClipModel, SessionOptions};
use clip_retrieval_tests::{repo_root, shipped_model};
use serde_json::Value;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn reference() -> Value {
    let path = repo_root().join("tests/fixtures/parity/reference.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn token_ids_equal_open_clip_s_tokenizer() {
    let model = ClipModel::load(&shipped_model(), SessionOptions::default()).unwrap();
    for c in reference()["captions"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(model.tokenizer.encode(text).unwrap(), want, "caption {text:?}");
    }
}

#[test]
fn caption_embeddings_match_pytorch() {
    let model = ClipModel::load(&shipped_model(), SessionOptions::default()).unwrap();
    let captions = reference()["captions"].as_array().unwrap().clone();
    let texts: Vec<&str> = captions.iter().map(|c| c["text"].as_str().unwrap()).collect();
    // One batch (trimmed to its longest caption) and one caption at a time must both match.
    let batched = model.encode_texts(&texts).unwrap();
    for (i, c) in captions.iter().enumerate() {
        let want = floats(&c["embedding"]);
        let single = model.encode_texts(&[texts[i]]).unwrap().remove(0);
        for got in [&batched[i], &single] {
            let cos = cosine(got, &want);
            assert!(cos >= 0.9999, "caption {:?}: cosine {cos}", texts[i]);
        }
    }
}

#[test]
fn image_embeddings_match_pytorch_for_every_size_and_mode() {
    let model = ClipModel::load(&shipped_model(), SessionOptions::default()).unwrap();
    let dir = repo_root().join("tests/fixtures/parity/images");
    let images = reference()["images"].as_array().unwrap().clone();
    assert!(images.len() >= 20);
    let mut worst = (1.0f32, String::new());
    for img in &images {
        let file = img["file"].as_str().unwrap();
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let upright = clip_model::preprocess::decode_rgb(&bytes, &Default::default()).unwrap();
        let size: Vec<u64> = img["size"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(
            vec![upright.width as u64, upright.height as u64],
            size,
            "{file}: orientation or size differs from PIL"
        );
        let pixels = model.preprocess_image(&bytes).unwrap();
        let got = model.encode_images(&pixels).unwrap().remove(0);
        let cos = cosine(&got, &floats(&img["embedding"]));
        if cos < worst.0 {
            worst = (cos, file.to_string());
        }
        assert!(cos >= 0.999, "{file}: cosine {cos}");
    }
    println!("worst image cosine {:.6} ({})", worst.0, worst.1);
    // The 0.999 bar means something only if different images are far apart in this model.
    let refs: Vec<Vec<f32>> = images.iter().map(|i| floats(&i["embedding"])).collect();
    let pairs: Vec<f32> =
        refs.iter().enumerate().flat_map(|(i, a)| refs[i + 1..].iter().map(move |b| cosine(a, b))).collect();
    let mean = pairs.iter().sum::<f32>() / pairs.len() as f32;
    assert!(mean < 0.95, "fixture images are not distinguishable by the model (mean pairwise cosine {mean})");
}

fn copy(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
}

#[test]
fn immich_style_static_export_loads_and_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let (shipped, fixtures) = (shipped_model(), repo_root().join("tests/fixtures/immich-static"));
    for f in ["config.json", "visual/preprocess_cfg.json", "textual/tokenizer.json"] {
        copy(&shipped.join(f), &dir.path().join(f));
    }
    for f in ["visual/model.onnx", "textual/model.onnx"] {
        copy(&fixtures.join(f), &dir.path().join(f));
    }
    let immich = ClipModel::load(dir.path(), SessionOptions::default()).unwrap();
    let ours = ClipModel::load(&shipped, SessionOptions::default()).unwrap();
    assert!(!immich.trims_captions(), "a fixed [1, 77] text input cannot be trimmed");
    // Batches larger than the export's fixed batch of 1 are split and padded transparently.
    let captions = ["a red circle", "", "a large yellow square on a black background"];
    for (a, b) in immich.encode_texts(&captions).unwrap().iter().zip(ours.encode_texts(&captions).unwrap()) {
        assert!(cosine(a, &b) > 0.9999, "{}", cosine(a, &b));
    }
    let mut pixels = Vec::new();
    for i in 0..3 {
        pixels.extend(ours.preprocess_image(&clip_synthetic::render(3, i).jpeg()).unwrap());
    }
    for (a, b) in immich.encode_images(&pixels).unwrap().iter().zip(ours.encode_images(&pixels).unwrap()) {
        assert!(cosine(a, &b) > 0.9999, "{}", cosine(a, &b));
    }
}
