//! Query embeddings for a server: one worker thread per tower takes every request waiting in its queue and encodes
//! them as one batch, so concurrent text queries share a model run instead of queueing behind each other.
//!
//! Image decoding and resizing run on the blocking pool (bounded), before the image joins its tower's queue.

use crate::error::{Result, SearchError};
use clip_model::ClipModel;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

/// An embedding and how it was made.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The L2-normalised query embedding.
    pub embedding: Vec<f32>,
    /// How many queries shared the model run.
    pub batch_size: usize,
}

/// Bounds of the encoders.
#[derive(Debug, Clone, Copy)]
pub struct EncoderLimits {
    /// Most queries encoded in one model run.
    pub max_batch: usize,
    /// Most queries waiting per tower; beyond it requests are refused as overloaded.
    pub queue: usize,
    /// Images decoded and resized at once.
    pub preprocess_threads: usize,
    /// What one query image may cost to decode.
    pub image: clip_model::ImageLimits,
    /// Text query embeddings kept, most recently used first (`--text_cache_size`; 0 keeps none). Real query
    /// streams repeat ("cat", "dog"), and a hit costs a hash lookup instead of a text tower run.
    pub text_cache: usize,
}

/// Longest caption cached (bytes): longer ones are rare repeats and would let one entry hold a large key.
pub const MAX_CACHED_TEXT_BYTES: usize = 1024;

impl Default for EncoderLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { max_batch: 64, queue: 1024, preprocess_threads: cores, image: Default::default(), text_cache: 10_000 }
    }
}

