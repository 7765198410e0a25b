//! The shipped model is meaningfully good, measured through the Rust engine on freshly rendered held-out images
//! (a seed the training never saw): zero-shot colour+shape top-1 >= 90%, text->image recall@10 >= 0.9.

use clip_model::{ClipModel, SessionOptions};
use clip_retrieval_tests::shipped_model;
use clip_synthetic::{render, COLORS, SHAPES};

const HELD_OUT_SEED: u64 = 424_242;
const N: u64 = 600;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn shipped_model_meets_zero_shot_and_recall_targets() {
    let model = ClipModel::load(&shipped_model(), SessionOptions::default()).expect("shipped model loads");
    let samples: Vec<_> = (0..N).map(|i| render(HELD_OUT_SEED, i)).collect();
    let mut pixels = Vec::new();
    for s in &samples {
        pixels.extend(model.preprocess_image(&s.jpeg()).unwrap());
    }
    let images = model.encode_images(&pixels).unwrap();

    let classes: Vec<(&str, &str)> = COLORS.iter().flat_map(|(c, _)| SHAPES.iter().map(move |s| (*c, *s))).collect();
    let prompts: Vec<String> = classes.iter().map(|(c, s)| format!("a {c} {s}")).collect();
    let prompt_refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let class_embs = model.encode_texts(&prompt_refs).unwrap();
    let correct = samples
        .iter()
        .zip(&images)
        .filter(|(s, e)| {
            let best =
                (0..classes.len()).max_by(|&a, &b| dot(e, &class_embs[a]).total_cmp(&dot(e, &class_embs[b]))).unwrap();
            classes[best] == (s.attributes.color, s.attributes.shape)
        })
        .count();
    let zero_shot = correct as f64 / N as f64;

    let captions: Vec<&str> = samples.iter().map(|s| s.caption.as_str()).collect();
    let texts = model.encode_texts(&captions).unwrap();
    let hits = texts
        .iter()
        .enumerate()
        .filter(|(i, t)| {
            let own = dot(t, &images[*i]);
            // The own image is in the top 10 when fewer than 10 others score strictly higher.
            images.iter().filter(|img| dot(t, img) > own).count() < 10
        })
        .count();
    let recall = hits as f64 / N as f64;
    println!("zero-shot colour+shape top-1 {zero_shot:.3}, text->image recall@10 {recall:.3} over {N} held-out images");
    assert!(zero_shot >= 0.9, "zero-shot top-1 {zero_shot:.3} < 0.9");
    assert!(recall >= 0.9, "recall@10 {recall:.3} < 0.9");
}

#[test]
fn trimmed_caption_batches_equal_full_length_ones() {
    // The shipped text tower has a dynamic sequence axis: a batch is trimmed to its longest caption. Padding the
    // same caption with a long neighbour must not change its embedding.
    let model = ClipModel::load(&shipped_model(), SessionOptions::default()).unwrap();
    assert!(model.trims_captions());
    let alone = model.encode_texts(&["a red circle"]).unwrap();
    let long = "a large purple diamond on a black background ".repeat(8);
    let together = model.encode_texts(&["a red circle", long.as_str()]).unwrap();
    assert!(dot(&alone[0], &together[0]) > 0.99999, "{}", dot(&alone[0], &together[0]));
}
