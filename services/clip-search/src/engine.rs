//! The search engine: loaded indices and one query end to end (encode -> search -> filters -> metadata rows), with
//! the time of each stage reported so the HTTP layer can publish it.

use crate::config::IndexOptions;
use crate::encoder::EncoderLimits;
use crate::error::{Result, SearchError};
use crate::fetch::{FetchRules, ImageFetcher};
use crate::filters::{near_duplicates, normalize_rows};
use crate::resource::{IndexResource, ModelCache};
use crate::shards::{ShardHit, ShardOptions, ShardSet};
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
    /// Sharded index: answer without a failed shard instead of failing (`None`: the index's setting).
    pub allow_partial_results: Option<bool>,
    /// Each result also carries its stored vector (`vector`, base64 float32): what a front asks of its shards.
    pub return_vectors: bool,
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
    /// Shards of a sharded index left out of this answer (allowed partial results), by URL.
    pub missing_shards: Vec<String>,
    /// Rows of the index searched (a front checks its shards' against the numbering it assumed).
    pub rows: u64,
    /// The name of the index that answered.
    pub index: Option<String>,
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
    /// Calls to the shards of sharded indices.
    pub shards: ShardOptions,
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
            shards: ShardOptions::default(),
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
        let mut answer = KnnAnswer { index: Some(resource.name.clone()), ..Default::default() };
        self.apply_caps(&mut q, &mut answer);
        let index_dim = match &resource.shards {
            Some(_) => resource.encoder.embed_dim(),
            None => resource.index(q.modality)?.dim(),
        };
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
        if let Some(shards) = &resource.shards {
            self.knn_sharded(&resource, shards, &q, &query, &mut answer).await?;
            return Ok(answer);
        }
        answer.rows = resource.index(q.modality)?.len();
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
        if let Some(shards) = &resource.shards {
            let rows = shards.metadata(&ids).await?;
            return Ok(ids.into_iter().zip(rows).collect());
        }
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

    /// A sharded index's query: the shards' raw hits merged, then the filters over all of them and metadata, as
    /// one `back` over the merged folder computes them (see [`finish_sharded`]). Metadata the shards did not send
    /// with their hits (results that move up past filtered ones) is fetched from them in one more round.
    async fn knn_sharded(
        &self,
        r: &Arc<IndexResource>,
        shards: &ShardSet,
        q: &KnnQuery,
        query: &[f32],
        answer: &mut KnnAnswer,
    ) -> Result<()> {
        let filtering = needs_vectors(r, q);
        let started = Instant::now();
        let merged = shards.search(q, query, filtering).await?;
        answer.stages.push((Stage::Search, started.elapsed()));
        answer.missing_shards = merged.missing;
        let started = Instant::now();
        let (resource, q2) = (r.clone(), q.clone());
        let hits = merged.hits;
        let slot =
            self.search_slots.clone().acquire_owned().await.map_err(|_| SearchError::Internal("closed".into()))?;
        let mut kept = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            filter_shard_hits(&resource, &q2, hits)
        })
        .await
        .map_err(|e| SearchError::Internal(format!("filter task: {e}")))??;
        answer.stages.push((Stage::PostProcess, started.elapsed()));
        let started = Instant::now();
        let lacking: Vec<i64> = kept.iter().take(q.num_images).filter(|h| h.row.is_none()).map(|h| h.id).collect();
        if !lacking.is_empty() {
            let rows = shards.metadata(&lacking).await?;
            let fetched: std::collections::HashMap<i64, Map<String, Value>> = lacking.into_iter().zip(rows).collect();
            for hit in kept.iter_mut().take(q.num_images).filter(|h| h.row.is_none()) {
                hit.row = fetched.get(&hit.id).cloned();
            }
        }
        answer.results = kept
            .into_iter()
            .enumerate()
            .map(|(i, hit)| {
                let mut out = if i < q.num_images { hit.row.unwrap_or_default() } else { Map::new() };
                out.insert("id".into(), Value::from(hit.id));
                out.insert("similarity".into(), Value::from(hit.similarity));
                out
            })
            .collect();
        answer.stages.push((Stage::Metadata, started.elapsed()));
        answer.rows = shards.rows().await?;
        Ok(())
    }

    /// Readiness of the sharded indices: every shard of each is probed (its rows and version taken anew); the
    /// error names the first shard that is not ready. Indices with local folders are ready once loaded.
    pub async fn check_shards(&self) -> Result<()> {
        for r in self.indices().iter() {
            if let Some(shards) = &r.shards {
                shards.refresh().await?;
            }
        }
        Ok(())
    }

    /// The version `/readyz` shows for an index: its files' time, or its shards' versions.
    pub fn version_of(r: &IndexResource) -> String {
        match &r.shards {
            Some(s) => s.version(),
            None => r.version.clone(),
        }
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
                // A cache hit ran no model: it is no batch.
                answer.encode_batch = (encoded.batch_size > 0).then_some(("text", encoded.batch_size));
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
            IndexResource::load(storage, name, o, &options.cache_folder, &mut models, options.encoder, &options.shards)
                .map(Arc::new)
                .map_err(|e| SearchError::Config(format!("index {name:?} ({}): {e}", source_of(o))))
        })
        .collect()
}

