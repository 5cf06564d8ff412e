//! The sending side of a session: where its requests go and how they travel. Requests routed
//! to one upstream connection collect in the [`Outbox`] and leave as one job; this part knows
//! the client's shared pool (and, for a cluster, the pools of the nodes it used), the channel
//! replies come back on, and when requests must wait for those in flight (`barrier`). It knows
//! nothing of what a request means or how keys are rewritten.

use crate::protocol::encode::Proto;
use crate::proxy::session::outbox::{Batch, NodeSeqs, Outbox, SentBatches, Target};
use crate::proxy::Proxy;
use crate::upstream::{Job, PinnedConn, ReplyTo, SharedPool, Sink, Upstream};
use arc_swap::{ArcSwap, Cache};
use bytes::Bytes;
use std::sync::Arc;

/// Where a session's requests go.
pub(super) struct Sender {
    /// Where every upstream connection sends this client's replies.
    pub(super) sink: Sink,
    /// Requests routed but not yet sent.
    pub(super) outbox: Outbox,
    /// The client's shared pool for its protocol and db, and its connection in it.
    pub(super) shared: Arc<SharedPool>,
    pub(super) slot: usize,
    /// The upstream `shared` belongs to, and the live one (a reload with a new upstream, or
    /// a Sentinel failover, swaps it): when the two differ, the session moves. The live one
    /// is the proxy's, or the client's identity's own (`upstream_user`), `upstream_cell`.
    pub(super) upstream: Arc<Upstream>,
    pub(super) upstream_live: Cache<Arc<ArcSwap<Upstream>>, Arc<Upstream>>,
    upstream_cell: Arc<ArcSwap<Upstream>>,
    /// Cluster mode: shared pools of the nodes this client has used, by node id.
    pub(super) node_pools: Vec<(u64, Arc<SharedPool>)>,
    /// Cluster mode: node batches sent, kept for the redirections of their requests.
    pub(super) sent: SentBatches,
    /// The upstream the next pinned connection comes from (a cluster node), if not the default.
    pub(super) pin_hint: Option<Arc<Upstream>>,
    /// Requests went to one upstream connection and the next go to another (a pin was
    /// returned, the pool changed): before sending more, wait for what is in flight.
    pub(super) barrier: bool,
    /// The worker thread the session runs on: its shared pools are that worker's.
    pub(super) worker: usize,
}

impl Sender {
    /// A client's sender on the proxy's current upstream, in `db`, speaking RESP2.
    pub(super) fn new(proxy: &Proxy, sink: Sink, db: u32, worker: usize) -> Sender {
        let upstream = proxy.upstream.load_full();
        let shared = upstream.shared(worker, Proto::Resp2, db);
        Sender {
            sink,
            outbox: Outbox::default(),
            slot: shared.pick(),
            shared,
            upstream,
            upstream_live: Cache::new(Arc::clone(&proxy.upstream)),
            upstream_cell: Arc::clone(&proxy.upstream),
            node_pools: Vec::new(),
            sent: SentBatches::default(),
            pin_hint: None,
            barrier: false,
            worker,
        }
    }

    /// Adds the `count` requests from `seq` on for `target` to the batch, first sending the
    /// batch if they cannot join it (another connection, or `big`: the request goes alone).
    pub(super) fn join(
        &mut self,
        (target, seq, count, big): (Target, u64, u32, bool),
        pin: Option<&PinnedConn>,
    ) {
        if let Some((batch, payload)) = self.outbox.join(target, seq, count, big) {
            self.send(batch, payload, pin);
        }
    }

    /// Sends the batched requests, if any, as one job per connection: the cluster nodes'
    /// batches first, as a request too large to join one (sent alone, from the outbox) came
    /// after them.
    pub(super) fn flush(&mut self, pin: Option<&PinnedConn>) {
        let Sender {
            outbox,
            sink,
            node_pools,
            shared,
            slot,
            sent,
            ..
        } = self;
        outbox.take_nodes(|node, seqs, payload| {
            let pool = pool_of(node_pools, shared, node);
            send_node(sink, (pool, *slot), seqs, payload, sent)
        });
        if let Some((batch, payload)) = self.outbox.take() {
            self.send(batch, payload, pin);
        }
    }

