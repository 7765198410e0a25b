//! The indices a server loads: clip-retrieval's `indices_paths.json` (name -> folder, or name -> per-index options)
//! merged with the server-wide defaults given on the command line.

use crate::error::{Result, SearchError};
use serde_json::Value;
use std::path::Path;

/// clip-retrieval's default `columns_to_return`.
pub const DEFAULT_COLUMNS: [&str; 4] = ["url", "image_path", "caption", "NSFW"];

/// Keys clip-retrieval accepts that have no effect here (its HDF5/IVF-reordering/JIT/arrow/mclip machinery).
const IGNORED_KEYS: [&str; 5] =
    ["enable_hdf5", "reorder_metadata_by_ivf_index", "use_jit", "use_arrow", "enable_mclip_option"];

/// Options of one index; the same names as clip-retrieval's per-index options, plus where filter files live.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexOptions {
    /// Folder made by `clip-retrieval index` (local or s3://).
    pub indice_folder: String,
    /// Model folder (local or s3://); `None` is the shipped model.
    pub clip_model: Option<String>,
    /// Map the index file instead of reading it into memory.
    pub enable_faiss_memory_mapping: bool,
    /// Metadata columns returned with results (only those the index has).
    pub columns_to_return: Vec<String>,
    /// Load the safety model (from `safety_model`, else `<model>/filters/safety.onnx`).
    pub provide_safety_model: bool,
    /// Load the violence prompts (from `violence_detector`, else `<model>/filters/violence_detection.npy`).
    pub provide_violence_detector: bool,
    /// Load the aesthetic embeddings (from `aesthetic_embeddings`, else `<model>/filters/aesthetic/`).
    pub provide_aesthetic_embeddings: bool,
    /// ONNX classifier over embeddings whose first output column is the NSFW probability.
    pub safety_model: Option<String>,
    /// `.npy` of prompt embeddings `[k, dim]`; a result whose best prompt is row 1 counts as violent.
    pub violence_detector: Option<String>,
    /// Folder of `rating0.npy` .. `rating9.npy`, one embedding each.
    pub aesthetic_embeddings: Option<String>,
    /// Local folders result images (`image_path`) may be read from; `None` is the folder recorded in the index's
    /// report at build time (none recorded: results carry no `image`).
    pub image_roots: Option<Vec<String>>,
    /// The index is served by these `back` processes (base URLs, in id order) instead of a local folder: shard
    /// `i`'s ids are shifted by the rows of the shards before it, as `index_combiner` numbers a merge of them.
    pub shards: Vec<String>,
    /// With shards: a shard that fails or times out is left out of the answer (named in a response header)
    /// instead of failing the request with a 503; a request's `allow_partial_results` overrides it.
    pub allow_partial_results: bool,
    /// Refuse a folder without its completion marker (`_COMPLETE`, written last by `index` and `index_combiner`):
    /// a build still writing it, or one that failed half way, is never served.
    pub require_completion_marker: bool,
    /// The precision the index's model runs at for queries (`"precision": "int8"` in the indices file: the model
    /// folder's `model.int8.onnx` towers; check them with `clip-retrieval evaluate` first).
    pub precision: clip_model::TowerPrecisions,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            indice_folder: String::new(),
            clip_model: None,
            enable_faiss_memory_mapping: false,
            columns_to_return: DEFAULT_COLUMNS.iter().map(|s| s.to_string()).collect(),
            provide_safety_model: false,
            provide_violence_detector: false,
            // clip-retrieval's back defaults to providing aesthetic embeddings.
            provide_aesthetic_embeddings: true,
            safety_model: None,
            violence_detector: None,
            aesthetic_embeddings: None,
            image_roots: None,
            shards: Vec::new(),
            allow_partial_results: false,
            require_completion_marker: false,
            precision: Default::default(),
        }
    }
}

