//! `ACL LOG`: the recent refusals (commands, keys, channels, failed logins), kept as Redis
//! keeps them: newest first, at most [`MAX_ENTRIES`], and a refusal like one already logged
//! within a minute (same reason, context, object and user) counted into that entry.
//! One log for the proxy; each identity is shown its own entries (see the session's `ACL`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Redis's default `acllog-max-len`.
pub const MAX_ENTRIES: usize = 128;

/// Redis's `ACL_LOG_GROUPING_MAX_TIME_DELTA`.
const GROUPING: Duration = Duration::from_secs(60);

/// A refusal to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `command`, `key`, `channel` or `auth`.
    pub reason: &'static str,
    /// `toplevel` or `multi`.
    pub context: &'static str,
    /// The command's full name, the key, the channel, or `AUTH`/`HELLO`.
    pub object: String,
    /// The user name the client had (or tried, for `auth`).
    pub username: String,
    /// The identity whose entries these are (who may see them).
    pub identity: Option<String>,
    /// The client's `CLIENT INFO` line.
    pub client_info: String,
}

/// One entry of the log.
#[derive(Debug, Clone)]
pub struct Entry {
    pub count: u64,
    pub refusal: Refusal,
    /// When it last happened.
    pub at: Instant,
}

/// The proxy's log of refusals.
#[derive(Debug, Default)]
pub struct AclLog {
    entries: Mutex<VecDeque<Entry>>,
}

impl AclLog {
    /// Logs a refusal: counted into a like entry of the last minute (moved to the front), or
    /// a new entry at the front (the oldest dropped beyond [`MAX_ENTRIES`]).
    pub fn add(&self, refusal: Refusal) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("ACL log lock");
        let like = entries.iter().position(|e| {
            now.duration_since(e.at) < GROUPING
                && e.refusal.reason == refusal.reason
                && e.refusal.context == refusal.context
                && e.refusal.object == refusal.object
                && e.refusal.username == refusal.username
        });
        let entry = match like.and_then(|i| entries.remove(i)) {
            Some(mut e) => {
                e.count += 1;
                e.at = now;
                e.refusal.client_info = refusal.client_info;
                e
            }
            None => Entry {
                count: 1,
                refusal,
                at: now,
            },
        };
        entries.push_front(entry);
        entries.truncate(MAX_ENTRIES);
    }

    /// The newest `count` entries `viewer` may see (`None`: all of them).
    pub fn entries(&self, count: usize, viewer: Option<&str>) -> Vec<Entry> {
        let entries = self.entries.lock().expect("ACL log lock");
        entries
            .iter()
            .filter(|e| viewer.is_none() || e.refusal.identity.as_deref() == viewer)
            .take(count)
            .cloned()
            .collect()
    }

    /// `ACL LOG RESET`: forgets the entries `viewer` may see.
    pub fn reset(&self, viewer: Option<&str>) {
        let mut entries = self.entries.lock().expect("ACL log lock");
        entries.retain(|e| viewer.is_some() && e.refusal.identity.as_deref() != viewer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(object: &str, identity: &str) -> Refusal {
        Refusal {
            reason: "key",
            context: "toplevel",
            object: object.into(),
            username: "default".into(),
            identity: Some(identity.into()),
            client_info: "id=1".into(),
        }
    }

    #[test]
    fn like_refusals_are_counted_together_newest_first() {
        let log = AclLog::default();
        log.add(refusal("a", "x"));
        log.add(refusal("b", "x"));
        log.add(refusal("a", "x"));
        let e = log.entries(10, None);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].refusal.object.as_str(), e[0].count), ("a", 2));
        assert_eq!(log.entries(1, None).len(), 1);
    }

    #[test]
    fn each_identity_sees_and_resets_its_own() {
        let log = AclLog::default();
        log.add(refusal("a", "x"));
        log.add(refusal("b", "y"));
        assert_eq!(log.entries(10, Some("y")).len(), 1);
        log.reset(Some("y"));
        assert_eq!(log.entries(10, None).len(), 1);
        for i in 0..200 {
            log.add(refusal(&i.to_string(), "x"));
        }
        assert_eq!(log.entries(1000, None).len(), MAX_ENTRIES);
        log.reset(None);
        assert!(log.entries(10, None).is_empty());
    }
}
