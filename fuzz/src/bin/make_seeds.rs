//! Writes the seed corpus (fuzz/corpus/<target>/seed-*): small valid inputs of every format each target reads, and
//! the hostile ones the fault suite found, so fuzzing starts from real structure. Run once after changing it:
//! `cargo run -p clip-fuzz --bin make-seeds`. Inputs the fuzzer adds sit beside these (named by their hash).

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use std::path::Path;
use std::sync::Arc;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let folder = root.join(target);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("seed-{name}")), bytes).unwrap();
    };
    for (name, bytes) in images() {
        write("image_preprocess", name, &bytes);
    }
    for (name, bytes) in shards() {
        write("webdataset_tar", name, &bytes);
    }
    for (name, bytes) in npys() {
        write("npy_header", name, &bytes);
    }
    for (name, body) in requests() {
        write("knn_request", name, body.as_bytes());
    }
    for (name, bytes) in row_stores() {
        write("metadata_arrow", name, &bytes);
    }
    println!("seeds written under {}", root.display());
}

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn images() -> Vec<(&'static str, Vec<u8>)> {
    use image::ImageFormat::*;
    let rgb = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(13, 7, |x, y| {
        image::Rgb([(x * 19) as u8, (y * 37) as u8, ((x + y) * 11) as u8])
    }));
    let grey16 =
        image::DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(5, 9, |x, y| image::Luma([(x * y * 999) as u16])));
    let rgba = image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(6, 6, |x, _| {
        image::Rgba([255, 0, 0, (x * 40) as u8])
    }));
    // A PNG header claiming 40000 x 40000, cut after IHDR: the bomb's shape without its 1.6 MB.
    let mut bomb_header = clip_synthetic::hostile::zero_png(40_000, 40_000);
    bomb_header.truncate(64);
    vec![
        ("rgb.png", encode(&rgb, Png)),
        ("rgb.jpg", encode(&rgb, Jpeg)),
        ("rgb.bmp", encode(&rgb, Bmp)),
        ("rgb.gif", encode(&rgb, Gif)),
        ("rgb.tiff", encode(&rgb, Tiff)),
        ("rgb.webp", encode(&rgb, WebP)),
        ("grey16.png", encode(&grey16, Png)),
        ("rgba.png", encode(&rgba, Png)),
        ("tall.png", clip_synthetic::hostile::gradient_png(1, 3000)),
        ("wide.png", clip_synthetic::hostile::gradient_png(3000, 1)),
        ("bomb-header.png", bomb_header),
    ]
}

fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn shards() -> Vec<(&'static str, Vec<u8>)> {
    let jpg: &[u8] = b"\xff\xd8\xff\xe0 not really a jpeg";
    let good = tar_of(&[
        ("000.jpg", jpg),
        ("000.txt", b"a red circle"),
        ("000.json", br#"{"url": "http://x/0", "width": 7}"#),
        ("001.jpg", jpg),
        ("001.txt", b"a blue square"),
        ("dir/002.jpg", jpg),
        ("dir/002.txt", "caf\u{e9}".as_bytes()),
    ]);
    let missing_caption = tar_of(&[("000.jpg", jpg), ("001.jpg", jpg), ("001.txt", b"x")]);
    // A member whose size field claims far more than the shard holds.
    let mut lying = tar_of(&[("000.jpg", jpg), ("000.txt", b"x")]);
    let size_field = 124..136;
    lying[size_field.clone()].copy_from_slice(b"77777777777\0");
    let checksum: u32 =
        lying[..512].iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { b as u32 }).sum();
    lying[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    let mut long_name = tar::Builder::new(Vec::new());
    let name = format!("{}/000.jpg", "d".repeat(150));
    let mut header = tar::Header::new_gnu();
    header.set_size(jpg.len() as u64);
    header.set_cksum();
    long_name.append_data(&mut header, name, jpg).unwrap();
    vec![
        ("good.tar", good),
        ("missing-caption.tar", missing_caption),
        ("lying-size.tar", lying),
        ("long-name.tar", long_name.into_inner().unwrap()),
    ]
}

fn npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out.extend(data);
    out
}

fn npys() -> Vec<(&'static str, Vec<u8>)> {
    let f32s: Vec<u8> = (0..8).flat_map(|i| (i as f32 * 0.5).to_le_bytes()).collect();
    let f16s: Vec<u8> = (0..6u16).flat_map(|i| (0x3c00 + i).to_le_bytes()).collect();
    vec![
        ("f32-2x4.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", &f32s)),
        ("f16-3x2.npy", npy("{'descr': '<f2', 'fortran_order': False, 'shape': (3, 2), }", &f16s)),
        ("vector.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (8,), }", &f32s)),
        ("zero-columns.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (5, 0), }", &[])),
        ("short-data.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (9, 4), }", &f32s)),
        ("huge-shape.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }", &[])),
        ("fortran.npy", npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 4), }", &f32s)),
    ]
}

fn requests() -> Vec<(&'static str, String)> {
    vec![
        ("client.json", r#"{"text": "a red circle", "image": null, "image_url": null, "embedding_input": null, "deduplicate": true, "use_safety_model": true, "use_violence_detector": true, "indice_name": "demo", "use_mclip": false, "aesthetic_score": "", "aesthetic_weight": "", "modality": "image", "num_images": 10, "num_result_ids": 10}"#.into()),
        ("embedding.json", r#"{"embedding_input": [0.5, -0.25, 1e-3, 3], "num_images": "7", "aesthetic_score": 9, "aesthetic_weight": "0.5"}"#.into()),
        ("image.json", r#"{"image": "data:image/png;base64,iVBORw0KGgo=", "modality": "text", "deduplicate": "1"}"#.into()),
        ("metadata.json", r#"{"ids": [3, 1, 3, 2.0, -1], "indice_name": "demo"}"#.into()),
        ("not-object.json", "[1, 2, {\"text\": 3}]".into()),
    ]
}

fn row_stores() -> Vec<(&'static str, Vec<u8>)> {
    let schema =
        Schema::new(vec![Field::new("caption", DataType::Utf8, true), Field::new("width", DataType::Int64, true)]);
    let batch = |captions: Vec<Option<&str>>| {
        let n = captions.len() as i64;
        let cols: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from(captions)), Arc::new(Int64Array::from((0..n).collect::<Vec<_>>()))];
        RecordBatch::try_new(Arc::new(schema.clone()), cols).unwrap()
    };
    let mut ours = Vec::new();
    let mut writer = clip_index::row_store::RowStoreWriter::new(&mut ours, &schema).unwrap();
    writer.write(&batch(vec![Some("a"), None, Some("c")])).unwrap();
    writer.write(&batch(vec![Some("d")])).unwrap();
    writer.finish().unwrap();
    // As pyarrow writes it: no batch-rows key in the footer.
    let mut plain = Vec::new();
    let mut writer = arrow_ipc::writer::FileWriter::try_new(&mut plain, &schema).unwrap();
    writer.write(&batch(vec![Some("x"), Some("y")])).unwrap();
    writer.finish().unwrap();
    drop(writer);
    let truncated = ours[..ours.len() - 20].to_vec();
    vec![("ours.arrow", ours), ("plain.arrow", plain), ("truncated.arrow", truncated)]
}
