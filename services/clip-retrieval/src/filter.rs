//! `clip-retrieval filter`: one query against an index folder (clip-search), the matching images copied out of
//! the dataset and `results.parquet` written (clip-data).

use crate::convert;
use anyhow::{Context, Result};
use clip_cli::{FilterArgs, QueryType};
use clip_data::Storage;
use clip_search::filter::{FilterLimit, FilterQuery};
use std::path::Path;

/// Runs the subcommand.
pub fn run(storage: &Storage, a: FilterArgs) -> Result<()> {
    let model = convert::load_model(storage, &a.model)?;
    let as_image = match a.query_type {
        QueryType::Auto => None,
        QueryType::Text => Some(false),
        QueryType::Image => Some(true),
    };
    let limit = a.threshold.map(FilterLimit::Threshold).unwrap_or(FilterLimit::Top(a.num_results));
    let query = FilterQuery::read(&a.query, as_image);
    let folder = Path::new(&a.indice_folder);
    let hits = clip_search::filter::search_folder(&model, folder, convert::modality(a.modality), query, limit)?;
    let out = Path::new(&a.output_folder);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let dataset = a.input_dataset.as_deref().map(|d| (d, convert::input_format(a.input_format)));
    let copied = clip_data::extract::copy_images(storage, &hits, out, dataset)?;
    let results = out.join("results.parquet");
    clip_data::extract::write_results(storage, &hits, &copied, &results)?;
    println!(
        "{} results for {:?}; {} images copied to {}; results in {}",
        hits.len(),
        a.query,
        copied.values().filter(|p| p.is_some()).count(),
        out.display(),
        results.display()
    );
    Ok(())
}
