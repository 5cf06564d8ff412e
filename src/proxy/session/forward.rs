//! Sending, the session's half: each request forwarded gets its reply slot opened in request
//! order, then joins the batch for its upstream connection ([`super::sender`]); replies rekey
//! makes itself take a slot the same way. Nothing here decides where a request goes.

use crate::protocol::encode;
use crate::protocol::Request;
use crate::proxy::session::outbox::{Outbox, Target, BATCH_BYTES};
use crate::proxy::session::replies::SlotInfo;
use crate::proxy::session::Session;
use crate::upstream::{Job, ReplyTo};
use bytes::Bytes;

impl Session {
    /// Sends a request whose reply comes back 1:1, on the pinned connection if any.
    /// Consecutive requests for the same connection are batched into one job (one channel
    /// send, one wakeup), sent by [`Session::flush_batch`].
    pub(super) fn forward(&mut self, payload: Bytes, blocking: bool) {
        self.forward_on(payload, blocking, 0)
    }

    /// [`Session::forward`] to cluster node `node` (its id; 0 is the client's own pool).
    pub(super) fn forward_on(&mut self, payload: Bytes, blocking: bool, node: u64) {
        let cluster = node != 0 && self.lease.pin.is_none(); // a cluster may redirect it
        let big = payload.len() >= BATCH_BYTES;
        if cluster && !big && !blocking {
            // A cluster node's share of the pipeline: that node's own batch, which is kept
            // for a redirection (`Sender::sent`).
            let seq = self.open_slot(false, None);
            return self.sender.join_node(node, seq, &payload);
        }
        let resend = cluster.then(|| payload.clone());
        self.open_request(blocking, node, big, resend);
        if big {
            self.sender.outbox.set_big(payload); // large: sent as is, never copied
            self.flush_batch();
            return;
        }
        self.sender.outbox.buf.extend_from_slice(&payload);
        self.close_request();
    }

    /// [`Session::forward`] of the request encoded in `scratch` (a rewritten one, smaller
    /// than a batch).
    pub(super) fn forward_scratch(&mut self) {
        self.open_request(false, 0, false, None);
        let Outbox { buf, scratch, .. } = &mut self.sender.outbox;
        buf.extend_from_slice(scratch);
        self.close_request();
    }

    /// Opens the reply slot of a request about to be appended to the batch, first sending the
    /// batch if the request cannot join it (another connection, or `big`: it goes alone).
    pub(super) fn open_request(
        &mut self,
        blocking: bool,
        node: u64,
        big: bool,
        resend: Option<Bytes>,
    ) {
        let seq = self.open_slot(blocking, resend);
        let target = match &self.lease.pin {
            Some(c) => Target::Pinned(c.id),
            None => Target::Shared(node),
        };
        self.join_batch(target, seq, 1, big);
    }

    /// Opens the reply slot of the request being forwarded (kept for a redirection with
    /// `resend`); its sequence number.
    fn open_slot(&mut self, blocking: bool, resend: Option<Bytes>) -> u64 {
        let mut info = self.slot_info(blocking);
        info.resend = resend;
        if std::mem::take(&mut self.current.queueing) {
            self.lease.queued.push(info.ctx.take()); // its reply is +QUEUED; EXEC's carries it
        }
        self.replies.expect(info)
    }

    /// Adds the `count` requests from `seq` on for `target` to the batch (see
    /// [`Sender::join`]).
    pub(super) fn join_batch(&mut self, target: Target, seq: u64, count: u32, big: bool) {
        let pin = self.lease.pin.as_ref();
        self.sender.join((target, seq, count, big), pin);
    }

    /// [`Session::open_request`] for the lane: `n` plain requests of `current_cmd` for the
    /// client's shared connection (the lane runs only when nothing else is possible).
    pub(super) fn open_plain_requests(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        let seq = self
            .replies
            .expect_plain(self.current.cmd, self.current.start, n);
        self.join_batch(Target::Shared(0), seq, n, false);
    }

    /// Sends the batch once it is large enough.
    pub(super) fn close_request(&mut self) {
        if self.sender.outbox.full() {
            self.flush_batch();
        }
    }

    /// Sends the batched requests, if any, as one job.
    pub(super) fn flush_batch(&mut self) {
        self.sender.flush(self.lease.pin.as_ref());
        self.forget_answered_batches();
    }

    /// Forgets the cluster node batches sent whose replies have all been written.
    #[inline]
    pub(super) fn forget_answered_batches(&mut self) {
        if !self.sender.sent.is_empty() {
            self.sender.sent.forget_before(self.replies.oldest_seq());
        }
    }

    /// Sends a request on the pinned connection in subscribe mode: every frame that comes
    /// back is relayed in arrival order.
    pub(super) fn forward_stream(&mut self, req: Request) {
        self.flush_batch();
        match &self.lease.pin {
            Some(conn) => conn.send(Job::Send {
                payload: req.raw().clone(),
                reply: ReplyTo::Stream(self.sender.sink.clone()),
            }),
            None => return self.reply(encode::error("ERR rekey: no subscribe connection")),
        }
        self.lease.subs.sent(&req);
        if !self.lease.subs.active() {
            // The last subscription gone. Frames still owed on the stream cannot be told
            // apart from replies to what follows: that waits for them (and the connection
            // goes back, if nothing else holds it).
            self.sender.barrier = true;
            self.release_if_idle();
        }
    }

    /// Queues a reply made by rekey, in order.
    pub(super) fn reply(&mut self, frame: Bytes) {
        let info = self.slot_info(false);
        self.replies.local(frame, info);
    }

    /// What a new slot for the current request records.
    pub(super) fn slot_info(&mut self, blocking: bool) -> SlotInfo {
        SlotInfo {
            blocking,
            silent: self.conn.take_silent(),
            ctx: self.current.ctx.take(),
            cmd: self.current.cmd,
            started: self.current.start,
            resend: None,
            redirects: 0,
        }
    }

    /// Waits until every request already sent upstream is answered. Redis runs one
    /// connection's requests in order, but not those of two connections: a request about to
    /// go on another connection (a pin taken or returned) must not overtake them.
    pub(super) async fn settle(&mut self) {
        self.flush_batch();
        while self.replies.has_unanswered() || self.lease.subs.waiting() {
            match self.inbox.recv().await {
                Some(d) => self.on_delivery(d),
                None => break,
            }
        }
        self.sender.barrier = false;
    }
}
