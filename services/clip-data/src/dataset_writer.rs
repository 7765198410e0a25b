//! Writers of captioned datasets in the three input layouts (used by `sample-dataset`, `filter` and tests).

use crate::error::{DataError, Result};
use crate::storage::{Location, OutputFile, Storage};
use arrow::array::{ArrayRef, BinaryBuilder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use serde_json::Value;
use std::sync::Arc;

/// One sample to write.
pub struct OwnedSample {
    /// File stem / tar key, e.g. `000000042`.
    pub key: String,
    /// Encoded image bytes.
    pub image: Vec<u8>,
    /// Extension of the image (`jpg`, `png`, ...).
    pub image_ext: String,
    /// Caption.
    pub caption: String,
    /// Metadata object.
    pub metadata: Value,
}

/// A sink of samples in one of the layouts.
pub struct DatasetWriter {
    storage: Storage,
    folder: Location,
    layout: Layout,
}

enum Layout {
    /// `key.jpg`, `key.txt`, `key.json` in a folder.
    Files,
    /// Tar shards of `per_shard` samples: `00000.tar`, `00001.tar`, ...
    Webdataset {
        /// Samples per shard.
        per_shard: usize,
        /// Number of the shard being written.
        shard: usize,
        /// Samples in the current shard.
        in_shard: usize,
        /// The open shard.
        tar: Option<tar::Builder<OutputFile>>,
    },
    /// Parquet files of `per_file` rows with columns key, caption, jpg (bytes) and the metadata as JSON text.
    Parquet {
        /// Rows per file.
        per_file: usize,
        /// Number of the file being filled.
        file: usize,
        /// Rows not yet written.
        rows: Vec<OwnedSample>,
    },
}

impl DatasetWriter {
    /// Files layout.
    pub fn files(storage: &Storage, folder: Location) -> Self {
        Self { storage: storage.clone(), folder, layout: Layout::Files }
    }
    /// Webdataset layout.
    pub fn webdataset(storage: &Storage, folder: Location, per_shard: usize) -> Self {
        let layout = Layout::Webdataset { per_shard: per_shard.max(1), shard: 0, in_shard: 0, tar: None };
        Self { storage: storage.clone(), folder, layout }
    }
    /// Parquet layout.
    pub fn parquet(storage: &Storage, folder: Location, per_file: usize) -> Self {
        let layout = Layout::Parquet { per_file: per_file.max(1), file: 0, rows: Vec::new() };
        Self { storage: storage.clone(), folder, layout }
    }

    /// Writes one sample.
    pub fn write(&mut self, s: OwnedSample) -> Result<()> {
        let folder = &self.folder;
        match &mut self.layout {
            Layout::Files => {
                let storage = &self.storage;
                storage.write(&folder.join(&format!("{}.{}", s.key, s.image_ext)), &s.image)?;
                storage.write(&folder.join(&format!("{}.txt", s.key)), s.caption.as_bytes())?;
                storage.write(&folder.join(&format!("{}.json", s.key)), s.metadata.to_string().as_bytes())
            }
            Layout::Webdataset { per_shard, shard, in_shard, tar } => {
                if tar.is_none() {
                    let loc = folder.join(&format!("{shard:05}.tar"));
                    tar.replace(tar::Builder::new(self.storage.create(&loc)?));
                }
                let builder = tar.as_mut().expect("opened above");
                let metadata = s.metadata.to_string();
                let members: [(String, &[u8]); 3] = [
                    (format!("{}.{}", s.key, s.image_ext), &s.image),
                    (format!("{}.txt", s.key), s.caption.as_bytes()),
                    (format!("{}.json", s.key), metadata.as_bytes()),
                ];
                for (name, data) in members {
                    let mut header = tar::Header::new_gnu();
                    header.set_size(data.len() as u64);
                    header.set_mode(0o644);
                    header.set_mtime(0);
                    builder.append_data(&mut header, &name, data).map_err(DataError::io(&name))?;
                }
                *in_shard += 1;
                if *in_shard == *per_shard {
                    self.close_shard()?;
                }
                Ok(())
            }
            Layout::Parquet { per_file, rows, .. } => {
                rows.push(s);
                if rows.len() == *per_file {
                    self.flush_parquet()?;
                }
                Ok(())
            }
        }
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Layout::Webdataset { shard, in_shard, tar, .. } = &mut self.layout {
            if let Some(builder) = tar.take() {
                let out = builder.into_inner().map_err(DataError::io("tar shard"))?;
                out.commit()?;
                *shard += 1;
                *in_shard = 0;
            }
        }
        Ok(())
    }

    fn flush_parquet(&mut self) -> Result<()> {
        let Layout::Parquet { file, rows, .. } = &mut self.layout else {
            return Ok(());
        };
        if rows.is_empty() {
            return Ok(());
        }
        let (mut key, mut caption, mut jpg, mut meta) =
            (StringBuilder::new(), StringBuilder::new(), BinaryBuilder::new(), StringBuilder::new());
        for r in rows.iter() {
            key.append_value(&r.key);
            caption.append_value(&r.caption);
            jpg.append_value(&r.image);
            meta.append_value(r.metadata.to_string());
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("caption", DataType::Utf8, false),
            Field::new("jpg", DataType::Binary, false),
            Field::new("json", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> =
            vec![Arc::new(key.finish()), Arc::new(caption.finish()), Arc::new(jpg.finish()), Arc::new(meta.finish())];
        let batch = RecordBatch::try_new(schema, columns).expect("columns match schema");
        crate::metadata::write_parquet(&self.storage, &self.folder.join(&format!("{file:05}.parquet")), &batch)?;
        *file += 1;
        rows.clear();
        Ok(())
    }

    /// Flushes the last shard or file.
    pub fn finish(mut self) -> Result<()> {
        self.close_shard()?;
        self.flush_parquet()
    }
}
