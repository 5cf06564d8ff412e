//! The per-client queue that puts replies back in request order.
//!
//! Each request gets a sequence number and a slot. Replies arrive from any upstream connection,
//! or are made locally, and fill their slot; the queue releases replies only from the front, so
//! the client sees them in the order it asked. Frames that answer no request (pub/sub, pushes)
//! take a slot behind every request sent so far.

use bytes::Bytes;
mod slot;

use slot::Slot;
pub use slot::SlotInfo;
use std::collections::VecDeque;
use std::time::Instant;

/// What the session learns when a reply fills its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    pub blocking: bool,
}

/// A reply ready to be written.
pub struct Ready {
    /// The reply; for a run of plain requests answered at once, their replies in order.
    pub frame: Bytes,
    /// `None` for pushes.
    pub info: Option<SlotInfo>,
    /// Requests `frame` answers.
    pub count: u32,
}

#[derive(Debug, Default)]
pub struct ReplyQueue {
    slots: VecDeque<Slot>,
    next_seq: u64,
    /// Requests and frames waiting: the slots' counts added up.
    entries: usize,
}

impl ReplyQueue {
    /// The sequence number the next request will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The oldest request whose reply is not written yet (at most: a frame that answers no
    /// request carries the number of the request before it), else the next one's.
    pub fn oldest_seq(&self) -> u64 {
        self.slots.front().map_or(self.next_seq, |s| s.seq)
    }

