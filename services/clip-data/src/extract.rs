//! The output of `clip-retrieval filter`: each hit's image copied out of the dataset (a local file, or the member
//! of a webdataset shard / parquet row whose key the index stored as `image_path`), and `results.parquet` (id,
//! similarity, copied file, every metadata column with numbers and strings kept typed).

use crate::arrow_json::json_column;
use crate::dataset::{read_units, DatasetPlan, InputFormat, ReadEvent, ReadOptions};
use crate::error::{DataError, Result};
use crate::storage::{Location, Storage};
use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One search result: index id, similarity and its metadata row.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Row id in the index.
    pub id: i64,
    /// Similarity to the query.
    pub similarity: f32,
    /// The metadata row (empty when the index folder has no row store).
    pub metadata: Map<String, Value>,
}

/// The file written per hit id (None when its image could not be found).
pub type CopiedImages = HashMap<i64, Option<PathBuf>>;

/// Copies each hit's image into `out`: local `image_path` files directly, the others (webdataset/parquet keys)
/// by streaming `dataset` (format `format`) once; a warning names what stayed missing.
pub fn copy_images(
    storage: &Storage,
    hits: &[Hit],
    out: &Path,
    dataset: Option<(&str, InputFormat)>,
) -> Result<CopiedImages> {
    let mut copied = HashMap::new();
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    for h in hits {
        let path = h.metadata.get("image_path").and_then(Value::as_str).unwrap_or_default().to_string();
        if !path.is_empty() && Path::new(&path).is_file() {
            let name = Path::new(&path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let target = unique_target(out, h.id, &name);
            std::fs::copy(&path, &target).map_err(DataError::io(format!("copying {path}")))?;
            copied.insert(h.id, Some(target));
        } else {
            copied.insert(h.id, None);
            if !path.is_empty() {
                by_key.entry(path).or_default().push(h.id);
            }
        }
    }
    if !by_key.is_empty() {
        match dataset {
            Some((input, format)) => extract_from_dataset(storage, input, format, &mut by_key, out, &mut copied)?,
            None => tracing::warn!(
                missing = by_key.len(),
                "some image_path values are not local files (webdataset/parquet keys): pass --input_dataset to \
                 extract them"
            ),
        }
    }
    Ok(copied)
}

fn unique_target(out: &Path, id: i64, name: &str) -> PathBuf {
    let target = out.join(name);
    if target.exists() {
        out.join(format!("{id}_{name}"))
    } else {
        target
    }
}

/// Streams the dataset once and writes the images whose key is wanted.
fn extract_from_dataset(
    storage: &Storage,
    input: &str,
    format: InputFormat,
    wanted: &mut HashMap<String, Vec<i64>>,
    out: &Path,
    copied: &mut CopiedImages,
) -> Result<()> {
    let options = ReadOptions {
        enable_image: true,
        enable_text: false,
        enable_metadata: false,
        image_key: "jpg".into(),
        caption_key: "txt".into(),
        max_sample_bytes: crate::dataset::DEFAULT_MAX_SAMPLE_BYTES,
    };
    let plan = DatasetPlan::discover(storage, input, format, options, None)?;
    let mut failure = None;
    read_units(storage, &plan.units, &plan.options, None, |ev| {
        if let ReadEvent::Sample(s) = ev {
            if let (Some(ids), Some(image)) = (wanted.remove(&s.image_path), s.image.as_ref()) {
                for id in ids {
                    let name = format!("{}.jpg", s.image_path.replace('/', "_"));
                    let target = unique_target(out, id, &name);
                    if let Err(e) = std::fs::write(&target, image) {
                        failure = Some(DataError::io(target.display())(e));
                        return false;
                    }
                    copied.insert(id, Some(target));
                }
            }
        }
        !wanted.is_empty()
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if !wanted.is_empty() {
        tracing::warn!(missing = wanted.len(), input, "some images were not found in --input_dataset");
    }
    Ok(())
}

/// Writes `results.parquet` at `target`: id, similarity, output_path, then every metadata column.
pub fn write_results(storage: &Storage, hits: &[Hit], copied: &CopiedImages, target: &Path) -> Result<()> {
    let keys: BTreeSet<&String> = hits.iter().flat_map(|h| h.metadata.keys()).collect();
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("similarity", DataType::Float32, false),
        Field::new("output_path", DataType::Utf8, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(hits.iter().map(|h| h.id).collect::<Vec<_>>())),
        Arc::new(Float32Array::from(hits.iter().map(|h| h.similarity).collect::<Vec<_>>())),
        Arc::new(StringArray::from(
            hits.iter()
                .map(|h| copied.get(&h.id).cloned().flatten().map(|p| p.display().to_string()))
                .collect::<Vec<_>>(),
        )),
    ];
    for key in keys {
        let values: Vec<Option<&Value>> = hits.iter().map(|h| h.metadata.get(key.as_str())).collect();
        let (dtype, array) = json_column(&values);
        fields.push(Field::new(key.as_str(), dtype, true));
        columns.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| DataError::format(target.display(), e))?;
    crate::metadata::write_parquet(storage, &Location::Local(target.to_path_buf()), &batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn local_images_are_copied_and_missing_keys_reported_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a.jpg");
        std::fs::write(&image, b"jpeg").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let hit = |id, path: &str| Hit {
            id,
            similarity: 0.5,
            metadata: json!({ "image_path": path }).as_object().unwrap().clone(),
        };
        let hits = [hit(1, image.to_str().unwrap()), hit(2, image.to_str().unwrap()), hit(3, "shard/key")];
        let storage = Storage::from_env();
        let copied = copy_images(&storage, &hits, &out, None).unwrap();
        assert_eq!(copied[&1], Some(out.join("a.jpg")));
        assert_eq!(copied[&2], Some(out.join("2_a.jpg")), "a second copy does not overwrite the first");
        assert_eq!(copied[&3], None);
        write_results(&storage, &hits, &copied, &out.join("results.parquet")).unwrap();
        assert!(out.join("results.parquet").metadata().unwrap().len() > 0);
    }
}
