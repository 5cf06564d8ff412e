//! Accepting clients on one listen address: the `max_clients` limit (a client over it gets
//! Redis's `-ERR max number of clients reached` and is closed), then the client goes to a
//! worker for its whole life.

use crate::proxy::workers::Workers;
use crate::proxy::Proxy;
use crate::stats::stats;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Accepts clients arriving on `listener` (identified as `app`, when the listener names one;
/// TLS clients when `tls`) until the task is dropped.
pub async fn accept_loop(
    listener: TcpListener,
    app: Option<String>,
    tls: bool,
    proxy: Arc<Proxy>,
    workers: Arc<Workers>,
) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let max = proxy.config.load().limits.max_clients;
        if proxy.clients.fetch_add(1, Ordering::AcqRel) >= max {
            proxy.clients.fetch_sub(1, Ordering::AcqRel);
            stats().clients_rejected.increment(1);
            tokio::spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        workers.assign(stream, peer, app.clone(), tls);
    }
}
