//! Routes of the knn service (clip-retrieval's `/indices-list`, `/knn-service`, `/metadata`, `/config.json`, plus
//! `/metrics`, `/healthz`, `/readyz` and the web UI), the JSON error shape, and per-request metrics.

use crate::metrics::Metrics;
use crate::wire;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clip_search::{KnnAnswer, SearchEngine, SearchError};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::CorsLayer;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::timeout::TimeoutLayer;

/// Header listing request options served without effect because the index does not provide them.
pub const SKIPPED_HEADER: &str = "x-clip-retrieval-skipped";
/// Header listing limits applied to the request (`num_images=1000`).
pub const CAPPED_HEADER: &str = "x-clip-retrieval-capped";
/// Header of a sharded index's answer that left out failed shards (`allow_partial_results`): their URLs.
pub const PARTIAL_HEADER: &str = "x-clip-retrieval-partial";

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Whole-request time limit.
    pub request_timeout: Duration,
    /// The built web UI (`front/dist`), served at `/` when present.
    pub front_dist: Option<PathBuf>,
    /// `/config.json` `defaultBackend` (default: the URL the page was loaded from).
    pub default_backend: Option<String>,
    /// `/config.json` `defaultIndex`.
    pub default_index: Option<String>,
    /// `/config.json` `urlColumn`.
    pub url_column: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 20 << 20,
            request_timeout: Duration::from_secs(60),
            front_dist: None,
            default_backend: None,
            default_index: None,
            url_column: "url".into(),
        }
    }
}

/// What every request shares: the engine (set once the indices are loaded) and the metrics.
pub struct AppState {
    /// The loaded engine; empty while loading.
    pub engine: OnceLock<Arc<SearchEngine>>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// HTTP settings.
    pub options: HttpOptions,
}

impl AppState {
    /// A state whose engine is not loaded yet.
    pub fn new(options: HttpOptions) -> Self {
        Self { engine: OnceLock::new(), metrics: Metrics::new(), options }
    }

    /// Installs the loaded engine and publishes what it holds.
    pub fn set_engine(&self, engine: Arc<SearchEngine>) {
        self.publish_sizes(&engine);
        let _ = self.engine.set(engine);
        self.metrics.ready.set(1);
    }

    fn publish_sizes(&self, engine: &SearchEngine) {
        for r in engine.indices().iter() {
            for (modality, index) in [("image", &r.image), ("text", &r.text)] {
                if let Some(i) = index {
                    self.metrics.index_vectors.with_label_values(&[r.name.as_str(), modality]).set(i.len() as i64);
                }
            }
        }
    }
}

/// An error answer: a status and a JSON `{"error": message}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), field: None }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        let (status, field) = match &e {
            SearchError::BadRequest { field, .. } => (StatusCode::BAD_REQUEST, Some(*field)),
            SearchError::UnknownIndex { .. } => (StatusCode::BAD_REQUEST, Some("indice_name")),
            SearchError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            SearchError::ReloadRunning => (StatusCode::CONFLICT, None),
            SearchError::Shard { .. } => (StatusCode::SERVICE_UNAVAILABLE, None),
            SearchError::ShardRefused { .. } => (StatusCode::BAD_REQUEST, Some("shard")),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        } else {
            tracing::info!(error = %e, "request refused");
        }
        Self { status, message: e.to_string(), field }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(field) = self.field {
            response.extensions_mut().insert(RejectedField(field));
        }
        response
    }
}

/// Marks a 4xx response with the field at fault, for the metrics middleware.
#[derive(Clone, Copy)]
struct RejectedField(&'static str);

/// The application: every route, limits, CORS (clip-front is often served from another port), panics caught.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/indices-list", get(indices_list))
        .route("/knn-service", post(knn_service))
        .route("/metadata", post(metadata))
        .route("/config.json", get(config_json))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/reload", post(reload));
    let with_ui = match state.options.front_dist.clone().filter(|d| d.join("index.html").is_file()) {
        Some(dist) => api.fallback_service(ServeDir::new(&dist).fallback(ServeFile::new(dist.join("index.html")))),
        None => api.route("/", get(no_ui)).fallback(not_found),
    };
    with_ui
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(state.options.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, state.options.request_timeout))
        .layer(CorsLayer::permissive())
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }))
        .with_state(state)
}

