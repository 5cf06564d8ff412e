//! The per-client queue that puts replies back in request order.
//!
//! Each request gets a sequence number and a slot. Replies arrive from any upstream connection,
//! or are made locally, and fill their slot; the queue releases replies only from the front, so
//! the client sees them in the order it asked. Frames that answer no request (pub/sub, pushes)
//! take a slot behind every request sent so far.

use crate::proxy::rewrite::ReplyCtx;
use bytes::Bytes;
use std::collections::VecDeque;

#[derive(Debug)]
struct Slot {
    seq: u64,
    push: bool,
    frame: Option<Bytes>,
    /// The request pinned a connection until it is answered (a blocking command).
    blocking: bool,
    /// `CLIENT REPLY OFF/SKIP`: the reply is read but not written.
    silent: bool,
    /// How to map key names in the reply back, when it carries any.
    ctx: Option<Box<ReplyCtx>>,
}

/// What the session learns when a reply fills its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    pub blocking: bool,
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
    pub fn expect(&mut self, blocking: bool, silent: bool, ctx: Option<Box<ReplyCtx>>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.slots.push_back(Slot {
            seq,
            push: false,
            frame: None,
            blocking,
            silent,
            ctx,
        });
        seq
    }

    /// A reply made locally, in order after every request so far.
    pub fn local(&mut self, frame: Bytes, silent: bool) {
        let seq = self.expect(false, silent, None);
        self.fill(seq, frame);
    }

    /// A frame that answers no request, placed after every request sent so far.
    pub fn push(&mut self, frame: Bytes) {
        let seq = self.next_seq.saturating_sub(1);
        self.slots.push_back(Slot {
            seq,
            push: true,
            frame: Some(frame),
            blocking: false,
            silent: false,
            ctx: None,
        });
    }

    /// Fills the slot of request `seq`; `None` if no such slot waits (a stale reply).
    pub fn fill(&mut self, seq: u64, frame: Bytes) -> Option<Filled> {
        let i = self.slots.partition_point(|s| s.seq < seq);
        let slot = self
            .slots
            .get_mut(i)
            .filter(|s| s.seq == seq && !s.push && s.frame.is_none())?;
        slot.frame = Some(frame);
        Some(Filled {
            blocking: slot.blocking,
        })
    }

    /// The next reply to write (with its mapping context), if the front slot is answered.
    /// Silent replies are skipped.
    pub fn pop_ready(&mut self) -> Option<(Bytes, Option<Box<ReplyCtx>>)> {
        while self.slots.front().is_some_and(|s| s.frame.is_some()) {
            let slot = self.slots.pop_front().expect("front exists");
            if !slot.silent {
                return slot.frame.map(|f| (f, slot.ctx));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_leave_in_request_order() {
        let mut q = ReplyQueue::default();
        let a = q.expect(false, false, None);
        q.local(Bytes::from_static(b"+L\r\n"), false);
        let b = q.expect(true, false, None);
        q.push(Bytes::from_static(b">P\r\n"));
        assert_eq!(
            q.fill(b, Bytes::from_static(b"+B\r\n")),
            Some(Filled { blocking: true })
        );
        assert!(q.pop_ready().is_none());
        q.fill(a, Bytes::from_static(b"+A\r\n"));
        let out: Vec<_> = std::iter::from_fn(|| q.pop_ready().map(|(f, _)| f)).collect();
        assert_eq!(out, vec![&b"+A\r\n"[..], b"+L\r\n", b"+B\r\n", b">P\r\n"]);
        assert!(q.is_empty());
        assert_eq!(q.fill(a, Bytes::new()), None);
    }

    #[test]
    fn silent_slots_are_dropped() {
        let mut q = ReplyQueue::default();
        let a = q.expect(false, true, None);
        q.local(Bytes::from_static(b"+X\r\n"), false);
        q.fill(a, Bytes::from_static(b"+A\r\n"));
        assert_eq!(
            q.pop_ready().map(|(f, _)| f).as_deref(),
            Some(&b"+X\r\n"[..])
        );
    }
}
