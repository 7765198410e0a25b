//! The inference pipeline in-process on the shipped model: how samples are batched, how skips are accounted (a
//! corrupt image at decode, a bad JSON at read), what the outputs hold, and resuming a finished partition.

use clip_data::dataset_writer::{DatasetWriter, OwnedSample};
use clip_data::{InputFormat, Location, Storage};
use clip_inference::{InferenceOptions, PartitionStats, Progress};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

fn shipped_model() -> clip_model::ClipModel {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-clip");
    clip_model::ClipModel::load(&folder, Default::default()).expect("the shipped model loads")
}

/// Seven samples `s0`..`s6`: `s1` and `s4` have images that do not decode, `s6` has metadata that is not JSON.
fn dataset(root: &Path) -> PathBuf {
    let folder = root.join("dataset");
    let storage = Storage::from_env();
    let mut writer = DatasetWriter::files(&storage, Location::Local(folder.clone()));
    for i in 0..7 {
        let s = clip_synthetic::render(5, i);
        let (caption, metadata) = (s.caption.clone(), s.metadata());
        let sample = OwnedSample { key: format!("s{i}"), image: s.jpeg(), image_ext: "jpg".into(), caption, metadata };
        writer.write(sample).unwrap();
    }
    writer.finish().unwrap();
    std::fs::write(folder.join("s1.jpg"), b"not an image").unwrap();
    std::fs::write(folder.join("s4.jpg"), [0xff, 0xd8, 0xff, 0xe0, 0, 0]).unwrap();
    std::fs::write(folder.join("s6.json"), b"{not json").unwrap();
    folder
}

fn options(input: &Path, output: &Path, batch_size: usize) -> InferenceOptions {
    InferenceOptions {
        input_dataset: input.display().to_string(),
        output_folder: output.display().to_string(),
        input_format: InputFormat::Files,
        batch_size,
        num_prepro_workers: 2,
        enable_text: true,
        enable_image: true,
        enable_metadata: true,
        write_batch_size: 1_000_000,
        subset_size: None,
        wds_image_key: "jpg".into(),
        wds_caption_key: "txt".into(),
        output_partition_count: None,
        wds_number_file_per_input_file: 10_000,
        partition_ids: None,
        dtype: clip_data::npy::NpyDtype::F16,
        max_sample_bytes: clip_data::DEFAULT_MAX_SAMPLE_BYTES,
        overwrite: false,
    }
}

/// Records what the pipeline reports.
#[derive(Default)]
struct Recorder {
    done: Mutex<Vec<usize>>,
    skipped: Mutex<Vec<String>>,
}

impl Progress for Recorder {
    fn samples_done(&self, n: usize) {
        self.done.lock().unwrap().push(n);
    }
    fn sample_skipped(&self, input: &str, _reason: &str) {
        self.skipped.lock().unwrap().push(input.to_string());
    }
    fn partition_finished(&self, _name: &str, _stats: &PartitionStats) {}
}

fn npy_rows(path: &Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    clip_data::npy::read_header(std::io::BufReader::new(file), "npy").unwrap().1
}

#[test]
fn bad_samples_are_skipped_one_by_one_and_the_rest_is_batched_and_written() {
    let root = tempfile::tempdir().unwrap();
    let input = dataset(root.path());
    let out = root.path().join("emb");
    let storage = Storage::from_env();
    let model = shipped_model();
    let recorder = Recorder::default();
    let summary = clip_inference::run(&storage, &model, &options(&input, &out, 3), &recorder).unwrap();

    assert_eq!((summary.samples, summary.skipped, summary.computed.clone()), (4, 3, vec![0]));
    // Raw batches of 3 read samples: [s0 s1 s2] -> 2 encoded, [s3 s4 s5] -> 2, then the skipped s6 alone -> 0.
    assert_eq!(*recorder.done.lock().unwrap(), [2, 2, 0]);
    let mut skipped = recorder.skipped.lock().unwrap().clone();
    skipped.sort();
    let names: Vec<String> =
        skipped.iter().map(|s| Path::new(s).file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(names, ["s1.jpg", "s4.jpg", "s6.json"]);

    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("stats/0.json")).unwrap()).unwrap();
    assert_eq!(stats["sample_count"], 4);
    assert_eq!(stats["skipped_count"], 3);
    assert!(stats["skipped"].as_array().unwrap().iter().all(|s| !s["reason"].as_str().unwrap().is_empty()));
    assert_eq!(npy_rows(&out.join("img_emb/img_emb_0.npy")), 4);
    assert_eq!(npy_rows(&out.join("text_emb/text_emb_0.npy")), 4);
    let rows =
        clip_data::metadata::read_rows(std::fs::read(out.join("metadata/metadata_0.parquet")).unwrap(), "m").unwrap();
    let paths: Vec<String> = rows
        .iter()
        .map(|r| Path::new(r["image_path"].as_str().unwrap()).file_name().unwrap().to_string_lossy().into())
        .collect();
    assert_eq!(paths, ["s0.jpg", "s2.jpg", "s3.jpg", "s5.jpg"], "rows stay in embedding order");
}

#[test]
fn a_finished_partition_is_not_recomputed_and_bad_partition_ids_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let input = dataset(root.path());
    let out = root.path().join("emb");
    let storage = Storage::from_env();
    let model = shipped_model();
    let mut opts = options(&input, &out, 4);
    opts.output_partition_count = Some(2);
    let first = clip_inference::run(&storage, &model, &opts, &clip_inference::NoProgress).unwrap();
    assert_eq!((first.computed.clone(), first.samples + first.skipped), (vec![0, 1], 7));
    let again = clip_inference::run(&storage, &model, &opts, &clip_inference::NoProgress).unwrap();
    assert_eq!((again.already_done.clone(), again.computed.len(), again.samples), (vec![0, 1], 0, 0));
    opts.partition_ids = Some(vec![2]);
    let err = clip_inference::run(&storage, &model, &opts, &clip_inference::NoProgress).unwrap_err();
    assert!(err.to_string().contains("partition id 2 out of range"), "{err}");
}
