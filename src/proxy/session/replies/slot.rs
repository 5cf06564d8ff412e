//! One place in a client's reply order: a request (or a run of plain requests of one
//! command read together) waiting for its reply, a reply ready to be written, or a frame that
//! answers no request; and what the session remembers about the request until its reply
//! goes out.

use crate::rules::rewrite::ReplyCtx;
use bytes::Bytes;
use std::time::Instant;

/// What a slot remembers about its request.
#[derive(Debug)]
pub struct SlotInfo {
    /// The request pinned a connection until it is answered (a blocking command).
    pub blocking: bool,
    /// `CLIENT REPLY OFF/SKIP`: the reply is read but not written.
    pub silent: bool,
    /// How to map key names in the reply back, when it carries any.
    pub ctx: Option<Box<ReplyCtx>>,
    /// Command table id, for metrics.
    pub cmd: u16,
    /// When the request was routed, for the latency histogram.
    pub started: Instant,
    /// Cluster mode: the request's bytes, to send again after `-MOVED`/`-ASK`.
    pub resend: Option<Bytes>,
    /// Cluster mode: redirections followed so far.
    pub redirects: u8,
}

impl SlotInfo {
    /// The reply goes to the client as it came: no key mapping, not silent, nothing to
    /// release or resend when it arrives.
    pub(super) fn plain(&self) -> bool {
        !self.blocking && !self.silent && self.ctx.is_none() && self.resend.is_none()
    }

    /// The record of a plain request of command `cmd` read at `started`.
    pub(super) fn plain_for(cmd: u16, started: Instant) -> SlotInfo {
        SlotInfo {
            blocking: false,
            silent: false,
            ctx: None,
            cmd,
            started,
            resend: None,
            redirects: 0,
        }
    }

    /// The record of another request of the same plain run.
    pub(super) fn plain_copy(&self) -> SlotInfo {
        SlotInfo::plain_for(self.cmd, self.started)
    }
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) seq: u64,
    /// Requests this slot stands for: `seq .. seq + count`. Consecutive plain requests of one
    /// command read together, still waiting, share a slot (a pipeline of GETs costs one);
    /// every other slot stands for one request or frame.
    pub(super) count: u32,
    pub(super) frame: Option<Bytes>,
    /// `None` for frames that answer no request.
    pub(super) info: Option<SlotInfo>,
}

impl Slot {
    pub(super) fn single(seq: u64, frame: Option<Bytes>, info: Option<SlotInfo>) -> Slot {
        Slot {
            seq,
            count: 1,
            frame,
            info,
        }
    }

    /// True when request `seq`, recorded as `info`, extends this slot's run.
    pub(super) fn joins(&self, seq: u64, info: &SlotInfo) -> bool {
        info.plain() && self.joins_plain(seq, info.cmd, info.started)
    }

    /// True when plain request `seq` of command `cmd` read at `started` extends this slot's
    /// run: a plain run of the same command and read, still waiting, ending just before it.
    pub(super) fn joins_plain(&self, seq: u64, cmd: u16, started: Instant) -> bool {
        self.frame.is_none()
            && self.count < u32::MAX
            && self.seq + self.count as u64 == seq
            && self
                .info
                .as_ref()
                .is_some_and(|i| i.plain() && i.cmd == cmd && i.started == started)
    }

    pub(super) fn holds(&self, seq: u64) -> bool {
        self.info.is_some() && self.seq <= seq && seq - self.seq < self.count as u64
    }
}