/// Reads `indices_paths.json`: an object of name -> folder string or name -> options object, in file order.
pub fn read_indices_paths(path: &Path, defaults: &IndexOptions) -> Result<Vec<(String, IndexOptions)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SearchError::Config(format!("reading indices paths {}: {e}", path.display())))?;
    parse_indices_paths(&text, defaults).map_err(|e| SearchError::Config(format!("{}: {e}", path.display())))
}

/// Parses the text of an `indices_paths.json`; errors name the index and key.
pub fn parse_indices_paths(
    text: &str,
    defaults: &IndexOptions,
) -> std::result::Result<Vec<(String, IndexOptions)>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(entries) = value else {
        return Err("expected an object of index name -> folder".into());
    };
    if entries.is_empty() {
        return Err("no index configured".into());
    }
    entries.into_iter().map(|(name, v)| index_options(&name, v, defaults).map(|o| (name, o))).collect()
}

fn index_options(name: &str, value: Value, defaults: &IndexOptions) -> std::result::Result<IndexOptions, String> {
    let mut o = defaults.clone();
    match value {
        Value::String(folder) => o.indice_folder = folder,
        Value::Object(map) => {
            for (key, v) in map {
                apply_key(&mut o, &key, v).map_err(|e| format!("index {name:?}, key {key:?}: {e}"))?;
            }
        }
        other => return Err(format!("index {name:?}: expected a folder string or an options object, got {other}")),
    }
    match (o.indice_folder.is_empty(), o.shards.is_empty()) {
        (true, true) => return Err(format!("index {name:?}: no indice_folder (or shards)")),
        (false, false) => return Err(format!("index {name:?}: give indice_folder or shards, not both")),
        _ => {}
    }
    Ok(o)
}

