//! Connections to the real Redis: a few long-lived, pipelined connections shared by every
//! client, and dedicated ("pinned") connections lent to a client while it holds per-connection
//! state (MULTI, WATCH, a blocking command, subscriptions, client tracking). [`Upstream`], here,
//! ties them together: one per upstream Redis, holding its shared pools and its pinned pool.
//!
//! This module moves bytes and matches replies to requests; it knows nothing of rules or of
//! what a command means. A request is a [`Job`]: the bytes to send and where the reply goes
//! ([`ReplyTo`]). Replies are delivered as [`Delivery`] values into the client's mailbox
//! ([`mailbox`]).
//!
//! Files, lowest first; each imports only those before it (`tests/it/layers.rs` checks):
//! - [`credentials`]: the upstream login when it changes (`[upstream_auth]`): its sources,
//!   their renewal, and the re-login of live connections.
//! - [`url`], [`silence`]: the upstream address and credentials; how long a shared
//!   connection has waited with no reply (a stalled Redis).
//! - [`settings`]: how to reach and size the upstream.
//! - [`mailbox`]: the queue a session receives its deliveries in (lighter than an mpsc
//!   channel for the many idle clients).
//! - [`contract`]: what sessions and connections exchange: jobs, reply targets, deliveries.
//! - [`dial`]: connect (TCP, TLS), the one "ready" handshake, one-off queries, errors.
//! - [`driver`]: one connection's pipelined write/read loop and reply matching.
//! - [`shared`]: shared pools per (protocol, db), created lazily, with reconnect and backoff.
//! - [`pinned`]: the bounded pool of pinned connections; a lease ends with `RESET`.
//! - [`conn`]: the older paths to `dial`'s and `contract`'s items, re-exported.
//! - [`sentinel`]: asking a Sentinel setup's sentinels where its primary is now.
//! - this file: [`Upstream`].

pub mod conn;
pub mod contract;
pub mod credentials;
pub mod dial;
pub mod driver;
pub mod mailbox;
pub mod pinned;
pub mod sentinel;
pub mod settings;
pub mod shared;
pub mod silence;
pub mod url;

pub use contract::{Delivery, Inbox, Job, ReplyTo, Sink};
pub use pinned::PinnedConn;
pub use settings::UpstreamSettings;
pub use shared::SharedPool;
pub use url::UpstreamUrl;

use crate::protocol::encode::Proto;
use crate::protocol::Request;
use bytes::{Bytes, BytesMut};
use dial::{ConnError, LastError};
use pinned::PinnedPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Every connection rekey has to one upstream Redis.
pub struct Upstream {
    settings: UpstreamSettings,
    /// Keyed by (worker thread, protocol, db): each worker has its own pools.
    shared: Mutex<HashMap<(usize, Proto, u32), Arc<SharedPool>>>,
    pinned: Arc<PinnedPool>,
    last_error: LastError,
}

impl Upstream {
    pub fn new(settings: UpstreamSettings) -> Arc<Upstream> {
        let last_error = LastError::default();
        let pinned = Arc::new(PinnedPool::new(
            settings.url.clone(),
            settings.connect_timeout,
            settings.max_pinned,
            last_error.clone(),
        ));
        Arc::new(Upstream {
            settings,
            shared: Mutex::new(HashMap::new()),
            pinned,
            last_error,
        })
    }

    /// The last connection failure (TLS handshake errors included), when there was one.
    pub fn last_error(&self) -> Option<(SystemTime, String)> {
        self.last_error.get()
    }

    pub fn url(&self) -> &UpstreamUrl {
        &self.settings.url
    }

    /// Worker `worker`'s shared pool for `(proto, db)`, started on first use (its connections
    /// run on that worker: call this from the worker's own thread). Called when a client
    /// connects or changes protocol or db, not per command.
    pub fn shared(&self, worker: usize, proto: Proto, db: u32) -> Arc<SharedPool> {
        let mut map = self.shared.lock().expect("pool map poisoned");
        map.entry((worker, proto, db))
            .or_insert_with(|| SharedPool::start(&self.settings, proto, db, &self.last_error))
            .clone()
    }

    /// Borrows a dedicated connection set to `proto` and `db`.
    pub async fn pin(&self, proto: Proto, db: u32) -> Result<PinnedConn, String> {
        self.pinned.acquire(proto, db).await
    }

    /// Number of pinned connections open (lent or idle).
    pub fn pinned_total(&self) -> usize {
        self.pinned.total()
    }

    /// True when every shared connection started so far is connected.
    pub fn healthy(&self) -> bool {
        let map = self.shared.lock().expect("pool map poisoned");
        map.values().all(|p| p.healthy())
    }

    /// Each shared pool started so far: protocol, db, connections up / total.
    pub fn pool_states(&self) -> Vec<serde_json::Value> {
        let map = self.shared.lock().expect("pool map poisoned");
        let mut out: Vec<_> = map
            .iter()
            .map(|((worker, proto, db), p)| {
                serde_json::json!({"worker": worker, "protocol": proto.number(), "db": db, "connections_up": p.connections_up(), "connections": p.connections()})
            })
            .collect();
        out.sort_by_key(|v| {
            (
                v["worker"].as_i64(),
                v["protocol"].as_i64(),
                v["db"].as_i64(),
            )
        });
        out
    }

    /// True when the upstream answers: every started shared connection is up, or (with none
    /// started or some down) a fresh connection succeeds.
    pub async fn reachable(&self) -> bool {
        let all_up = {
            let map = self.shared.lock().expect("pool map poisoned");
            !map.is_empty() && map.values().all(|p| p.healthy())
        };
        all_up || self.probe().await.is_ok()
    }

    /// Sends `req` on a connection of its own and returns the reply: for the commands Redis
    /// answers while a script is busy (`SCRIPT KILL`), which on a shared connection would
    /// wait behind the script. Only AUTH and HELLO are sent first (a busy Redis refuses
    /// SELECT; these commands do not depend on the db).
    pub async fn side_query(&self, req: &Request, proto: Proto) -> Result<Bytes, ConnError> {
        let timeout = self.settings.connect_timeout;
        let stream = dial::connect(&self.settings.url, proto, 0, timeout).await?;
        let mut buf = BytesMut::new();
        match tokio::time::timeout(timeout, dial::roundtrip(&stream, req, &mut buf)).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::ConnectTimeout {
                addr: self.settings.url.addr(),
            }),
        }
    }

    /// Checks that the upstream answers (a fresh connection and handshake).
    pub async fn probe(&self) -> Result<(), ConnError> {
        dial::connect(
            &self.settings.url,
            Proto::Resp2,
            0,
            self.settings.connect_timeout,
        )
        .await
        .map(|_| ())
    }
}
