//! The per-client queue that puts replies back in request order.
//!
//! Each request gets a sequence number and a slot. Replies arrive from any upstream connection,
//! or are made locally, and fill their slot; the queue releases replies only from the front, so
//! the client sees them in the order it asked. Frames that answer no request (pub/sub, pushes)
//! take a slot behind every request sent so far.

use crate::proxy::rewrite::ReplyCtx;
use bytes::Bytes;
use std::collections::VecDeque;
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

#[derive(Debug)]
struct Slot {
    seq: u64,
    frame: Option<Bytes>,
    /// `None` for frames that answer no request.
    info: Option<SlotInfo>,
}

/// What the session learns when a reply fills its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    pub blocking: bool,
}

/// A reply ready to be written.
pub struct Ready {
    pub frame: Bytes,
    /// `None` for pushes.
    pub info: Option<SlotInfo>,
}

#[derive(Debug, Default)]
pub struct ReplyQueue {
    slots: VecDeque<Slot>,
    next_seq: u64,
}

impl ReplyQueue {
    /// Slots waiting to be written (answered or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Opens a slot for a request whose reply will come later; returns its sequence number.
    pub fn expect(&mut self, info: SlotInfo) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(Slot {
            seq,
            frame: None,
            info: Some(info),
        });
        seq
    }

    /// A reply made locally, in order after every request so far.
    pub fn local(&mut self, frame: Bytes, info: SlotInfo) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(Slot {
            seq,
            frame: Some(frame),
            info: Some(info),
        });
    }

    /// A frame that answers no request, placed after every request sent so far.
    pub fn push(&mut self, frame: Bytes) {
        let seq = self.next_seq.saturating_sub(1);
        self.slots.push_back(Slot {
            seq,
            frame: Some(frame),
            info: None,
        });
    }

    /// Fills the slot of request `seq`; `None` if no such slot waits (a stale reply).
    pub fn fill(&mut self, seq: u64, frame: Bytes) -> Option<Filled> {
        let i = self.slots.partition_point(|s| s.seq < seq);
        let slot = self
            .slots
            .get_mut(i)
            .filter(|s| s.seq == seq && s.info.is_some() && s.frame.is_none())?;
        slot.frame = Some(frame);
        Some(Filled {
            blocking: slot.info.as_ref().is_some_and(|i| i.blocking),
        })
    }

    /// The record of request `seq` while it waits for its reply.
    pub fn waiting_mut(&mut self, seq: u64) -> Option<&mut SlotInfo> {
        let i = self.slots.partition_point(|s| s.seq < seq);
        self.slots
            .get_mut(i)
            .filter(|s| s.seq == seq && s.frame.is_none())?
            .info
            .as_mut()
    }

    /// The next answered reply, in order, if the front slot is answered.
    pub fn pop_ready(&mut self) -> Option<Ready> {
        if self.slots.front().is_some_and(|s| s.frame.is_some()) {
            let slot = self.slots.pop_front().expect("front exists");
            return slot.frame.map(|frame| Ready {
                frame,
                info: slot.info,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(blocking: bool, silent: bool) -> SlotInfo {
        SlotInfo {
            blocking,
            silent,
            ctx: None,
            cmd: 0,
            started: Instant::now(),
            resend: None,
            redirects: 0,
        }
    }

    fn frames(q: &mut ReplyQueue) -> Vec<Bytes> {
        std::iter::from_fn(|| q.pop_ready())
            .filter(|r| !r.info.as_ref().is_some_and(|i| i.silent))
            .map(|r| r.frame)
            .collect()
    }

    #[test]
    fn replies_leave_in_request_order() {
        let mut q = ReplyQueue::default();
        let a = q.expect(info(false, false));
        q.local(Bytes::from_static(b"+L\r\n"), info(false, false));
        let b = q.expect(info(true, false));
        q.push(Bytes::from_static(b">P\r\n"));
        assert_eq!(
            q.fill(b, Bytes::from_static(b"+B\r\n")),
            Some(Filled { blocking: true })
        );
        assert!(q.pop_ready().is_none());
        q.fill(a, Bytes::from_static(b"+A\r\n"));
        assert_eq!(
            frames(&mut q),
            vec![&b"+A\r\n"[..], b"+L\r\n", b"+B\r\n", b">P\r\n"]
        );
        assert!(q.is_empty());
        assert_eq!(q.fill(a, Bytes::new()), None);
    }

    #[test]
    fn silent_slots_are_marked() {
        let mut q = ReplyQueue::default();
        let a = q.expect(info(false, true));
        q.local(Bytes::from_static(b"+X\r\n"), info(false, false));
        q.fill(a, Bytes::from_static(b"+A\r\n"));
        assert_eq!(frames(&mut q), vec![&b"+X\r\n"[..]]);
    }
}
