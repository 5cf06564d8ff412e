//! Thread-per-core: `threads` worker threads, each running its own single-threaded tokio
//! runtime. A client is handed to one worker for its whole life, and each worker keeps its own
//! shared upstream pools, so a request and its reply never cross threads (no cross-core
//! wakeups on the hot path) while every core does work. A client of a TLS listener does its
//! handshake on the worker it is given (within `[tls.server] handshake_timeout_ms`), with the
//! certificate of the config in force when it arrived.

use crate::proxy::session::{Accepted, Session};
use crate::proxy::Proxy;
use crate::stats::stats;
use crate::transport::Transport;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a TLS client's last replies (and `close_notify`) may take to leave once its
/// session ended.
const TLS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A client to serve: its socket (not yet registered with any runtime), peer and app.
struct NewClient {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    app: Option<String>,
    /// It came in on a TLS listener.
    tls: bool,
}

/// Handles to the running workers.
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<NewClient>>,
    next: AtomicUsize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers serving clients for `proxy`.
    pub fn start(
        n: usize,
        proxy: Arc<Proxy>,
        shutdown: CancellationToken,
        sessions: TaskTracker,
    ) -> std::io::Result<Workers> {
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        for index in 0..n.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (proxy, shutdown, sessions) = (proxy.clone(), shutdown.clone(), sessions.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("rekey-worker-{index}"))
                    .spawn(move || {
                        runtime.block_on(serve(index, rx, proxy, shutdown, sessions));
                    })?,
            );
            senders.push(tx);
        }
        Ok(Workers {
            senders,
            next: AtomicUsize::new(0),
            threads,
        })
    }

    /// Hands a client to the next worker (round robin).
    pub fn assign(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        app: Option<String>,
        tls: bool,
    ) {
        let Ok(stream) = stream.into_std() else {
            return;
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        let _ = self.senders[i].send(NewClient {
            stream,
            peer,
            app,
            tls,
        });
    }

    /// Stops the workers once their clients are gone.
    pub fn join(self) {
        drop(self.senders);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A worker's life: run sessions for the clients it is given (tracked by `sessions`, which
/// shutdown waits on); when no more will come, wait for its sessions to end.
async fn serve(
    worker: usize,
    mut rx: mpsc::UnboundedReceiver<NewClient>,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            client = rx.recv() => match client {
                Some(c) => {
                    let Ok(stream) = tokio::net::TcpStream::from_std(c.stream) else {
                        proxy.clients.fetch_sub(1, Ordering::AcqRel);
                        continue;
                    };
                    let (proxy, shutdown) = (proxy.clone(), shutdown.clone());
                    let (peer, app, tls) = (c.peer, c.app, c.tls);
                    sessions.spawn(tracker.track_future(async move {
                        let local = stream.local_addr().unwrap_or(peer);
                        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream) as i64;
                        let transport = match tls {
                            false => Transport::Tcp(stream),
                            // Boxed: its state is not kept for the client's lifetime.
                            true => match Box::pin(handshake(&proxy, stream, peer)).await {
                                Some(t) => t,
                                None => {
                                    proxy.clients.fetch_sub(1, Ordering::AcqRel);
                                    return;
                                }
                            },
                        };
                        let closer = transport.closer();
                        stats().clients.increment(1.0);
                        stats().clients_total.increment(1);
                        // On the heap, so that this task's own state stays small.
                        let client = Accepted { peer, local, fd, app, worker };
                        let session = Box::new(Session::new(proxy.clone(), transport, client));
                        session.run(shutdown).await;
                        if let Some(tls) = closer {
                            // The last replies leave before the client counts as gone.
                            Box::pin(tls.close(TLS_DRAIN)).await;
                        }
                        proxy.clients.fetch_sub(1, Ordering::AcqRel);
                        stats().clients.decrement(1.0);
                    }));
                }
                None => break,
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    while sessions.join_next().await.is_some() {}
}

/// The server side of a TLS client's handshake, with the certificate of the config in force;
/// `None` (counted, logged at debug: a port scan or a plaintext client is not news) when it
/// fails or times out. Only this client is affected.
async fn handshake(
    proxy: &Proxy,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Option<Transport> {
    let Some(tls) = proxy.config.load().server_tls.clone() else {
        tracing::warn!(%peer, "TLS listener without [tls.server]: client closed");
        return None;
    };
    match tls.accept(stream).await {
        Ok(t) => {
            stats().tls_handshake_ok("client");
            Some(t)
        }
        Err(e) => {
            stats().tls_handshake_failure("client", e.reason);
            tracing::debug!(%peer, error = %e, "client TLS handshake failed");
            None
        }
    }
}
