//! The admin HTTP listener: `/metrics` (Prometheus text), `/stats` (JSON), `/healthz`,
//! and `POST /purge` (drop cached entries).
//!
//! A deliberately small HTTP/1.1 responder: one request per connection, no keep-alive, no
//! request body (`/purge` takes its arguments in the query string); enough for
//! Prometheus scrapers, curl, `warpdrive stats` and `warpdrive purge`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cache::Store;
use crate::cache::tier::Tier;
use crate::metrics::{DeploymentMetrics, Registry};

/// What the admin listener answers for: the counters, and each deployment's cache.
#[derive(Clone, Default)]
pub struct Admin {
    /// The deployments' counters.
    pub registry: Registry,
    /// Each deployment's cache.
    pub caches: Vec<DeploymentCache>,
}

/// One deployment's cache, as a purge reaches it.
#[derive(Clone)]
pub struct DeploymentCache {
    /// The deployment.
    pub name: String,
    /// Its store.
    pub store: Arc<Store>,
    /// Its upstream tier, through which other instances purge too.
    pub tier: Option<Arc<Tier>>,
    /// Its counters.
    pub metrics: Arc<DeploymentMetrics>,
}

/// What `POST /purge` dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// Entries dropped in this instance, in all.
    pub dropped: u64,
    /// Per deployment purged.
    pub deployments: Vec<DeploymentPurged>,
}

/// What one deployment's purge dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentPurged {
    /// The deployment.
    pub deployment: String,
    /// Entries dropped.
    pub dropped: u64,
    /// With an upstream tier: whether Redis took the purge to the other instances
    /// (false when it could not be reached). `None` without one.
    #[serde(default)]
    pub shared: Option<bool>,
}

impl Admin {
    /// Purges what the query string asks: `all=true`, or `table=T` (repeatable), for
    /// every deployment or `deployment=NAME`. The error is the client's.
    async fn purge(&self, query: &str) -> Result<Purged, (&'static str, String)> {
        let mut deployment = None;
        let mut tables = Vec::new();
        let mut all = false;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match name {
                "deployment" => deployment = Some(value),
                "table" => tables.push(value),
                "all" => all = value == "true",
                other => {
                    return Err((
                        "400 Bad Request",
                        format!(
                            "unknown purge argument {other:?}: use all=true, table=T (repeatable) and deployment=NAME\n"
                        ),
                    ));
                }
            }
        }
        if all != tables.is_empty() {
            return Err((
                "400 Bad Request",
                "say what to purge: all=true, or one or more table=T (not both)\n".to_owned(),
            ));
        }
        let caches: Vec<_> = self
            .caches
            .iter()
            .filter(|cache| {
                deployment
                    .as_ref()
                    .is_none_or(|wanted| *wanted == cache.name)
            })
            .collect();
        if caches.is_empty() {
            let names: Vec<&str> = self
                .caches
                .iter()
                .map(|cache| cache.name.as_str())
                .collect();
            return Err((
                "404 Not Found",
                format!(
                    "no deployment {:?} here; deployments: {}\n",
                    deployment.unwrap_or_default(),
                    names.join(", ")
                ),
            ));
        }
        let tables = (!all).then_some(tables.as_slice());
        let mut deployments = Vec::new();
        for cache in caches {
            let dropped = cache.store.purge(tables);
            cache
                .metrics
                .invalidations_purge
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let shared = match &cache.tier {
                Some(tier) => Some(tier.purge(tables).await),
                None => None,
            };
            deployments.push(DeploymentPurged {
                deployment: cache.name.clone(),
                dropped,
                shared,
            });
        }
        Ok(Purged {
            dropped: deployments.iter().map(|d| d.dropped).sum(),
            deployments,
        })
    }
}