fn apply_key(o: &mut IndexOptions, key: &str, v: Value) -> std::result::Result<(), String> {
    let string = |v: Value| match v {
        Value::String(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        other => Err(format!("expected a string, got {other}")),
    };
    let boolean = |v: Value| v.as_bool().ok_or_else(|| format!("expected true or false, got {v}"));
    match key {
        "indice_folder" => o.indice_folder = string(v)?.unwrap_or_default(),
        "clip_model" => o.clip_model = string(v)?,
        "enable_faiss_memory_mapping" => o.enable_faiss_memory_mapping = boolean(v)?,
        "columns_to_return" => {
            let Value::Array(items) = v else { return Err(format!("expected a list of column names, got {v}")) };
            o.columns_to_return = items
                .into_iter()
                .map(|c| c.as_str().map(str::to_string).ok_or_else(|| format!("column {c} is not a string")))
                .collect::<std::result::Result<_, _>>()?;
        }
        "require_completion_marker" => o.require_completion_marker = boolean(v)?,
        "precision" => {
            let p = match v.as_str() {
                Some("fp32") => clip_model::Precision::Fp32,
                Some("int8") => clip_model::Precision::Int8,
                _ => return Err(format!("expected \"fp32\" or \"int8\", got {v}")),
            };
            o.precision = clip_model::TowerPrecisions::both(p);
        }
        "provide_safety_model" => o.provide_safety_model = boolean(v)?,
        "provide_violence_detector" => o.provide_violence_detector = boolean(v)?,
        "provide_aesthetic_embeddings" => o.provide_aesthetic_embeddings = boolean(v)?,
        "safety_model" => o.safety_model = string(v)?,
        "violence_detector" => o.violence_detector = string(v)?,
        "aesthetic_embeddings" => o.aesthetic_embeddings = string(v)?,
        "image_roots" => {
            let Value::Array(items) = v else { return Err(format!("expected a list of folders, got {v}")) };
            o.image_roots = Some(
                items
                    .into_iter()
                    .map(|c| c.as_str().map(str::to_string).ok_or_else(|| format!("folder {c} is not a string")))
                    .collect::<std::result::Result<_, _>>()?,
            );
        }
        "shards" => {
            let Value::Array(items) = v else { return Err(format!("expected a list of shard URLs, got {v}")) };
            o.shards = items
                .into_iter()
                .map(|u| match u.as_str() {
                    Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                        Ok(url.trim_end_matches('/').to_string())
                    }
                    _ => Err(format!("shard {u} is not an http:// or https:// URL of a `back`")),
                })
                .collect::<std::result::Result<_, _>>()?;
            if o.shards.is_empty() {
                return Err("an empty list of shards".into());
            }
        }
        "allow_partial_results" => o.allow_partial_results = boolean(v)?,
        k if IGNORED_KEYS.contains(&k) => {
            tracing::warn!(key = k, "indices_paths option accepted for compatibility; it has no effect here")
        }
        _ => {
            return Err(format!(
                "unknown option (known: indice_folder, clip_model, enable_faiss_memory_mapping, columns_to_return, \
                 provide_safety_model, provide_violence_detector, provide_aesthetic_embeddings, safety_model, \
                 violence_detector, aesthetic_embeddings, image_roots, shards, allow_partial_results, \
                 require_completion_marker, precision, {})",
                IGNORED_KEYS.join(", ")
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_objects_keep_file_order_and_defaults() {
        let text = r#"{"b": "/data/b", "a": {"indice_folder": "/data/a", "columns_to_return": ["caption"],
                       "enable_faiss_memory_mapping": true, "use_jit": true}}"#;
        let parsed = parse_indices_paths(text, &IndexOptions::default()).unwrap();
        assert_eq!(parsed[0].0, "b");
        assert_eq!(parsed[0].1.indice_folder, "/data/b");
        assert_eq!(parsed[0].1.columns_to_return.len(), 4);
        assert_eq!(parsed[1].0, "a");
        assert!(parsed[1].1.enable_faiss_memory_mapping);
        assert_eq!(parsed[1].1.columns_to_return, vec!["caption".to_string()]);
    }

    #[test]
    fn mistakes_name_index_and_key() {
        let d = IndexOptions::default();
        let e = parse_indices_paths(r#"{"x": {"indice_folders": "/a"}}"#, &d).unwrap_err();
        assert!(e.contains("\"x\"") && e.contains("indice_folders") && e.contains("unknown option"), "{e}");
        let e = parse_indices_paths(r#"{"x": {"enable_faiss_memory_mapping": "yes", "indice_folder": "/a"}}"#, &d)
            .unwrap_err();
        assert!(e.contains("enable_faiss_memory_mapping"), "{e}");
        assert!(parse_indices_paths(r#"{"x": 3}"#, &d).unwrap_err().contains("folder string"));
        assert!(parse_indices_paths(r#"{}"#, &d).unwrap_err().contains("no index"));
        assert!(parse_indices_paths(r#"{"x": {}}"#, &d).unwrap_err().contains("no indice_folder"));
        let e = parse_indices_paths(r#"{"x": {"shards": ["laion-0:1234"]}}"#, &d).unwrap_err();
        assert!(e.contains("\"x\"") && e.contains("shards") && e.contains("laion-0:1234"), "{e}");
        let e = parse_indices_paths(r#"{"x": {"shards": ["http://a"], "indice_folder": "/a"}}"#, &d).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        assert!(parse_indices_paths(r#"{"x": {"shards": []}}"#, &d).unwrap_err().contains("empty"));
    }

    #[test]
    fn an_index_may_be_a_list_of_shards() {
        let text = r#"{"laion": {"shards": ["http://laion-0:1234/", "http://laion-1:1234"],
                                  "allow_partial_results": true}}"#;
        let parsed = parse_indices_paths(text, &IndexOptions::default()).unwrap();
        assert_eq!(parsed[0].1.shards, ["http://laion-0:1234", "http://laion-1:1234"]);
        assert!(parsed[0].1.allow_partial_results);
        assert!(parsed[0].1.indice_folder.is_empty());
    }
}
