//! Fetching `image_url` queries safely: a time limit, a size cap, an image content type, and no requests to loopback,
//! private or link-local addresses (checked after DNS resolution and on every redirect) unless explicitly allowed.

use crate::error::{Result, SearchError};
use clip_data::error::one_line;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Limits of `image_url` fetching.
#[derive(Debug, Clone, Copy)]
pub struct FetchRules {
    /// Whole-request time limit (clip-retrieval uses 10 s).
    pub timeout: Duration,
    /// Largest image body accepted.
    pub max_bytes: usize,
    /// Allow loopback, private and link-local targets (tests, trusted networks).
    pub allow_private: bool,
    /// Send fetches through HTTP(S)_PROXY / NO_PROXY. Off by default: a proxy resolves names itself, past the
    /// address guard (literal IPs in URLs and redirects are still checked), so it must enforce egress itself.
    pub use_proxy: bool,
}

impl Default for FetchRules {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), max_bytes: 20 << 20, allow_private: false, use_proxy: false }
    }
}

/// Downloads query images under [`FetchRules`].
pub struct ImageFetcher {
    client: reqwest::Client,
    rules: FetchRules,
}

const MAX_REDIRECTS: usize = 3;

impl ImageFetcher {
    /// A fetcher with its own connection pool.
    pub fn new(rules: FetchRules) -> Result<Self> {
        let allow_private = rules.allow_private;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if let Err(e) = check_url(attempt.url(), allow_private) {
                attempt.error(e)
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .timeout(rules.timeout)
            .connect_timeout(rules.timeout)
            .redirect(redirects)
            .user_agent(concat!("clip-retrieval-rs/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(std::sync::Arc::new(GuardedResolver { allow_private }));
        if !rules.use_proxy {
            // A proxy resolves names itself, past the resolver's guard: HTTP(S)_PROXY is not honoured.
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|e| SearchError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { client, rules })
    }

    /// The image bytes at `url`; every failure is a request error on `image_url` saying why.
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>> {
        let bad = |message: String| SearchError::bad("image_url", message);
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
        check_url(&parsed, self.rules.allow_private).map_err(|e| bad(format!("{url}: {e}")))?;
        let mut response = self.client.get(parsed).send().await.map_err(|e| bad(format!("{url}: {}", one_line(&e))))?;
        if !response.status().is_success() {
            return Err(bad(format!("{url}: the server answered {}", response.status())));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !content_type.starts_with("image/") {
            return Err(bad(format!("{url}: content type {content_type:?} is not an image")));
        }
        let max = self.rules.max_bytes;
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(bad(format!("{url}: larger than the {max}-byte limit")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| bad(format!("{url}: {}", one_line(&e))))? {
            if body.len() + chunk.len() > max {
                return Err(bad(format!("{url}: larger than the {max}-byte limit")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Only http(s), and no literal private address (host names are checked by the resolver).
fn check_url(url: &reqwest::Url, allow_private: bool) -> std::result::Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err("no host".into()),
    };
    if allow_private || is_public(ip) {
        Ok(())
    } else {
        Err(format!("{ip} is a loopback, private or link-local address (start the server with --allow_private_urls to allow it)"))
    }
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240 // reserved (240.0.0.0/4)
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18.0.0/15
                || (a == 192 && b == 0 && c == 0)) // IETF protocol assignments, 192.0.0.0/24
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let [first, second, ..] = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                // NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48) and 6to4 (2002::/16) reach IPv4 hosts,
                // private ones included, through a translator: refused whatever they embed.
                || (first == 0x64 && second == 0xff9b)
                || first == 0x2002)
        }
    }
}

/// Resolves host names and drops private addresses, so a public name cannot point the server at its own network.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.iter().copied().filter(|a| allow_private || is_public(a.ip())).collect();
            if allowed.is_empty() {
                let message = format!(
                    "{host} resolves only to loopback, private or link-local addresses (start the server with \
                     --allow_private_urls to allow them)"
                );
                return Err(Box::new(std::io::Error::new(std::io::ErrorKind::PermissionDenied, message)) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "198.18.0.1",
            "198.19.255.254",
            "192.0.0.8",
            "240.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:c0a8:101::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "198.20.0.1", "192.0.1.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_connection() {
        let check = |u: &str, allow| check_url(&reqwest::Url::parse(u).unwrap(), allow);
        assert!(check("http://127.0.0.1:9/x.png", false).unwrap_err().contains("allow_private_urls"));
        assert!(check("http://127.0.0.1:9/x.png", true).is_ok());
        assert!(check("file:///etc/passwd", true).unwrap_err().contains("scheme"));
        assert!(check("http://[::1]/", false).is_err());
        assert!(check("https://example.com/a.jpg", false).is_ok());
    }
}
