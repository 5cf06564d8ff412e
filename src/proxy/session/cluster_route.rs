//! The request path's cluster step: with a `redis-cluster://` upstream, a forwarded request
//! goes to the primary that serves the slot of its (rewritten) keys. Keys in different slots
//! are split per slot where Redis's reply can be merged (MGET, MSET, DEL, UNLINK, EXISTS,
//! TOUCH) and refused with Redis's own `-CROSSSLOT` otherwise; keyless commands go to one node,
//! or to all of them when their answer covers the whole keyspace (DBSIZE, KEYS, FLUSHDB,
//! FLUSHALL, SCAN). `-MOVED` and `-ASK` replies are followed here, before the client sees
//! them. Pinned connections (WATCH, blocking commands, subscriptions) come from the node of the
//! command's first key; a MULTI waits for its first queued command to know its node.

use crate::cluster::fanout::{self, Merge, Part};
use crate::cluster::slot::slot_of;
use crate::cluster::{self, Node, Topology, ASKING};
use crate::commands::{keys, Class, CommandSpec, Pin};
use crate::protocol::encode;
use crate::protocol::Request;
use crate::proxy::session::Session;
use crate::upstream::{Job, ReplyTo, SharedPool};
use bytes::Bytes;
use smallvec::SmallVec;
use std::sync::Arc;

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
pub(super) const NOT_SERVED: &str = "CLUSTERDOWN Hash slot not served";
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
/// Redirections followed for one request before its error is passed on.
const MAX_REDIRECTS: u8 = 5;

/// Whether a command queued after a deferred MULTI decides the transaction's node.
pub(super) fn opens_cluster_multi(class: Class) -> bool {
    matches!(
        class,
        Class::Forward | Class::Pin(Pin::Watch | Pin::Blocking | Pin::BlockingWithArg)
    )
}

/// The key argument indices of a request with their slots.
fn key_slots(spec: &CommandSpec, req: &Request) -> SmallVec<[(usize, u16); 8]> {
    let mut pos = keys::Positions::new();
    keys::positions(spec.keys, req, &mut pos);
    pos.iter()
        .filter_map(|&i| req.arg(i).map(|k| (i, slot_of(k))))
        .collect()
}

impl Session {
    /// Routes a forwarded request to its node (or nodes).
    pub(super) fn cluster_forward(&mut self, spec: &'static CommandSpec, req: Request) {
        if self.lease.pin.is_some() {
            return self.forward(req.into_raw(), false);
        }
        let Some(cluster) = self.proxy.cluster.clone() else {
            return self.forward(req.into_raw(), false);
        };
        let topology = cluster.topology();
        let slots = key_slots(spec, &req);
        let Some(&(_, first)) = slots.first() else {
            return self.keyless(&topology, spec, req);
        };
        if slots.iter().all(|&(_, s)| s == first) {
            let node = topology.node_of(first).cloned();
            return self.send_to_node(node, req.into_raw());
        }
        match fanout::splittable(spec.name) {
            Some(merge) => {
                let (parts, merge) = fanout::split(&req, &slots, merge);
                let nodes: Option<Vec<_>> = parts
                    .iter()
                    .map(|(slot, _)| topology.node_of(*slot).cloned())
                    .collect();
                let Some(nodes) = nodes else {
                    cluster.request_refresh();
                    return self.reply(encode::error(NOT_SERVED));
                };
                let parts = parts
                    .into_iter()
                    .zip(nodes)
                    .map(|((_, r), node)| Part {
                        pool: self.node_pool(&node),
                        payload: r.into_raw(),
                    })
                    .collect();
                self.gather(parts, merge);
            }
            None => self.reply(encode::error(CROSSSLOT)),
        }
    }

    /// Commands without keys: the whole-keyspace ones on every primary, SCAN node by node,
    /// the rest on one node.
    fn keyless(&mut self, topology: &Topology, spec: &CommandSpec, req: Request) {
        if let Some(merge) = fanout::fanned_out(req.arg(0).unwrap_or_default()) {
            let parts = topology
                .nodes
                .iter()
                .map(|node| Part {
                    pool: self.node_pool(node),
                    payload: req.raw().clone(),
                })
                .collect();
            return self.gather(parts, merge);
        }
        if spec.name == "scan" {
            return match fanout::scan_step(&req, topology.nodes.len()) {
                Ok((node, step)) => {
                    let part = Part {
                        pool: self.node_pool(&topology.nodes[node]),
                        payload: step.into_raw(),
                    };
                    let merge = Merge::Scan {
                        node,
                        nodes: topology.nodes.len(),
                    };
                    self.gather(vec![part], merge)
                }
                Err(msg) => self.reply(encode::error(msg)),
            };
        }
        let node = topology.any(self.sender.slot).cloned();
        self.send_to_node(node, req.into_raw())
    }

