//! `clip-retrieval sample-dataset`: renders the synthetic captioned dataset in the chosen layout.

use anyhow::Result;
use clip_cli::{InputFormat, SampleDatasetArgs};
use clip_data::dataset_writer::{DatasetWriter, OwnedSample};
use clip_data::{Location, Storage};
use indicatif::ProgressBar;

/// Runs the subcommand.
pub fn run(storage: &Storage, a: SampleDatasetArgs) -> Result<()> {
    let folder = Location::parse(&a.output_folder);
    let mut writer = match a.output_format {
        InputFormat::Files => DatasetWriter::files(storage, folder),
        InputFormat::Webdataset => DatasetWriter::webdataset(storage, folder, a.shard_size),
        InputFormat::Parquet => DatasetWriter::parquet(storage, folder, a.shard_size),
    };
    let bar = ProgressBar::new(a.count);
    for i in a.start..a.start + a.count {
        let s = clip_synthetic::render_sized(a.seed, i, a.image_size);
        writer.write(OwnedSample {
            key: s.key.clone(),
            image: s.jpeg(),
            image_ext: "jpg".into(),
            caption: s.caption.clone(),
            metadata: s.metadata(),
        })?;
        bar.inc(1);
    }
    writer.finish()?;
    bar.finish_and_clear();
    println!("wrote {} samples ({}) to {}", a.count, a.output_format, a.output_folder);
    Ok(())
}
