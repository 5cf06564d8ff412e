//! Pub/sub and client tracking for one session: the state that makes Redis send frames no
//! request asked for, kept on the client's pinned connection.
//!
//! Redis tells a subscriber how many subscriptions it has left in every (un)subscribe
//! confirmation; the session follows those counts, so that it leaves subscribe mode exactly
//! when Redis does (and gives the pinned connection back). In RESP2 a subscribed connection
//! answers only a few commands, in frames shaped like messages, and is relayed as a stream;
//! in RESP3 confirmations and messages are pushes, and every other command keeps its 1:1
//! reply, mapped back like any other. Pushes take their place in the reply order where they
//! arrived: after the replies that came before them.

use crate::protocol::encode;
use crate::protocol::reply;
use crate::protocol::tree::Node;
use crate::protocol::Request;
use crate::proxy::session::Session;
use crate::rules::rewrite;
use bytes::Bytes;
use std::collections::{HashSet, VecDeque};

/// A client's subscriptions, followed from the commands it sends (Redis's own rules, so the
/// session knows at once whether a command leaves subscribe mode), and the confirmations
/// still on their way.
#[derive(Debug, Default)]
pub struct Subscriptions {
    channels: HashSet<Vec<u8>>,
    patterns: HashSet<Vec<u8>>,
    shard: HashSet<Vec<u8>>,
    /// What each command sent on the stream still owes, oldest first.
    awaiting: VecDeque<Owed>,
}

/// What a command sent on the subscribed connection still owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// A (un)subscribe command: this many confirmations.
    Confirmations(usize),
    /// Any other command (RESP2 subscribe mode): one reply (`pong`, an error…).
    Reply,
}

impl Subscriptions {
    /// True while any channel, pattern or shard channel is subscribed.
    pub fn active(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard.is_empty())
    }

    /// True while confirmations of commands already sent have not all arrived.
    pub fn waiting(&self) -> bool {
        !self.awaiting.is_empty()
    }

    /// Follows a command sent on the subscribed connection.
    pub fn sent(&mut self, req: &Request) {
        let name = req.arg(0).unwrap_or_default().to_ascii_lowercase();
        let (set, subscribe) = match name.as_slice() {
            b"subscribe" => (&mut self.channels, true),
            b"psubscribe" => (&mut self.patterns, true),
            b"ssubscribe" => (&mut self.shard, true),
            b"unsubscribe" => (&mut self.channels, false),
            b"punsubscribe" => (&mut self.patterns, false),
            b"sunsubscribe" => (&mut self.shard, false),
            _ => return self.awaiting.push_back(Owed::Reply),
        };
        let names: Vec<Vec<u8>> = req.args().skip(1).map(<[u8]>::to_vec).collect();
        // One confirmation per name; `UNSUBSCRIBE` alone confirms each subscription, or
        // once (with a null name) when there is none.
        let owed = match (subscribe, names.is_empty()) {
            (false, true) => set.len().max(1),
            _ => names.len(),
        };
        if subscribe {
            set.extend(names);
        } else if names.is_empty() {
            set.clear();
        } else {
            for n in &names {
                set.remove(n);
            }
        }
        if owed > 0 {
            self.awaiting.push_back(Owed::Confirmations(owed));
        }
    }

    /// Follows a frame from the subscribed connection, in order: messages and invalidations
    /// owe nothing; a confirmation pays one of the oldest command's, an error (Redis refused
    /// the whole command) all of them, and any other frame answers a plain command.
    pub fn arrived(&mut self, frame: &[u8]) {
        let kind = frame_kind(frame);
        if matches!(
            kind.as_deref(),
            Some(b"message" | b"pmessage" | b"smessage" | b"invalidate")
        ) {
            return;
        }
        let confirmation = kind.as_deref().is_some_and(is_confirmation_kind);
        match self.awaiting.front_mut() {
            Some(Owed::Confirmations(n)) if confirmation => {
                *n -= 1;
                if *n == 0 {
                    self.awaiting.pop_front();
                }
            }
            Some(Owed::Confirmations(_)) if reply::is_error(frame) => {
                self.awaiting.pop_front();
            }
            Some(Owed::Reply) if !confirmation => {
                self.awaiting.pop_front();
            }
            _ => {}
        }
    }
}

/// The kind of a pub/sub frame (`message`, `subscribe`, `pong`…): its first element, in
/// lower case, when it is an array or push starting with a string.
fn frame_kind(frame: &[u8]) -> Option<Vec<u8>> {
    if !matches!(frame.first(), Some(b'*' | b'>')) {
        return None;
    }
    let node = Node::decode(&Bytes::copy_from_slice(frame))?;
    let first = node.items()?.first()?.as_str()?;
    Some(first.to_ascii_lowercase())
}

/// True for `CLIENT TRACKING ON … BCAST …`.
fn is_broadcast(req: &Request) -> bool {
    req.args().skip(3).any(|a| a.eq_ignore_ascii_case(b"BCAST"))
}

