//! The way back: replies are collected from every upstream connection (deliveries into the
//! session's mailbox), put in request order ([`super::replies`]), mapped back to the client's
//! names, counted, and moved to the write queue. A run of replies that needs no work of its
//! own is relayed as one piece.

use crate::protocol::reply;
use crate::proxy::session::replies::Ready;
use crate::proxy::session::Session;
use crate::rules::rewrite;
use crate::stats;
use crate::upstream::contract::each_reply;
use crate::upstream::Delivery;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

impl Session {
    /// Moves answered replies, in request order, to the write queue, counting each. Runs of
    /// replies to the same command, and to requests read together, are counted at once.
    pub(super) fn drain_ready(&mut self) {
        if !self.replies.front_ready() {
            return;
        }
        let now = Instant::now();
        let mut tally = self.tally();
        while let Some(Ready {
            mut frame,
            info,
            count,
        }) = self.replies.pop_ready()
        {
            if let Some(info) = info {
                let error = reply::is_error(&frame);
                tally.add(now, info.cmd, error, info.started, count as u64);
                if info.silent {
                    continue;
                }
                if let Some(ctx) = info.ctx {
                    let config = self.config();
                    let scope = self.scope(&config);
                    frame = rewrite::map_reply(&scope, &ctx, frame);
                } else if error && !self.view.cfg.rules.is_empty() {
                    let config = self.config();
                    let scope = self.scope(&config);
                    frame = rewrite::map_error(&scope, &[], frame);
                }
            }
            self.io.out.push(&frame);
        }
        tally.flush(now);
    }

    pub(super) fn on_delivery(&mut self, d: Delivery) {
        match d {
            Delivery::Replies {
                first_seq,
                count,
                errors: 0,
                ref frames,
            } if self.relay_run(first_seq, count, frames)
                || self.fill_run(first_seq, count, frames.clone()) =>
            {
                return;
            }
            Delivery::Scattered {
                ref seqs,
                first,
                count,
                ref frames,
            } if self.fills_runs() => {
                return self.fill_scattered(seqs, first, count, frames);
            }
            _ => {}
        }
        let Some(d) = d.into_replies(|seq, frame| self.fill(seq, frame)) else {
            return;
        };
        match d {
            Delivery::Push { frame } => self.on_push(frame),
            Delivery::Event { frame } => self.replies.push(frame),
            Delivery::Lost => {
                if self.lease.pin.is_some() && self.lease.needs_pin() {
                    self.pinned_conn_lost();
                }
            }
            Delivery::Reply { .. } | Delivery::Replies { .. } | Delivery::Scattered { .. } => {}
        }
    }

    /// Writes a run of replies to the oldest requests as one piece when none of them needs
    /// work of its own (the common case: no key names to map back; and with no error among
    /// them, no redirect to follow).
    pub(super) fn relay_run(&mut self, first_seq: u64, count: u32, frames: &Bytes) -> bool {
        let now = Instant::now();
        let mut tally = self.tally();
        let taken = self.replies.take_plain_run(first_seq, count, |info, n| {
            tally.add(now, info.cmd, false, info.started, n as u64)
        });
        if taken {
            tally.flush(now);
            self.io.out.push(frames);
        }
        taken
    }

    /// Whether replies may fill a run's slot at once ([`Session::fill_run`]): nothing is to
    /// be done for any one of them (see [`Session::fill`]).
    fn fills_runs(&self) -> bool {
        self.lease.broadcast_changes.is_empty() && self.exec_effects.is_none()
    }

    /// Fills the slot of plain requests `first_seq .. first_seq + count` with their replies
    /// `frames` (none an error) at once, when one slot stands for exactly them (see
    /// [`ReplyQueue::fill_run`](super::replies::ReplyQueue::fill_run)).
    fn fill_run(&mut self, first_seq: u64, count: u32, frames: Bytes) -> bool {
        if !self.fills_runs() || !self.replies.fill_run(first_seq, count, frames) {
            return false;
        }
        if self.lease.release_when_answered && !self.replies.has_unanswered() {
            self.lease.release_when_answered = false;
            self.release_if_idle();
        }
        true
    }

