//! The search engine: loaded indices and one query end to end (encode -> search -> filters -> metadata rows), with
//! the time of each stage reported so the HTTP layer can publish it.

use crate::config::IndexOptions;
use crate::encoder::EncoderLimits;
use crate::error::{Result, SearchError};
use crate::fetch::{FetchRules, ImageFetcher};
use crate::filters::{near_duplicates, normalize_rows};
use crate::resource::{IndexResource, ModelCache};
use clip_data::Storage;
use clip_index::Modality;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Where the query embedding comes from (clip-retrieval's precedence: text, then image, then image_url, then
/// embedding_input).
#[derive(Debug, Clone)]
pub enum QueryInput {
    /// A caption.
    Text(String),
    /// Encoded image bytes (decoded from the request's base64).
    Image(Vec<u8>),
    /// An image to download.
    ImageUrl(String),
    /// A ready embedding.
    Embedding(Vec<f32>),
}

/// A validated `/knn-service` request.
#[derive(Debug, Clone)]
pub struct KnnQuery {
    /// The query.
    pub input: QueryInput,
    /// Which index of the folder to search.
    pub modality: Modality,
    /// Results returned with their metadata.
    pub num_images: usize,
    /// Results returned in all (beyond `num_images`, ids and similarities only).
    pub num_result_ids: usize,
    /// `None` is the first loaded index.
    pub indice_name: Option<String>,
    /// Collapse near-duplicates.
    pub deduplicate: bool,
    /// Remove results the safety model flags.
    pub use_safety_model: bool,
    /// Remove results the violence detector flags.
    pub use_violence_detector: bool,
    /// `(score 0..=9, weight)` shift of the query toward an aesthetic rating.
    pub aesthetic: Option<(u8, f32)>,
    /// Multilingual CLIP was asked for (not available: the regular text tower answers).
    pub use_mclip: bool,
}

/// A stage of a query, for latency metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Downloading `image_url`.
    Download,
    /// Decoding and resizing the query image.
    ImagePreprocess,
    /// Waiting for and running the text tower.
    TextEncode,
    /// Waiting for and running the image tower.
    ImageEncode,
    /// The faiss search.
    Search,
    /// Dedup, violence and safety filtering (including reading the stored vectors).
    PostProcess,
    /// Reading metadata rows and result images.
    Metadata,
}

impl Stage {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::ImagePreprocess => "image_preprocess",
            Stage::TextEncode => "text_encode",
            Stage::ImageEncode => "image_encode",
            Stage::Search => "search",
            Stage::PostProcess => "post_process",
            Stage::Metadata => "metadata",
        }
    }
}

/// The answer to a knn query.
#[derive(Debug, Default)]
pub struct KnnAnswer {
    /// clip-retrieval's result objects: metadata columns (first `num_images`), `id`, `similarity`.
    pub results: Vec<Map<String, Value>>,
    /// Options asked for but not available on this index (served without them).
    pub skipped: Vec<&'static str>,
    /// Limits applied to the request, as `field=value`.
    pub capped: Vec<String>,
    /// Time per stage.
    pub stages: Vec<(Stage, Duration)>,
    /// `(tower, batch size)` of the encode that served this query.
    pub encode_batch: Option<(&'static str, usize)>,
}

/// Server-wide limits and pools.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Query encoder batching and queues.
    pub encoder: EncoderLimits,
    /// `image_url` rules.
    pub fetch: FetchRules,
    /// Cap on `num_images`.
    pub max_num_images: usize,
    /// Cap on `num_result_ids` (and on ids per `/metadata` request).
    pub max_num_result_ids: usize,
    /// Searches (with filtering and metadata) running at once on the blocking pool.
    pub search_threads: usize,
    /// Where s3:// index folders are copied.
    pub cache_folder: PathBuf,
}

impl Default for EngineOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            encoder: EncoderLimits::default(),
            fetch: FetchRules::default(),
            max_num_images: 1000,
            max_num_result_ids: 10_000,
            search_threads: cores,
            cache_folder: clip_data::model_source::default_cache().with_file_name("indices-cache"),
        }
    }
}