    /// Adds request `seq` for cluster node `node` to that node's batch, sending the batch
    /// once it is large enough.
    pub(super) fn join_node(&mut self, node: u64, seq: u64, bytes: &[u8]) {
        if self.outbox.join_node(node, seq, bytes) {
            self.send_node_batch(node);
        }
    }

    /// Sends the batch of cluster node `node`, if it holds requests.
    pub(super) fn send_node_batch(&mut self, node: u64) {
        if let Some((seqs, payload)) = self.outbox.take_node(node) {
            let pool = pool_of(&self.node_pools, &self.shared, node);
            send_node(&self.sink, (pool, self.slot), seqs, payload, &mut self.sent);
        }
    }

    fn send(&self, b: Batch, payload: Bytes, pin: Option<&PinnedConn>) {
        let job = Job::Send {
            payload,
            reply: ReplyTo::Client {
                sink: self.sink.clone(),
                seq: b.first_seq,
                count: b.count,
            },
        };
        match (b.target, pin) {
            (Target::Pinned(_), Some(conn)) => conn.send(job),
            (Target::Pinned(_), None) | (Target::Shared(0), _) => self.shared.send(self.slot, job),
            (Target::Shared(node), _) => self.node_pool_by_id(node).send(self.slot, job),
        }
    }

    /// The pool cached for node `id` (every batch for a node was preceded by `node_pool`).
    pub(super) fn node_pool_by_id(&self, id: u64) -> Arc<SharedPool> {
        pool_of(&self.node_pools, &self.shared, id).clone()
    }

    /// Whether the proxy's upstream was swapped since this session took its pool.
    /// Follows `cell` (the proxy's upstream, or an identity's own) from now on; the session
    /// moves to it like to a swapped upstream ([`Sender::upstream_moved`]).
    pub(super) fn follow(&mut self, cell: &Arc<ArcSwap<Upstream>>) {
        if !Arc::ptr_eq(cell, &self.upstream_cell) {
            self.upstream_cell = Arc::clone(cell);
            self.upstream_live = Cache::new(Arc::clone(cell));
        }
    }

    /// The live upstream this client's connections come from.
    pub(super) fn live_upstream(&mut self) -> Arc<Upstream> {
        Arc::clone(self.upstream_live.load())
    }

    pub(super) fn upstream_moved(&mut self) -> bool {
        !Arc::ptr_eq(self.upstream_live.load(), &self.upstream)
    }

    /// Takes the shared pool for `proto` and `db` on the live upstream (after a change of
    /// protocol or db, or of the upstream). What follows waits for what is in flight unless
    /// the client is pinned (its requests keep going on its pinned connection, in order).
    pub(super) fn switch(&mut self, proto: Proto, db: u32, pin: Option<&PinnedConn>) {
        self.flush(pin);
        self.barrier |= pin.is_none();
        self.upstream = Arc::clone(self.upstream_live.load());
        self.shared = self.upstream.shared(self.worker, proto, db);
        self.slot = self.shared.pick();
    }
}

/// The pool of cluster node `id` among `node_pools`, else the client's own.
fn pool_of<'a>(
    node_pools: &'a [(u64, Arc<SharedPool>)],
    shared: &'a Arc<SharedPool>,
    id: u64,
) -> &'a Arc<SharedPool> {
    node_pools
        .iter()
        .find(|(n, _)| *n == id)
        .map_or(shared, |(_, p)| p)
}

/// Sends one cluster node's batch on `pool`'s connection `slot`: replies to consecutive
/// requests come back as a run, others each to its own sequence number. The batch is kept in
/// `sent` for redirections.
fn send_node(
    sink: &Sink,
    (pool, slot): (&Arc<SharedPool>, usize),
    seqs: NodeSeqs,
    payload: Bytes,
    sent: &mut SentBatches,
) {
    sent.keep(seqs.clone(), payload.clone());
    let reply = match seqs {
        NodeSeqs::Run { first, count } => ReplyTo::Client {
            sink: sink.clone(),
            seq: first,
            count,
        },
        NodeSeqs::Scattered(seqs) => ReplyTo::Scattered {
            sink: sink.clone(),
            seqs,
            next: 0,
        },
    };
    pool.send(slot, Job::Send { payload, reply });
}