/// A bounded LRU of text query embeddings, with its hit and miss counts.
struct TextCache {
    entries: Mutex<lru::LruCache<String, Vec<f32>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl TextCache {
    fn new(capacity: usize) -> Option<Self> {
        let capacity = std::num::NonZeroUsize::new(capacity)?;
        Some(Self {
            entries: Mutex::new(lru::LruCache::new(capacity)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    fn get(&self, text: &str) -> Option<Vec<f32>> {
        let found = self.entries.lock().ok()?.get(text).cloned();
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn put(&self, text: String, embedding: &[f32]) {
        if text.len() <= MAX_CACHED_TEXT_BYTES {
            if let Ok(mut entries) = self.entries.lock() {
                entries.put(text, embedding.to_vec());
            }
        }
    }
}

struct Job<T> {
    input: T,
    reply: oneshot::Sender<Result<Encoded>>,
}

/// A loaded model serving query embeddings from many tasks at once.
pub struct QueryEncoder {
    model: Arc<ClipModel>,
    text_queue: Sender<Job<String>>,
    image_queue: Sender<Job<Vec<f32>>>,
    preprocess_slots: Arc<Semaphore>,
    workers: [Arc<WorkerHealth>; 2],
    text_cache: Option<TextCache>,
}

impl QueryEncoder {
    /// Starts the two tower workers for `model`.
    pub fn new(model: ClipModel, limits: EncoderLimits) -> Self {
        let model = Arc::new(model);
        let (text_queue, text_rx) = crossbeam_channel::bounded::<Job<String>>(limits.queue.max(1));
        let (image_queue, image_rx) = crossbeam_channel::bounded::<Job<Vec<f32>>>(limits.queue.max(1));
        let m = model.clone();
        let text_health = spawn_worker("text-encoder", text_rx, limits.max_batch, move |texts: &[String]| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            m.encode_texts(&refs)
        });
        let m = model.clone();
        let len = model.image_tensor_len();
        let image_health = spawn_worker("image-encoder", image_rx, limits.max_batch, move |images: &[Vec<f32>]| {
            let mut pixels = Vec::with_capacity(images.len() * len);
            images.iter().for_each(|p| pixels.extend_from_slice(p));
            m.encode_images(&pixels)
        });
        let preprocess_slots = Arc::new(Semaphore::new(limits.preprocess_threads.max(1)));
        let text_cache = TextCache::new(limits.text_cache);
        Self { model, text_queue, image_queue, preprocess_slots, workers: [text_health, image_health], text_cache }
    }

    /// Why this encoder cannot serve (a worker stopped), for readiness; `None` when both workers run.
    pub fn problem(&self) -> Option<String> {
        self.workers.iter().find_map(|w| w.problem())
    }

    /// Panics caught in the workers so far (text, image).
    pub fn panics(&self) -> (u64, u64) {
        (self.workers[0].panics(), self.workers[1].panics())
    }

    /// Embedding width of the model.
    pub fn embed_dim(&self) -> usize {
        self.model.embed_dim()
    }

    /// `(hits, misses)` of the text query cache (both 0 when it is off).
    pub fn text_cache_counts(&self) -> (u64, u64) {
        self.text_cache.as_ref().map_or((0, 0), |c| (c.hits.load(Ordering::Relaxed), c.misses.load(Ordering::Relaxed)))
    }

    /// The model this encoder runs (its files and precisions).
    pub fn model(&self) -> &ClipModel {
        &self.model
    }

    /// Embeds one caption: from the cache when it was asked recently (`batch_size` 0: no model run), else batched
    /// with whatever else is waiting.
    pub async fn text(&self, text: String) -> Result<Encoded> {
        let Some(cache) = &self.text_cache else { return submit(&self.text_queue, text, "text queue full").await };
        if let Some(embedding) = cache.get(&text) {
            return Ok(Encoded { embedding, batch_size: 0 });
        }
        let encoded = submit(&self.text_queue, text.clone(), "text queue full").await?;
        cache.put(text, &encoded.embedding);
        Ok(encoded)
    }

    /// Decodes, preprocesses and embeds one encoded image; returns the preprocessing time too. Undecodable bytes
    /// are a request error on `field`.
    pub async fn image(&self, bytes: Vec<u8>, field: &'static str) -> Result<(Encoded, Duration)> {
        let slot =
            self.preprocess_slots.clone().acquire_owned().await.map_err(|_| SearchError::Internal("closed".into()))?;
        let model = self.model.clone();
        let started = Instant::now();
        // The permit moves into the blocking task: a request cancelled meanwhile cannot free it while the decode
        // still runs, so the bound holds for the work, not for the waiting requests.
        let pixels = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            model.preprocess_image(&bytes)
        })
        .await
        .map_err(|e| SearchError::Internal(format!("image preprocessing task: {e}")))?
        .map_err(|e| SearchError::bad(field, e.to_string()))?;
        let preprocess = started.elapsed();
        Ok((submit(&self.image_queue, pixels, "image queue full").await?, preprocess))
    }
}

async fn submit<T>(queue: &Sender<Job<T>>, input: T, full: &'static str) -> Result<Encoded> {
    let (reply, answer) = oneshot::channel();
    match queue.try_send(Job { input, reply }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(SearchError::Overloaded(full)),
        Err(TrySendError::Disconnected(_)) => return Err(SearchError::Internal("encoder worker stopped".into())),
    }
    answer.await.map_err(|_| SearchError::Internal("encoder worker dropped a query".into()))?
}

/// What the server knows about one tower's worker thread: panics caught (each fails only the queries of that
/// model run; the worker goes on with the next batch) and whether it is still running.
#[derive(Debug, Default)]
pub struct WorkerHealth {
    panics: AtomicU64,
    stopped: AtomicBool,
    last_panic: Mutex<Option<String>>,
}

impl WorkerHealth {
    /// Panics caught so far.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Why the worker cannot serve, when it cannot.
    pub fn problem(&self) -> Option<String> {
        self.stopped.load(Ordering::Relaxed).then(|| {
            let last = self.last_panic.lock().map(|p| p.clone()).unwrap_or_default();
            format!("worker stopped (last panic: {})", last.unwrap_or_else(|| "none".into()))
        })
    }

    fn record_panic(&self, name: &str, payload: &(dyn std::any::Any + Send)) -> String {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        let message = format!("{name} panicked: {what}");
        self.panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(worker = name, panic = %what, "encoder panicked; the queries of that batch fail, the worker goes on");
        if let Ok(mut last) = self.last_panic.lock() {
            *last = Some(message.clone());
        }
        message
    }
}

/// Runs `encode` on batches drained from `queue` until every sender is gone. A panic inside `encode` is caught and
/// answered as an error for that batch's queries (each retried alone, so one poisoned input fails only itself);
/// a panic anywhere else in the loop restarts the loop, at most `MAX_RESTARTS` times before the worker is
/// reported stopped (readiness turns false).
fn spawn_worker<T: Send + 'static>(
    name: &'static str,
    queue: Receiver<Job<T>>,
    max_batch: usize,
    encode: impl Fn(&[T]) -> clip_model::Result<Vec<Vec<f32>>> + Send + 'static,
) -> Arc<WorkerHealth> {
    const MAX_RESTARTS: u32 = 100;
    let health = Arc::new(WorkerHealth::default());
    let h = health.clone();
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        let guarded = |inputs: &[T]| match catch_unwind(AssertUnwindSafe(|| encode(inputs))) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(payload) => Err(h.record_panic(name, payload.as_ref())),
        };
        for _ in 0..=MAX_RESTARTS {
            let run = catch_unwind(AssertUnwindSafe(|| {
                while let Ok(first) = queue.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < max_batch.max(1) {
                        match queue.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    run_batch(jobs, &guarded);
                }
            }));
            match run {
                Ok(()) => return, // every sender gone: the encoder was dropped
                Err(payload) => {
                    h.record_panic(name, payload.as_ref());
                }
            }
        }
        h.stopped.store(true, Ordering::Relaxed);
    });
    spawned.expect("spawning an encoder thread");
    health
}