/// The first key of an invalidation push (`invalidate [key, …]`).
fn first_invalidated(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.first() != Some(&b'>') {
        return None;
    }
    let node = Node::decode(&Bytes::copy_from_slice(frame))?;
    let items = node.items()?;
    if !items.first()?.as_str()?.eq_ignore_ascii_case(b"invalidate") {
        return None;
    }
    Some(items.get(1)?.items()?.first()?.as_str()?.to_vec())
}

fn is_confirmation_kind(kind: &[u8]) -> bool {
    matches!(
        kind,
        b"subscribe"
            | b"psubscribe"
            | b"ssubscribe"
            | b"unsubscribe"
            | b"punsubscribe"
            | b"sunsubscribe"
    )
}

impl Session {
    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE: on the pinned connection, confirmed by pushes.
    pub(super) async fn subscribe(&mut self, req: Request) {
        if req.len() < 2 {
            let name = String::from_utf8_lossy(req.arg(0).unwrap_or_default()).to_lowercase();
            return self.reply(encode::error(&format!(
                "ERR wrong number of arguments for '{name}' command"
            )));
        }
        if self.ensure_pinned().await {
            self.forward_stream(req);
        }
    }

    /// A frame that answers no request: a message, a confirmation, an invalidation.
    pub(super) fn on_push(&mut self, frame: Bytes) {
        // Frames reach the session only from its own pinned connection, up to the `RESET`
        // that ends the lease: even after the session let go of it, they are the client's.
        self.lease.subs.arrived(&frame);
        let config = self.config();
        let frame = match config.rules.is_empty() || reply::is_error(&frame) {
            true => frame,
            false => rewrite::map_push(&self.scope(&config), frame),
        };
        // BCAST: the pushes of one turn of Redis come in the order of the upstream prefixes;
        // the client expects its own prefixes' order (rules may have changed it).
        self.follow_broadcast_changes();
        if let Some(key) = self
            .lease
            .broadcast
            .then(|| first_invalidated(&frame))
            .flatten()
        {
            let precedes = |earlier: &Bytes| first_invalidated(earlier).is_some_and(|k| key < k);
            return self.replies.push_arrived_before(frame, precedes);
        }
        self.replies.push_arrived(frame);
    }

    /// The `BCAST` mode in force where Redis's replies have got to: a `CLIENT TRACKING`
    /// command takes effect with its reply (one Redis refused was dropped by
    /// [`Session::tracking_refused`]).
    fn follow_broadcast_changes(&mut self) {
        while let Some(&(seq, bcast)) = self.lease.broadcast_changes.front() {
            if self.replies.is_waiting(seq) {
                break;
            }
            self.lease.broadcast = bcast;
            self.lease.broadcast_changes.pop_front();
        }
    }

    /// A reply to request `seq`: when it refuses a `CLIENT TRACKING` command, the mode that
    /// command would have brought is forgotten.
    pub(super) fn tracking_refused(&mut self, seq: u64, frame: &[u8]) {
        if self
            .lease
            .broadcast_changes
            .front()
            .is_some_and(|&(s, _)| s == seq)
            && reply::is_error(frame)
        {
            self.lease.broadcast_changes.pop_front();
        }
    }

    /// Sends a `CLIENT TRACKING` command whose `BCAST` mode is `bcast` once Redis accepts it.
    fn forward_tracking(&mut self, req: Request, bcast: bool) {
        self.expect_broadcast(bcast);
        self.forward(req.into_raw(), false);
    }

    /// The request about to be forwarded brings `BCAST` mode `bcast` once it is answered.
    fn expect_broadcast(&mut self, bcast: bool) {
        let seq = self.replies.next_seq();
        self.lease.broadcast_changes.push_back((seq, bcast));
    }

    /// `CLIENT TRACKING ON|OFF …`: tracking lives on the pinned connection; `BCAST PREFIX`
    /// prefixes are rewritten like keys.
    pub(super) async fn client_tracking(&mut self, req: Request) {
        if req.arg_is(2, "ON") {
            if !self.ensure_pinned().await {
                return;
            }
            let bcast = is_broadcast(&req);
            let req = self.rewrite_tracking(req);
            self.forward_tracking(req, bcast);
            self.lease.tracking = true;
        } else if self.lease.pin.is_some() {
            let off = req.arg_is(2, "OFF");
            let bcast = self
                .lease
                .broadcast_changes
                .back()
                .map_or(self.lease.broadcast, |c| c.1);
            self.forward_tracking(req, bcast && !off);
            if off {
                // The connection goes back once this is answered: Redis may still send
                // invalidations it owes (BCAST ones go out after the commands of its turn),
                // and a `RESET` right behind would cut them off.
                self.lease.tracking = false;
                self.lease.release_when_answered = true;
            }
        } else if req.arg_is(2, "OFF") {
            self.reply(encode::simple("OK"));
        } else {
            // Redis's own error for a bad argument; no state changes.
            self.forward(req.raw().clone(), false);
        }
    }