    /// Forwards on a node's shared pool (batched like any forward).
    fn send_to_node(&mut self, node: Option<Arc<Node>>, payload: Bytes) {
        let Some(node) = node else {
            if let Some(c) = &self.proxy.cluster {
                c.request_refresh();
            }
            return self.reply(encode::error(NOT_SERVED));
        };
        self.node_pool(&node);
        self.forward_on(payload, false, node.id);
    }

    /// Sends parts to several nodes; their merged reply fills this request's place.
    fn gather(&mut self, parts: Vec<Part>, merge: Merge) {
        self.flush_batch();
        let info = self.slot_info(false);
        let seq = self.replies.expect(info);
        if let Some(cluster) = self.proxy.cluster.clone() {
            fanout::run(
                parts,
                merge,
                self.sender.sink.clone(),
                seq,
                cluster,
                (self.conn.proto, self.sender.worker),
            );
        }
    }

    /// Makes sure this client has its shared pool on `node` (started on first use).
    pub(super) fn ensure_node_pool(&mut self, node: &Node) {
        if !self.sender.node_pools.iter().any(|(id, _)| *id == node.id) {
            self.node_pool(node);
        }
    }

    /// This client's shared pool on `node` (started on first use).
    pub(super) fn node_pool(&mut self, node: &Node) -> Arc<SharedPool> {
        if let Some((_, pool)) = self.sender.node_pools.iter().find(|(id, _)| *id == node.id) {
            return pool.clone();
        }
        let pool = node.upstream.shared(self.sender.worker, self.conn.proto, 0);
        self.sender.node_pools.push((node.id, pool.clone()));
        pool
    }

    /// Follows `-MOVED`/`-ASK` for request `seq`: sends it again to the node named, and for
    /// MOVED re-reads the slot map. False when the reply is not a redirection to follow.
    pub(super) fn follow_redirect(&mut self, seq: u64, frame: &[u8]) -> bool {
        if frame.first() != Some(&b'-') {
            return false;
        }
        let Some(cluster) = self.proxy.cluster.clone() else {
            return false;
        };
        let Some(redirect) = cluster::redirect(frame) else {
            if frame.starts_with(b"-ERR rekey: upstream") {
                cluster.request_refresh(); // a node is down: a failover may have moved its slots
            }
            return false;
        };
        let Some(info) = self.replies.waiting_mut(seq) else {
            return false;
        };
        if info.redirects >= MAX_REDIRECTS {
            return false;
        }
        // Its bytes: kept since an earlier redirection, else found in its node batch.
        let Some(payload) = info
            .resend
            .clone()
            .or_else(|| self.sender.sent.request(seq))
        else {
            return false;
        };
        info.resend = Some(payload.clone());
        info.redirects += 1;
        if !redirect.ask {
            cluster.request_refresh();
        }
        let node = cluster.node_for_addr(&redirect.addr);
        let pool = self.node_pool(&node);
        if redirect.ask {
            pool.send(
                self.sender.slot,
                Job::Send {
                    payload: Bytes::from_static(ASKING),
                    reply: ReplyTo::Discard,
                },
            );
        }
        let reply = ReplyTo::Client {
            sink: self.sender.sink.clone(),
            seq,
            count: 1,
        };
        pool.send(self.sender.slot, Job::Send { payload, reply });
        true
    }

    /// Pinned connections come from the node of the command's first key (any node without).
    pub(super) fn hint_pin_node(&mut self, spec: &CommandSpec, req: &Request) {
        let Some(cluster) = &self.proxy.cluster else {
            return;
        };
        let topology = cluster.topology();
        let node = match key_slots(spec, req).first() {
            Some(&(_, slot)) => topology.node_of(slot),
            None => topology.any(0),
        };
        self.sender.pin_hint = node.map(|n| n.upstream.clone());
    }

    /// MULTI with a cluster upstream: answered now, sent once a queued command names a node.
    pub(super) fn defer_cluster_multi(&mut self) {
        self.lease.in_multi = true;
        self.cluster_multi = true;
        self.begin_snapshot();
        self.reply(encode::simple("OK"));
    }

    /// The first command of a deferred MULTI: pin its node's connection and open the
    /// transaction there (MULTI's reply was already given).
    pub(super) async fn start_cluster_multi(&mut self, spec: &CommandSpec, req: &Request) {
        self.cluster_multi = false;
        self.hint_pin_node(spec, req);
        if self.ensure_pinned().await {
            if let Some(conn) = &self.lease.pin {
                conn.send(Job::Send {
                    payload: Bytes::from_static(MULTI),
                    reply: ReplyTo::Discard,
                });
            }
        }
    }

    /// EXEC or DISCARD of a deferred MULTI that queued nothing.
    pub(super) fn end_empty_cluster_multi(&mut self, pin: Pin) {
        self.cluster_multi = false;
        self.lease.in_multi = false;
        self.end_snapshot();
        let frame = if pin == Pin::Exec {
            Bytes::from_static(b"*0\r\n")
        } else {
            encode::simple("OK")
        };
        self.reply(frame);
    }
}
