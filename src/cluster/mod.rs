//! Redis Cluster upstreams (`upstream = "redis-cluster://host:port,host:port"`).
//!
//! Apps keep talking to rekey as to one plain Redis; rekey speaks cluster upstream. Each
//! primary is an ordinary single-node [`Upstream`] (its own shared and pinned pools), so the
//! connection code is the same as without a cluster. This module holds what is cluster-specific:
//! the slot map learned from `CLUSTER SLOTS` ([`Topology`]), kept fresh periodically and after
//! every `-MOVED`; the hash slot of a key ([`slot`]); and the commands that must be split across
//! nodes or fanned out to all of them, with their replies merged ([`fanout`]).
//!
//! Routing happens after the rules: a key's slot is the slot of its rewritten name, so
//! `{AppA_id}_Data` and `{AppB_id}_Data` land on the node of `{shared_id}_Data`.

pub mod fanout;
pub mod slot;

use crate::protocol::reply;
use crate::protocol::Request;
use crate::upstream::conn::query_once;
use crate::upstream::{Upstream, UpstreamSettings, UpstreamUrl};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `ASKING`, sent before a command redirected by `-ASK`.
pub const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// How often the slot map is re-read when nothing prompts it.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// One primary.
pub struct Node {
    /// Unique for the life of the process (sessions cache pools by it).
    pub id: u64,
    /// `host:port`, as the cluster announces it.
    pub addr: String,
    pub upstream: Arc<Upstream>,
}

/// Which primary serves each slot.
pub struct Topology {
    /// Index into `nodes` per slot; `u16::MAX` while a slot is not served.
    slots: Vec<u16>,
    /// Primaries, sorted by address (the order a composite SCAN walks them in).
    pub nodes: Vec<Arc<Node>>,
}

impl Topology {
    fn empty() -> Topology {
        Topology {
            slots: vec![u16::MAX; slot::SLOTS],
            nodes: Vec::new(),
        }
    }

    /// The primary serving `slot`, if the map knows one.
    pub fn node_of(&self, slot: u16) -> Option<&Arc<Node>> {
        self.nodes.get(*self.slots.get(slot as usize)? as usize)
    }

    /// Any primary (for commands without keys).
    pub fn any(&self, hint: usize) -> Option<&Arc<Node>> {
        (!self.nodes.is_empty()).then(|| &self.nodes[hint % self.nodes.len()])
    }
}

/// Why the slot map could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("no cluster node answered CLUSTER SLOTS ({0})")]
    Unreachable(String),
    #[error("CLUSTER SLOTS reply from {addr} is not a slot map")]
    Malformed { addr: String },
}

/// A cluster upstream: nodes, slot map, refresh.
pub struct Cluster {
    seeds: Vec<UpstreamUrl>,
    /// Settings every node's pools are made with (the URL is replaced per node).
    template: UpstreamSettings,
    /// Every node ever seen, by address: a node's pools outlive map changes.
    registry: Mutex<HashMap<String, Arc<Node>>>,
    topology: ArcSwap<Topology>,
    refreshing: AtomicBool,
    next_id: AtomicU64,
}

impl Cluster {
    /// Reads the slot map from the seeds (a failure is logged; the periodic refresh retries).
    pub async fn start(seeds: Vec<UpstreamUrl>, template: UpstreamSettings) -> Arc<Cluster> {
        let cluster = Arc::new(Cluster {
            seeds,
            template,
            registry: Mutex::new(HashMap::new()),
            topology: ArcSwap::from_pointee(Topology::empty()),
            refreshing: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        });
        if let Err(e) = cluster.refresh().await {
            tracing::warn!(error = %e, "cluster slot map not available yet");
        }
        cluster
    }

    pub fn topology(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.topology.load()
    }

    /// The node at `addr`, created (with empty pools) when first named, e.g. by a `-MOVED`.
    pub fn node_for_addr(&self, addr: &str) -> Arc<Node> {
        let mut registry = self.registry.lock().expect("cluster registry poisoned");
        registry
            .entry(addr.to_string())
            .or_insert_with(|| {
                let (host, port) = split_addr(addr);
                let seed = &self.seeds[0];
                let url = UpstreamUrl {
                    host,
                    port,
                    user: seed.user.clone(),
                    pass: seed.pass.clone(),
                    auth: seed.auth.clone(),
                    db: 0,
                    // Nodes are announced by IP: verified against the seed's host name (or
                    // `[tls.upstream] server_name`).
                    tls: seed.tls.as_ref().map(|t| t.verifying_as(&seed.host)),
                };
                let settings = UpstreamSettings {
                    url,
                    ..self.template.clone()
                };
                Arc::new(Node {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    addr: addr.to_string(),
                    upstream: Upstream::new(settings),
                })
            })
            .clone()
    }

