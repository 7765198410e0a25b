//! `metadata/metadata_N.parquet`: image_path, caption and the flattened JSON metadata, as clip-retrieval writes them
//! with `pandas.json_normalize` (nested keys joined with dots, keys named like a fixed column dropped).

use crate::arrow_json::{json_column, row_json};
use crate::error::{DataError, Result};
use crate::storage::{Location, Storage};
use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};
use std::sync::Arc;

/// One output row.
#[derive(Debug, Clone, Default)]
pub struct MetadataRow {
    /// `image_path` (present when images are enabled).
    pub image_path: Option<String>,
    /// `caption` (present when text is enabled).
    pub caption: Option<String>,
    /// Metadata fields, nested objects allowed.
    pub metadata: Option<Map<String, Value>>,
}

/// A row with its metadata flattened: `(image_path, caption, fields)`.
type FlatRow = (Option<String>, Option<String>, Map<String, Value>);

/// Accumulates rows of one partition and writes them as one parquet file.
#[derive(Debug, Default)]
pub struct MetadataTable {
    with_image_path: bool,
    with_caption: bool,
    rows: Vec<FlatRow>,
    keys: Vec<String>,
}

fn flatten_into(prefix: &str, obj: &Map<String, Value>, out: &mut Map<String, Value>) {
    for (k, v) in obj {
        let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Object(inner) if !inner.is_empty() => flatten_into(&name, inner, out),
            other => {
                out.insert(name, other.clone());
            }
        }
    }
}

impl MetadataTable {
    /// A table with the fixed columns that clip-retrieval writes for these toggles.
    pub fn new(with_image_path: bool, with_caption: bool) -> Self {
        Self { with_image_path, with_caption, ..Default::default() }
    }

    /// Adds a row.
    pub fn push(&mut self, row: MetadataRow) {
        let mut flat = Map::new();
        if let Some(m) = &row.metadata {
            flatten_into("", m, &mut flat);
        }
        flat.retain(|k, _| k != "image_path" && k != "caption" && k != "metadata");
        for k in flat.keys() {
            if !self.keys.contains(k) {
                self.keys.push(k.clone());
            }
        }
        self.rows.push((row.image_path, row.caption, flat));
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows as one Arrow record batch.
    pub fn to_record_batch(&self) -> RecordBatch {
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        let mut string_column = |name: &str, values: &mut dyn Iterator<Item = Option<String>>| {
            let mut b = StringBuilder::new();
            values.for_each(|v| b.append_option(v));
            fields.push(Field::new(name, DataType::Utf8, true));
            columns.push(Arc::new(b.finish()));
        };
        if self.with_image_path {
            string_column("image_path", &mut self.rows.iter().map(|r| r.0.clone()));
        }
        if self.with_caption {
            string_column("caption", &mut self.rows.iter().map(|r| r.1.clone()));
        }
        for key in &self.keys {
            let values: Vec<Option<&Value>> = self.rows.iter().map(|r| r.2.get(key).filter(|v| !v.is_null())).collect();
            let (dtype, array) = json_column(&values);
            fields.push(Field::new(key, dtype, true));
            columns.push(array);
        }
        let schema = Arc::new(Schema::new(fields));
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(self.rows.len()));
        RecordBatch::try_new_with_options(schema, columns, &options).expect("columns built to the schema")
    }

    /// Writes the table as parquet (snappy) to `target`, atomically.
    pub fn write(&self, storage: &Storage, target: &Location) -> Result<()> {
        write_parquet(storage, target, &self.to_record_batch())
    }
}

/// Writes one record batch as a snappy-compressed parquet file, atomically.
pub fn write_parquet(storage: &Storage, target: &Location, batch: &RecordBatch) -> Result<()> {
    let mut out = storage.create(target)?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let err = |e: parquet::errors::ParquetError| DataError::format(target, format!("writing parquet: {e}"));
    let mut writer = ArrowWriter::try_new(out.file(), batch.schema(), Some(props)).map_err(err)?;
    writer.write(batch).map_err(err)?;
    writer.close().map_err(err)?;
    out.commit()
}

/// Reads a metadata parquet file back as JSON rows (tests and tools).
pub fn read_rows(bytes: Vec<u8>, name: &str) -> Result<Vec<Map<String, Value>>> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .and_then(|b| b.build())
        .map_err(|e| DataError::format(name, e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| DataError::format(name, e))?;
        out.extend((0..batch.num_rows()).map(|row| row_json(&batch, row, None)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_and_types_columns_like_pandas() {
        let mut t = MetadataTable::new(true, true);
        let m = |v: Value| v.as_object().cloned();
        t.push(MetadataRow {
            image_path: Some("a.jpg".into()),
            caption: Some("x".into()),
            metadata: m(json!({"w": 3, "s": {"a": 1.5}, "caption": "dup"})),
        });
        t.push(MetadataRow {
            image_path: Some("b.jpg".into()),
            caption: Some("y".into()),
            metadata: m(json!({"w": 4, "flag": true})),
        });
        let b = t.to_record_batch();
        let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, vec!["image_path", "caption", "w", "s.a", "flag"]);
        assert_eq!(b.schema().field(2).data_type(), &DataType::Int64);
        assert_eq!(b.schema().field(3).data_type(), &DataType::Float64);
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::Local(dir.path().join("m.parquet"));
        t.write(&Storage::from_env(), &loc).unwrap();
        let rows = read_rows(std::fs::read(dir.path().join("m.parquet")).unwrap(), "m").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["image_path"], "b.jpg");
        assert_eq!(rows[0]["s.a"], 1.5);
    }
}
