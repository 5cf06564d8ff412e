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
use crate::proxy::rewrite;
use crate::proxy::session::Session;
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
    /// Confirmations each (un)subscribe command sent still owes, oldest first.
    awaiting: VecDeque<usize>,
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

    /// Follows a command sent on the subscribed connection (others are ignored).
    pub fn sent(&mut self, req: &Request) {
        let Some(name) = req.arg(0).map(|n| n.to_ascii_lowercase()) else {
            return;
        };
        let (set, subscribe) = match name.as_slice() {
            b"subscribe" => (&mut self.channels, true),
            b"psubscribe" => (&mut self.patterns, true),
            b"ssubscribe" => (&mut self.shard, true),
            b"unsubscribe" => (&mut self.channels, false),
            b"punsubscribe" => (&mut self.patterns, false),
            b"sunsubscribe" => (&mut self.shard, false),
            _ => return,
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
            self.awaiting.push_back(owed);
        }
    }

    /// Follows a frame from the subscribed connection: a confirmation pays one of the oldest
    /// command's, an error (Redis refused the whole command) all of them.
    pub fn arrived(&mut self, frame: &[u8]) {
        if reply::is_error(frame) {
            self.awaiting.pop_front();
            return;
        }
        if !is_confirmation(frame) {
            return;
        }
        if let Some(front) = self.awaiting.front_mut() {
            *front -= 1;
            if *front == 0 {
                self.awaiting.pop_front();
            }
        }
    }
}

/// True for a (un)subscribe confirmation: `[kind, channel, count]`.
fn is_confirmation(frame: &[u8]) -> bool {
    if !matches!(frame.first(), Some(b'*' | b'>')) {
        return false;
    }
    let Some(node) = Node::decode(&Bytes::copy_from_slice(frame)) else {
        return false;
    };
    let Some(items) = node.items().filter(|i| i.len() == 3) else {
        return false;
    };
    let kind = items[0]
        .as_str()
        .map(|k| k.to_ascii_lowercase())
        .unwrap_or_default();
    matches!(
        kind.as_slice(),
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
        self.subs.arrived(&frame);
        let config = self.config();
        let frame = match config.rules.is_empty() || reply::is_error(&frame) {
            true => frame,
            false => rewrite::map_push(&self.scope(&config), frame),
        };
        self.replies.push_arrived(frame);
    }

    /// `CLIENT TRACKING ON|OFF …`: tracking lives on the pinned connection; `BCAST PREFIX`
    /// prefixes are rewritten like keys.
    pub(super) async fn client_tracking(&mut self, req: Request) {
        if req.arg_is(2, "ON") {
            if !self.ensure_pinned().await {
                return;
            }
            let req = self.rewrite_tracking(req);
            self.forward(req.into_raw(), false);
            self.tracking = true;
        } else if self.pin.is_some() {
            self.forward(req.raw().clone(), false);
            if req.arg_is(2, "OFF") {
                self.tracking = false;
                self.release_if_idle();
            }
        } else if req.arg_is(2, "OFF") {
            self.reply(encode::simple("OK"));
        } else {
            // Redis's own error for a bad argument; no state changes.
            self.forward(req.raw().clone(), false);
        }
    }

    fn rewrite_tracking(&mut self, req: Request) -> Request {
        let config = self.config();
        if config.rules.is_empty() {
            return req;
        }
        let mut scope = self.scope(&config);
        rewrite::rewrite_tracking(&mut scope, &req).unwrap_or(req)
    }
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
    fn unsubscribe_with_nothing_subscribed_owes_one() {
        let mut s = Subscriptions::default();
        sent(&mut s, &["PUNSUBSCRIBE"]);
        assert!(s.waiting());
        s.arrived(b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n");
        assert!(!s.waiting());
    }
}