    /// Re-reads the slot map soon (once, however many callers ask at the same time).
    pub fn request_refresh(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let cluster = self.clone();
        tokio::spawn(async move {
            if let Err(e) = cluster.refresh().await {
                tracing::warn!(error = %e, "cluster slot map refresh failed");
            }
            cluster.refreshing.store(false, Ordering::Release);
        });
    }

    /// Re-reads the slot map periodically until the task is dropped.
    pub async fn keep_fresh(self: Arc<Self>) {
        loop {
            tokio::time::sleep(REFRESH_EVERY).await;
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cluster slot map refresh failed");
            }
        }
    }

    /// Asks the known primaries, then the seeds, for `CLUSTER SLOTS`, and swaps the map in.
    pub async fn refresh(&self) -> Result<(), TopologyError> {
        let mut candidates: Vec<UpstreamUrl> = self
            .topology()
            .nodes
            .iter()
            .map(|n| n.upstream.url().clone())
            .collect();
        candidates.extend(self.seeds.iter().cloned());
        let req = Request::from_args(["CLUSTER", "SLOTS"]);
        let mut last = String::from("no nodes");
        for url in candidates {
            match query_once(&url, &req, self.template.connect_timeout).await {
                Ok(frame) if !reply::is_error(&frame) => {
                    let topology = self.parse_slots(&frame, &url)?;
                    tracing::debug!(nodes = topology.nodes.len(), "cluster slot map read");
                    self.topology.store(Arc::new(topology));
                    return Ok(());
                }
                Ok(frame) => last = String::from_utf8_lossy(&frame).trim().to_string(),
                Err(e) => last = e.to_string(),
            }
        }
        Err(TopologyError::Unreachable(last))
    }

    /// `CLUSTER SLOTS`: `[[start, end, [ip, port, id…], replicas…], …]`.
    fn parse_slots(
        &self,
        frame: &bytes::Bytes,
        from: &UpstreamUrl,
    ) -> Result<Topology, TopologyError> {
        let malformed = || TopologyError::Malformed { addr: from.addr() };
        let decoded = reply::decode(frame).ok_or_else(malformed)?;
        let ranges = reply::elements(&decoded).ok_or_else(malformed)?;
        let mut assigned: Vec<(u16, u16, String)> = Vec::new();
        for range in ranges {
            let items = reply::elements(range).ok_or_else(malformed)?;
            let (Some(start), Some(end), Some(primary)) = (
                items.first().and_then(reply::as_int),
                items.get(1).and_then(reply::as_int),
                items.get(2).and_then(reply::elements),
            ) else {
                return Err(malformed());
            };
            let ip = primary
                .first()
                .and_then(reply::as_bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .filter(|ip| !ip.is_empty() && ip != "?")
                .unwrap_or_else(|| from.host.clone());
            let port = primary
                .get(1)
                .and_then(reply::as_int)
                .ok_or_else(malformed)?;
            if !(0..slot::SLOTS as i64).contains(&start)
                || !(start..slot::SLOTS as i64).contains(&end)
            {
                return Err(malformed());
            }
            assigned.push((start as u16, end as u16, join_addr(&ip, port as u16)));
        }
        let mut addrs: Vec<String> = assigned.iter().map(|(_, _, a)| a.clone()).collect();
        addrs.sort();
        addrs.dedup();
        let nodes: Vec<Arc<Node>> = addrs.iter().map(|a| self.node_for_addr(a)).collect();
        let mut slots = vec![u16::MAX; slot::SLOTS];
        for (start, end, addr) in &assigned {
            let index = addrs.binary_search(addr).expect("listed") as u16;
            slots[*start as usize..=*end as usize].fill(index);
        }
        Ok(Topology { slots, nodes })
    }
}

fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse().unwrap_or(6379),
        ),
        None => (addr.to_string(), 6379),
    }
}

fn join_addr(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A `-MOVED <slot> <addr>` or `-ASK <slot> <addr>` reply.
#[derive(Debug, PartialEq, Eq)]
pub struct Redirect {
    pub ask: bool,
    pub slot: u16,
    pub addr: String,
}

/// Parses a redirection error; `None` for any other reply.
pub fn redirect(frame: &[u8]) -> Option<Redirect> {
    let ask = if frame.starts_with(b"-MOVED ") {
        false
    } else if frame.starts_with(b"-ASK ") {
        true
    } else {
        return None;
    };
    let text = std::str::from_utf8(frame).ok()?.trim_end();
    let mut words = text.split(' ').skip(1);
    let slot = words.next()?.parse().ok()?;
    let addr = words.next()?.to_string();
    Some(Redirect { ask, slot, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_parse() {
        assert_eq!(
            redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect {
                ask: false,
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert!(redirect(b"-ASK 1 10.0.0.1:7000\r\n").unwrap().ask);
        assert_eq!(redirect(b"-ERR MOVED\r\n"), None);
        assert_eq!(redirect(b"+OK\r\n"), None);
    }
}