    /// A CLIENT command queued in MULTI: Redis runs it at EXEC; tracking switched on there
    /// keeps the pinned connection, its prefixes and TRACKINGINFO map like outside, and a
    /// new name is the client's from EXEC on.
    pub(super) fn client_queued(&mut self, req: Request) -> Request {
        if req.arg_is(1, "TRACKING") && req.arg_is(2, "ON") {
            self.lease.tracking = true;
            // In force from its place in the pipeline (Redis runs it at EXEC, before the
            // writes queued behind it).
            self.expect_broadcast(is_broadcast(&req));
            return self.rewrite_tracking(req);
        }
        // Switched off in a transaction, tracking may still be on (EXEC can abort): the
        // pinned connection stays until the client leaves or switches it off outside MULTI.
        if req.arg_is(1, "SETNAME") && req.len() == 3 {
            let name = req.arg_bytes(2).filter(|n| !n.is_empty());
            self.lease.at_exec.name = Some(name);
        }
        if req.arg_is(1, "TRACKINGINFO") {
            self.current.ctx = Some(tracking_info_ctx());
        }
        req
    }

    fn rewrite_tracking(&mut self, req: Request) -> Request {
        let req = self.redirect_to_pinned(req);
        let config = self.config();
        if config.rules.is_empty() {
            return req;
        }
        let mut scope = self.scope(&config);
        rewrite::rewrite_tracking(&mut scope, &req).unwrap_or(req)
    }
}

impl Session {
    /// `REDIRECT <id>` naming one of rekey's clients (the id its `CLIENT ID` gave) points at
    /// Redis's id of the connection that client holds (it subscribed to
    /// `__redis__:invalidate`); one that holds none is named by an id Redis does not know, so
    /// Redis answers its own error. Any other id goes as it is (an upstream id).
    fn redirect_to_pinned(&self, req: Request) -> Request {
        let Some(at) = (3..req.len()).find(|&i| req.arg_is(i - 1, "REDIRECT")) else {
            return req;
        };
        let Some(id) = req.arg(at).and_then(crate::protocol::scan::parse_int) else {
            return req;
        };
        let viewer = self.viewer();
        let target = u64::try_from(id)
            .ok()
            .and_then(|id| self.proxy.registry.redirect_target(viewer.as_deref(), id));
        let Some(target) = target else {
            return req;
        };
        // Redis never gives out id 0: it answers that the client does not exist.
        let upstream = target.unwrap_or(0).to_string();
        req.with_changes(std::iter::once((at, upstream.as_bytes(), &[][..])))
    }
}

/// How a `CLIENT TRACKINGINFO` reply maps back.
pub(super) fn tracking_info_ctx() -> Box<rewrite::ReplyCtx> {
    Box::new(rewrite::ReplyCtx {
        kind: Some(crate::commands::ReplyKeys::TrackingInfo),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::Subscriptions;
    use crate::protocol::Request;

    fn sent(s: &mut Subscriptions, args: &[&str]) {
        s.sent(&Request::from_args(args));
    }

    #[test]
    fn follows_subscriptions_as_redis_counts_them() {
        let mut s = Subscriptions::default();
        sent(&mut s, &["SUBSCRIBE", "a", "a"]);
        sent(&mut s, &["ssubscribe", "b"]);
        assert!(s.active());
        sent(&mut s, &["UNSUBSCRIBE"]);
        assert!(s.active(), "a shard channel is still subscribed");
        sent(&mut s, &["SUNSUBSCRIBE", "b"]);
        assert!(!s.active());
        // 2 + 1 + 1 + 1 confirmations owed, in four commands.
        for frame in [
            &b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"[..],
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\n0\r\n",
            b">3\r\n$10\r\nssubscribe\r\n$1\r\nb\r\n:1\r\n",
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
        ] {
            assert!(s.waiting());
            s.arrived(frame);
        }
        assert!(s.waiting());
        s.arrived(b"-NOPERM no\r\n");
        assert!(!s.waiting(), "an error settles the whole command");
    }

    #[test]
    fn other_commands_in_subscribe_mode_owe_one_reply() {
        let mut s = Subscriptions::default();
        sent(&mut s, &["SUBSCRIBE", "a"]);
        sent(&mut s, &["LPUSH", "l"]);
        sent(&mut s, &["PING"]);
        s.arrived(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
        s.arrived(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\n0\r\n");
        s.arrived(b"-ERR Can't execute 'lpush'\r\n");
        assert!(s.waiting());
        s.arrived(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        assert!(!s.waiting());
    }

    #[test]
    fn unsubscribe_with_nothing_subscribed_owes_one() {
        let mut s = Subscriptions::default();
        sent(&mut s, &["PUNSUBSCRIBE"]);
        assert!(s.waiting());
        s.arrived(b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n");
        assert!(!s.waiting());
    }
}
