//! The forwarding lane: the short path for requests that need nothing but forwarding.
//!
//! Most traffic is plain data commands (GET, SET, HSET, …) from clients with no connection
//! state (no transaction, subscription or blocking call). Such a request needs no [`Request`]
//! of its own, no trip through the general dispatch and no copy of its own: the lane looks at
//! each complete request where it lies in the read buffer, opens its reply slot, and copies the
//! whole run into the upstream batch at once. When a rule rewrites the key of a single-key
//! command, the new key is spliced in on the way.
//!
//! The lane only skips work. One gate decides: [`Session::lane_open`] (the client's state is
//! such that the general path's admit phase would have nothing to do) and, request by request,
//! [`Session::lane_takes`] (the general path would forward it unchanged, or with its one key
//! rewritten). The first request it cannot take ends the run and goes through the general
//! path's phases (`phases`). A single upstream and a cluster differ only where the bytes go:
//! to the client's shared connection, copied in runs; or, copied in runs too, to the batch of
//! the node that serves their (rewritten) key's slot ([`Session::forward_cluster_lane`]).
//!
//! [`Request`]: crate::protocol::Request
//! [`Session::dispatch`]: crate::proxy::session::Session

use crate::acl::Acl;
use crate::cluster::slot::{head_crc, slot_after, slot_of, slot_of_parts};
use crate::commands::{Class, Local};
use crate::protocol::encode;
use crate::protocol::parser::Peeked;
use crate::protocol::request::splice_head;
use crate::proxy::session::cluster_route::NOT_SERVED;
use crate::proxy::session::identity;
use crate::proxy::session::outbox::BATCH_BYTES;
use crate::proxy::session::{ReplyMode, Session};
use crate::rules::rewrite::{self, RuleTally};
use bytes::Buf;
use std::borrow::Cow;
use std::sync::Arc;

impl Session {
    /// Forwards the leading requests of the read buffer that the lane can take, and leaves
    /// the rest where it is.
    pub(super) fn forward_lane(&mut self) {
        if !self.lane_open() {
            return;
        }
        if self.proxy.cluster.is_some() {
            return self.forward_cluster_lane();
        }
        let rules = !self.view.cfg.rules.is_empty();
        if rules {
            self.memory.sync_generation(self.view.cfg.generation);
        }
        let mut tally = RuleTally::default();
        // The client's ACL, looked up once a run, not once a request.
        let acl = self.view.acl.clone();
        // Bytes of the requests routed so far, and of those, the bytes already in the batch.
        let mut taken = 0;
        let mut copied = 0;
        // Requests taken whose reply slots are not open yet, all of `current_cmd`: a run of
        // one command is opened at once, always before its bytes join the batch. Opening may
        // send the batch before it (another connection's, or a gap in the sequence), but only
        // the first opening of this call: after it, the batch is the shared connection's and
        // every request taken follows the last. So a rule's splice, which writes into the
        // batch, waits for that first opening only.
        let mut unopened = 0;
        let mut joined = false;
        while self.lane_room(unopened) {
            let Some(req) = self.io.parser.peek(&self.io.rbuf[taken..]) else {
                break;
            };
            let Some(cmd) = self.lane_takes(&req, taken, rules, acl.as_deref()) else {
                break;
            };
            if cmd != self.current.cmd {
                self.open_plain_requests(std::mem::take(&mut unopened));
                self.current.cmd = cmd;
            }
            unopened += 1;
            if rules {
                if !joined {
                    self.open_plain_requests(std::mem::take(&mut unopened));
                    joined = true;
                }
                if let Some(resume) = self.splice_key(&req, taken, copied, &mut tally) {
                    copied = resume;
                }
            }
            taken += req.len;
            if self.sender.outbox.buf.len() + (taken - copied) >= BATCH_BYTES {
                self.open_plain_requests(std::mem::take(&mut unopened));
                self.sender
                    .outbox
                    .buf
                    .extend_from_slice(&self.io.rbuf[copied..taken]);
                copied = taken;
                self.flush_batch();
            }
        }
        self.open_plain_requests(unopened);
        self.sender
            .outbox
            .buf
            .extend_from_slice(&self.io.rbuf[copied..taken]);
        self.io.rbuf.advance(taken);
        tally.flush(&self.view.cfg.rules, identity(&self.client, &self.conn));
    }

