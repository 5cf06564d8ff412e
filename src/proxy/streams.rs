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

/// What Redis last said about a client's subscriptions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Subscriptions {
    /// A SUBSCRIBE-family command was sent and Redis has not yet confirmed that none are left.
    pub active: bool,
    /// Channels and patterns (`subscribe`, `psubscribe` and their `un` forms count these).
    pub plain: i64,
    /// Shard channels (`ssubscribe`, `sunsubscribe`).
    pub shard: i64,
}

impl Subscriptions {
    /// Follows one confirmation frame; true when it says no subscription is left.
    pub fn follow(&mut self, frame: &[u8]) -> bool {
        let Some((kind, count)) = confirmation(frame) else {
            return false;
        };
        match kind.as_bytes().first() {
            Some(b's') => self.shard = count,
            _ => self.plain = count,
        }
        let ended = kind.contains("unsubscribe") && self.plain == 0 && self.shard == 0;
        if ended {
            self.active = false;
        }
        ended
    }
}

/// `(kind, count)` of a (un)subscribe confirmation: `[kind, channel, count]`.
fn confirmation(frame: &[u8]) -> Option<(String, i64)> {
    if !matches!(frame.first(), Some(b'*' | b'>')) {
        return None;
    }
    let node = Node::decode(&Bytes::copy_from_slice(frame))?;
    let items = node.items()?;
    if items.len() != 3 {
        return None;
    }
    let kind = String::from_utf8_lossy(items[0].as_str()?).to_ascii_lowercase();
    if !matches!(
        kind.as_str(),
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe" | "sunsubscribe"
    ) {
        return None;
    }
    let Node::Raw(n) = &items[2] else { return None };
    let text = n.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    Some((kind, std::str::from_utf8(text).ok()?.parse().ok()?))
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
            self.subs.active = true;
            self.forward_stream(req);
        }
    }

    /// A frame that answers no request: a message, a confirmation, an invalidation.
    pub(super) fn on_push(&mut self, frame: Bytes) {
        if self.pin.is_none() {
            return; // stray frames after the lease ended
        }
        let ended = self.subs.active && self.subs.follow(&frame);
        let config = self.config();
        let frame = match config.rules.is_empty() || reply::is_error(&frame) {
            true => frame,
            false => rewrite::map_push(&self.scope(&config), frame),
        };
        self.replies.push_arrived(frame);
        if ended {
            self.release_if_idle();
        }
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

    #[test]
    fn follows_the_counts_redis_confirms() {
        let mut s = Subscriptions {
            active: true,
            ..Default::default()
        };
        assert!(!s.follow(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"));
        assert!(!s.follow(b">3\r\n$10\r\nssubscribe\r\n$1\r\nb\r\n:1\r\n"));
        assert!(!s.follow(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"));
        assert!(s.active, "a shard channel is still subscribed");
        assert!(!s.follow(b"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$1\r\n0\r\n"));
        assert!(s.follow(b">3\r\n$12\r\nsunsubscribe\r\n$1\r\nb\r\n:0\r\n"));
        assert!(!s.active);
    }

    #[test]
    fn unsubscribe_with_nothing_subscribed_ends_too() {
        let mut s = Subscriptions {
            active: true,
            ..Default::default()
        };
        assert!(s.follow(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"));
    }
}
