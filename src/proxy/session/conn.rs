//! The state Redis keeps per connection (protocol, db, name, library, authentication, reply
//! mode), which rekey keeps per client instead: its upstream connections are shared, so each
//! client's view of "its connection" lives here and is applied to what it sends and receives.

use crate::protocol::encode::Proto;
use bytes::Bytes;

/// `CLIENT REPLY` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// Skip the reply to the next command only.
    Skip,
}

/// One client's connection state.
#[derive(Debug)]
pub(super) struct ConnState {
    pub(super) proto: Proto,
    pub(super) db: u32,
    pub(super) name: Option<Bytes>,
    pub(super) lib_name: Option<Bytes>,
    pub(super) lib_ver: Option<Bytes>,
    pub(super) authed: bool,
    pub(super) user: Option<String>,
    pub(super) reply_mode: ReplyMode,
    /// In `MONITOR` mode: the client receives the feed of commands.
    pub(super) monitoring: bool,
}

impl ConnState {
    /// A new connection: RESP2, in `db` (the upstream URL's), authenticated when the config
    /// asks for no AUTH.
    pub(super) fn new(db: u32, authed: bool) -> ConnState {
        ConnState {
            proto: Proto::Resp2,
            db,
            name: None,
            lib_name: None,
            lib_ver: None,
            authed,
            user: None,
            reply_mode: ReplyMode::On,
            monitoring: false,
        }
    }

    /// `RESET`, as Redis does it: back to RESP2, the default db, no name, replies on, and
    /// logged out (authenticated again only when no AUTH is needed). The library name and
    /// version stay: Redis keeps them too.
    pub(super) fn reset(&mut self, db: u32, authed: bool) {
        let lib = (self.lib_name.take(), self.lib_ver.take());
        *self = ConnState::new(db, authed);
        (self.lib_name, self.lib_ver) = lib;
    }

    /// `CLIENT REPLY ON|OFF|SKIP`: whether the mode word is one; `SKIP` counts only while
    /// replies are on (a skip while off stays off).
    pub(super) fn set_reply_mode(&mut self, word: &[u8]) -> bool {
        self.reply_mode = if word.eq_ignore_ascii_case(b"ON") {
            ReplyMode::On
        } else if word.eq_ignore_ascii_case(b"OFF") {
            ReplyMode::Off
        } else if word.eq_ignore_ascii_case(b"SKIP") {
            match self.reply_mode {
                ReplyMode::On => ReplyMode::Skip,
                other => other,
            }
        } else {
            return false;
        };
        true
    }

    /// Whether the reply to the command now running is dropped; a `SKIP` lasts one command.
    pub(super) fn take_silent(&mut self) -> bool {
        match self.reply_mode {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.reply_mode = ReplyMode::On;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_is_a_fresh_connection_but_keeps_the_library() {
        let mut c = ConnState::new(3, false);
        c.proto = Proto::Resp3;
        c.db = 5;
        c.name = Some(Bytes::from_static(b"worker"));
        c.lib_name = Some(Bytes::from_static(b"redis-py"));
        c.authed = true;
        c.user = Some("app".into());
        c.reply_mode = ReplyMode::Off;
        c.reset(3, false);
        assert_eq!(c.proto, Proto::Resp2);
        assert_eq!(c.db, 3);
        assert_eq!(c.name, None);
        assert!(!c.authed, "RESET logs out");
        assert_eq!(c.user, None);
        assert_eq!(c.reply_mode, ReplyMode::On);
        assert_eq!(c.lib_name.as_deref(), Some(&b"redis-py"[..]));
        c.reset(0, true);
        assert!(c.authed, "no AUTH needed: authenticated at once");
    }

    #[test]
    fn skip_silences_one_reply_and_off_all() {
        let mut c = ConnState::new(0, true);
        assert!(!c.take_silent());
        assert!(c.set_reply_mode(b"skip"));
        assert!(c.take_silent());
        assert!(!c.take_silent(), "SKIP lasts one command");
        assert!(c.set_reply_mode(b"OFF"));
        assert!(c.set_reply_mode(b"SKIP"), "SKIP while OFF stays OFF");
        assert!(c.take_silent() && c.take_silent());
        assert!(c.set_reply_mode(b"on"));
        assert!(!c.take_silent());
        assert!(!c.set_reply_mode(b"maybe"));
        assert_eq!(c.reply_mode, ReplyMode::On, "a bad word changes nothing");
    }
}