/// `%XX` escapes and `+` decoded, as in a query string.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes.get(index + 1..index + 3).and_then(|hex| {
            std::str::from_utf8(hex)
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        });
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                index += 1;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves admin requests until the listener's task is dropped.
pub async fn serve(listener: TcpListener, admin: Admin) {
    let admin = Arc::new(admin);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &admin)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, admin: &Admin) -> std::io::Result<()> {
    let registry = &admin.registry;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let (status, content_type, body) = match (method, path.as_bytes()) {
        (b"GET", b"/metrics") => ("200 OK", "text/plain; version=0.0.4", registry.prometheus()),
        (b"GET", b"/stats") => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(&registry.snapshots()).unwrap_or_else(|_| "[]".to_owned()),
        ),
        (b"GET", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        (b"POST", b"/purge") => match admin.purge(query).await {
            Ok(purged) => (
                "200 OK",
                "application/json",
                serde_json::to_string_pretty(&purged).unwrap_or_else(|_| "{}".to_owned()),
            ),
            Err((status, message)) => (status, "text/plain", message),
        },
        (b"GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics, /stats or /healthz\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics, /stats or /healthz, or POST /purge\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Fetches `path` from an admin listener (for `warpdrive stats`).
pub async fn get(address: &str, path: &str) -> std::io::Result<String> {
    request(address, "GET", path).await
}

/// Posts to `path` (with its query string) on an admin listener (for `warpdrive purge`).
pub async fn post(address: &str, path: &str) -> std::io::Result<String> {
    request(address, "POST", path).await
}

async fn request(address: &str, method: &str, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "admin listener answered {}: {}",
            head.lines().next().unwrap_or_default(),
            body.trim()
        )));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::{CacheStatus, Store};
    use crate::clock::Clock;
    use crate::metrics::DeploymentMetrics;

    #[tokio::test]
    async fn routes() {
        let metrics = Arc::new(DeploymentMetrics::new(
            "d",
            crate::protocol::Protocol::Postgres,
            Store::new(1 << 20, 1 << 10, Clock::system()),
        ));
        metrics.record(CacheStatus::Hit, 1, 2, Duration::from_millis(1), false);
        let mut registry = Registry::default();
        registry.add(Arc::clone(&metrics));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let store = Store::new(1 << 20, 1 << 10, Clock::system());
        let admin = Admin {
            registry,
            caches: vec![DeploymentCache {
                name: "d".to_owned(),
                store,
                tier: None,
                metrics: Arc::clone(&metrics),
            }],
        };
        let server = tokio::spawn(serve(listener, admin));
        let text = get(&address, "/metrics").await.unwrap();
        assert!(text.contains("warpdrive_queries_total{deployment=\"d\",protocol=\"postgresql\",cache_status=\"hit\"} 1"));
        let stats: serde_json::Value =
            serde_json::from_str(&get(&address, "/stats").await.unwrap()).unwrap();
        assert_eq!(stats[0]["deployment"], "d");
        assert_eq!(get(&address, "/healthz").await.unwrap(), "ok\n");
        assert!(
            get(&address, "/nope")
                .await
                .unwrap_err()
                .to_string()
                .contains("404")
        );
        let purged: Purged = serde_json::from_str(
            &post(&address, "/purge?table=shop%2Eprices&table=t")
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(purged.deployments[0].deployment, "d");
        assert_eq!(purged.deployments[0].shared, None, "no tier");
        let text = get(&address, "/metrics").await.unwrap();
        assert!(
            text.contains(
                "warpdrive_cache_invalidations_total{deployment=\"d\",cause=\"purge\"} 1"
            ),
            "{text}"
        );
        let refusal = |path: &'static str| {
            let address = address.clone();
            async move { post(&address, path).await.unwrap_err().to_string() }
        };
        assert!(refusal("/purge").await.contains("say what to purge"));
        assert!(
            refusal("/purge?all=true&table=t")
                .await
                .contains("not both")
        );
        assert!(
            refusal("/purge?all=true&deployment=x")
                .await
                .contains("no deployment \"x\"")
        );
        assert!(
            refusal("/purge?everything")
                .await
                .contains("unknown purge argument")
        );
        server.abort();
    }
}
