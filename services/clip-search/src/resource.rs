//! One loaded index of a server: its faiss indices (image and/or text), metadata rows, model and filters, built
//! from an [`IndexOptions`] entry of `indices_paths.json`.

use crate::config::IndexOptions;
use crate::encoder::{EncoderLimits, QueryEncoder};
use crate::error::{Result, SearchError};
use crate::filters::{AestheticEmbeddings, SafetyModel, ViolenceDetector};
use crate::result_image::ImageRoots;
use crate::shards::{ShardOptions, ShardSet};
use clip_data::{Location, Storage};
use clip_index::{open_or_build_row_store, LoadedIndex, Modality, RowStore};
use clip_model::TowerPrecisions;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything a query against one named index needs.
pub struct IndexResource {
    /// The name clients pass as `indice_name`.
    pub name: String,
    /// The local folder (s3:// folders are copied to the cache first).
    pub folder: PathBuf,
    /// `image.index` (with its re-rank vectors), when the folder has one.
    pub image: Option<LoadedIndex>,
    /// `text.index` (with its re-rank vectors), when the folder has one.
    pub text: Option<LoadedIndex>,
    /// `metadata.arrow`, when the folder has one.
    pub rows: Option<RowStore>,
    /// Columns returned with results: the configured ones the row store has.
    pub columns: Vec<String>,
    /// The query encoder of this index's model (shared between indices of the same model).
    pub encoder: Arc<QueryEncoder>,
    /// The local folder of that model.
    pub model_folder: PathBuf,
    /// Loaded violence prompts.
    pub violence: Option<ViolenceDetector>,
    /// Loaded safety classifier.
    pub safety: Option<SafetyModel>,
    /// Loaded aesthetic embeddings.
    pub aesthetic: Option<AestheticEmbeddings>,
    /// Where result images may be read from.
    pub image_roots: ImageRoots,
    /// Limits on decoding a result image that is not a JPEG (the query images' limits).
    pub image_limits: clip_model::ImageLimits,
    /// A version string of the loaded files (the newest modification time of the index, report and metadata
    /// files, in Unix milliseconds), for `/readyz` and `/reload`.
    pub version: String,
    /// The shards serving this index, when it is sharded (then `image`, `text` and `rows` are `None`: the shards
    /// hold them).
    pub shards: Option<ShardSet>,
}

/// Models loaded so far, keyed by local folder and precision, so indices of one model share its encoder.
#[derive(Default)]
pub struct ModelCache {
    loaded: HashMap<(PathBuf, TowerPrecisions), Arc<QueryEncoder>>,
}

impl ModelCache {
    /// Reuses `encoder` for the model in `folder` (a reload keeps the models it has).
    pub fn keep(&mut self, folder: PathBuf, encoder: Arc<QueryEncoder>) {
        let precisions = encoder.model().precisions;
        self.loaded.insert((folder, precisions), encoder);
    }

    fn get(
        &mut self,
        folder: PathBuf,
        precisions: TowerPrecisions,
        limits: EncoderLimits,
    ) -> Result<Arc<QueryEncoder>> {
        let key = (folder, precisions);
        if let Some(e) = self.loaded.get(&key) {
            return Ok(e.clone());
        }
        let options = clip_model::SessionOptions::default();
        let mut model = clip_model::ClipModel::load_at(&key.0, options, precisions)?;
        model.image_limits = limits.image;
        tracing::info!(
            model = %key.0.display(),
            image_tower = %model.image_file.display(),
            text_tower = %model.text_file.display(),
            dim = model.embed_dim(),
            "model loaded"
        );
        let encoder = Arc::new(QueryEncoder::new(model, limits));
        self.loaded.insert(key, encoder.clone());
        Ok(encoder)
    }
}

