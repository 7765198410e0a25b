//! The HTTP face of the engine: clip-retrieval's back API on axum, wire-compatible with its clients (ClipClient,
//! clip-front), with request limits, Prometheus metrics, health probes, the web UI and graceful shutdown. It calls
//! `clip-search` only; faiss and the model stay behind that crate.

pub mod app;
pub mod metrics;
pub mod wire;

pub use app::{router, AppState, HttpOptions, CAPPED_HEADER, SKIPPED_HEADER};

use clip_search::SearchEngine;
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
/// on when done), and serves until SIGTERM or Ctrl-C, letting requests in flight finish. `on_listening` gets the
/// bound address (port 0 picks a free one).
pub async fn serve(
    host: &str,
    port: u16,
    options: HttpOptions,
    load: impl FnOnce() -> clip_search::Result<SearchEngine> + Send + 'static,
    on_listening: impl FnOnce(std::net::SocketAddr),
) -> Result<(), ServerError> {
    let addr = format!("{host}:{port}");
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind { addr: addr.clone(), source })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    let state = Arc::new(AppState::new(options));
    on_listening(local);
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<clip_search::SearchError>();
    let loading = state.clone();
    tokio::task::spawn_blocking(move || {
        // A panic while loading must stop the server like an error does, not leave it unready forever.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
            .unwrap_or_else(|_| Err(clip_search::SearchError::Internal("loading the indices panicked".into())));
        match loaded {
            Ok(engine) => {
                loading.set_engine(Arc::new(engine));
                tracing::info!("indices loaded; ready");
            }
            Err(e) => {
                let _ = failed_tx.send(e);
            }
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Option<clip_search::SearchError>>();
    tokio::spawn(async move {
        let reason = tokio::select! {
            _ = shutdown_signal() => None,
            Ok(e) = failed_rx => Some(e),
        };
        let _ = stop_tx.send(reason);
    });
    let (error_tx, error_rx) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        let reason = stop_rx.await.ok().flatten();
        tracing::info!("shutting down: finishing requests in flight");
        let _ = error_tx.send(reason);
    };
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await.map_err(ServerError::Serve)?;
    match error_rx.await {
        Ok(Some(e)) => Err(ServerError::Load(e)),
        _ => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
