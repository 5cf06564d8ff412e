//! The outbox: requests routed to one upstream connection and not yet sent. Consecutive
//! requests for the same connection become one job (one channel send, one wake-up of the
//! connection's task); a request for another connection, or one too large to copy, first sends
//! what is there. The bytes live in one buffer reused between batches; a large request is
//! never copied into it but sent as it is.

use crate::protocol::reply;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;

/// Batched request bytes are sent once they reach this size; a larger request goes alone.
pub(super) const BATCH_BYTES: usize = 16 * 1024;

/// Batches up to this size sent because the next request goes elsewhere are copied out of the
/// batch buffer rather than split off it (see [`Outbox::take_with`]).
const COPY_OUT_BYTES: usize = 4 * 1024;

/// Where a batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The shared pool: the client's own (0), or a cluster node's (its id).
    Shared(u64),
    /// The client's pinned connection (its id).
    Pinned(u64),
}

/// Consecutive requests for one upstream connection, sent as one job: their reply slots are
/// `first_seq .. first_seq + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Batch {
    pub(super) target: Target,
    pub(super) first_seq: u64,
    pub(super) count: u32,
}

/// The batch being built and its bytes.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    batch: Option<Batch>,
    /// The batch's request bytes (copied requests, or spliced rewritten ones).
    pub(super) buf: BytesMut,
    /// A request sent alone and uncopied (at least [`BATCH_BYTES`]).
    big: Option<Bytes>,
    /// A rewritten request on its way into `buf`.
    pub(super) scratch: BytesMut,
    /// Cluster: one batch per node, open side by side, so that a pipeline whose requests go
    /// to three nodes leaves as three jobs (not one each time the node changes).
    nodes: Vec<NodeBatch>,
}

/// The requests for one cluster node not sent yet: their sequence numbers (in request
/// order, not necessarily consecutive) and bytes.
#[derive(Debug, Default)]
pub(super) struct NodeBatch {
    pub(super) node: u64,
    pub(super) seqs: Vec<u64>,
    pub(super) buf: BytesMut,
}

/// The requests of a node's batch taken to be sent: whose replies they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NodeSeqs {
    /// `count` consecutive requests from `first` on.
    Run { first: u64, count: u32 },
    /// Requests that are not consecutive, in order.
    Scattered(Arc<[u64]>),
}

impl NodeBatch {
    /// Adds the `count` consecutive requests from `first` on (their bytes are the caller's
    /// to append).
    #[inline]
    pub(super) fn push_run(&mut self, first: u64, count: u32) {
        self.seqs.extend(first..first + count as u64);
    }

    /// The requests' sequence numbers, as cheaply as they can be said; the list is emptied
    /// (its memory kept for the next batch).
    fn take_seqs(&mut self) -> NodeSeqs {
        let (first, last) = (self.seqs[0], self.seqs[self.seqs.len() - 1]);
        let count = self.seqs.len() as u32;
        match last - first + 1 == count as u64 {
            true => {
                self.seqs.clear();
                NodeSeqs::Run { first, count }
            }
            false => {
                let seqs = NodeSeqs::Scattered(Arc::from(&self.seqs[..]));
                self.seqs.clear();
                seqs
            }
        }
    }
}

impl Outbox {
    /// Adds the `count` consecutive requests from `seq` on for `target`. When they cannot join
    /// the batch (another connection, a gap in the sequence, or `big`: the request goes alone),
    /// the batch so far is returned to be sent first, and a new one starts with them.
    #[must_use]
    pub(super) fn join(
        &mut self,
        target: Target,
        seq: u64,
        count: u32,
        big: bool,
    ) -> Option<(Batch, Bytes)> {
        match &mut self.batch {
            Some(b) if !big && b.target == target && b.first_seq + b.count as u64 == seq => {
                b.count += count;
                None
            }
            _ => {
                let before = self.take_with(true);
                self.batch = Some(Batch {
                    target,
                    first_seq: seq,
                    count,
                });
                before
            }
        }
    }

    /// The request of the batch just joined with `big`: sent as it is.
    pub(super) fn set_big(&mut self, payload: Bytes) {
        self.big = Some(payload);
    }

    /// Whether the batch is large enough to be sent now.
    pub(super) fn full(&self) -> bool {
        self.buf.len() >= BATCH_BYTES
    }

    /// Takes the batch and its bytes, leaving the outbox empty.
    pub(super) fn take(&mut self) -> Option<(Batch, Bytes)> {
        self.take_with(false)
    }

    /// [`Outbox::take`]; with `switching` (the next request goes to another connection, as
    /// requests for different cluster nodes do all the time), a small batch is copied out and
    /// the buffer kept: split off, it would still be shared with the batch in flight when the
    /// next request arrives, which then needs a new buffer (two allocations and two frees a
    /// batch instead of one each). At the end of a read the batch is split off: by the next
    /// read it has been written and dropped, and the buffer is reused in place.
    fn take_with(&mut self, switching: bool) -> Option<(Batch, Bytes)> {
        let batch = self.batch.take()?;
        let payload = match self.big.take() {
            Some(big) => big,
            None if switching && self.buf.len() <= COPY_OUT_BYTES => {
                let payload = Bytes::copy_from_slice(&self.buf);
                self.buf.clear();
                payload
            }
            None => self.buf.split().freeze(),
        };
        Some((batch, payload))
    }