/// The loaded indices and what serves queries on them; shared by every request.
///
/// The indices are one snapshot behind a lock that is held only to clone it: a query takes its index's `Arc` and
/// keeps it to the end, so [`SearchEngine::reload`] can swap in a new snapshot while queries on the old files finish
/// (their memory maps stay valid: new files are renamed over old ones, never written in place).
pub struct SearchEngine {
    indices: RwLock<Arc<Vec<Arc<IndexResource>>>>,
    storage: Storage,
    configured: Vec<(String, IndexOptions)>,
    reloading: Mutex<()>,
    fetcher: ImageFetcher,
    search_slots: Arc<Semaphore>,
    options: EngineOptions,
}

/// One index after a reload: the version served before and now, and its vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// `indice_name`.
    pub name: String,
    /// The version served before the reload.
    pub previous: String,
    /// The version served now.
    pub version: String,
    /// Vectors in the image (else text) index now.
    pub vectors: u64,
}

impl SearchEngine {
    /// Loads every index (blocking: call from a blocking thread).
    pub fn load(storage: &Storage, indices: &[(String, IndexOptions)], options: EngineOptions) -> Result<Self> {
        let loaded = load_all(storage, indices, &options, ModelCache::default())?;
        let fetcher = ImageFetcher::new(options.fetch)?;
        let search_slots = Arc::new(Semaphore::new(options.search_threads.max(1)));
        Ok(Self {
            indices: RwLock::new(Arc::new(loaded)),
            storage: storage.clone(),
            configured: indices.to_vec(),
            reloading: Mutex::new(()),
            fetcher,
            search_slots,
            options,
        })
    }