    /// True when no connection state routes this client's requests anywhere but its shared
    /// connection, so the lane may run; the config in force is refreshed.
    fn lane_open(&mut self) -> bool {
        let stateless = self.conn.authed
            && self.lease.pin.is_none()
            && !self.sender.barrier
            && self.view.snapshot.is_none()
            && !self.cluster_multi
            && self.conn.reply_mode == ReplyMode::On
            && !self.proxy.registry.monitors.active()
            && !self.upstream_moved();
        if stateless {
            self.refresh_config();
        }
        stateless
    }

    /// True while the pipeline has room for one more request besides `unopened` taken ones.
    fn lane_room(&self, unopened: u32) -> bool {
        self.can_read() && self.replies.len() + (unopened as usize) < self.view.limits.max_pipeline
    }

    /// The command id of `req` (at `offset` in the read buffer) when it is a plainly forwarded
    /// command whose keys, if rules apply, are just its argument 1, and the client's ACL
    /// (if it has one) plainly allows it (else the general path's access check decides).
    #[inline(always)]
    pub(super) fn lane_takes(
        &mut self,
        req: &Peeked,
        offset: usize,
        rules: bool,
        acl: Option<&Acl>,
    ) -> Option<u16> {
        if req.len >= BATCH_BYTES {
            return None; // a large request goes alone, uncopied
        }
        let raw = &self.io.rbuf[offset..offset + req.len];
        let arg1 = req.arg1(raw);
        let spec = self.lookups.lookup_parts(req.name(raw), arg1);
        let plain = spec.class == Class::Forward && (!rules || rewrite::has_sole_key(spec));
        // The ACL is asked last: a request the lane does not take is checked on the general
        // path, once.
        if (plain || (!rules && self.lane_pings(spec.class)))
            && acl.is_none_or(|acl| acl.lane_permits(spec, arg1))
        {
            return Some(spec.id);
        }
        None
    }

    /// PING and ECHO join the lane (Redis answers them) unless the shared connection is
    /// stalled: then the general path decides where they go (see `local`).
    fn lane_pings(&self, class: Class) -> bool {
        matches!(class, Class::Local(Local::Ping | Local::Echo))
            && !self.sender.shared.stalled(self.sender.slot)
    }

    /// Applies the rules to the key of `req` (at `offset`), counting in `tally`; when one
    /// rewrites it, appends the bytes from `copied` up to the key with the new prefix in place
    /// of the old one, and returns where copying goes on (the rest of the key, unchanged).
    fn splice_key(
        &mut self,
        req: &Peeked,
        offset: usize,
        copied: usize,
        tally: &mut RuleTally,
    ) -> Option<usize> {
        let raw = &self.io.rbuf[offset..offset + req.len];
        let key = req.arg1(raw)?;
        // The prefix memory was brought to this config's generation once for the run.
        let app = identity(&self.client, &self.conn);
        let rw =
            rewrite::sole_key_rewrite(&self.view.cfg.rules, app, &mut self.memory, key, tally)?;
        let arg = req.arg1.clone()?;
        let arg = offset + arg.start as usize..offset + arg.end as usize;
        let to = rw.to.as_ref();
        Some(splice_head(
            &self.io.rbuf,
            copied,
            arg,
            rw.prefix_len,
            to,
            &mut self.sender.outbox.buf,
        ))
    }