/// Counts and times every request by endpoint; counts refused fields.
async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let endpoint = match request.extensions().get::<MatchedPath>() {
        Some(p) => p.as_str().to_string(),
        None => "static".to_string(),
    };
    let m = &state.metrics;
    m.in_flight.inc();
    let started = Instant::now();
    let response = next.run(request).await;
    m.in_flight.dec();
    m.request_seconds.with_label_values(&[endpoint.as_str()]).observe(started.elapsed().as_secs_f64());
    m.requests.with_label_values(&[endpoint.as_str(), response.status().as_str()]).inc();
    if response.status().is_client_error() {
        let field = response.extensions().get::<RejectedField>().map(|f| f.0).unwrap_or("request");
        m.bad_requests.with_label_values(&[endpoint.as_str(), field]).inc();
    }
    response
}

fn engine(state: &AppState) -> Result<&Arc<SearchEngine>, ApiError> {
    state.engine.get().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "indices are still loading"))
}

/// The body, or the limit/read error as JSON.
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| {
        let mut err = ApiError::new(e.status(), format!("body: {}", e.body_text()));
        err.field = Some("body");
        err
    })
}

async fn indices_list(State(state): State<Arc<AppState>>) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(engine(&state)?.names()))
}

async fn knn_service(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let _timer = state.metrics.full_knn_request_time.start_timer();
    let engine = engine(&state)?;
    let query = wire::knn_query(&body(raw)?)?;
    let answer = engine.knn(query).await?;
    record(&state.metrics, &answer);
    let mut headers = HeaderMap::new();
    if !answer.skipped.is_empty() {
        let list = answer.skipped.join(",");
        tracing::info!(options = %list, "served without options this index does not provide");
        headers.insert(SKIPPED_HEADER, HeaderValue::from_str(&list).expect("ascii names"));
    }
    if !answer.capped.is_empty() {
        headers.insert(CAPPED_HEADER, HeaderValue::from_str(&answer.capped.join(",")).expect("ascii"));
    }
    if !answer.missing_shards.is_empty() {
        let list = answer.missing_shards.join(",");
        if let Ok(value) = HeaderValue::from_str(&list) {
            headers.insert(PARTIAL_HEADER, value);
        }
        let index = answer.index.clone().unwrap_or_default();
        state.metrics.partial_answers.with_label_values(&[index.as_str()]).inc();
    }
    headers.insert(clip_search::shards::ROWS_HEADER, HeaderValue::from(answer.rows));
    Ok((headers, Json(answer.results)).into_response())
}

fn record(m: &Metrics, answer: &KnnAnswer) {
    for (stage, took) in &answer.stages {
        m.stage_seconds.with_label_values(&[stage.name()]).observe(took.as_secs_f64());
    }
    if let Some((tower, size)) = answer.encode_batch {
        m.batch_size.with_label_values(&[tower]).observe(size as f64);
    }
    for option in &answer.skipped {
        m.skipped_options.with_label_values(&[option]).inc();
    }
}

async fn metadata(
    State(state): State<Arc<AppState>>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let engine = engine(&state)?;
    let (name, ids) = wire::metadata_query(&body(raw)?)?;
    let started = Instant::now();
    let rows = engine.metadata(name.as_deref(), ids).await?;
    state.metrics.stage_seconds.with_label_values(&["metadata"]).observe(started.elapsed().as_secs_f64());
    Ok(Json(Value::Array(rows.into_iter().map(|(id, m)| json!({ "id": id, "metadata": m })).collect())))
}

