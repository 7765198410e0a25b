//! Prometheus metrics of the server: requests and latency per endpoint, time per query stage, encode batch sizes,
//! rejected inputs per field, options served without their filter, and what is loaded.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 0.5 ms to 30 s.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];

/// Every metric the server publishes, in its own registry.
pub struct Metrics {
    registry: Registry,
    /// `clip_retrieval_http_requests_total{endpoint, status}`.
    pub requests: IntCounterVec,
    /// `clip_retrieval_http_request_duration_seconds{endpoint}`.
    pub request_seconds: HistogramVec,
    /// `clip_retrieval_http_requests_in_flight`.
    pub in_flight: IntGauge,
    /// `clip_retrieval_query_stage_duration_seconds{stage}`.
    pub stage_seconds: HistogramVec,
    /// `clip_retrieval_encode_batch_size{tower}`.
    pub batch_size: HistogramVec,
    /// `clip_retrieval_bad_requests_total{endpoint, field}`.
    pub bad_requests: IntCounterVec,
    /// `clip_retrieval_skipped_options_total{option}`.
    pub skipped_options: IntCounterVec,
    /// `clip_retrieval_index_vectors{index, modality}`.
    pub index_vectors: IntGaugeVec,
    /// `clip_retrieval_ready` (1 once every index is loaded).
    pub ready: IntGauge,
    /// `clip_retrieval_reloads_total{outcome}`: `POST /reload` by outcome (`reloaded`, `failed`, `busy`).
    pub reloads: IntCounterVec,
    /// `clip_retrieval_encoder_panics{index, tower}`: panics caught in an encoder worker (each failed its batch).
    pub encoder_panics: IntGaugeVec,
    /// `clip_retrieval_text_cache{index, outcome}`: text queries answered from the embedding cache (`hit`) or by
    /// the text tower (`miss`), since start (per model: indices of one model share its cache and counts).
    pub text_cache: IntGaugeVec,
    /// `clip_retrieval_shard_request_duration_seconds{index, shard, call}`: a front's calls to its shards (`knn`,
    /// `metadata`, `readyz`).
    pub shard_seconds: HistogramVec,
    /// `clip_retrieval_shard_requests_total{index, shard, call, outcome}` (`ok`, `timeout`, `error`, `refused`).
    pub shard_requests: IntCounterVec,
    /// `clip_retrieval_partial_answers_total{index}`: knn answers served without a failed shard.
    pub partial_answers: IntCounterVec,
    /// Kept so the registry owns a histogram of whole knn requests under clip-retrieval's name.
    pub full_knn_request_time: Histogram,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("clip_retrieval_http_requests_total", "HTTP requests by endpoint and status code"),
            &["endpoint", "status"],
        )
        .expect("valid metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("clip_retrieval_http_request_duration_seconds", "HTTP request latency by endpoint")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["endpoint"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("clip_retrieval_http_requests_in_flight", "HTTP requests being served")
            .expect("valid metric");
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(
                "clip_retrieval_query_stage_duration_seconds",
                "Time per knn query stage: download, image_preprocess, text_encode, image_encode, search, \
                 post_process, metadata",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid metric");
        let batch_size = HistogramVec::new(
            HistogramOpts::new("clip_retrieval_encode_batch_size", "Queries encoded together in one model run")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            &["tower"],
        )
        .expect("valid metric");
        let bad_requests = IntCounterVec::new(
            Opts::new("clip_retrieval_bad_requests_total", "Requests refused with 4xx, by endpoint and field"),
            &["endpoint", "field"],
        )
        .expect("valid metric");
        let skipped_options = IntCounterVec::new(
            Opts::new(
                "clip_retrieval_skipped_options_total",
                "Requests that asked for an option this index does not provide (served without it)",
            ),
            &["option"],
        )
        .expect("valid metric");
        let index_vectors = IntGaugeVec::new(
            Opts::new("clip_retrieval_index_vectors", "Vectors in each loaded index"),
            &["index", "modality"],
        )
        .expect("valid metric");
        let ready = IntGauge::new("clip_retrieval_ready", "1 once every index is loaded").expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new("clip_retrieval_reloads_total", "Index reloads by outcome: reloaded, failed, busy"),
            &["outcome"],
        )
        .expect("valid metric");
        let text_cache = IntGaugeVec::new(
            Opts::new(
                "clip_retrieval_text_cache",
                "Text queries answered from the embedding cache (hit) or the model (miss)",
            ),
            &["index", "outcome"],
        )
        .expect("valid metric");
        let encoder_panics = IntGaugeVec::new(
            Opts::new("clip_retrieval_encoder_panics", "Panics caught in an encoder worker (each failed its batch)"),
            &["index", "tower"],
        )
        .expect("valid metric");
        let shard_seconds = HistogramVec::new(
            HistogramOpts::new(
                "clip_retrieval_shard_request_duration_seconds",
                "Latency of a sharded index's calls to each shard, by call: knn, metadata, readyz",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["index", "shard", "call"],
        )
        .expect("valid metric");
        let shard_requests = IntCounterVec::new(
            Opts::new(
                "clip_retrieval_shard_requests_total",
                "Calls to each shard by call and outcome: ok, timeout, error, refused",
            ),
            &["index", "shard", "call", "outcome"],
        )
        .expect("valid metric");
        let partial_answers = IntCounterVec::new(
            Opts::new(
                "clip_retrieval_partial_answers_total",
                "knn answers served without a failed shard (allow_partial_results)",
            ),
            &["index"],
        )
        .expect("valid metric");
        let full_knn_request_time = Histogram::with_opts(
            HistogramOpts::new("full_knn_request_time", "Time spent processing knn request (clip-retrieval's name)")
                .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_seconds.clone()),
            Box::new(in_flight.clone()),
            Box::new(stage_seconds.clone()),
            Box::new(batch_size.clone()),
            Box::new(bad_requests.clone()),
            Box::new(skipped_options.clone()),
            Box::new(index_vectors.clone()),
            Box::new(ready.clone()),
            Box::new(reloads.clone()),
            Box::new(encoder_panics.clone()),
            Box::new(text_cache.clone()),
            Box::new(shard_seconds.clone()),
            Box::new(shard_requests.clone()),
            Box::new(partial_answers.clone()),
            Box::new(full_knn_request_time.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            request_seconds,
            in_flight,
            stage_seconds,
            batch_size,
            bad_requests,
            skipped_options,
            index_vectors,
            ready,
            reloads,
            encoder_panics,
            text_cache,
            shard_seconds,
            shard_requests,
            partial_answers,
            full_knn_request_time,
        }
    }

    /// What a sharded index reports its shard calls to: these metrics.
    pub fn shard_observer(&self) -> clip_search::ShardObserver {
        let (seconds, requests) = (self.shard_seconds.clone(), self.shard_requests.clone());
        std::sync::Arc::new(move |index: &str, shard: &str, call: &'static str, took: f64, outcome: &'static str| {
            seconds.with_label_values(&[index, shard, call]).observe(took);
            requests.with_label_values(&[index, shard, call, outcome]).inc();
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encoding to memory");
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
