//! The HTTP face of the engine: clip-retrieval's back API on axum, wire-compatible with its clients (ClipClient,
//! clip-front), with request limits, Prometheus metrics, health probes, the web UI and graceful shutdown. It calls
//! `clip-search` only; faiss and the model stay behind that crate.

pub mod app;
pub mod metrics;
pub mod wire;

pub use app::{router, AppState, HttpOptions, CAPPED_HEADER, SKIPPED_HEADER};

use clip_search::SearchEngine;
use clip_shutdown::CancellationToken;
use std::sync::Arc;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// host:port.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The indices could not be loaded.
    #[error(transparent)]
    Load(#[from] clip_search::SearchError),
    /// Serving failed.
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// Binds `host:port`, answers probes at once, loads the indices with `load` on a blocking thread (readiness turns
/// on when done; `load` gets the observer that puts shard calls into the server's metrics), and serves until `shutdown` is cancelled (SIGTERM, Ctrl-C: see `clip_shutdown::on_signal`),
/// letting requests in flight finish. A failed load cancels it too and is returned. `on_listening` gets the bound
/// address (port 0 picks a free one).
pub async fn serve(
    host: &str,
    port: u16,
    options: HttpOptions,
    load: impl FnOnce(clip_search::ShardObserver) -> clip_search::Result<SearchEngine> + Send + 'static,
    on_listening: impl FnOnce(std::net::SocketAddr),
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let addr = format!("{host}:{port}");
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind { addr: addr.clone(), source })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    let state = Arc::new(AppState::new(options));
    on_listening(local);
    let stop = shutdown.child_token();
    let load_failure = Arc::new(std::sync::Mutex::new(None::<clip_search::SearchError>));
    let (loading, failure, cancel) = (state.clone(), load_failure.clone(), stop.clone());
    let observer = state.metrics.shard_observer();
    tokio::task::spawn_blocking(move || {
        // A panic while loading must stop the server like an error does, not leave it unready forever.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || load(observer)))
            .unwrap_or_else(|_| Err(clip_search::SearchError::Internal("loading the indices panicked".into())));
        match loaded {
            Ok(engine) => {
                loading.set_engine(Arc::new(engine));
                tracing::info!("indices loaded; ready");
            }
            Err(e) => {
                *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                cancel.cancel();
            }
        }
    });
    let draining = stop.clone();
    let graceful = async move {
        draining.cancelled().await;
        tracing::info!("shutting down: finishing requests in flight");
    };
    axum::serve(listener, router(state)).with_graceful_shutdown(graceful).await.map_err(ServerError::Serve)?;
    let failed = load_failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failed {
        Some(e) => Err(ServerError::Load(e)),
        None => Ok(()),
    }
}
