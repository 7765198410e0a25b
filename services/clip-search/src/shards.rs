//! An index served by other `back` processes: the shards of a distributed build, one part folder each. The front
//! encodes a query once and calls every shard concurrently with the embedding; this module does those calls (knn,
//! `/metadata`, `/readyz`), numbers each shard's ids after the rows of the shards before it (as `index_combiner`
//! numbers a merge of the same parts) and merges their hits by similarity. Filters and metadata assembly stay in the
//! engine, so a sharded index answers exactly as one `back` over the merged folder.

use crate::error::{Result, SearchError};
use crate::KnnQuery;
use base64::Engine;
use half::f16;
use half::slice::HalfFloatSliceExt;
use serde_json::{json, Map, Value};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The request field that asks a shard for the stored vectors of its results (our extension of clip-retrieval's
/// body): each result then carries its stored vector, base64 little-endian, in [`VECTOR_F16_FIELD`] when float16
/// holds it exactly (re-rank vectors are stored at float16) and else in [`VECTOR_FIELD`] as float32.
pub const RETURN_VECTORS_FIELD: &str = "return_vectors";
/// The result field holding a stored vector as float32.
pub const VECTOR_FIELD: &str = "vector";
/// The result field holding a stored vector as float16: half the bytes to encode, send and decode.
pub const VECTOR_F16_FIELD: &str = "vector_f16";

/// What every call to a shard reports: `(index, shard URL, call kind, seconds, outcome)`; the server turns it into
/// Prometheus metrics. Outcomes: `ok`, `timeout`, `error`, `refused`.
pub type ShardObserver = Arc<dyn Fn(&str, &str, &'static str, f64, &'static str) + Send + Sync>;

/// Settings shared by every sharded index of a server.
#[derive(Clone)]
pub struct ShardOptions {
    /// Time limit of one call to a shard.
    pub timeout: Duration,
    /// Told about every call (metrics).
    pub observer: Option<ShardObserver>,
}

impl std::fmt::Debug for ShardOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardOptions").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Default for ShardOptions {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), observer: None }
    }
}

/// What the front knows of one shard from its `/readyz`: the name it serves the index under, its rows, the id of
/// its first row in the whole index, and the version of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard's base URL.
    pub url: String,
    /// The index name on the shard (the front's name, or the one index the shard serves).
    pub indice_name: String,
    /// Rows of the shard's index.
    pub rows: u64,
    /// Global id of the shard's row 0.
    pub offset: u64,
    /// The shard's `/readyz` version of the index.
    pub version: String,
}

/// One hit of a shard, its id made global.
#[derive(Debug, Clone)]
pub struct ShardHit {
    /// Global id.
    pub id: i64,
    /// As the shard computed it.
    pub similarity: f64,
    /// The shard's metadata columns for the hit, when the shard sent them (its first `num_images` results).
    pub row: Option<Map<String, Value>>,
    /// The stored vector, when asked for.
    pub vector: Option<Vec<f32>>,
    /// Which shard found it.
    pub shard: usize,
}

/// The merged answer of the shards.
#[derive(Debug, Default)]
pub struct ShardedHits {
    /// Every shard's hits, best first.
    pub hits: Vec<ShardHit>,
    /// Shards left out (failed or timed out) because partial results were allowed.
    pub missing: Vec<String>,
}

/// The knn body a front sends each shard: clip-retrieval's fields, no filters (they apply across shards), and
/// [`RETURN_VECTORS_FIELD`] when the front's filters need the stored vectors.
#[derive(serde::Serialize)]
struct ShardKnnBody<'a> {
    embedding_input: &'a [f32],
    modality: &'a str,
    num_images: usize,
    num_result_ids: usize,
    indice_name: &'a str,
    deduplicate: bool,
    use_safety_model: bool,
    use_violence_detector: bool,
    return_vectors: bool,
}