    /// The replies of a cluster node's share of a pipeline (`Delivery::Scattered`): a stretch
    /// of replies to consecutive requests with no error among them fills their run's slot at
    /// once when it can; the others are filled one by one (an error may be a redirection).
    fn fill_scattered(&mut self, seqs: &[u64], first: u32, count: u32, frames: &Bytes) {
        // The stretch so far: its first request, where its replies start, and how many.
        let mut stretch: Option<(u64, usize, u32)> = None;
        let mut offset = 0;
        for i in 0..count {
            let rest = &frames[offset..];
            let n = reply::frame_len(rest).ok().flatten().unwrap_or(rest.len());
            let end = offset + n;
            let Some(&seq) = seqs.get((first + i) as usize) else {
                offset = end;
                continue;
            };
            let error = reply::is_error(rest);
            match &mut stretch {
                Some((s, _, k)) if !error && *s + *k as u64 == seq => *k += 1,
                _ => {
                    if let Some(done) = stretch.take() {
                        self.fill_stretch(done, offset, frames);
                    }
                    match error {
                        true => self.fill(seq, frames.slice(offset..end)),
                        false => stretch = Some((seq, offset, 1)),
                    }
                }
            }
            offset = end;
        }
        if let Some(done) = stretch {
            self.fill_stretch(done, offset, frames);
        }
    }

    /// Fills the replies to `count` consecutive requests from `seq` on, `frames[start..end]`.
    fn fill_stretch(&mut self, (seq, start, count): (u64, usize, u32), end: usize, frames: &Bytes) {
        let piece = frames.slice(start..end);
        if self.fill_run(seq, count, piece.clone()) {
            return;
        }
        match count {
            1 => self.fill(seq, piece),
            _ => each_reply(seq, count, &piece, |seq, frame| self.fill(seq, frame)),
        }
    }

    pub(super) fn fill(&mut self, seq: u64, frame: Bytes) {
        if !self.lease.broadcast_changes.is_empty() {
            self.tracking_refused(seq, &frame);
        }
        if self.exec_effects.as_ref().is_some_and(|(s, _)| *s == seq) {
            if let Some((_, at_exec)) = self.exec_effects.take() {
                if frame.first() == Some(&b'*') && !frame.starts_with(b"*-1") {
                    self.apply_at_exec(at_exec);
                }
            }
        }
        if self.proxy.cluster.is_some() && self.follow_redirect(seq, &frame) {
            return;
        }
        if let Some(filled) = self.replies.fill(seq, frame) {
            if filled.blocking {
                self.lease.blocking -= 1;
                self.release_if_idle();
            }
            if self.lease.release_when_answered && !self.replies.has_unanswered() {
                self.lease.release_when_answered = false;
                self.release_if_idle();
            }
        }
    }

    /// A tally of replies for this client's counters.
    pub(super) fn tally(&self) -> Tally {
        Tally::new(
            self.view.app_stats.clone(),
            self.view.cfg.metrics.command_latency,
        )
    }
}

/// Run-length counting of written replies: per (command, result) and per arrival time.
pub(super) struct Tally {
    /// The counters of the client's `app` label.
    counters: Arc<stats::AppCommands>,
    /// `metrics.command_latency`: also record each command's latency.
    per_command: bool,
    command: Option<(u16, bool, u64)>,
    latency: Option<(Instant, u64)>,
}

impl Tally {
    #[inline]
    pub(super) fn new(counters: Arc<stats::AppCommands>, per_command: bool) -> Tally {
        Tally {
            counters,
            per_command,
            command: None,
            latency: None,
        }
    }

    /// Counts `n` replies to command `cmd` whose requests arrived at `started`.
    #[inline]
    pub(super) fn add(&mut self, now: Instant, cmd: u16, error: bool, started: Instant, n: u64) {
        if self.per_command {
            let took = now.saturating_duration_since(started).as_secs_f64();
            stats::stats()
                .command_latency(cmd)
                .record_many(took, n as usize);
        }
        match &mut self.command {
            Some((c, e, count)) if *c == cmd && *e == error => *count += n,
            _ => {
                self.flush_command();
                self.command = Some((cmd, error, n));
            }
        }
        match &mut self.latency {
            Some((s, count)) if *s == started => *count += n,
            _ => {
                self.flush_latency(now);
                self.latency = Some((started, n));
            }
        }
    }

    #[inline]
    pub(super) fn flush_command(&mut self) {
        if let Some((cmd, error, n)) = self.command.take() {
            let counters = self.counters.command(cmd);
            match error {
                true => counters.error.increment(n),
                false => counters.ok.increment(n),
            }
        }
    }

    #[inline]
    pub(super) fn flush_latency(&mut self, now: Instant) {
        if let Some((started, n)) = self.latency.take() {
            stats::stats()
                .latency
                .record(now.saturating_duration_since(started), n);
        }
    }

    #[inline]
    pub(super) fn flush(&mut self, now: Instant) {
        self.flush_command();
        self.flush_latency(now);
    }
}
