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

impl SlotInfo {
    /// The reply goes to the client as it came: no key mapping, not silent, nothing to
    /// release or resend when it arrives.
    fn plain(&self) -> bool {
        !self.blocking && !self.silent && self.ctx.is_none() && self.resend.is_none()
    }
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
        let i = self.index_of(seq);
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
        let i = self.index_of(seq);
        self.slots
            .get_mut(i)
            .filter(|s| s.seq == seq && s.frame.is_none())?
            .info
            .as_mut()
    }

    /// Where the slot of request `seq` is (or would be). Sequence numbers rise by one per slot
    /// except behind pushes, so the first guess is almost always right.
    fn index_of(&self, seq: u64) -> usize {
        if let Some(front) = self.slots.front() {
            let guess = seq.wrapping_sub(front.seq) as usize;
            if self.slots.get(guess).is_some_and(|s| s.seq == seq) {
                return guess;
            }
        }
        self.slots.partition_point(|s| s.seq < seq)
    }

    /// When requests `first_seq .. first_seq + count` are the oldest in the queue, all still
    /// waiting, and their replies need no work of their own (`SlotInfo::plain`), removes
    /// their slots, calling `each` with each record, and returns true: the caller writes the
    /// replies as one run. Otherwise changes nothing and returns false.
    pub fn take_plain_run(
        &mut self,
        first_seq: u64,
        count: u32,
        mut each: impl FnMut(&SlotInfo),
    ) -> bool {
        let count = count as usize;
        if self.slots.len() < count || self.slots.front().map(|s| s.seq) != Some(first_seq) {
            return false;
        }
        let plain = self.slots.range(..count).enumerate().all(|(i, s)| {
            s.seq == first_seq + i as u64
                && s.frame.is_none()
                && s.info.as_ref().is_some_and(SlotInfo::plain)
        });
        if !plain {
            return false;
        }
        for slot in self.slots.drain(..count) {
            if let Some(info) = &slot.info {
                each(info);
            }
        }
        true
    }

    /// True when the front slot is answered: [`ReplyQueue::pop_ready`] has a reply.
    pub fn front_ready(&self) -> bool {
        self.slots.front().is_some_and(|s| s.frame.is_some())
    }

    /// The next answered reply, in order, if the front slot is answered.
    pub fn pop_ready(&mut self) -> Option<Ready> {
        if self.front_ready() {
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
    fn plain_runs_leave_whole_only_from_the_front() {
        let mut q = ReplyQueue::default();
        let a = q.expect(info(false, false));
        let b = q.expect(info(false, false));
        let c = q.expect(info(false, true));
        let mut seen = 0;
        assert!(!q.take_plain_run(b, 1, |_| seen += 1), "not the oldest");
        assert!(
            !q.take_plain_run(a, 3, |_| seen += 1),
            "a silent slot needs its own work"
        );
        assert_eq!(seen, 0);
        assert!(q.take_plain_run(a, 2, |_| seen += 1));
        assert_eq!(seen, 2);
        assert_eq!(q.len(), 1);
        q.push(Bytes::from_static(b">P\r\n"));
        let d = q.expect(info(false, false));
        assert_eq!(
            q.fill(d, Bytes::from_static(b"+D\r\n")),
            Some(Filled { blocking: false })
        );
        q.fill(c, Bytes::from_static(b"+C\r\n"));
        assert_eq!(frames(&mut q), vec![&b">P\r\n"[..], b"+D\r\n"]);
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