    /// Requests and frames waiting to be written (answered or not).
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Opens a slot for a request whose reply will come later; returns its sequence number.
    pub fn expect(&mut self, info: SlotInfo) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries += 1;
        match self.slots.back_mut() {
            Some(run) if run.joins(seq, &info) => run.count += 1,
            _ => self.slots.push_back(Slot::single(seq, None, Some(info))),
        }
        seq
    }

    /// [`ReplyQueue::expect`] for `n` consecutive plain requests (replied as they come) of
    /// command `cmd` read at `started`: usually more requests in the back slot's run. Returns
    /// the first one's sequence number.
    pub fn expect_plain(&mut self, cmd: u16, started: Instant, n: u32) -> u64 {
        let seq = self.next_seq;
        match self.slots.back_mut() {
            Some(run) if run.joins_plain(seq, cmd, started) && run.count <= u32::MAX - n => {
                run.count += n;
                self.next_seq += n as u64;
                self.entries += n as usize;
                seq
            }
            _ => self.expect_plain_apart(cmd, started, n),
        }
    }

    /// [`ReplyQueue::expect_plain`] in a slot of their own, whatever the slot before: a
    /// cluster node's stretch of a pipeline, whose replies come from that node together (and
    /// then fill the slot at once, [`ReplyQueue::fill_run`]).
    pub fn expect_plain_apart(&mut self, cmd: u16, started: Instant, n: u32) -> u64 {
        let seq = self.next_seq;
        self.next_seq += n as u64;
        self.entries += n as usize;
        let mut slot = Slot::single(seq, None, Some(SlotInfo::plain_for(cmd, started)));
        slot.count = n;
        self.slots.push_back(slot);
        seq
    }

    /// A reply made locally, in order after every request so far.
    pub fn local(&mut self, frame: Bytes, info: SlotInfo) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries += 1;
        self.slots
            .push_back(Slot::single(seq, Some(frame), Some(info)));
    }

    /// A frame that answers no request, placed after every request sent so far.
    pub fn push(&mut self, frame: Bytes) {
        let seq = self.next_seq.saturating_sub(1);
        self.entries += 1;
        self.slots.push_back(Slot::single(seq, Some(frame), None));
    }

    /// A frame that answers no request, placed where it arrived: after every reply that came
    /// before it, ahead of the requests still waiting (a pinned connection answers in order,
    /// so those were sent after whatever made Redis send this frame).
    pub fn push_arrived(&mut self, frame: Bytes) {
        let at = self
            .slots
            .iter()
            .position(|s| s.frame.is_none() && s.info.is_some());
        let Some(at) = at else {
            return self.push(frame);
        };
        let seq = self.slots[at].seq.saturating_sub(1);
        self.entries += 1;
        self.slots.insert(at, Slot::single(seq, Some(frame), None));
    }

    /// [`ReplyQueue::push_arrived`], moved ahead of the frames that arrived just before it
    /// (not written yet, no reply between them) of which `precedes` says this one goes first.
    pub fn push_arrived_before(&mut self, frame: Bytes, precedes: impl Fn(&Bytes) -> bool) {
        let mut at = self
            .slots
            .iter()
            .position(|s| s.frame.is_none() && s.info.is_some())
            .unwrap_or(self.slots.len());
        while at > 0 {
            let earlier = &self.slots[at - 1];
            match (&earlier.info, &earlier.frame) {
                (None, Some(f)) if precedes(f) => at -= 1,
                _ => break,
            }
        }
        let seq = match self.slots.get(at) {
            Some(s) => s.seq.saturating_sub(1),
            None => self.next_seq.saturating_sub(1),
        };
        self.entries += 1;
        self.slots.insert(at, Slot::single(seq, Some(frame), None));
    }

    /// True while some request sent upstream has not been answered.
    pub fn has_unanswered(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.frame.is_none() && s.info.is_some())
    }

    /// Fills the slot of request `seq`; `None` if no such slot waits (a stale reply).
    pub fn fill(&mut self, seq: u64, frame: Bytes) -> Option<Filled> {
        let i = self.waiting(seq)?;
        let slot = &mut self.slots[i];
        slot.frame = Some(frame);
        Some(Filled {
            blocking: slot.info.as_ref().is_some_and(|i| i.blocking),
        })
    }

    /// Fills, with `frames`, the slot of the run of plain requests `first_seq .. first_seq +
    /// count` when one slot stands for exactly these requests and they all wait; false (and
    /// nothing changed) otherwise.
    pub fn fill_run(&mut self, first_seq: u64, count: u32, frames: Bytes) -> bool {
        let Some(i) = self.index_of(first_seq) else {
            return false;
        };
        let slot = &mut self.slots[i];
        if slot.seq != first_seq || slot.count != count || slot.frame.is_some() {
            return false;
        }
        slot.frame = Some(frames);
        true
    }

    /// The record of request `seq` while it waits for its reply.
    pub fn waiting_mut(&mut self, seq: u64) -> Option<&mut SlotInfo> {
        let i = self.waiting(seq)?;
        self.slots[i].info.as_mut()
    }

    /// True while request `seq` has not been answered.
    pub fn is_waiting(&self, seq: u64) -> bool {
        self.index_of(seq)
            .is_some_and(|i| self.slots[i].frame.is_none())
    }

    /// The index of the slot of request `seq`, still waiting, given a slot of its own (a run
    /// it belongs to is split around it).
    fn waiting(&mut self, seq: u64) -> Option<usize> {
        let i = self.index_of(seq)?;
        if self.slots[i].frame.is_some() {
            return None;
        }
        Some(self.isolate(i, seq))
    }

    /// Where the slot holding request `seq` is. Almost always the front; else a binary search
    /// (pushes share the sequence number of the request before them and follow it).
    fn index_of(&self, seq: u64) -> Option<usize> {
        let front = self.slots.front()?;
        if front.holds(seq) {
            return Some(0);
        }
        // One slot per request from the front on (no runs, no pushes between: a cluster
        // node's replies arriving out of order): straight to it.
        let direct = seq.checked_sub(front.seq).map(|d| d as usize);
        if let Some(slot) = direct.and_then(|i| self.slots.get(i)) {
            if slot.seq == seq && slot.holds(seq) {
                return direct;
            }
        }
        let mut i = self
            .slots
            .partition_point(|s| s.seq <= seq)
            .checked_sub(1)?;
        while self.slots[i].info.is_none() {
            i = i.checked_sub(1)?;
        }
        self.slots[i].holds(seq).then_some(i)
    }

    /// Splits the run in slot `i` so that request `seq` has a slot of its own; returns it.
    fn isolate(&mut self, i: usize, seq: u64) -> usize {
        let run = &mut self.slots[i];
        if run.count == 1 {
            return i;
        }
        let info = run.info.as_ref().expect("runs are requests").plain_copy();
        let before = (seq - run.seq) as u32;
        let after = run.count - before - 1;
        let at = if before == 0 {
            run.count = 1;
            i
        } else {
            run.count = before;
            self.slots
                .insert(i + 1, Slot::single(seq, None, Some(info.plain_copy())));
            i + 1
        };
        if after > 0 {
            let rest = Slot {
                seq: seq + 1,
                count: after,
                frame: None,
                info: Some(info),
            };
            self.slots.insert(at + 1, rest);
        }
        at
    }

    /// When requests `first_seq .. first_seq + count` are the oldest in the queue, all still
    /// waiting, and their replies need no work of their own (`SlotInfo::plain`), removes
    /// them, calling `each` with each slot's record and how many requests it stood for, and
    /// returns true: the caller writes the replies as one run. Otherwise changes nothing and
    /// returns false.
    pub fn take_plain_run(
        &mut self,
        first_seq: u64,
        count: u32,
        mut each: impl FnMut(&SlotInfo, u32),
    ) -> bool {
        let mut next = first_seq;
        let end = first_seq + count as u64;
        for s in &self.slots {
            if next == end {
                break;
            }
            let plain = s.info.as_ref().is_some_and(SlotInfo::plain);
            if s.seq != next || s.frame.is_some() || !plain {
                return false;
            }
            next += (s.count as u64).min(end - next);
        }
        if next != end {
            return false;
        }
        let mut left = count;
        while left > 0 {
            let front = self.slots.front_mut().expect("checked above");
            let n = front.count.min(left);
            each(front.info.as_ref().expect("checked above"), n);
            if n == front.count {
                self.slots.pop_front();
            } else {
                front.seq += n as u64;
                front.count -= n;
            }
            left -= n;
        }
        self.entries -= count as usize;
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
            self.entries -= slot.count as usize;
            return slot.frame.map(|frame| Ready {
                frame,
                info: slot.info,
                count: slot.count,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests;