impl IndexResource {
    /// Loads one index: copies an s3:// folder into `cache`, opens the indices (mapped when configured), the row
    /// store, the model and the configured filters. Errors name the file at fault; the caller adds the index name.
    pub fn load(
        storage: &Storage,
        name: &str,
        o: &IndexOptions,
        cache: &Path,
        models: &mut ModelCache,
        limits: EncoderLimits,
        shard_options: &ShardOptions,
    ) -> Result<Self> {
        if !o.shards.is_empty() {
            return Self::sharded(storage, name, o, models, limits, shard_options);
        }
        if o.require_completion_marker
            && !clip_index::is_complete(storage, &clip_data::Location::parse(&o.indice_folder))?
        {
            return Err(SearchError::Config(format!(
                "index {name:?}: {} has no {} marker: its build is still writing it or failed, so it is not served",
                o.indice_folder,
                clip_index::COMPLETION_MARKER
            )));
        }
        let folder = local_folder(storage, &o.indice_folder, cache)?;
        let open = |modality| open_index(&folder, modality, o.enable_faiss_memory_mapping);
        let image = open(Modality::Image)?;
        let text = open(Modality::Text)?;
        let recorded =
            [&image, &text].into_iter().flatten().filter_map(|l| l.report.as_ref()).flat_map(|r| r.image_roots.clone());
        let image_roots = ImageRoots::resolve(&o.image_roots.clone().unwrap_or_else(|| recorded.collect()));
        if image_roots.folders().is_empty() {
            tracing::info!(index = name, "no image roots: results carry no inline image (set --image_roots)");
        }
        let dim = match (&image, &text) {
            (None, None) => {
                return Err(SearchError::Config(format!(
                    "{} has neither image.index nor text.index (build it with `clip-retrieval index`)",
                    folder.display()
                )))
            }
            (Some(i), _) => i.dim(),
            (None, Some(t)) => t.dim(),
        };
        let rows = open_or_build_row_store(storage, &folder, &row_store_cache(cache, &folder))?;
        check_row_counts(&folder, &image, &text, &rows)?;
        if rows.is_none() {
            tracing::warn!(index = name, "no metadata.arrow: results carry only id and similarity");
        }
        let available = rows.as_ref().map(RowStore::columns).unwrap_or_default();
        let columns = o.columns_to_return.iter().filter(|c| available.contains(c)).cloned().collect();
        let model_folder = clip_data::model_source::resolve(storage, o.clip_model.as_deref(), None)?;
        let encoder = models.get(model_folder.clone(), o.precision, limits)?;
        if encoder.embed_dim() != dim {
            return Err(SearchError::Config(format!(
                "the model {} makes {}-dimensional embeddings but the index holds {dim}: set clip_model to the \
                 model the index was built with",
                model_folder.display(),
                encoder.embed_dim()
            )));
        }
        let (violence, safety, aesthetic) = load_filters(name, o, &model_folder, dim)?;
        let version = version_of(&folder);
        tracing::info!(
            index = name,
            folder = %folder.display(),
            image = image.as_ref().map(|i| i.len()),
            text = text.as_ref().map(|i| i.len()),
            rows = rows.as_ref().map(|r| r.len()),
            violence = violence.is_some(),
            safety = safety.is_some(),
            aesthetic = aesthetic.is_some(),
            "index loaded"
        );
        Ok(Self {
            name: name.into(),
            folder,
            image,
            text,
            rows,
            columns,
            encoder,
            model_folder,
            violence,
            safety,
            aesthetic,
            image_roots,
            image_limits: limits.image,
            version,
            shards: None,
        })
    }

    /// An index served by shards: the model and filters load here (the front encodes and filters), the vectors
    /// and rows stay on the shards. Nothing is asked of the shards until a query or readiness probe.
    fn sharded(
        storage: &Storage,
        name: &str,
        o: &IndexOptions,
        models: &mut ModelCache,
        limits: EncoderLimits,
        shard_options: &ShardOptions,
    ) -> Result<Self> {
        let model_folder = clip_data::model_source::resolve(storage, o.clip_model.as_deref(), None)?;
        let encoder = models.get(model_folder.clone(), o.precision, limits)?;
        let dim = encoder.embed_dim();
        let (violence, safety, aesthetic) = load_filters(name, o, &model_folder, dim)?;
        let shards = ShardSet::new(name, o.shards.clone(), o.allow_partial_results, shard_options.clone())?;
        tracing::info!(index = name, shards = %o.shards.join(","), "sharded index configured");
        Ok(Self {
            name: name.into(),
            folder: PathBuf::new(),
            image: None,
            text: None,
            rows: None,
            columns: o.columns_to_return.clone(),
            encoder,
            model_folder,
            violence,
            safety,
            aesthetic,
            image_roots: ImageRoots::resolve(&[]),
            image_limits: limits.image,
            version: String::new(),
            shards: Some(shards),
        })
    }

    /// The index serving `modality`, or a request error when the folder has none.
    pub fn index(&self, modality: Modality) -> Result<&LoadedIndex> {
        let found = match modality {
            Modality::Image => self.image.as_ref(),
            Modality::Text => self.text.as_ref(),
        };
        found.ok_or_else(|| {
            SearchError::bad("modality", format!("index {:?} has no {} index", self.name, modality.name()))
        })
    }
}