    /// Where the batch of cluster node `node` is (opened on first use): for
    /// [`Outbox::node_mut`], until the batches are given back idle ([`Outbox::shrink_idle`]).
    pub(super) fn node_at(&mut self, node: u64) -> usize {
        match self.nodes.iter().position(|b| b.node == node) {
            Some(at) => at,
            None => {
                self.nodes.push(NodeBatch {
                    node,
                    ..NodeBatch::default()
                });
                self.nodes.len() - 1
            }
        }
    }

    /// The node batch at `at` (see [`Outbox::node_at`]).
    #[inline]
    pub(super) fn node_mut(&mut self, at: usize) -> &mut NodeBatch {
        &mut self.nodes[at]
    }

    /// Adds request `seq` for cluster node `node` to that node's batch; true when the batch
    /// is large enough to be sent now.
    pub(super) fn join_node(&mut self, node: u64, seq: u64, bytes: &[u8]) -> bool {
        let at = self.node_at(node);
        let batch = &mut self.nodes[at];
        batch.seqs.push(seq);
        batch.buf.extend_from_slice(bytes);
        batch.buf.len() >= BATCH_BYTES
    }

    /// Takes the batch of node `node`, if it holds requests: whose replies, and the bytes.
    pub(super) fn take_node(&mut self, node: u64) -> Option<(NodeSeqs, Bytes)> {
        let batch = self.nodes.iter_mut().find(|b| b.node == node)?;
        Self::take_node_batch(batch)
    }

    /// Takes every node's batch that holds requests: `f(node, whose replies, bytes)`.
    pub(super) fn take_nodes(&mut self, mut f: impl FnMut(u64, NodeSeqs, Bytes)) {
        for batch in &mut self.nodes {
            if let Some((seqs, bytes)) = Self::take_node_batch(batch) {
                f(batch.node, seqs, bytes);
            }
        }
    }

    fn take_node_batch(batch: &mut NodeBatch) -> Option<(NodeSeqs, Bytes)> {
        if batch.seqs.is_empty() {
            return None;
        }
        Some((batch.take_seqs(), batch.buf.split().freeze()))
    }

    /// Gives back the memory of a burst once nothing is batched.
    #[inline]
    pub(super) fn shrink_idle(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 4 * BATCH_BYTES {
            self.buf = BytesMut::new();
        }
        if !self.nodes.is_empty() {
            self.shrink_idle_nodes();
        }
    }

    /// The node batches' share of [`Outbox::shrink_idle`].
    #[inline(never)]
    fn shrink_idle_nodes(&mut self) {
        let large = |b: &NodeBatch| b.seqs.is_empty() && b.buf.capacity() > 4 * BATCH_BYTES;
        if self.nodes.iter().any(large) {
            self.nodes.clear();
        }
    }
}

/// Cluster node batches sent and not yet answered in full: what a `-MOVED` or `-ASK` reply
/// needs to send its request again. A request's bytes are found (sliced off its batch's) only
/// when its redirection arrives, so that a request costs nothing of its own to keep.
#[derive(Debug, Default)]
pub(super) struct SentBatches {
    batches: VecDeque<(NodeSeqs, Bytes)>,
}

impl NodeSeqs {
    /// The last request's sequence number.
    fn last(&self) -> u64 {
        match self {
            NodeSeqs::Run { first, count } => first + *count as u64 - 1,
            NodeSeqs::Scattered(seqs) => seqs.last().copied().unwrap_or(0),
        }
    }

    /// Where request `seq` is in the batch.
    fn index_of(&self, seq: u64) -> Option<usize> {
        match self {
            NodeSeqs::Run { first, count } => {
                let i = seq.checked_sub(*first)?;
                (i < *count as u64).then_some(i as usize)
            }
            NodeSeqs::Scattered(seqs) => seqs.binary_search(&seq).ok(),
        }
    }
}

impl SentBatches {
    /// Keeps a batch sent: requests `seqs`, whose bytes are `payload` in that order.
    pub(super) fn keep(&mut self, seqs: NodeSeqs, payload: Bytes) {
        self.batches.push_back((seqs, payload));
    }

    /// Forgets the batches whose requests all come before `oldest` (the oldest request whose
    /// reply is not written yet).
    #[inline]
    pub(super) fn forget_before(&mut self, oldest: u64) {
        while self.batches.front().is_some_and(|(s, _)| s.last() < oldest) {
            self.batches.pop_front();
        }
    }