    /// Loads every configured index folder again (blocking) and, when all load, serves them from now on; queries in
    /// flight finish on the indices they started with. Models are kept (an index folder changes, its model does
    /// not). On any error nothing changes and the error names the index. One reload runs at a time; another asked
    /// for meanwhile gets [`SearchError::ReloadRunning`].
    pub fn reload(&self) -> Result<Vec<Reloaded>> {
        let _only_one = match self.reloading.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::WouldBlock) => return Err(SearchError::ReloadRunning),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let before = self.indices();
        let mut models = ModelCache::default();
        for r in before.iter() {
            models.keep(r.model_folder.clone(), r.encoder.clone());
        }
        let loaded = load_all(&self.storage, &self.configured, &self.options, models)?;
        let changes = loaded
            .iter()
            .map(|r| Reloaded {
                name: r.name.clone(),
                previous: before.iter().find(|b| b.name == r.name).map(|b| b.version.clone()).unwrap_or_default(),
                version: r.version.clone(),
                vectors: r.image.as_ref().or(r.text.as_ref()).map(|i| i.len()).unwrap_or(0),
            })
            .collect();
        *self.indices.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(changes)
    }

    /// Names of the loaded indices, in configuration order (`/indices-list`).
    pub fn names(&self) -> Vec<String> {
        self.indices().iter().map(|r| r.name.clone()).collect()
    }

    /// The indices served now (a snapshot: a reload does not change it).
    pub fn indices(&self) -> Arc<Vec<Arc<IndexResource>>> {
        self.indices.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The index called `name`, or the first one for `None`.
    pub fn resource(&self, name: Option<&str>) -> Result<Arc<IndexResource>> {
        let indices = self.indices();
        let found = match name {
            None => indices.first(),
            Some(n) => indices.iter().find(|r| r.name == n),
        };
        found.cloned().ok_or_else(|| match name {
            None => SearchError::Internal("no index loaded".into()),
            Some(n) => SearchError::UnknownIndex { name: n.to_string(), available: self.names().join(", ") },
        })
    }

    /// Answers one knn query.
    pub async fn knn(&self, mut q: KnnQuery) -> Result<KnnAnswer> {
        let resource = self.resource(q.indice_name.as_deref())?;
        let mut answer = KnnAnswer::default();
        self.apply_caps(&mut q, &mut answer);
        let index_dim = resource.index(q.modality)?.dim();
        let mut query = self.embed(&resource, q.input.clone(), &mut answer).await?;
        if query.len() != index_dim {
            return Err(SearchError::bad(
                "embedding_input",
                format!(
                    "has {} values but index {:?} holds {index_dim}-dimensional vectors",
                    query.len(),
                    resource.name
                ),
            ));
        }
        if let Some((score, weight)) = q.aesthetic {
            match &resource.aesthetic {
                Some(a) => a.shift(&mut query, score, weight)?,
                None => answer.skipped.push("aesthetic_score"),
            }
        }
        if q.use_safety_model && resource.safety.is_none() {
            answer.skipped.push("use_safety_model");
        }
        if q.use_violence_detector && resource.violence.is_none() {
            answer.skipped.push("use_violence_detector");
        }
        if q.use_mclip {
            answer.skipped.push("use_mclip");
        }
        let slot =
            self.search_slots.clone().acquire_owned().await.map_err(|_| SearchError::Internal("closed".into()))?;
        // The permit lives as long as the blocking work, even when the request is cancelled.
        let (results, stages) = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            search_and_filter(&resource, &q, &query)
        })
        .await
        .map_err(|e| SearchError::Internal(format!("search task: {e}")))??;
        answer.results = results;
        answer.stages.extend(stages);
        Ok(answer)
    }

    /// `/metadata`: the rows (configured columns) of `ids` in index `name`.
    /// Repeated ids are answered once, in the order they first appear.
    pub async fn metadata(&self, name: Option<&str>, ids: Vec<i64>) -> Result<Vec<(i64, Map<String, Value>)>> {
        let resource = self.resource(name)?;
        if ids.len() > self.options.max_num_result_ids {
            return Err(SearchError::bad(
                "ids",
                format!("{} ids asked, at most {} per request", ids.len(), self.options.max_num_result_ids),
            ));
        }
        let mut seen = HashSet::with_capacity(ids.len());
        let ids: Vec<i64> = ids.into_iter().filter(|id| seen.insert(*id)).collect();
        let len = resource.rows.as_ref().map(|r| r.len()).unwrap_or(0);
        if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as u64 >= len) {
            return Err(SearchError::bad("ids", format!("id {bad} is not in index {:?} ({len} rows)", resource.name)));
        }
        let slot =
            self.search_slots.clone().acquire_owned().await.map_err(|_| SearchError::Internal("closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let rows = metadata_rows(&resource, &ids)?;
            Ok(ids.into_iter().zip(rows.into_iter().map(Option::unwrap_or_default)).collect())
        })
        .await
        .map_err(|e| SearchError::Internal(format!("metadata task: {e}")))?
    }

    fn apply_caps(&self, q: &mut KnnQuery, answer: &mut KnnAnswer) {
        if q.num_images > self.options.max_num_images {
            q.num_images = self.options.max_num_images;
            answer.capped.push(format!("num_images={}", q.num_images));
        }
        if q.num_result_ids > self.options.max_num_result_ids {
            q.num_result_ids = self.options.max_num_result_ids;
            answer.capped.push(format!("num_result_ids={}", q.num_result_ids));
        }
    }

    async fn embed(&self, resource: &IndexResource, input: QueryInput, answer: &mut KnnAnswer) -> Result<Vec<f32>> {
        let encoder = &resource.encoder;
        match input {
            QueryInput::Embedding(e) => {
                if let Some(i) = e.iter().position(|x| !x.is_finite()) {
                    return Err(SearchError::bad("embedding_input", format!("value {i} is not a finite number")));
                }
                Ok(e)
            }
            QueryInput::Text(text) => {
                let started = Instant::now();
                let encoded = encoder.text(text).await?;
                answer.stages.push((Stage::TextEncode, started.elapsed()));
                answer.encode_batch = Some(("text", encoded.batch_size));
                Ok(encoded.embedding)
            }
            QueryInput::Image(bytes) => self.embed_image(resource, bytes, "image", answer).await,
            QueryInput::ImageUrl(url) => {
                let started = Instant::now();
                let bytes = self.fetcher.fetch(&url).await?;
                answer.stages.push((Stage::Download, started.elapsed()));
                self.embed_image(resource, bytes, "image_url", answer).await
            }
        }
    }

    async fn embed_image(
        &self,
        resource: &IndexResource,
        bytes: Vec<u8>,
        field: &'static str,
        answer: &mut KnnAnswer,
    ) -> Result<Vec<f32>> {
        let started = Instant::now();
        let (encoded, preprocess) = resource.encoder.image(bytes, field).await?;
        answer.stages.push((Stage::ImagePreprocess, preprocess));
        answer.stages.push((Stage::ImageEncode, started.elapsed().saturating_sub(preprocess)));
        answer.encode_batch = Some(("image", encoded.batch_size));
        Ok(encoded.embedding)
    }
}

