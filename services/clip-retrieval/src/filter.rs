//! `clip-retrieval filter`: one query against an index folder; matched images copied out and `results.parquet`
//! written (id, similarity, metadata columns).

use crate::args::FilterArgs;
use anyhow::{bail, Context, Result};
use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use clip_data::dataset::{read_units, DatasetPlan, ReadEvent, ReadOptions};
use clip_data::{InputFormat, Location};
use clip_index::{open_row_store, LoadedIndex, Modality};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One result: index id, similarity and its metadata row.
struct Hit {
    id: i64,
    similarity: f32,
    metadata: Map<String, Value>,
}

/// Runs the filter command.
pub fn filter(a: FilterArgs) -> Result<()> {
    let modality = match a.modality.as_str() {
        "image" => Modality::Image,
        "text" => Modality::Text,
        other => bail!("--modality {other:?}: expected image or text"),
    };
    let folder = PathBuf::from(&a.indice_folder);
    let loaded = LoadedIndex::open(&folder, modality, true)?;
    let store = open_row_store(&folder)?;
    let model = crate::commands::load_model(&a.model)?;
    if model.embed_dim() != loaded.index.dim() {
        bail!(
            "the model's embeddings have {} dimensions but {} holds {}-dimensional vectors: use the model the index \
             was built with (--clip_model)",
            model.embed_dim(),
            folder.join(modality.index_file()).display(),
            loaded.index.dim()
        );
    }
    let query = embed_query(&model, &a.query, &a.query_type)?;
    let found: Vec<(i64, f32)> = match a.threshold {
        Some(t) => loaded.index.range_search(&query, t)?.into_iter().next().unwrap_or_default(),
        None => loaded.index.search(&query, a.num_results)?.row(0).collect(),
    };
    if found.is_empty() {
        match a.threshold {
            Some(t) => bail!("no result with similarity >= {t} for {:?}: lower --threshold", a.query),
            None => bail!("no result for {:?}: the index is empty", a.query),
        }
    }
    let ids: Vec<u64> = found.iter().map(|(id, _)| *id as u64).collect();
    let rows = match &store {
        Some(s) => s.get(&ids, None)?,
        None => vec![None; ids.len()],
    };
    let hits: Vec<Hit> = found
        .iter()
        .zip(rows)
        .map(|(&(id, similarity), row)| Hit { id, similarity, metadata: row.unwrap_or_default() })
        .collect();
    let out = PathBuf::from(&a.output_folder);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let copied = copy_images(&hits, &out, a.input_dataset.as_deref(), &a.input_format)?;
    write_results(&hits, &copied, &out.join("results.parquet"))?;
    println!(
        "{} results for {:?}; {} images copied to {}; results in {}",
        hits.len(),
        a.query,
        copied.values().filter(|p| p.is_some()).count(),
        out.display(),
        out.join("results.parquet").display()
    );
    Ok(())
}

fn embed_query(model: &clip_model::ClipModel, query: &str, query_type: &str) -> Result<Vec<f32>> {
    let as_image = match query_type {
        "image" => true,
        "text" => false,
        "auto" => Path::new(query).is_file(),
        other => bail!("--query_type {other:?}: expected auto, text or image"),
    };
    if as_image {
        let bytes = std::fs::read(query).with_context(|| format!("reading query image {query}"))?;
        let pixels = model.preprocess_image(&bytes).with_context(|| format!("query image {query}"))?;
        Ok(model.encode_images(&pixels)?.into_iter().next().context("the model returned no embedding")?)
    } else {
        Ok(model.encode_texts(&[query])?.into_iter().next().context("the model returned no embedding")?)
    }
}

/// Copies each hit's image into `out`; returns the file written per id (None when the image could not be found).
fn copy_images(
    hits: &[Hit],
    out: &Path,
    input_dataset: Option<&str>,
    input_format: &str,
) -> Result<HashMap<i64, Option<PathBuf>>> {
    let mut copied = HashMap::new();
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    for h in hits {
        let path = h.metadata.get("image_path").and_then(Value::as_str).unwrap_or_default().to_string();
        if !path.is_empty() && Path::new(&path).is_file() {
            let name = Path::new(&path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let target = unique_target(out, h.id, &name);
            std::fs::copy(&path, &target).with_context(|| format!("copying {path}"))?;
            copied.insert(h.id, Some(target));
        } else {
            copied.insert(h.id, None);
            if !path.is_empty() {
                by_key.entry(path).or_default().push(h.id);
            }
        }
    }
    if !by_key.is_empty() {
        match input_dataset {
            Some(input) => extract_from_dataset(input, input_format, &mut by_key, out, &mut copied)?,
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
    input: &str,
    format: &str,
    wanted: &mut HashMap<String, Vec<i64>>,
    out: &Path,
    copied: &mut HashMap<i64, Option<PathBuf>>,
) -> Result<()> {
    let format: InputFormat = format.parse().map_err(anyhow::Error::msg)?;
    let options = ReadOptions {
        enable_image: true,
        enable_text: false,
        enable_metadata: false,
        image_key: "jpg".into(),
        caption_key: "txt".into(),
    };
    let plan = DatasetPlan::discover(input, format, options, None)?;
    let mut failure = None;
    read_units(&plan.units, &plan.options, None, |ev| {
        if let ReadEvent::Sample(s) = ev {
            if let (Some(ids), Some(image)) = (wanted.remove(&s.image_path), s.image.as_ref()) {
                for id in ids {
                    let name = format!("{}.jpg", s.image_path.replace('/', "_"));
                    let target = unique_target(out, id, &name);
                    if let Err(e) = std::fs::write(&target, image) {
                        failure = Some(anyhow::anyhow!("{}: {e}", target.display()));
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

/// `results.parquet`: id, similarity, copied file, then every metadata column (numbers and strings kept typed).
fn write_results(hits: &[Hit], copied: &HashMap<i64, Option<PathBuf>>, target: &Path) -> Result<()> {
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
        let (dtype, array): (DataType, ArrayRef) = if values.iter().flatten().all(|v| v.is_i64()) {
            (
                DataType::Int64,
                Arc::new(Int64Array::from(values.iter().map(|v| v.and_then(Value::as_i64)).collect::<Vec<_>>())),
            )
        } else if values.iter().flatten().all(|v| v.is_number()) {
            let floats: Vec<Option<f64>> = values.iter().map(|v| v.and_then(Value::as_f64)).collect();
            (DataType::Float64, Arc::new(arrow::array::Float64Array::from(floats)))
        } else {
            let text: Vec<Option<String>> = values
                .iter()
                .map(|v| v.map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
                .collect();
            (DataType::Utf8, Arc::new(StringArray::from(text)))
        };
        fields.push(Field::new(key.as_str(), dtype, true));
        columns.push(array);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    clip_data::metadata::write_parquet(&Location::Local(target.to_path_buf()), &batch)?;
    Ok(())
}