/// The violence, safety and aesthetic filters the options ask for, from their paths or the model's `filters/`.
type Filters = (Option<ViolenceDetector>, Option<SafetyModel>, Option<AestheticEmbeddings>);

fn load_filters(name: &str, o: &IndexOptions, model_folder: &Path, dim: usize) -> Result<Filters> {
    let filters = model_folder.join("filters");
    let violence = optional_filter(
        name,
        "violence detector",
        o.provide_violence_detector,
        &o.violence_detector,
        &filters.join("violence_detection.npy"),
        |p| ViolenceDetector::load(p, dim),
    )?;
    let safety = optional_filter(
        name,
        "safety model",
        o.provide_safety_model,
        &o.safety_model,
        &filters.join("safety.onnx"),
        |p| SafetyModel::load(p, dim),
    )?;
    let aesthetic = optional_filter(
        name,
        "aesthetic embeddings",
        o.provide_aesthetic_embeddings,
        &o.aesthetic_embeddings,
        &filters.join("aesthetic"),
        |p| AestheticEmbeddings::load(p, dim),
    )?;
    Ok((violence, safety, aesthetic))
}

/// Ids are row numbers: the indices and the row store of one folder must hold the same number of rows, or results
/// would carry another sample's metadata (or none).
fn check_row_counts(
    folder: &Path,
    image: &Option<LoadedIndex>,
    text: &Option<LoadedIndex>,
    rows: &Option<RowStore>,
) -> Result<()> {
    let counts = [
        ("image.index", image.as_ref().map(LoadedIndex::len)),
        ("text.index", text.as_ref().map(LoadedIndex::len)),
        ("metadata.arrow", rows.as_ref().map(RowStore::len)),
    ];
    let present: Vec<(&str, u64)> = counts.iter().filter_map(|(f, n)| n.map(|n| (*f, n))).collect();
    if present.windows(2).all(|w| w[0].1 == w[1].1) {
        return Ok(());
    }
    let listed: Vec<String> = present.iter().map(|(f, n)| format!("{f} has {n}")).collect();
    Err(SearchError::Config(format!(
        "{}: row counts differ ({}): ids would point at the wrong metadata; rebuild the folder with \
         `clip-retrieval index`",
        folder.display(),
        listed.join(", ")
    )))
}

/// A local folder for `spec`: itself, or an s3:// folder copied under `cache`.
fn local_folder(storage: &Storage, spec: &str, cache: &Path) -> Result<PathBuf> {
    Ok(storage.materialize_folder(&Location::parse(spec), &cache.join("indices"))?)
}

/// Where the row store of a read-only folder goes: one cache folder per index folder path.
fn row_store_cache(cache: &Path, folder: &Path) -> PathBuf {
    let name: String =
        folder.display().to_string().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    cache.join("row-stores").join(name)
}

fn open_index(folder: &Path, modality: Modality, mmap: bool) -> Result<Option<LoadedIndex>> {
    if !folder.join(modality.index_file()).exists() {
        return Ok(None);
    }
    let mut loaded = LoadedIndex::open(folder, modality, mmap)?;
    // Dedup and the filters look at the stored vectors of results.
    loaded.prepare_reconstruct()?;
    Ok(Some(loaded))
}

/// Loads a filter from its configured path, else (when `provide`) from the model's `filters/` folder; a filter
/// asked for but absent is logged and left out, as requests for it are served without it.
fn optional_filter<T>(
    index: &str,
    what: &str,
    provide: bool,
    configured: &Option<String>,
    beside_model: &Path,
    load: impl FnOnce(&Path) -> Result<T>,
) -> Result<Option<T>> {
    if let Some(path) = configured {
        return load(Path::new(path)).map(Some);
    }
    if !provide {
        return Ok(None);
    }
    if beside_model.exists() {
        return load(beside_model).map(Some);
    }
    tracing::warn!(
        index,
        filter = what,
        looked_at = %beside_model.display(),
        "filter requested but no file configured; requests asking for it are served without it"
    );
    Ok(None)
}

fn version_of(folder: &Path) -> String {
    let stamp = |f: &str| std::fs::metadata(folder.join(f)).and_then(|m| m.modified()).ok();
    let newest = ["image.index", "text.index", "image.json", "text.json", "metadata.arrow"]
        .iter()
        .filter_map(|f| stamp(f))
        .max();
    newest
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis().to_string())
        .unwrap_or_default()
}
