//! One offline query against an index folder (`clip-retrieval filter`): embed a caption or an image file with the
//! model the index was built with, search (top k or every result above a threshold), and attach metadata rows.

use crate::error::{Result, SearchError};
use clip_data::extract::Hit;
use clip_index::{open_row_store, LoadedIndex, Modality};
use clip_model::ClipModel;
use std::path::Path;

/// What to look for.
#[derive(Debug, Clone, Copy)]
pub enum FilterQuery<'a> {
    /// A caption.
    Text(&'a str),
    /// The path of an image file.
    Image(&'a Path),
}

impl<'a> FilterQuery<'a> {
    /// `query` as an image when `as_image` says so (`None`: when it names an existing file), else as text.
    pub fn read(query: &'a str, as_image: Option<bool>) -> Self {
        if as_image.unwrap_or_else(|| Path::new(query).is_file()) {
            Self::Image(Path::new(query))
        } else {
            Self::Text(query)
        }
    }
}

/// How many results.
#[derive(Debug, Clone, Copy)]
pub enum FilterLimit {
    /// The `k` nearest.
    Top(usize),
    /// Every result with similarity >= the threshold (range search).
    Threshold(f32),
}

/// Searches the `modality` index of `folder` for `query`; an empty answer is an error saying what to change.
pub fn search_folder(
    model: &ClipModel,
    folder: &Path,
    modality: Modality,
    query: FilterQuery<'_>,
    limit: FilterLimit,
) -> Result<Vec<Hit>> {
    let loaded = LoadedIndex::open(folder, modality, true)?;
    let store = open_row_store(folder)?;
    if model.embed_dim() != loaded.index.dim() {
        return Err(SearchError::Config(format!(
            "the model's embeddings have {} dimensions but {} holds {}-dimensional vectors: use the model the index \
             was built with (--clip_model)",
            model.embed_dim(),
            folder.join(modality.index_file()).display(),
            loaded.index.dim()
        )));
    }
    let embedding = embed(model, query)?;
    let found: Vec<(i64, f32)> = match limit {
        FilterLimit::Threshold(t) => loaded.range_search(&embedding, t)?,
        FilterLimit::Top(k) => loaded.search(&embedding, k)?.row(0).collect(),
    };
    if found.is_empty() {
        let shown = match query {
            FilterQuery::Text(t) => t.to_string(),
            FilterQuery::Image(p) => p.display().to_string(),
        };
        return Err(SearchError::Config(match limit {
            FilterLimit::Threshold(t) => format!("no result with similarity >= {t} for {shown:?}: lower --threshold"),
            FilterLimit::Top(_) => format!("no result for {shown:?}: the index is empty"),
        }));
    }
    let ids: Vec<u64> = found.iter().map(|(id, _)| *id as u64).collect();
    let rows = match &store {
        Some(s) => s.get(&ids, None)?,
        None => vec![None; ids.len()],
    };
    Ok(found
        .iter()
        .zip(rows)
        .map(|(&(id, similarity), row)| Hit { id, similarity, metadata: row.unwrap_or_default() })
        .collect())
}

fn embed(model: &ClipModel, query: FilterQuery<'_>) -> Result<Vec<f32>> {
    let embeddings = match query {
        FilterQuery::Image(path) => {
            let bytes = std::fs::read(path).map_err(clip_data::DataError::io(path.display()))?;
            let pixels = model.preprocess_image(&bytes)?;
            model.encode_images(&pixels)?
        }
        FilterQuery::Text(text) => model.encode_texts(&[text])?,
    };
    embeddings.into_iter().next().ok_or_else(|| SearchError::Internal("the model returned no embedding".into()))
}
