//! The top layer, and the only place that wires the program: it binds the listeners, learns
//! the upstream, starts the workers ([`crate::proxy`]), the admin HTTP listener ([`admin`],
//! [`status`]), live reload ([`reload`]), Sentinel failover following ([`failover`]) and
//! cluster refresh, and shuts down gracefully (stop accepting, let sessions finish what they
//! were asked, then exit). Nothing below imports it.

pub mod admin;
pub mod failover;
pub mod reload;
pub mod status;

use crate::cluster::Cluster;
use crate::config::{Config, UpstreamTarget};
use crate::protocol::reply;
use crate::protocol::Request;
use crate::proxy::accept::accept_loop;
use crate::proxy::workers::Workers;
use crate::proxy::{Proxy, UpstreamInfo};
use crate::stats::stats;
use crate::upstream::credentials::{CredentialError, CredentialRef, Credentials};
use crate::upstream::sentinel::{self, SentinelError};
use crate::upstream::UpstreamUrl;
use crate::upstream::{conn, Upstream};
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use reload::Reloader;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long in-flight replies may take to drain at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, not yet serving, rekey.
pub struct Server {
    proxy: Arc<Proxy>,
    reloader: Arc<Reloader>,
    /// Each listener, the app it names and whether it is a TLS listener.
    listeners: Vec<(TcpListener, Option<String>, bool)>,
    admin: Option<TcpListener>,
}

/// What the binary adds to a config when it starts a server.
#[derive(Default)]
pub struct ServeOptions {
    /// The Prometheus handle, if this process installed the recorder (`/metrics`).
    pub metrics: Option<PrometheusHandle>,
    /// `--upstream` from the command line, kept across reloads.
    pub upstream_override: Option<UpstreamTarget>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sentinel(#[from] SentinelError),
    /// `[upstream_auth]`'s source could not produce a first credential.
    #[error("cannot start: {0}")]
    Credentials(#[from] CredentialError),
}

impl Server {
    /// Binds every listener and prepares the upstream pools.
    pub async fn bind(mut config: Config, options: ServeOptions) -> Result<Server, BindError> {
        crate::upstream::credentials::status::register_metrics();
        if let Some(spec) = &config.upstream_auth {
            let creds = Credentials::start(spec).await?;
            config.upstream.with_credentials(Some(CredentialRef(creds)));
        }
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let socket = TcpListener::bind(l.addr)
                .await
                .map_err(|source| BindError::Listen {
                    addr: l.addr,
                    source,
                })?;
            listeners.push((socket, l.app.clone(), l.tls));
        }
        let admin = match config.admin {
            Some(addr) => Some(
                admin::bind(addr)
                    .await
                    .map_err(|source| BindError::Listen { addr, source })?,
            ),
            None => None,
        };
        stats().config_generation.set(config.generation as f64);
        warn_insecure(&config);
        publish_config(&config);
        // The live address: the one configured, or the primary the sentinels name now.
        let live = match &config.upstream {
            UpstreamTarget::Sentinel(s) => {
                let primary = sentinel::resolve(s, config.limits.connect_timeout).await?;
                tracing::info!(primary = %primary, master = %s.master, "sentinel: primary found");
                primary
            }
            target => target.template().clone(),
        };
        let settings = config.upstream_settings(live.clone());
        let (upstream, cluster) = match &config.upstream {
            UpstreamTarget::Cluster { seeds } => {
                let cluster = Cluster::start(seeds.clone(), settings).await;
                let seed = cluster.node_for_addr(&live.addr());
                (seed.upstream.clone(), Some(cluster))
            }
            _ => (Upstream::new(settings), None),
        };
        let upstream_info = learn_upstream(&config, &live).await;
        let config_source = config.source.clone();
        let proxy = Arc::new(Proxy {
            config: Arc::new(ArcSwap::from_pointee(config)),
            upstream: Arc::new(ArcSwap::new(upstream)),
            cluster,
            next_client_id: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            registry: Default::default(),
            upstream_info,
            metrics: options.metrics,
            acl_log: Default::default(),
            tenants: Default::default(),
            own_upstreams: Default::default(),
        });
        let reloader = Arc::new(Reloader::new(config_source, options.upstream_override));
        Ok(Server {
            proxy,
            reloader,
            listeners,
            admin,
        })
    }

    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.clone()
    }