/// Every configured index, loaded with the models in `models`.
fn load_all(
    storage: &Storage,
    indices: &[(String, IndexOptions)],
    options: &EngineOptions,
    mut models: ModelCache,
) -> Result<Vec<Arc<IndexResource>>> {
    indices
        .iter()
        .map(|(name, o)| {
            IndexResource::load(storage, name, o, &options.cache_folder, &mut models, options.encoder)
                .map(Arc::new)
                .map_err(|e| SearchError::Config(format!("index {name:?} ({}): {e}", o.indice_folder)))
        })
        .collect()
}

type Stages = Vec<(Stage, Duration)>;

/// Search, filters and metadata of one query (blocking).
fn search_and_filter(r: &IndexResource, q: &KnnQuery, query: &[f32]) -> Result<(Vec<Map<String, Value>>, Stages)> {
    // Requests run side by side, one per blocking thread: an OpenMP team per single query only adds start-up and
    // spinning on a busy machine (it set p99 at c32 to ~1 s in bench/back_bench.sh).
    clip_index::faiss_index::set_threads(1);
    let mut stages = Vec::new();
    let index = r.index(q.modality)?;
    let started = Instant::now();
    let found: Vec<(i64, f32)> = index.search(query, q.num_result_ids)?.row(0).filter(|&(id, _)| id >= 0).collect();
    stages.push((Stage::Search, started.elapsed()));

    let started = Instant::now();
    let mut remove: HashSet<usize> = HashSet::new();
    let violence = r.violence.as_ref().filter(|_| q.use_violence_detector);
    let safety = r.safety.as_ref().filter(|_| q.use_safety_model);
    if !found.is_empty() && (q.deduplicate || violence.is_some() || safety.is_some()) {
        let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
        let dim = index.dim();
        let mut embeddings = index.stored_vectors(&ids)?;
        normalize_rows(&mut embeddings, dim);
        if q.deduplicate {
            remove.extend(near_duplicates(&embeddings, dim)?);
        }
        if let Some(v) = violence {
            remove.extend(v.violent(&embeddings));
        }
        if let Some(s) = safety {
            remove.extend(s.unsafe_rows(&embeddings)?);
        }
    }
    let mut seen = HashSet::new();
    let kept: Vec<(i64, f32)> = found
        .into_iter()
        .enumerate()
        .filter(|(i, (id, _))| !remove.contains(i) && seen.insert(*id))
        .map(|(_, hit)| hit)
        .collect();
    stages.push((Stage::PostProcess, started.elapsed()));

    let started = Instant::now();
    let with_rows: Vec<i64> = kept.iter().take(q.num_images).map(|(id, _)| *id).collect();
    let mut rows = metadata_rows(r, &with_rows)?.into_iter();
    let results = kept
        .iter()
        .map(|&(id, similarity)| {
            let mut out = rows.next().flatten().unwrap_or_default();
            out.insert("id".into(), Value::from(id));
            out.insert("similarity".into(), Value::from(similarity as f64));
            out
        })
        .collect();
    stages.push((Stage::Metadata, started.elapsed()));
    Ok((results, stages))
}

/// Rows of `ids` with the configured columns (null where the row has none) and, when `image_path` is a readable
/// local image, its base64 JPEG as `image` (as clip-retrieval does).
fn metadata_rows(r: &IndexResource, ids: &[i64]) -> Result<Vec<Option<Map<String, Value>>>> {
    let Some(store) = &r.rows else { return Ok(vec![None; ids.len()]) };
    let unsigned: Vec<u64> = ids.iter().map(|&i| i as u64).collect();
    let mut rows = store.get(&unsigned, Some(&r.columns))?;
    for row in rows.iter_mut().flatten() {
        for c in &r.columns {
            row.entry(c.clone()).or_insert(Value::Null);
        }
        if let Some(path) = row.get("image_path").and_then(Value::as_str) {
            let path = std::path::Path::new(path);
            if let Some(b64) = crate::result_image::base64_jpeg(path, &r.image_roots, &r.image_limits) {
                row.insert("image".into(), Value::from(b64));
            }
        }
    }
    Ok(rows)
}
