//! Query embeddings for a server: one worker thread per tower takes every request waiting in its queue and encodes
//! them as one batch, so concurrent text queries share a model run instead of queueing behind each other.
//!
//! Image decoding and resizing run on the blocking pool (bounded), before the image joins its tower's queue.

use crate::error::{Result, SearchError};
use clip_model::ClipModel;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;
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
}

impl Default for EncoderLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { max_batch: 64, queue: 1024, preprocess_threads: cores, image: Default::default() }
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
}

impl QueryEncoder {
    /// Starts the two tower workers for `model`.
    pub fn new(model: ClipModel, limits: EncoderLimits) -> Self {
        let model = Arc::new(model);
        let (text_queue, text_rx) = crossbeam_channel::bounded::<Job<String>>(limits.queue.max(1));
        let (image_queue, image_rx) = crossbeam_channel::bounded::<Job<Vec<f32>>>(limits.queue.max(1));
        let m = model.clone();
        spawn_worker("text-encoder", text_rx, limits.max_batch, move |texts: &[String]| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            m.encode_texts(&refs)
        });
        let m = model.clone();
        let len = model.image_tensor_len();
        spawn_worker("image-encoder", image_rx, limits.max_batch, move |images: &[Vec<f32>]| {
            let mut pixels = Vec::with_capacity(images.len() * len);
            images.iter().for_each(|p| pixels.extend_from_slice(p));
            m.encode_images(&pixels)
        });
        let preprocess_slots = Arc::new(Semaphore::new(limits.preprocess_threads.max(1)));
        Self { model, text_queue, image_queue, preprocess_slots }
    }

    /// Embedding width of the model.
    pub fn embed_dim(&self) -> usize {
        self.model.embed_dim()
    }

    /// Embeds one caption, batched with whatever else is waiting.
    pub async fn text(&self, text: String) -> Result<Encoded> {
        submit(&self.text_queue, text, "text queue full").await
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

/// Runs `encode` on batches drained from `queue` until every sender is gone.
fn spawn_worker<T: Send + 'static>(
    name: &str,
    queue: Receiver<Job<T>>,
    max_batch: usize,
    encode: impl Fn(&[T]) -> clip_model::Result<Vec<Vec<f32>>> + Send + 'static,
) {
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        while let Ok(first) = queue.recv() {
            let mut jobs = vec![first];
            while jobs.len() < max_batch.max(1) {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            run_batch(jobs, &encode);
        }
    });
    spawned.expect("spawning an encoder thread");
}

fn run_batch<T>(jobs: Vec<Job<T>>, encode: &impl Fn(&[T]) -> clip_model::Result<Vec<Vec<f32>>>) {
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
                let one = encode(std::slice::from_ref(&input));
                let result = one.map_err(SearchError::from).and_then(|mut e| {
                    e.pop().ok_or_else(|| SearchError::Internal("the model returned no embedding".into()))
                });
                reply(r, result);
            }
        }
        Ok(_) => replies.into_iter().for_each(|r| reply(r, Err(SearchError::Internal("no embedding".into())))),
        Err(e) => {
            let message = e.to_string();
            replies.into_iter().for_each(|r| reply(r, Err(SearchError::Internal(message.clone()))));
        }
    }
}
