//! The contract between client sessions and upstream connections: a [`Job`] is the bytes to
//! send and where the reply goes ([`ReplyTo`]); replies come back as [`Delivery`] values into
//! the session's [`Sink`].
//!
//! It is its own file so that sessions, the driver and both pools can share these types while
//! importing none of each other. It knows nothing of sockets, pools or sessions: the reply to
//! the `RESET` that ends a pinned lease carries a [`GiveBack`], a callback its pool made, so
//! the driver that answers it need not know where the connection goes back to.

use crate::protocol::reply;
use crate::upstream::mailbox;
use bytes::Bytes;
use std::sync::Arc;

/// Where a client session receives its replies.
pub type Sink = mailbox::Sender<Delivery>;

/// Where a client session takes its replies from.
pub type Inbox = mailbox::Receiver<Delivery>;

/// The sequence numbers of a batch whose requests are not consecutive, shared by its job and
/// its deliveries (one allocation a batch).
pub type Seqs = Arc<[u64]>;

/// What a client session receives from upstream connections.
#[derive(Debug)]
pub enum Delivery {
    /// The reply to request `seq` (possibly an `-ERR` made by rekey if the upstream failed).
    Reply { seq: u64, frame: Bytes },
    /// A frame rekey itself sends the client out of band, after every reply so far (the
    /// lines of a `MONITOR` feed); upstream connections never send one.
    Event { frame: Bytes },
    /// The replies to requests `first_seq .. first_seq + count`, as consecutive frames;
    /// `errors` of them are error replies (a run with none can be relayed whole).
    Replies {
        first_seq: u64,
        count: u32,
        errors: u32,
        frames: Bytes,
    },
    /// The replies to requests `seqs[first] .. seqs[first + count - 1]` (a batch whose
    /// requests are not consecutive: a cluster node's share of a pipeline), as consecutive
    /// frames.
    Scattered {
        seqs: Seqs,
        first: u32,
        count: u32,
        frames: Bytes,
    },
    /// A frame that answers no request: pub/sub traffic or a RESP3 push.
    Push { frame: Bytes },
    /// The pinned connection carrying this client's stream state is gone.
    Lost,
}

impl Delivery {
    /// Hands each reply this delivery carries to `f`, as `(seq, frame)` in order; a delivery
    /// that carries none (a push, an event, a lost connection) comes back.
    pub fn into_replies(self, mut f: impl FnMut(u64, Bytes)) -> Option<Delivery> {
        match self {
            Delivery::Reply { seq, frame } => f(seq, frame),
            Delivery::Replies {
                first_seq,
                count,
                frames,
                ..
            } => each_reply(first_seq, count, &frames, f),
            Delivery::Scattered {
                seqs,
                first,
                count,
                frames,
            } => each_scattered(&seqs, first, count, &frames, f),
            other => return Some(other),
        }
        None
    }
}

/// Splits a `Delivery::Replies` run into its frames: `(seq, frame)` for each, in order.
pub fn each_reply(first_seq: u64, count: u32, frames: &Bytes, mut f: impl FnMut(u64, Bytes)) {
    each_frame(count, frames, |i, frame| f(first_seq + i as u64, frame));
}

/// Splits a `Delivery::Scattered` run into its frames: `(seq, frame)` for each, in order.
pub fn each_scattered(
    seqs: &[u64],
    first: u32,
    count: u32,
    frames: &Bytes,
    mut f: impl FnMut(u64, Bytes),
) {
    each_frame(count, frames, |i, frame| {
        if let Some(&seq) = seqs.get((first + i) as usize) {
            f(seq, frame)
        }
    });
}

/// The first `count` frames of `frames`, with their index.
fn each_frame(count: u32, frames: &Bytes, mut f: impl FnMut(u32, Bytes)) {
    let mut offset = 0;
    for i in 0..count {
        let rest = &frames[offset..];
        let n = reply::frame_len(rest).ok().flatten().unwrap_or(rest.len());
        f(i, frames.slice(offset..offset + n));
        offset += n;
    }
}

/// Where the reply to a job goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// To a client: `count` replies, to its requests `seq`, `seq + 1`, ….
    Client { sink: Sink, seq: u64, count: u32 },
    /// To a client: one reply to each of its requests `seqs[next..]`, in that order (requests
    /// that are not consecutive, sent together: a cluster node's share of a pipeline).
    Scattered { sink: Sink, seqs: Seqs, next: u32 },
    /// No 1:1 reply: from now on every frame on this connection goes to `sink` (subscribe mode).
    Stream(Sink),
    /// Read and dropped (handshake and setup commands rekey sends itself).
    Discard,
    /// The reply to an `AUTH` the driver queued itself to renew the connection's login: the
    /// driver reads it (accepted or refused), no client sees it.
    Renewal,
    /// The reply to the `RESET` that ends a pinned lease: fire the callback, which gives the
    /// connection back to its pool.
    Release(GiveBack),
}

/// What to do once the `RESET` that ends a pinned lease is answered, made by the pool that
/// lent the connection. Dropped unfired when the connection fails first (it is then not
/// worth keeping).
pub struct GiveBack(Box<dyn FnOnce() + Send + Sync>);

impl GiveBack {
    pub fn new(f: impl FnOnce() + Send + Sync + 'static) -> GiveBack {
        GiveBack(Box::new(f))
    }

    /// Runs the callback (on the connection's task, when `RESET`'s reply arrives).
    pub fn fire(self) {
        (self.0)()
    }
}

impl std::fmt::Debug for GiveBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GiveBack")
    }
}

/// A request for an upstream connection.
#[derive(Debug)]
pub enum Job {
    Send {
        payload: Bytes,
        reply: ReplyTo,
    },
    /// Close the connection now (a client left while a blocking command was in flight).
    Close,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_give_back_runs_its_callback_once_fired_and_not_when_dropped() {
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        drop(GiveBack::new(move || flag.store(true, Ordering::Relaxed)));
        assert!(!fired.load(Ordering::Relaxed));
        let flag = fired.clone();
        GiveBack::new(move || flag.store(true, Ordering::Relaxed)).fire();
        assert!(fired.load(Ordering::Relaxed));
    }

    #[test]
    fn each_reply_splits_a_run_by_sequence_number() {
        let frames = Bytes::from_static(b"+OK\r\n$3\r\nabc\r\n:7\r\n");
        let mut got = Vec::new();
        each_reply(10, 3, &frames, |seq, frame| got.push((seq, frame)));
        let want: Vec<(u64, &[u8])> =
            vec![(10, b"+OK\r\n"), (11, b"$3\r\nabc\r\n"), (12, b":7\r\n")];
        assert_eq!(got.len(), 3);
        for ((seq, frame), (wseq, wframe)) in got.iter().zip(want) {
            assert_eq!((*seq, frame.as_ref()), (wseq, wframe));
        }
    }
}
