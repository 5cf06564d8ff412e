//! The request path, top to bottom: [`accept`] takes clients (bounded by `max_clients`) and
//! hands each to a worker thread ([`workers`]), which runs one [`session`] task per client.
//! The session parses requests ([`crate::protocol::parser`]); runs of plain data commands take
//! its lane straight into the upstream batch, every other request goes through named phases
//! (admit, access check, rewrite, route and send): looked up in the command table
//! ([`crate::commands`]), answered by rekey (AUTH, HELLO, SELECT, CLIENT…, with the live
//! clients in [`clients`] and the `MONITOR` feed in [`monitor`]), or forwarded to a shared or
//! pinned upstream connection ([`crate::upstream`]; an identity with its own Redis login
//! gets pools of its own, [`own_upstreams`]). Each identity's clients, pinned connections and
//! request budget are counted in [`tenants`]; its ACL is checked by [`crate::acl`] in the
//! access check phase. Replies come back through
//! [`session::replies`], which restores request order, and are written back in batches.
//!
//! This layer is sockets and sessions only: the rewrite engine is [`crate::rules`], command
//! semantics [`crate::commands`], and the program's wiring (admin, reload, failover) is
//! [`crate::server`], which this layer never imports.

pub mod accept;
pub mod clients;
pub mod monitor;
pub mod own_upstreams;
pub mod session;
pub mod tenants;
pub mod workers;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

/// What every session shares: the current config, the upstream pools, and facts about the
/// upstream learned at start.
pub struct Proxy {
    /// The config in force. Sessions keep an `arc_swap::Cache` of it: one pointer compare per
    /// command tells them whether a reload swapped it.
    pub config: Arc<ArcSwap<Config>>,
    /// Swapped when a reload changes the upstream (or Sentinel names a new primary); the old
    /// pools drain and close. Sessions notice the swap through their `Cache` of it.
    pub upstream: Arc<ArcSwap<Upstream>>,
    /// Set when the upstream is a Redis Cluster: slot map and per-node pools.
    pub cluster: Option<Arc<Cluster>>,
    pub next_client_id: AtomicU64,
    pub clients: AtomicUsize,
    /// The live clients, for `CLIENT LIST`/`INFO`/`KILL`.
    pub registry: clients::Registry,
    pub upstream_info: UpstreamInfo,
    /// The Prometheus handle, when this process installed the recorder.
    pub metrics: Option<PrometheusHandle>,
    /// Refusals by the identities' ACLs and failed logins (`ACL LOG`).
    pub acl_log: crate::acl::log::AclLog,
    /// Each identity's clients, pinned connections and request budget now.
    pub tenants: tenants::Tenants,
    /// Upstreams of the identities that log in to Redis as users of their own.
    pub own_upstreams: own_upstreams::OwnUpstreams,
}

impl Proxy {
    /// New pools to `url` (a reload changed the upstream, or the sentinels named a new
    /// primary). Sessions move to them on their next command; the old pools drain.
    pub fn swap_upstream(&self, config: &Config, url: crate::upstream::UpstreamUrl) {
        self.own_upstreams.follow(config, &url);
        self.upstream
            .store(Upstream::new(config.upstream_settings(url)));
    }
}

/// Facts about the upstream server that connection-scoped replies need.
#[derive(Debug, Clone)]
pub struct UpstreamInfo {
    /// `redis_version`, for HELLO replies.
    pub version: String,
    /// `databases`, to validate SELECT.
    pub databases: u32,
}

impl Default for UpstreamInfo {
    fn default() -> Self {
        UpstreamInfo {
            version: "7.0.0".into(),
            databases: 16,
        }
    }
}