/// The shards of one index.
pub struct ShardSet {
    /// The front's name of the index.
    pub index: String,
    /// Shard base URLs, in id order.
    pub urls: Vec<String>,
    /// Answer from the other shards when one fails.
    pub allow_partial_results: bool,
    client: reqwest::Client,
    options: ShardOptions,
    layout: RwLock<Option<Arc<Vec<ShardInfo>>>>,
}

impl ShardSet {
    /// The shards of `index`; nothing is called until the first query or readiness check.
    pub fn new(index: &str, urls: Vec<String>, allow_partial_results: bool, options: ShardOptions) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .no_proxy()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| SearchError::Config(format!("index {index:?}: shard HTTP client: {e}")))?;
        Ok(Self { index: index.into(), urls, allow_partial_results, client, options, layout: RwLock::new(None) })
    }

    /// The layout in use, probing the shards first when none is known yet.
    pub async fn layout(&self) -> Result<Arc<Vec<ShardInfo>>> {
        if let Some(l) = self.layout.read().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(l);
        }
        self.refresh().await
    }

    /// Asks every shard's `/readyz` (concurrently) for its rows and version and uses the new layout from now on;
    /// the error names the first shard that is not ready. Readiness probes call it, so a shard that was rebuilt
    /// is renumbered within one probe period.
    pub async fn refresh(&self) -> Result<Arc<Vec<ShardInfo>>> {
        let probes = self.urls.iter().map(|url| self.probe(url));
        let answers = futures::future::join_all(probes).await;
        let mut offset = 0u64;
        let mut layout = Vec::with_capacity(answers.len());
        for answer in answers {
            let (url, indice_name, rows, version) = answer?;
            layout.push(ShardInfo { url, indice_name, rows, offset, version });
            offset += rows;
        }
        let layout = Arc::new(layout);
        *self.layout.write().unwrap_or_else(|p| p.into_inner()) = Some(layout.clone());
        Ok(layout)
    }

    /// Forgets the layout (a shard answered with another row count than it had): the next query probes again.
    fn invalidate(&self) {
        *self.layout.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Rows over all shards.
    pub async fn rows(&self) -> Result<u64> {
        Ok(self.layout().await?.iter().map(|s| s.rows).sum())
    }

    async fn probe(&self, url: &str) -> Result<(String, String, u64, String)> {
        let started = Instant::now();
        let answer = self.get_json(url, "/readyz").await;
        self.observe(url, "readyz", started, &answer);
        let body = answer?;
        if body["ready"] != Value::Bool(true) {
            return Err(self.failed(url, format!("not ready: {}", body["error"].as_str().unwrap_or("no reason given"))));
        }
        let served: Vec<&String> = body["rows"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
        let name = if served.iter().any(|n| **n == self.index) {
            self.index.clone()
        } else if served.len() == 1 {
            served[0].clone()
        } else {
            return Err(self.failed(
                url,
                format!(
                    "serves {} indices ({}), none named {:?}: a shard serves one part of one index",
                    served.len(),
                    served.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    self.index
                ),
            ));
        };
        let rows = body["rows"][&name].as_u64().ok_or_else(|| self.failed(url, "its /readyz has no row count"))?;
        let version = body["indices"][&name].as_str().unwrap_or_default().to_string();
        Ok((url.to_string(), name, rows, version))
    }

    /// Searches every shard with `query` (already encoded and shifted) for `q.num_result_ids` raw hits (no
    /// filters: they apply across shards), metadata for the first `q.num_images` of each, and the stored vectors
    /// when `with_vectors`. Merged best first; the global top-k is within the union of the shards' top-k.
    pub async fn search(&self, q: &KnnQuery, query: &[f32], with_vectors: bool) -> Result<ShardedHits> {
        let layout = self.layout().await?;
        let allow_partial = q.allow_partial_results.unwrap_or(self.allow_partial_results);
        // One body per distinct shard index name (usually one for all shards): the 512 floats are formatted once.
        let mut bodies: std::collections::HashMap<&str, bytes::Bytes> = std::collections::HashMap::new();
        for shard in layout.iter() {
            if !bodies.contains_key(shard.indice_name.as_str()) {
                let body = ShardKnnBody {
                    embedding_input: query,
                    modality: q.modality.name(),
                    num_images: q.num_images,
                    num_result_ids: q.num_result_ids,
                    indice_name: &shard.indice_name,
                    deduplicate: false,
                    use_safety_model: false,
                    use_violence_detector: false,
                    return_vectors: with_vectors,
                };
                let bytes = serde_json::to_vec(&body).map_err(|e| SearchError::Config(format!("shard body: {e}")))?;
                bodies.insert(shard.indice_name.as_str(), bytes.into());
            }
        }
        let calls = layout.iter().enumerate().map(|(i, shard)| {
            let body = bodies[shard.indice_name.as_str()].clone();
            async move { (i, self.shard_knn(shard, body).await) }
        });
        let answers = futures::future::join_all(calls).await;
        let mut merged = ShardedHits::default();
        for (i, answer) in answers {
            match answer {
                Ok(hits) => merged.hits.extend(hits.into_iter().map(|mut h| {
                    h.shard = i;
                    h
                })),
                Err(e @ SearchError::ShardRefused { .. }) => return Err(e),
                Err(e) if allow_partial && layout.len() > 1 => {
                    tracing::warn!(error = %e, "answering without this shard (allow_partial_results)");
                    merged.missing.push(layout[i].url.clone());
                }
                Err(e) => return Err(e),
            }
        }
        if merged.missing.len() == layout.len() {
            return Err(self.failed(&layout[0].url, "every shard failed"));
        }
        // Equal similarities by ascending id, as one index settles them (`FaissIndex::search_ties_by_id`), so the
        // cut at num_result_ids keeps the hits one back over the merged folder keeps.
        merged.hits.sort_by(|a, b| b.similarity.total_cmp(&a.similarity).then(a.id.cmp(&b.id)));
        merged.hits.truncate(q.num_result_ids);
        Ok(merged)
    }

    async fn shard_knn(&self, shard: &ShardInfo, body: bytes::Bytes) -> Result<Vec<ShardHit>> {
        let started = Instant::now();
        let answer = self.post_json(&shard.url, "/knn-service", body).await;
        self.observe(&shard.url, "knn", started, &answer);
        let (rows, results) = answer?;
        if rows.is_some_and(|n| n != shard.rows) {
            self.invalidate();
            return Err(self.failed(
                &shard.url,
                format!("now holds {} rows, {} when its ids were numbered: retry", rows.unwrap_or(0), shard.rows),
            ));
        }
        let Value::Array(items) = results else {
            return Err(self.failed(&shard.url, "its knn answer is not a list of results"));
        };
        items.into_iter().map(|item| self.hit(shard, item)).collect()
    }

    fn hit(&self, shard: &ShardInfo, item: Value) -> Result<ShardHit> {
        let Value::Object(mut row) = item else { return Err(self.failed(&shard.url, "a result is not an object")) };
        let local = row.shift_remove("id").and_then(|v| v.as_i64());
        let similarity = row.shift_remove("similarity").and_then(|v| v.as_f64());
        let (Some(local), Some(similarity)) = (local, similarity) else {
            return Err(self.failed(&shard.url, "a result has no id or similarity"));
        };
        if local < 0 || local as u64 >= shard.rows {
            return Err(self.failed(&shard.url, format!("result id {local} is outside its {} rows", shard.rows)));
        }
        let vector = match (row.shift_remove(VECTOR_FIELD), row.shift_remove(VECTOR_F16_FIELD)) {
            (Some(Value::String(b64)), _) => Some(decode_vector(&b64, false)),
            (_, Some(Value::String(b64))) => Some(decode_vector(&b64, true)),
            _ => None,
        };
        let vector = vector.map(|v| v.ok_or_else(|| self.failed(&shard.url, "bad vector"))).transpose()?;
        let row = (!row.is_empty()).then_some(row);
        Ok(ShardHit { id: shard.offset as i64 + local, similarity, row, vector, shard: 0 })
    }

    /// `/metadata` of global `ids` (validated, unique): each shard asked for its own ids at once; rows in the
    /// order of `ids`.
    pub async fn metadata(&self, ids: &[i64]) -> Result<Vec<Map<String, Value>>> {
        let layout = self.layout().await?;
        let total: u64 = layout.iter().map(|s| s.rows).sum();
        if let Some(bad) = ids.iter().find(|&&id| id < 0 || id as u64 >= total) {
            return Err(SearchError::bad("ids", format!("id {bad} is not in index {:?} ({total} rows)", self.index)));
        }
        let mut per_shard: Vec<Vec<i64>> = vec![Vec::new(); layout.len()];
        for &id in ids {
            let s = shard_of(&layout, id as u64);
            per_shard[s].push(id - layout[s].offset as i64);
        }
        let calls = per_shard.iter().enumerate().filter(|(_, local)| !local.is_empty()).map(|(s, local)| {
            let shard = &layout[s];
            let body = json!({ "indice_name": shard.indice_name, "ids": local });
            async move {
                let started = Instant::now();
                let answer = self.post_json(&shard.url, "/metadata", body.to_string().into()).await;
                self.observe(&shard.url, "metadata", started, &answer);
                (s, answer)
            }
        });
        let mut rows: std::collections::HashMap<i64, Map<String, Value>> = std::collections::HashMap::new();
        for (s, answer) in futures::future::join_all(calls).await {
            let (_, body) = answer?;
            let items = body.as_array().ok_or_else(|| self.failed(&layout[s].url, "its /metadata is not a list"))?;
            for item in items {
                let local = item["id"].as_i64().ok_or_else(|| self.failed(&layout[s].url, "a row without id"))?;
                let row = item["metadata"].as_object().cloned().unwrap_or_default();
                rows.insert(layout[s].offset as i64 + local, row);
            }
        }
        Ok(ids.iter().map(|id| rows.remove(id).unwrap_or_default()).collect())
    }

    /// Versions of the shards' files, comma-separated, for the front's `/readyz`.
    pub fn version(&self) -> String {
        match self.layout.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(l) => l.iter().map(|s| s.version.as_str()).collect::<Vec<_>>().join(","),
            None => String::new(),
        }
    }

    async fn get_json(&self, url: &str, path: &str) -> Result<Value> {
        let response = self.client.get(format!("{url}{path}")).send().await.map_err(|e| self.transport(url, e))?;
        let status = response.status();
        let body = self.read_json(url, response).await?;
        if !status.is_success() && path != "/readyz" {
            return Err(self.failed(url, format!("{path} answered {status}: {body}")));
        }
        Ok(body)
    }

    /// POSTs `body`; returns the shard's row-count header (knn answers carry it) and the JSON answer.
    async fn post_json(&self, url: &str, path: &str, body: bytes::Bytes) -> Result<(Option<u64>, Value)> {
        let response = self
            .client
            .post(format!("{url}{path}"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(url, e))?;
        let status = response.status();
        let rows = response.headers().get(ROWS_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let answer = self.read_json(url, response).await?;
        let message = || answer["error"].as_str().map(str::to_string).unwrap_or_else(|| answer.to_string());
        if status.is_client_error() {
            return Err(SearchError::ShardRefused { index: self.index.clone(), shard: url.into(), message: message() });
        }
        if !status.is_success() {
            return Err(self.failed(url, format!("{path} answered {status}: {}", message())));
        }
        Ok((rows, answer))
    }

    async fn read_json(&self, url: &str, response: reqwest::Response) -> Result<Value> {
        let bytes = response.bytes().await.map_err(|e| self.transport(url, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.failed(url, format!("answered something that is not JSON: {e}")))
    }

    fn transport(&self, url: &str, e: reqwest::Error) -> SearchError {
        let what = if e.is_timeout() {
            format!("timed out after {:.1} s", self.options.timeout.as_secs_f64())
        } else if e.is_connect() {
            "connection refused or unreachable".to_string()
        } else {
            format!("{e}")
        };
        self.failed(url, what)
    }

    fn failed(&self, url: &str, message: impl Into<String>) -> SearchError {
        SearchError::Shard { index: self.index.clone(), shard: url.into(), message: message.into() }
    }

    fn observe<T>(&self, url: &str, call: &'static str, started: Instant, answer: &Result<T>) {
        let Some(observer) = &self.options.observer else { return };
        let outcome = match answer {
            Ok(_) => "ok",
            Err(SearchError::ShardRefused { .. }) => "refused",
            Err(SearchError::Shard { message, .. }) if message.starts_with("timed out") => "timeout",
            Err(_) => "error",
        };
        observer(&self.index, url, call, started.elapsed().as_secs_f64(), outcome);
    }
}

/// The response header with which a `back` tells the rows of the index a knn query searched (the front checks it
/// against the row count its id numbering assumed).
pub const ROWS_HEADER: &str = "x-clip-retrieval-rows";

/// The shard holding global id `id` (offsets ascending).
fn shard_of(layout: &[ShardInfo], id: u64) -> usize {
    layout.partition_point(|s| s.offset <= id).saturating_sub(1)
}

/// A stored vector as a shard sends it: the result field and its base64 text. Float16 when every value converts
/// back unchanged (the vectors of a re-rank store), so the front decodes exactly what was stored.
pub fn encode_vector(v: &[f32]) -> (&'static str, String) {
    // Slice conversions: F16C eight values at a time (per-value conversion cost more than the base64).
    let mut halves = vec![f16::ZERO; v.len()];
    halves.convert_from_f32_slice(v);
    let mut back = vec![0f32; v.len()];
    halves.convert_to_f32_slice(&mut back);
    let b64 = &base64::engine::general_purpose::STANDARD;
    if back.iter().zip(v).all(|(b, x)| b.to_bits() == x.to_bits()) {
        let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
        (VECTOR_F16_FIELD, b64.encode(bytes))
    } else {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        (VECTOR_FIELD, b64.encode(bytes))
    }
}

fn decode_vector(b64: &str, f16_values: bool) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    if f16_values {
        if bytes.len() % 2 != 0 {
            return None;
        }
        let halves: Vec<f16> = bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect();
        let mut out = vec![0f32; halves.len()];
        halves.convert_to_f32_slice(&mut out);
        return Some(out);
    }
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(offset: u64, rows: u64) -> ShardInfo {
        ShardInfo { url: String::new(), indice_name: String::new(), rows, offset, version: String::new() }
    }

    #[test]
    fn ids_route_to_the_shard_that_holds_them() {
        let layout = [info(0, 10), info(10, 0), info(10, 5), info(15, 20)];
        assert_eq!(shard_of(&layout, 0), 0);
        assert_eq!(shard_of(&layout, 9), 0);
        assert_eq!(shard_of(&layout, 10), 2, "an empty shard holds no id");
        assert_eq!(shard_of(&layout, 14), 2);
        assert_eq!(shard_of(&layout, 15), 3);
        assert_eq!(shard_of(&layout, 34), 3);
    }

    #[test]
    fn vectors_round_trip_exactly_at_half_size_when_float16_holds_them() {
        let v = vec![0.1f32, -3.5e-8, f32::MIN_POSITIVE, 1.0];
        let (field, text) = encode_vector(&v);
        assert_eq!(field, VECTOR_FIELD, "these values need float32");
        assert_eq!(decode_vector(&text, false).unwrap(), v);
        let halves: Vec<f32> = [0.1f32, -0.25, 0.0, -0.0, 1e-5].iter().map(|&x| f16::from_f32(x).to_f32()).collect();
        let (field, text) = encode_vector(&halves);
        assert_eq!(field, VECTOR_F16_FIELD);
        assert_eq!(text.len(), 16, "5 float16 values are 10 bytes, 16 base64 characters");
        let back = decode_vector(&text, true).unwrap();
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            halves.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert!(decode_vector("AAAA", false).is_none(), "3 bytes are not float32 values");
        assert!(decode_vector("AAAA", true).is_none(), "nor float16 values");
    }
}
