//! The admin HTTP listener: `/metrics` (Prometheus text), `/stats` (JSON), `/healthz`.
//!
//! A deliberately small HTTP/1.1 responder: GET only, one request per connection, no
//! keep-alive; enough for Prometheus scrapers, curl and `warpdrive stats`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Registry;

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves admin requests until the listener's task is dropped.
pub async fn serve(listener: TcpListener, registry: Registry) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &registry)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
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
    let path = parts.next().unwrap_or_default();
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/metrics") => ("200 OK", "text/plain; version=0.0.4", registry.prometheus()),
        (b"GET", b"/stats") => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(&registry.snapshots()).unwrap_or_else(|_| "[]".to_owned()),
        ),
        (b"GET", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        (b"GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics, /stats or /healthz\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is supported\n".to_owned(),
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
    let mut stream = TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "admin listener answered {}",
            head.lines().next().unwrap_or_default()
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
            Store::new(1 << 20, 1 << 10, Clock::system()),
        ));
        metrics.record(CacheStatus::Hit, 1, 2, Duration::from_millis(1), false);
        let mut registry = Registry::default();
        registry.add(metrics);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(serve(listener, registry));
        let metrics = get(&address, "/metrics").await.unwrap();
        assert!(
            metrics.contains("warpdrive_queries_total{deployment=\"d\",cache_status=\"hit\"} 1")
        );
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
        server.abort();
    }
}
