//! `MONITOR` through rekey: a feed of the commands rekey's clients send, in Redis's format.
//!
//! Redis's own `MONITOR` would show only rekey's shared connections, with every app's
//! commands mixed and their keys already rewritten. So rekey keeps its own feed: each session
//! reports the commands it handles while anyone watches, one line each, as Redis writes them
//! (`<time> [<db> <addr>] "cmd" "arg" …`, with Redis's redactions), showing the names the
//! client sent. When a rule rewrote the command, a second line in the same format follows
//! with what went upstream, marked by its client field `upstream:<addr>` (as Redis marks
//! script commands `lua`), so tools that read Redis's format read both.
//!
//! Who sees what follows `CLIENT LIST`'s rule: a watcher identified as an app or user sees
//! that identity's commands, an unidentified one sees all. Nobody watching costs one relaxed
//! load per request.

use crate::upstream::{Delivery, Sink};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Commands Redis never shows in `MONITOR` (flagged `admin` in Redis 7's `COMMAND INFO`; a
/// test checks the list against the live server).
static HIDDEN: &[&str] = &[
    "acl|deluser",
    "acl|dryrun",
    "acl|getuser",
    "acl|list",
    "acl|load",
    "acl|log",
    "acl|save",
    "acl|setuser",
    "acl|users",
    "bgrewriteaof",
    "bgsave",
    "client|kill",
    "client|list",
    "client|no-evict",
    "client|pause",
    "client|unblock",
    "client|unpause",
    "cluster|addslots",
    "cluster|addslotsrange",
    "cluster|bumpepoch",
    "cluster|count-failure-reports",
    "cluster|delslots",
    "cluster|delslotsrange",
    "cluster|failover",
    "cluster|flushslots",
    "cluster|forget",
    "cluster|meet",
    "cluster|replicas",
    "cluster|replicate",
    "cluster|reset",
    "cluster|saveconfig",
    "cluster|set-config-epoch",
    "cluster|setslot",
    "cluster|slaves",
    "config|get",
    "config|resetstat",
    "config|rewrite",
    "config|set",
    "debug",
    "failover",
    "latency|doctor",
    "latency|graph",
    "latency|histogram",
    "latency|history",
    "latency|latest",
    "latency|reset",
    "module|list",
    "module|load",
    "module|loadex",
    "module|unload",
    "monitor",
    "pfdebug",
    "pfselftest",
    "psync",
    "replconf",
    "replicaof",
    "save",
    "shutdown",
    "slaveof",
    "slowlog|get",
    "slowlog|len",
    "slowlog|reset",
    "sync",
];

/// True for a command (`name` or `container|sub`, lower case) Redis leaves out of the feed.
pub fn hidden(name: &str) -> bool {
    HIDDEN.contains(&name)
}

/// True when Redis would leave `req` out of the feed (by its name, or its container and
/// subcommand).
pub fn hides(req: &crate::protocol::Request) -> bool {
    let lower = |a: &[u8]| String::from_utf8_lossy(a).to_ascii_lowercase();
    let name = lower(req.arg(0).unwrap_or_default());
    if hidden(&name) {
        return true;
    }
    req.arg(1)
        .is_some_and(|sub| hidden(&format!("{name}|{}", lower(sub))))
}

/// The commands Redis leaves out of `MONITOR`, for the test that compares them with Redis.
pub fn hidden_commands() -> &'static [&'static str] {
    HIDDEN
}

struct Watcher {
    client: u64,
    /// `None` sees every client's commands.
    identity: Option<String>,
    sink: Sink,
}

/// The clients in `MONITOR` mode.
#[derive(Default)]
pub struct Monitors {
    watching: AtomicUsize,
    watchers: Mutex<Vec<Watcher>>,
}

impl std::fmt::Debug for Monitors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Monitors({})", self.watching.load(Ordering::Relaxed))
    }
}