    /// The bytes of request `seq`, if it went in a batch still kept.
    pub(super) fn request(&self, seq: u64) -> Option<Bytes> {
        let (i, payload) = self
            .batches
            .iter()
            .rev()
            .find_map(|(seqs, payload)| Some((seqs.index_of(seq)?, payload)))?;
        let mut at = 0;
        for _ in 0..i {
            at += reply::frame_len(&payload[at..]).ok()??;
        }
        let len = reply::frame_len(&payload[at..]).ok()??;
        Some(payload.slice(at..at + len))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_requests_for_one_connection_are_one_batch() {
        let mut o = Outbox::default();
        assert!(o.join(Target::Shared(0), 1, 1, false).is_none());
        o.buf.extend_from_slice(b"a");
        assert!(o.join(Target::Shared(0), 2, 1, false).is_none());
        o.buf.extend_from_slice(b"b");
        let (batch, bytes) = o.take().unwrap();
        assert_eq!((batch.first_seq, batch.count), (1, 2));
        assert_eq!(&bytes[..], b"ab");
        assert!(o.take().is_none(), "taken once");
    }

    #[test]
    fn another_connection_or_a_gap_sends_what_is_there_first() {
        let mut o = Outbox::default();
        assert!(o.join(Target::Shared(0), 1, 1, false).is_none());
        o.buf.extend_from_slice(b"shared");
        let (first, bytes) = o.join(Target::Pinned(9), 2, 1, false).unwrap();
        assert_eq!(
            (first.target, first.count, &bytes[..]),
            (Target::Shared(0), 1, &b"shared"[..])
        );
        o.buf.extend_from_slice(b"pinned");
        let (second, _) = o.join(Target::Pinned(9), 4, 1, false).unwrap();
        assert_eq!(
            (second.first_seq, second.count),
            (2, 1),
            "seq 3 went elsewhere"
        );
    }

    #[test]
    fn a_big_request_goes_alone_and_uncopied() {
        let mut o = Outbox::default();
        assert!(o.join(Target::Shared(0), 1, 1, false).is_none());
        o.buf.extend_from_slice(b"small");
        let big = Bytes::from(vec![b'x'; BATCH_BYTES]);
        let (before, _) = o.join(Target::Shared(0), 2, 1, true).unwrap();
        assert_eq!(before.count, 1);
        o.set_big(big.clone());
        let (batch, payload) = o.take().unwrap();
        assert_eq!((batch.first_seq, batch.count), (2, 1));
        assert_eq!(payload.as_ptr(), big.as_ptr(), "the same bytes, not a copy");
        assert!(o.buf.is_empty() && !o.full());
    }

    #[test]
    fn each_cluster_node_keeps_its_own_batch_whatever_comes_between() {
        let mut o = Outbox::default();
        for (seq, node) in [(1, 7), (2, 8), (3, 7), (4, 9), (5, 7), (6, 8)] {
            assert!(!o.join_node(node, seq, format!("r{seq};").as_bytes()));
        }
        let mut sent = Vec::new();
        o.take_nodes(|node, seqs, bytes| sent.push((node, seqs, bytes)));
        assert_eq!(sent.len(), 3, "one batch per node");
        assert_eq!(sent[0].0, 7);
        assert_eq!(sent[0].1, NodeSeqs::Scattered(Arc::from(vec![1u64, 3, 5])));
        assert_eq!(&sent[0].2[..], b"r1;r3;r5;");
        assert_eq!(sent[2].1, NodeSeqs::Run { first: 4, count: 1 });
        let mut again = 0;
        o.take_nodes(|_, _, _| again += 1);
        assert_eq!(again, 0, "taken once");
    }

    #[test]
    fn a_sent_request_is_found_in_its_batch_until_its_batch_is_answered() {
        let get = |k: &str| format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len());
        let mut sent = SentBatches::default();
        let run = format!("{}{}{}", get("a"), get("bb"), get("c"));
        sent.keep(NodeSeqs::Run { first: 4, count: 3 }, Bytes::from(run));
        let scattered = format!("{}{}", get("x"), get("yy"));
        sent.keep(
            NodeSeqs::Scattered(Arc::from(vec![7u64, 9])),
            Bytes::from(scattered),
        );
        assert_eq!(sent.request(5).as_deref(), Some(get("bb").as_bytes()));
        assert_eq!(sent.request(6).as_deref(), Some(get("c").as_bytes()));
        assert_eq!(sent.request(9).as_deref(), Some(get("yy").as_bytes()));
        assert_eq!(sent.request(8), None, "sent elsewhere");
        assert_eq!(sent.request(3), None);
        sent.forget_before(6);
        assert!(sent.request(4).is_some(), "request 6 is not answered yet");
        sent.forget_before(7);
        assert_eq!(sent.request(4), None);
        assert!(sent.request(7).is_some());
        sent.forget_before(10);
        assert!(sent.is_empty());
    }

    #[test]
    fn a_node_batch_of_consecutive_requests_is_a_run() {
        let mut o = Outbox::default();
        assert!(!o.join_node(3, 10, b"a"));
        assert!(!o.join_node(3, 11, b"b"));
        let (seqs, bytes) = o.take_node(3).unwrap();
        assert_eq!(
            (seqs, &bytes[..]),
            (
                NodeSeqs::Run {
                    first: 10,
                    count: 2
                },
                &b"ab"[..]
            )
        );
        assert!(o.take_node(3).is_none());
        let big = vec![b'x'; BATCH_BYTES];
        assert!(o.join_node(3, 12, &big), "a full batch is to be sent now");
    }
}
