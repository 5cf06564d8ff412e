//! The pinned-connection lease: a client whose state must live on one upstream connection
//! (MULTI, WATCH, a blocking command, subscriptions, CLIENT TRACKING) borrows one from the
//! pool and holds it while any of that state lasts. This part knows which state is open, when
//! the connection may go back, and ends it all in one place however the lease ends (RESET,
//! the client leaving, the connection lost).

use super::streams::Subscriptions;
use crate::protocol::encode::Proto;
use crate::rules::rewrite::ReplyCtx;
use crate::upstream::PinnedConn;
use bytes::Bytes;

/// Connection state changed by commands queued in MULTI, applied at EXEC.
#[derive(Debug, Default)]
pub(super) struct AtExec {
    pub(super) db: Option<u32>,
    /// `Some(None)`: the name is cleared.
    pub(super) name: Option<Option<Bytes>>,
}

impl AtExec {
    pub(super) fn is_empty(&self) -> bool {
        self.db.is_none() && self.name.is_none()
    }
}

/// A client's pinned connection, if it holds one, and what holds it.
#[derive(Default)]
pub(super) struct Lease {
    pub(super) pin: Option<PinnedConn>,
    pub(super) in_multi: bool,
    pub(super) watching: bool,
    /// Subscriptions (see `streams`): set when a SUBSCRIBE-family command is sent, cleared
    /// when Redis confirms none are left.
    pub(super) subs: Subscriptions,
    /// `CLIENT TRACKING ON` is in force on the pinned connection.
    pub(super) tracking: bool,
    /// In `BCAST` mode: Redis sends one invalidation push per prefix, in the order of the
    /// (upstream) prefixes' names.
    pub(super) broadcast: bool,
    /// `CLIENT TRACKING` commands sent and not answered yet, by sequence number, with the
    /// `BCAST` mode each brings once Redis accepts it: pushes that arrive before its reply
    /// belong to the mode before it (see `streams`).
    pub(super) broadcast_changes: std::collections::VecDeque<(u64, bool)>,
    /// Blocking commands sent and not yet answered.
    pub(super) blocking: usize,
    /// Give the pinned connection back once every request sent on it is answered.
    pub(super) release_when_answered: bool,
    /// In MULTI: the reply contexts of the queued commands, for mapping EXEC's array back.
    pub(super) queued: Vec<Option<Box<ReplyCtx>>>,
    /// What queued `SELECT` / `CLIENT SETNAME` change for the client once EXEC runs them.
    pub(super) at_exec: AtExec,
}

/// How a lease's connection leaves when the lease ends.
pub(super) enum Ending {
    /// Nothing was pinned.
    Nothing,
    /// Back to the pool (it is `RESET` and reused).
    Release(PinnedConn),
    /// Closed: a command blocked on the client's behalf still runs on it, and Redis unblocks
    /// it only when the connection goes.
    Close(PinnedConn),
}

impl Lease {
    /// True while some connection state lives on the pinned connection.
    pub(super) fn needs_pin(&self) -> bool {
        self.in_multi || self.watching || self.subs.active() || self.tracking || self.blocking > 0
    }

    /// RESP2 with subscriptions: Redis answers only (un)subscribe, PING, QUIT and RESET, in
    /// frames that look like messages, so the pinned connection is relayed as a stream.
    pub(super) fn pipe_mode(&self, proto: Proto) -> bool {
        self.subs.active() && proto == Proto::Resp2
    }

    /// Ends the lease: every state it held is gone, and the connection says how it leaves.
    pub(super) fn end(&mut self) -> Ending {
        let blocked = self.blocking > 0;
        let pin = std::mem::take(self).pin;
        match pin {
            None => Ending::Nothing,
            Some(conn) if blocked => Ending::Close(conn),
            Some(conn) => Ending::Release(conn),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Request;

    #[test]
    fn each_state_holds_the_pin_until_it_ends() {
        let mut lease = Lease::default();
        assert!(!lease.needs_pin());
        for set in [
            |l: &mut Lease| l.in_multi = true,
            |l: &mut Lease| l.watching = true,
            |l: &mut Lease| l.tracking = true,
            |l: &mut Lease| l.blocking = 1,
            |l: &mut Lease| l.subs.sent(&Request::from_args(["SUBSCRIBE", "ch"])),
        ] {
            set(&mut lease);
            assert!(lease.needs_pin());
            assert!(matches!(lease.end(), Ending::Nothing));
            assert!(!lease.needs_pin(), "end() clears every state");
        }
    }

    #[test]
    fn end_forgets_the_transaction() {
        let mut lease = Lease {
            in_multi: true,
            queued: vec![None, None],
            at_exec: AtExec {
                db: Some(2),
                name: None,
            },
            release_when_answered: true,
            ..Lease::default()
        };
        assert!(!lease.at_exec.is_empty());
        lease.end();
        assert!(lease.queued.is_empty() && lease.at_exec.is_empty());
        assert!(!lease.in_multi && !lease.release_when_answered);
    }

    #[test]
    fn pipe_mode_is_resp2_with_subscriptions() {
        let mut lease = Lease::default();
        lease.subs.sent(&Request::from_args(["PSUBSCRIBE", "p*"]));
        assert!(lease.pipe_mode(Proto::Resp2));
        assert!(!lease.pipe_mode(Proto::Resp3));
        lease.end();
        assert!(!lease.pipe_mode(Proto::Resp2));
    }
}