impl Monitors {
    /// True while some client watches: the only cost of the feed when none does.
    #[inline]
    pub fn active(&self) -> bool {
        self.watching.load(Ordering::Relaxed) > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watcher>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Client `client` (seeing `identity`'s commands, or all for `None`) starts watching;
    /// its lines arrive on `sink` as [`Delivery::Event`]s.
    pub fn watch(&self, client: u64, identity: Option<String>, sink: Sink) {
        let mut w = self.lock();
        if !w.iter().any(|x| x.client == client) {
            w.push(Watcher {
                client,
                identity,
                sink,
            });
        }
        self.watching.store(w.len(), Ordering::Relaxed);
    }

    /// Client `client` stops watching (RESET, or it left).
    pub fn unwatch(&self, client: u64) {
        let mut w = self.lock();
        w.retain(|x| x.client != client);
        self.watching.store(w.len(), Ordering::Relaxed);
    }

    /// Sends `lines` (one frame) to every watcher that may see commands of `identity`.
    pub fn feed(&self, identity: Option<&str>, lines: &Bytes) {
        for w in self.lock().iter() {
            if w.identity.is_none() || w.identity.as_deref() == identity {
                let _ = w.sink.send(Delivery::Event {
                    frame: lines.clone(),
                });
            }
        }
    }
}

/// What one line says besides the arguments.
pub struct LineHead<'a> {
    pub at: SystemTime,
    pub db: u32,
    pub addr: &'a SocketAddr,
    /// The line shows what went upstream (`upstream:<addr>`).
    pub upstream: bool,
}

/// One feed line as a RESP simple string: `+<secs>.<micros> [<db> <addr>] "arg" …`, each
/// argument quoted and escaped as Redis does, secrets redacted as Redis does.
pub fn line<'a>(head: &LineHead, args: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let since = head.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = format!(
        "+{}.{:06} [{} {}{}]",
        since.as_secs(),
        since.subsec_micros(),
        head.db,
        if head.upstream { "upstream:" } else { "" },
        head.addr
    )
    .into_bytes();
    let args: Vec<&[u8]> = args.collect();
    let redacted = redactions(&args);
    for (i, arg) in args.iter().enumerate() {
        out.extend_from_slice(b" \"");
        match redacted.contains(&i) {
            true => out.extend_from_slice(b"(redacted)"),
            false => quote_into(&mut out, arg),
        }
        out.push(b'"');
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The argument positions Redis shows as `(redacted)`: AUTH's credentials, HELLO's AUTH
/// user and password, MIGRATE's AUTH/AUTH2 credentials.
fn redactions(args: &[&[u8]]) -> Vec<usize> {
    let is = |i: usize, word: &str| {
        args.get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    };
    if is(0, "auth") {
        return (1..args.len()).collect();
    }
    if is(0, "hello") {
        if let Some(at) = (2..args.len()).find(|&i| is(i, "auth")) {
            return vec![at + 1, at + 2];
        }
    }
    if is(0, "migrate") {
        if let Some(at) = (6..args.len()).find(|&i| is(i, "auth")) {
            return vec![at + 1];
        }
        if let Some(at) = (6..args.len()).find(|&i| is(i, "auth2")) {
            return vec![at + 1, at + 2];
        }
    }
    Vec::new()
}

/// Appends `arg` escaped as Redis's `sdscatrepr` does (without the quotes).
fn quote_into(out: &mut Vec<u8>, arg: &[u8]) {
    for &c in arg {
        match c {
            b'\\' | b'"' => out.extend_from_slice(&[b'\\', c]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(c),
            _ => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn head(upstream: bool) -> (SystemTime, SocketAddr, bool) {
        let at = UNIX_EPOCH + Duration::from_micros(1_339_518_083_107_412);
        (at, "127.0.0.1:60866".parse().unwrap(), upstream)
    }

    fn text(upstream: bool, args: &[&[u8]]) -> String {
        let (at, addr, upstream) = head(upstream);
        let h = LineHead {
            at,
            db: 0,
            addr: &addr,
            upstream,
        };
        String::from_utf8(line(&h, args.iter().copied())).unwrap()
    }

    #[test]
    fn lines_look_like_redis_lines() {
        assert_eq!(
            text(false, &[b"set", b"k\"1", b"a\r\n\x01"]),
            "+1339518083.107412 [0 127.0.0.1:60866] \"set\" \"k\\\"1\" \"a\\r\\n\\x01\"\r\n"
        );
        assert_eq!(
            text(true, &[b"GET", b"shared_x"]),
            "+1339518083.107412 [0 upstream:127.0.0.1:60866] \"GET\" \"shared_x\"\r\n"
        );
    }

    #[test]
    fn secrets_are_redacted_as_redis_does() {
        assert!(text(false, &[b"AUTH", b"u", b"p"])
            .ends_with("\"AUTH\" \"(redacted)\" \"(redacted)\"\r\n"));
        assert!(text(
            false,
            &[b"hello", b"3", b"AUTH", b"u", b"p", b"SETNAME", b"n"]
        )
        .ends_with("\"AUTH\" \"(redacted)\" \"(redacted)\" \"SETNAME\" \"n\"\r\n"));
    }

    #[test]
    fn admin_commands_are_hidden() {
        assert!(hidden("config|set") && hidden("monitor") && !hidden("get") && !hidden("eval"));
    }
}
