//! The admin HTTP listener (loopback by default): `GET /metrics` (Prometheus text),
//! `GET /healthz` (200 when the upstream is reachable), `GET /status` (JSON: config generation
//! and file, last reload, rules with hit counts, upstream pool state, clients), and
//! `POST /reload` (which needs `Authorization: Bearer <admin_token>` when `admin_token` is
//! set). HTTP/1.1 by hyper (keep-alive, pipelining and header parsing done right); this module
//! only routes.

use crate::proxy::Proxy;
use crate::server::reload::{self, Reloader};
use crate::server::status;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a client may take to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one admin connection may stay open (a scraper opens a new one after).
const CONNECTION_LIMIT: Duration = Duration::from_secs(120);

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
            let service = service_fn(move |req| {
                let (proxy, reloader) = (proxy.clone(), reloader.clone());
                async move { Ok::<_, Infallible>(handle(req, &proxy, &reloader).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIMIT, conn).await;
        });
    }
}

type Response = hyper::Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Response {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

async fn handle(req: Request<Incoming>, proxy: &Arc<Proxy>, reloader: &Reloader) -> Response {
    if req.method() == Method::POST && !authorized(&req, proxy) {
        return respond(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "POST needs the admin token: Authorization: Bearer <admin_token>\n",
        );
    }
    route(req.method(), req.uri().path(), proxy, reloader).await
}

/// Whether the request carries the configured admin token (always, when none is set).
fn authorized(req: &Request<Incoming>, proxy: &Proxy) -> bool {
    let config = proxy.config.load();
    let Some(token) = &config.admin_token else {
        return true;
    };
    req.headers()
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.trim().strip_prefix("Bearer "))
        .any(|given| crate::config::constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

async fn route(method: &Method, path: &str, proxy: &Arc<Proxy>, reloader: &Reloader) -> Response {
    match (method.as_str(), path) {
        ("GET", "/metrics") => match &proxy.metrics {
            Some(h) => {
                crate::stats::publish_key_counts();
                let text = h.render() + "\n" + &crate::stats::stats().latency.render();
                respond(StatusCode::OK, "text/plain; version=0.0.4", text)
            }
            None => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "metrics recorder not installed\n",
            ),
        },
        ("GET", "/healthz") => {
            if proxy.upstream.load().reachable().await {
                respond(StatusCode::OK, "text/plain", "ok\n")
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "upstream unreachable\n",
                )
            }
        }
        ("GET", "/status") => respond(
            StatusCode::OK,
            "application/json",
            status::render(proxy, reloader),
        ),
        ("POST", "/reload") => match reload::reload(proxy, reloader).await {
            Ok(generation) => respond(
                StatusCode::OK,
                "application/json",
                format!("{{\"result\":\"ok\",\"generation\":{generation}}}\n"),
            ),
            Err(e) => respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                "application/json",
                format!("{}\n", serde_json::json!({"result": "error", "error": e})),
            ),
        },
        (_, "/metrics" | "/healthz" | "/status" | "/reload") => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics /healthz /status /reload\n",
        ),
    }
}