fn run_batch<T>(jobs: Vec<Job<T>>, encode: &impl Fn(&[T]) -> std::result::Result<Vec<Vec<f32>>, String>) {
    let (inputs, replies): (Vec<T>, Vec<_>) = jobs.into_iter().map(|j| (j.input, j.reply)).unzip();
    let batch_size = inputs.len();
    let reply = |reply: oneshot::Sender<Result<Encoded>>, result: Result<Vec<f32>>| {
        let _ = reply.send(result.map(|embedding| Encoded { embedding, batch_size }));
    };
    match encode(&inputs) {
        Ok(embeddings) if embeddings.len() == batch_size => {
            replies.into_iter().zip(embeddings).for_each(|(r, e)| reply(r, Ok(e)));
        }
        // One bad input must not fail the queries batched with it: retry each alone.
        _ if batch_size > 1 => {
            for (r, input) in replies.into_iter().zip(inputs) {
                let result = encode(std::slice::from_ref(&input)).map_err(SearchError::Internal).and_then(|mut e| {
                    e.pop().ok_or_else(|| SearchError::Internal("the model returned no embedding".into()))
                });
                reply(r, result);
            }
        }
        Ok(_) => replies.into_iter().for_each(|r| reply(r, Err(SearchError::Internal("no embedding".into())))),
        Err(message) => replies.into_iter().for_each(|r| reply(r, Err(SearchError::Internal(message.clone())))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_cache_is_bounded_counts_hits_and_misses_and_skips_long_texts() {
        let cache = TextCache::new(2).unwrap();
        assert!(TextCache::new(0).is_none(), "size 0 turns it off");
        assert_eq!(cache.get("cat"), None);
        cache.put("cat".into(), &[1.0]);
        cache.put("dog".into(), &[2.0]);
        assert_eq!(cache.get("cat"), Some(vec![1.0]));
        cache.put("bird".into(), &[3.0]); // evicts the least recently used: dog
        assert_eq!(cache.get("dog"), None);
        assert_eq!(cache.get("bird"), Some(vec![3.0]));
        cache.put("x".repeat(MAX_CACHED_TEXT_BYTES + 1), &[4.0]);
        assert_eq!(cache.get(&"x".repeat(MAX_CACHED_TEXT_BYTES + 1)), None);
        assert_eq!((cache.hits.load(Ordering::Relaxed), cache.misses.load(Ordering::Relaxed)), (2, 3));
    }

    fn query(queue: &Sender<Job<String>>, text: &str) -> oneshot::Receiver<Result<Encoded>> {
        let (reply, answer) = oneshot::channel();
        queue.send(Job { input: text.into(), reply }).unwrap();
        answer
    }

    #[test]
    fn a_panicking_input_fails_alone_and_the_worker_goes_on() {
        let (queue, rx) = crossbeam_channel::bounded::<Job<String>>(16);
        let health = spawn_worker("text-encoder", rx, 8, |texts: &[String]| {
            if texts.iter().any(|t| t == "poison") {
                panic!("tokenizer bug");
            }
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        });
        // Queued together so they share a batch.
        let answers: Vec<_> = ["ok", "poison", "fine"].iter().map(|t| query(&queue, t)).collect();
        let results: Vec<_> = answers.into_iter().map(|a| a.blocking_recv().unwrap()).collect();
        assert_eq!(results[0].as_ref().unwrap().embedding, vec![2.0]);
        let err = results[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("text-encoder panicked: tokenizer bug"), "{err}");
        assert_eq!(results[2].as_ref().unwrap().embedding, vec![4.0]);
        // Later queries are served; nothing reports the worker stopped.
        assert_eq!(query(&queue, "later").blocking_recv().unwrap().unwrap().embedding, vec![5.0]);
        assert!(health.panics() >= 1);
        assert_eq!(health.problem(), None);
    }
}