    /// The forwarding lane with a cluster upstream: each plainly forwarded request whose one
    /// key is argument 1 goes to its (rewritten) key's slot's node without becoming a
    /// [`Request`]. As on the single upstream's lane, a run of requests for one node is copied
    /// into that node's batch as one piece, a rule's new key spliced in on the way, and its
    /// reply slots opened at once; the batch sent is kept for a redirection
    /// ([`super::outbox::SentBatches`]). The first request the lane cannot take is left for
    /// the general path.
    pub(super) fn forward_cluster_lane(&mut self) {
        let Some(cluster) = self.proxy.cluster.clone() else {
            return;
        };
        let topology = cluster.topology();
        // The config of this run: a rule's new prefix borrows it while the session changes.
        let cfg = Arc::clone(&self.view.cfg);
        let rules = !cfg.rules.is_empty();
        if rules {
            self.memory.sync_generation(cfg.generation);
        }
        let mut tally = RuleTally::default();
        let acl = self.view.acl.clone();
        let mut run = NodeRun::default();
        let mut prefix = PrefixCrc::default();
        while self.lane_room(run.unopened) {
            let Some(req) = self.io.parser.peek(&self.io.rbuf[run.taken..]) else {
                break;
            };
            let Some(cmd) = self.lane_takes(&req, run.taken, true, acl.as_deref()) else {
                break;
            };
            let Some(key) = req.arg1.clone() else {
                break; // no key: the general path picks a node
            };
            let key = run.taken + key.start as usize..run.taken + key.end as usize;
            let rw = match rules {
                true => rewrite::sole_key_rewrite(
                    &cfg.rules,
                    identity(&self.client, &self.conn),
                    &mut self.memory,
                    &self.io.rbuf[key.clone()],
                    &mut tally,
                ),
                false => None,
            };
            let slot = match &rw {
                Some(rw) => {
                    let tail = &self.io.rbuf[key.start + rw.prefix_len..key.end];
                    prefix.slot(&rw.to, matches!(rw.to, Cow::Borrowed(_)), tail)
                }
                None => slot_of(&self.io.rbuf[key.clone()]),
            };
            let Some(node) = topology.node_of(slot) else {
                self.close_node_run(&mut run);
                run.taken += req.len;
                run.copied = run.taken; // never sent
                cluster.request_refresh();
                self.current.cmd = cmd;
                self.reply(encode::error(NOT_SERVED));
                continue;
            };
            if run.node != Some(node.id) || cmd != self.current.cmd {
                self.close_node_run(&mut run);
                if run.node != Some(node.id) {
                    self.ensure_node_pool(node);
                    run.node = Some(node.id);
                    run.at = self.sender.outbox.node_at(node.id);
                }
                self.current.cmd = cmd;
            }
            run.unopened += 1;
            let batch = self.sender.outbox.node_mut(run.at);
            if let Some(rw) = rw {
                let (cut, to) = (rw.prefix_len, rw.to.as_ref());
                run.copied = splice_head(&self.io.rbuf, run.copied, key, cut, to, &mut batch.buf);
            }
            run.taken += req.len;
            if batch.buf.len() + (run.taken - run.copied) >= BATCH_BYTES {
                self.close_node_run(&mut run);
                self.sender.send_node_batch(node.id);
            }
        }
        self.close_node_run(&mut run);
        self.io.rbuf.advance(run.taken);
        tally.flush(&cfg.rules, self.identity());
    }

    /// Ends the cluster lane's current stretch of requests for one node: their reply slot is
    /// opened (one for the stretch, which its node answers at once) and the bytes not copied
    /// yet join the node's batch.
    fn close_node_run(&mut self, run: &mut NodeRun) {
        if run.unopened == 0 {
            return;
        }
        let n = std::mem::take(&mut run.unopened);
        let seq = self
            .replies
            .expect_plain_apart(self.current.cmd, self.current.start, n);
        let batch = self.sender.outbox.node_mut(run.at);
        batch.push_run(seq, n);
        batch
            .buf
            .extend_from_slice(&self.io.rbuf[run.copied..run.taken]);
        run.copied = run.taken;
    }
}

/// Where the cluster lane is in the read buffer, and the node its current stretch of requests
/// goes to.
#[derive(Default)]
struct NodeRun {
    /// Bytes of the requests routed so far, and of those, the bytes already in a batch.
    taken: usize,
    copied: usize,
    /// The node of the stretch (its id), and where its batch is in the outbox.
    node: Option<u64>,
    at: usize,
    /// Requests of the stretch whose reply slots are not open yet, all of `current.cmd`.
    unopened: u32,
}

/// The CRC of the last fixed new prefix a rule gave in this run of the cluster lane: the same
/// prefix, request after request, is hashed once.
#[derive(Default)]
struct PrefixCrc {
    /// The prefix (its place in the config, which outlives the run) and its CRC.
    last: Option<(*const u8, usize, u16)>,
}

impl PrefixCrc {
    /// The slot of the key `to ++ tail`; `fixed`: `to` is the rule's own (in the config),
    /// not made for this key.
    fn slot(&mut self, to: &[u8], fixed: bool, tail: &[u8]) -> u16 {
        if !fixed {
            return slot_of_parts(to, tail);
        }
        match self.last {
            Some((at, len, crc)) if at == to.as_ptr() && len == to.len() => {
                slot_after(crc, to, tail)
            }
            _ => match head_crc(to) {
                Some(crc) => {
                    self.last = Some((to.as_ptr(), to.len(), crc));
                    slot_after(crc, to, tail)
                }
                None => slot_of_parts(to, tail),
            },
        }
    }
}