/// Where an index's vectors come from, for errors.
fn source_of(o: &IndexOptions) -> String {
    if o.shards.is_empty() {
        o.indice_folder.clone()
    } else {
        format!("shards {}", o.shards.join(", "))
    }
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
    let mut stored = None;
    if !found.is_empty() && (needs_vectors(r, q) || q.return_vectors) {
        let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
        stored = Some(index.stored_vectors(&ids)?);
    }
    let remove = match &stored {
        Some(vectors) if needs_vectors(r, q) => filtered_out(r, q, vectors.clone(), index.dim())?,
        _ => HashSet::new(),
    };
    let mut seen = HashSet::new();
    let dim = index.dim();
    let kept: Vec<(i64, f32, Option<&[f32]>)> = found
        .iter()
        .enumerate()
        .filter(|(i, (id, _))| !remove.contains(i) && seen.insert(*id))
        .map(|(i, &(id, sim))| (id, sim, stored.as_ref().map(|v| &v[i * dim..(i + 1) * dim])))
        .collect();
    stages.push((Stage::PostProcess, started.elapsed()));

    let started = Instant::now();
    let with_rows: Vec<i64> = kept.iter().take(q.num_images).map(|(id, _, _)| *id).collect();
    let mut rows = metadata_rows(r, &with_rows)?.into_iter();
    let results = kept
        .iter()
        .map(|&(id, similarity, vector)| {
            let mut out = rows.next().flatten().unwrap_or_default();
            out.insert("id".into(), Value::from(id));
            out.insert("similarity".into(), Value::from(similarity as f64));
            if let Some(v) = vector.filter(|_| q.return_vectors) {
                let (field, text) = crate::shards::encode_vector(v);
                out.insert(field.into(), Value::from(text));
            }
            out
        })
        .collect();
    stages.push((Stage::Metadata, started.elapsed()));
    Ok((results, stages))
}

/// Whether the query's filters look at the results' stored vectors.
fn needs_vectors(r: &IndexResource, q: &KnnQuery) -> bool {
    q.deduplicate || (q.use_violence_detector && r.violence.is_some()) || (q.use_safety_model && r.safety.is_some())
}

/// Positions (in `vectors`' row order) that dedup, the violence detector or the safety model remove.
fn filtered_out(r: &IndexResource, q: &KnnQuery, mut vectors: Vec<f32>, dim: usize) -> Result<HashSet<usize>> {
    let mut remove = HashSet::new();
    normalize_rows(&mut vectors, dim);
    if q.deduplicate {
        remove.extend(near_duplicates(&vectors, dim)?);
    }
    if let Some(v) = r.violence.as_ref().filter(|_| q.use_violence_detector) {
        remove.extend(v.violent(&vectors));
    }
    if let Some(s) = r.safety.as_ref().filter(|_| q.use_safety_model) {
        remove.extend(s.unsafe_rows(&vectors)?);
    }
    Ok(remove)
}

/// The filters over the shards' merged hits (blocking), then repeated ids dropped, as [`search_and_filter`] does
/// over one index.
fn filter_shard_hits(r: &IndexResource, q: &KnnQuery, hits: Vec<ShardHit>) -> Result<Vec<ShardHit>> {
    let remove = if !hits.is_empty() && needs_vectors(r, q) {
        let dim = r.encoder.embed_dim();
        let mut vectors = Vec::with_capacity(hits.len() * dim);
        for h in &hits {
            match &h.vector {
                Some(v) if v.len() == dim => vectors.extend_from_slice(v),
                _ => {
                    return Err(SearchError::Shard {
                        index: r.name.clone(),
                        shard: format!("#{}", h.shard),
                        message: format!("result {} came without its {dim}-dimensional stored vector", h.id),
                    })
                }
            }
        }
        filtered_out(r, q, vectors, dim)?
    } else {
        HashSet::new()
    };
    let mut seen = HashSet::new();
    Ok(hits.into_iter().enumerate().filter(|(i, h)| !remove.contains(i) && seen.insert(h.id)).map(|(_, h)| h).collect())
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