    /// Serves until `stop` resolves, then drains and returns.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let shutdown = CancellationToken::new();
        let sessions = TaskTracker::new();
        let threads = self.proxy.config.load().threads;
        let workers = match Workers::start(
            threads,
            self.proxy.clone(),
            shutdown.clone(),
            sessions.clone(),
        ) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                tracing::error!(error = %e, "cannot start worker threads");
                return;
            }
        };
        tracing::info!(threads, "worker threads started");
        let mut tasks = Vec::new();
        for (listener, app, tls) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, app = app.as_deref().unwrap_or("-"), tls, "listening");
            }
            tasks.push(tokio::spawn(accept_loop(
                listener,
                app,
                tls,
                self.proxy.clone(),
                workers.clone(),
            )));
        }
        if let Some(listener) = self.admin {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "admin listening (/metrics /healthz /status /reload)");
            }
            tasks.push(tokio::spawn(admin::serve(
                listener,
                self.proxy.clone(),
                self.reloader.clone(),
            )));
        }
        tasks.push(tokio::spawn(reload::on_sighup(
            self.proxy.clone(),
            self.reloader.clone(),
        )));
        if let UpstreamTarget::Sentinel(s) = &self.proxy.config.load().upstream {
            tasks.push(tokio::spawn(failover::follow(
                self.proxy.clone(),
                s.clone(),
            )));
        }
        if let Some(cluster) = &self.proxy.cluster {
            tasks.push(tokio::spawn(cluster.clone().keep_fresh()));
        }
        tasks.push(tokio::spawn(reload::on_file_change(
            self.proxy.clone(),
            self.reloader.clone(),
        )));
        stop.await;
        tracing::info!("shutting down: no new clients, draining in-flight replies");
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await; // the accept loops' handles on the workers are dropped
        }
        // Sessions finish what they were asked, then end; the tracker says when all have.
        shutdown.cancel();
        sessions.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, sessions.wait())
            .await
            .is_err()
        {
            // Blocked or stuck clients: the process exit closes them and the upstream.
            tracing::warn!(
                clients = self.proxy.clients.load(Ordering::Acquire),
                "drain timeout reached; closing the remaining clients"
            );
            return;
        }
        if let Ok(workers) = Arc::try_unwrap(workers) {
            let _ = tokio::task::spawn_blocking(move || workers.join()).await;
        }
    }
}

/// `[tls.upstream] insecure_skip_verify` is for tests: said loudly at every start and reload.
pub fn warn_insecure(config: &Config) {
    let urls: Vec<&UpstreamUrl> = match &config.upstream {
        UpstreamTarget::Single(u) => vec![u],
        UpstreamTarget::Cluster { seeds } => seeds.iter().collect(),
        UpstreamTarget::Sentinel(s) => s.sentinels.iter().chain([&s.primary]).collect(),
    };
    let insecure = urls
        .iter()
        .any(|u| u.tls.as_ref().is_some_and(|t| t.insecure()));
    if insecure {
        tracing::warn!(
            "[tls.upstream] insecure_skip_verify = true: upstream certificates are NOT verified; \
             anyone on the path can read and change the traffic. Use ca_file instead"
        );
    }
}

/// Says, at start, that the upstream does not answer, and for a Redis on this machine how to
/// start one (in a container, installing the package does not start the server).
fn warn_unreachable(url: &crate::upstream::UpstreamUrl, e: &conn::ConnError) {
    let local = matches!(url.host.as_str(), "127.0.0.1" | "localhost" | "::1");
    // The hint to start Redis fits only when nothing listens there (not a refused TLS
    // certificate or password: their errors say what to fix).
    let refused = matches!(e, conn::ConnError::Connect { source, .. }
        if source.kind() == std::io::ErrorKind::ConnectionRefused);
    if local && refused {
        tracing::warn!(upstream = %url, error = %e,
            "Redis is not answering at {}: clients get -ERR until it does (rekey keeps retrying). \
             Start it with `redis-server --daemonize yes --port {}` (apt-get install redis-server \
             does not start it in a container), or point `upstream` at your Redis",
            url.addr(), url.port);
    } else {
        tracing::warn!(upstream = %url, error = %e,
            "upstream not usable at start; serving anyway (clients get -ERR until it answers), retrying");
    }
}

/// Asks the upstream for its version and number of databases; defaults if it is down.
async fn learn_upstream(config: &Config, url: &UpstreamUrl) -> UpstreamInfo {
    let mut info = UpstreamInfo::default();
    let timeout = config.limits.connect_timeout;
    match conn::query_once(url, &Request::from_args(["INFO", "server"]), timeout).await {
        Ok(frame) => {
            if let Some(text) = reply::decode(&frame).as_ref().and_then(reply::as_bytes) {
                let text = String::from_utf8_lossy(text);
                if let Some(v) = text.lines().find_map(|l| l.strip_prefix("redis_version:")) {
                    info.version = v.trim().to_string();
                }
            }
        }
        Err(e) => warn_unreachable(url, &e),
    }
    if let Ok(frame) = conn::query_once(
        url,
        &Request::from_args(["CONFIG", "GET", "databases"]),
        timeout,
    )
    .await
    {
        if let Some(n) = reply::decode(&frame)
            .as_ref()
            .and_then(|f| {
                reply::elements(f)
                    .and_then(|e| e.get(1))
                    .and_then(reply::as_bytes)
                    .cloned()
            })
            .and_then(|b| String::from_utf8_lossy(&b).parse().ok())
        {
            info.databases = n;
        }
    }
    info
}

/// The metrics a config sets: its limits (global and per identity), and every command and
/// ACL counter of every identity registered at zero (at start and after every reload).
pub(crate) fn publish_config(config: &Config) {
    crate::stats::publish_limits(config.limits.max_clients, config.pool.max_pinned);
    crate::stats::register_command_counters(config.rules.labels());
    crate::stats::register_acl_counters(config.rules.labels());
    for (name, share) in &config.access.identities {
        let limits = [
            ("max_clients", share.max_clients.map(|n| n as f64)),
            ("max_pinned", share.max_pinned.map(|n| n as f64)),
            (
                "max_requests_per_sec",
                share.max_requests_per_sec.map(|n| n as f64),
            ),
        ];
        for (limit, value) in limits {
            if let Some(value) = value {
                crate::stats::publish_app_limit(name, limit, value);
            }
        }
        if share.max_requests_per_sec.is_some() {
            crate::stats::app_throttled(name, std::time::Duration::ZERO);
        }
    }
}