/// clip-front's configuration: the backend URL (default: where the page came from), index and URL column.
async fn config_json(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Json<Value> {
    let o = &state.options;
    let backend = o.default_backend.clone().unwrap_or_else(|| {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        format!("http://{host}/")
    });
    Json(json!({
        "defaultBackend": backend,
        "defaultIndex": o.default_index.clone().unwrap_or_default(),
        "urlColumn": o.url_column,
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Some(e) = state.engine.get() {
        for r in e.indices().iter() {
            let (text, image) = r.encoder.panics();
            let gauge = |tower: &str, n: u64| {
                state.metrics.encoder_panics.with_label_values(&[r.name.as_str(), tower]).set(n as i64)
            };
            gauge("text", text);
            gauge("image", image);
            let (hits, misses) = r.encoder.text_cache_counts();
            let cache = |outcome: &str, n: u64| {
                state.metrics.text_cache.with_label_values(&[r.name.as_str(), outcome]).set(n as i64)
            };
            cache("hit", hits);
            cache("miss", misses);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.engine.get() {
        Some(e) => {
            // A front is ready when every shard of its sharded indices is (and knows their row counts).
            if let Err(err) = e.check_shards().await {
                let error = err.to_string();
                return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "error": error })))
                    .into_response();
            }
            // An encoder whose worker stopped fails every query of its kind: not ready, with the reason.
            if let Some((name, problem)) = e.indices().iter().find_map(|r| r.encoder.problem().map(|p| (&r.name, p))) {
                let error = format!("index {name}: {problem}");
                return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "error": error })))
                    .into_response();
            }
            let indices = e.indices();
            let versions: serde_json::Map<String, Value> =
                indices.iter().map(|r| (r.name.clone(), Value::from(SearchEngine::version_of(r)))).collect();
            let mut rows = serde_json::Map::new();
            for r in indices.iter() {
                let n = match &r.shards {
                    Some(s) => s.rows().await.unwrap_or(0),
                    None => r.image.as_ref().or(r.text.as_ref()).map(|i| i.len()).unwrap_or(0),
                };
                rows.insert(r.name.clone(), Value::from(n));
            }
            Json(json!({ "ready": true, "indices": versions, "rows": rows })).into_response()
        }
        None => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "error": "indices are still loading" })))
                .into_response()
        }
    }
}

/// `POST /reload`: loads every index folder again and serves the new files from now on (an `index --append` or a
/// copied-in rebuild); requests in flight finish on the old ones. A failed reload keeps the old version and says
/// why; `/readyz` shows the versions served.
async fn reload(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let engine = engine(&state)?.clone();
    let reloading = engine.clone();
    let outcome = tokio::task::spawn_blocking(move || reloading.reload())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("reload task: {e}")))?;
    let label = match &outcome {
        Ok(_) => "reloaded",
        Err(SearchError::ReloadRunning) => "busy",
        Err(_) => "failed",
    };
    state.metrics.reloads.with_label_values(&[label]).inc();
    let changes = outcome.map_err(|e| match e {
        SearchError::ReloadRunning => ApiError::from(e),
        e => {
            tracing::error!(error = %e, "reload failed; still serving the previous indices");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload failed, still serving the previous indices: {e}"),
            )
        }
    })?;
    state.publish_sizes(&engine);
    let indices: serde_json::Map<String, Value> = changes
        .into_iter()
        .map(|c| (c.name, json!({ "version": c.version, "previous": c.previous, "vectors": c.vectors })))
        .collect();
    tracing::info!(indices = %serde_json::Value::Object(indices.clone()), "indices reloaded");
    Ok(Json(json!({ "reloaded": true, "indices": indices })))
}

async fn no_ui() -> impl IntoResponse {
    let page = "<!doctype html><title>clip-retrieval</title><h1>clip-retrieval back</h1><p>The web UI is not built: \
                run <code>npm ci &amp;&amp; npm run build</code> in <code>front/</code>, or pass <code>--front_dist\
                </code>.</p><p>API: <a href=\"/indices-list\">/indices-list</a>, POST /knn-service, POST /metadata, \
                <a href=\"/metrics\">/metrics</a>.</p>";
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}
