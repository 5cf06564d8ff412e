//! The admin HTTP listener (loopback by default): `GET /metrics` (Prometheus text),
//! `GET /healthz` (200 when the upstream is reachable), `GET /status` (JSON: config generation
//! and file, last reload, rules with hit counts, upstream pool state, clients), and
//! `POST /reload` (which needs `Authorization: Bearer <admin_token>` when `admin_token` is
//! set). A deliberately small HTTP/1.1 server: one request per connection.

use crate::proxy::Proxy;
use crate::server::reload::{self, Reloader};
use crate::server::status;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves admin requests until the task is dropped.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, reloader: Arc<Reloader>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (proxy, reloader) = (proxy.clone(), reloader.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, proxy, reloader))
                .await;
        });
    }
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

fn respond(status: &'static str, content_type: &'static str, body: impl Into<String>) -> Response {
    Response {
        status,
        content_type,
        body: body.into(),
    }
}

async fn handle(
    mut stream: TcpStream,
    proxy: Arc<Proxy>,
    reloader: Arc<Reloader>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > MAX_HEAD {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let resp = if method == "POST" && !authorized(&head, &proxy) {
        respond(
            "401 Unauthorized",
            "text/plain",
            "POST needs the admin token: Authorization: Bearer <admin_token>\n",
        )
    } else {
        route(method, path, &proxy, &reloader).await
    };
    let out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        resp.status,
        resp.content_type,
        resp.body.len(),
        resp.body
    );
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// Whether the request carries the configured admin token (always, when none is set).
fn authorized(head: &str, proxy: &Proxy) -> bool {
    let config = proxy.config.load();
    let Some(token) = &config.admin_token else {
        return true;
    };
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .filter_map(|(_, value)| value.trim().strip_prefix("Bearer "))
        .any(|given| crate::config::constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

async fn route(method: &str, path: &str, proxy: &Arc<Proxy>, reloader: &Reloader) -> Response {
    match (method, path) {
        ("GET", "/metrics") => match &proxy.metrics {
            Some(h) => {
                crate::stats::publish_key_counts();
                let text = h.render() + "\n" + &crate::stats::stats().latency.render();
                respond("200 OK", "text/plain; version=0.0.4", text)
            }
            None => respond(
                "503 Service Unavailable",
                "text/plain",
                "metrics recorder not installed\n",
            ),
        },
        ("GET", "/healthz") => {
            if proxy.upstream.load().reachable().await {
                respond("200 OK", "text/plain", "ok\n")
            } else {
                respond(
                    "503 Service Unavailable",
                    "text/plain",
                    "upstream unreachable\n",
                )
            }
        }
        ("GET", "/status") => respond(
            "200 OK",
            "application/json",
            status::render(proxy, reloader),
        ),
        ("POST", "/reload") => match reload::reload(proxy, reloader).await {
            Ok(generation) => respond(
                "200 OK",
                "application/json",
                format!("{{\"result\":\"ok\",\"generation\":{generation}}}\n"),
            ),
            Err(e) => respond(
                "422 Unprocessable Entity",
                "application/json",
                format!("{}\n", serde_json::json!({"result": "error", "error": e})),
            ),
        },
        (_, "/metrics" | "/healthz" | "/status" | "/reload") => respond(
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n",
        ),
        _ => respond(
            "404 Not Found",
            "text/plain",
            "not found: try /metrics /healthz /status /reload\n",
        ),
    }
}
