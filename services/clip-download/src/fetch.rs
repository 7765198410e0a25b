//! Fetching one URL of a list, as img2dataset's downloader does: a whole-request time limit, a body size cap checked
//! from the header and while streaming (memory never exceeds the cap), retries of transient failures (timeouts,
//! network errors, 5xx, 429), and every failure reduced to the reason it is counted under in the shard's stats.
//! URL lists are the user's own input, so unlike `back`'s `image_url` fetching no address is refused.

use clip_data::error::one_line;
use std::time::Duration;

/// Limits of one fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Whole-request time limit (`--timeout`, img2dataset's default 10 s).
    pub timeout: Duration,
    /// Further attempts after a transient failure (`--retries`, default 0).
    pub retries: u32,
    /// Largest body accepted (`--max_image_bytes`).
    pub max_bytes: u64,
    /// The User-Agent header (`--user_agent_token` is appended by the caller).
    pub user_agent: String,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retries: 0,
            max_bytes: 20 << 20,
            user_agent: concat!("clip-retrieval-rs/", env!("CARGO_PKG_VERSION"), " (img2dataset-compatible)").into(),
        }
    }
}

/// Why a URL gave no image body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Not an http(s) URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The server answered with this non-success status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// Past the time limit.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The body (declared or streamed) is over the cap.
    #[error("body over {0} bytes")]
    TooLarge(u64),
    /// Connection, TLS or protocol failure.
    #[error("network error: {0}")]
    Network(String),
}

impl FetchError {
    /// The stats key: `http_404`, `timeout`, `too_large`, `network`, `invalid_url`.
    pub fn reason(&self) -> String {
        match self {
            Self::InvalidUrl(_) => "invalid_url".into(),
            Self::Status(code) => format!("http_{code}"),
            Self::Timeout(_) => "timeout".into(),
            Self::TooLarge(_) => "too_large".into(),
            Self::Network(_) => "network".into(),
        }
    }

    /// Whether another attempt may succeed.
    fn transient(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Network(_) => true,
            Self::Status(code) => *code == 429 || *code >= 500,
            Self::InvalidUrl(_) | Self::TooLarge(_) => false,
        }
    }
}

/// A connection pool shared by a shard's concurrent fetches.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    options: FetchOptions,
}

impl Fetcher {
    /// A fetcher with its own pool (up to 10 redirects, as browsers and requests follow them).
    pub fn new(options: FetchOptions) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(options.user_agent.clone())
            .build()
            .map_err(|e| FetchError::Network(format!("building the HTTP client: {e}")))?;
        Ok(Self { client, options })
    }

    /// The body at `url`, after up to `retries` further attempts on transient failures (1 s, 2 s, ... apart).
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| FetchError::InvalidUrl(format!("{url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FetchError::InvalidUrl(format!("{url:?}: scheme {:?} is not http or https", parsed.scheme())));
        }
        let mut attempt = 0;
        loop {
            match self.once(parsed.clone()).await {
                Err(e) if e.transient() && attempt < self.options.retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1 << (attempt - 1).min(5))).await;
                }
                other => return other,
            }
        }
    }

    async fn once(&self, url: reqwest::Url) -> Result<Vec<u8>, FetchError> {
        let kind = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout(self.options.timeout)
            } else {
                FetchError::Network(one_line(&e))
            }
        };
        let mut response = self.client.get(url).send().await.map_err(kind)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let max = self.options.max_bytes;
        if response.content_length().is_some_and(|n| n > max) {
            return Err(FetchError::TooLarge(max));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(kind)? {
            if body.len() as u64 + chunk.len() as u64 > max {
                return Err(FetchError::TooLarge(max));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A local server: /ok, /missing (404), /slow (answers after 6 s), /declared-huge (a 10 MB Content-Length),
    /// /streamed-huge (an unsized 10 MB body), /flaky-a and /flaky-b (503 twice, then 200; their hits counted).
    async fn server() -> (String, [Arc<AtomicUsize>; 2]) {
        let hits = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
        let flaky = |hits: Arc<AtomicUsize>| {
            get(move || {
                let hits = hits.clone();
                async move {
                    if hits.fetch_add(1, Ordering::SeqCst) < 2 {
                        Err(StatusCode::SERVICE_UNAVAILABLE)
                    } else {
                        Ok("third time")
                    }
                }
            })
        };
        let app = axum::Router::new()
            .route("/ok", get(|| async { "image bytes" }))
            .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    "late"
                }),
            )
            .route("/declared-huge", get(|| async { ([(header::CONTENT_LENGTH, "10000000")], vec![0u8; 10_000_000]) }))
            .route(
                "/streamed-huge",
                get(|| async {
                    let chunks = (0..100).map(|_| Ok::<_, std::io::Error>(vec![0u8; 100_000]));
                    Body::from_stream(futures_stream(chunks))
                }),
            )
            .route("/flaky-a", flaky(hits[0].clone()))
            .route("/flaky-b", flaky(hits[1].clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), hits)
    }

    fn futures_stream<I: Iterator + Send + 'static>(items: I) -> impl futures::Stream<Item = I::Item> {
        futures::stream::iter(items)
    }

    fn fetcher(retries: u32) -> Fetcher {
        Fetcher::new(FetchOptions {
            timeout: Duration::from_millis(1500),
            retries,
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_failure_has_its_reason_and_transient_ones_are_retried() {
        let (base, hits) = server().await;
        let f = fetcher(0);
        assert_eq!(f.fetch(&format!("{base}/ok")).await.unwrap(), b"image bytes");
        let reason = |r: Result<Vec<u8>, FetchError>| r.unwrap_err().reason();
        assert_eq!(reason(f.fetch(&format!("{base}/missing")).await), "http_404");
        assert_eq!(reason(f.fetch(&format!("{base}/slow")).await), "timeout");
        assert_eq!(reason(f.fetch(&format!("{base}/declared-huge")).await), "too_large");
        assert_eq!(reason(f.fetch(&format!("{base}/streamed-huge")).await), "too_large");
        assert_eq!(reason(f.fetch("ftp://example.com/a.jpg").await), "invalid_url");
        assert_eq!(reason(f.fetch("http://127.0.0.1:1/closed").await), "network");
        assert_eq!(reason(f.fetch(&format!("{base}/flaky-a")).await), "http_503", "no retries: the first answer");
        assert_eq!(hits[0].load(Ordering::SeqCst), 1);
        let started = std::time::Instant::now();
        let retried = fetcher(2).fetch(&format!("{base}/flaky-b")).await;
        assert_eq!(retried.unwrap(), b"third time", "two retries reach the third attempt");
        assert_eq!(hits[1].load(Ordering::SeqCst), 3);
        assert!(started.elapsed() >= Duration::from_secs(3), "1 s, then 2 s between attempts: {:?}", started.elapsed());
    }
}
