//! What each Redis command is to a proxy: the one table that says how a command is routed
//! (forwarded on a shared connection, answered locally, pinned to a dedicated connection, or
//! refused). Looking a command up costs no allocation: the name is lowercased on the stack.

use std::collections::HashMap;
use std::sync::OnceLock;

/// How the proxy handles a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Forwarded on the client's shared connection (or its pinned one while pinned).
    Forward,
    /// Connection-scoped: answered or emulated by rekey for this client alone.
    Local(Local),
    /// Starts or ends per-connection state on a pinned connection.
    Pin(Pin),
    /// Would disturb other clients on a shared connection: refused with this message.
    Refuse(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Auth,
    Hello,
    Select,
    Ping,
    Echo,
    Client,
    ReadOnly,
    Quit,
    Reset,
    Unsubscribe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    /// Always blocks the connection (BLPOP…, WAIT).
    Blocking,
    /// Blocks only with a `BLOCK` argument (XREAD, XREADGROUP).
    BlockingWithArg,
    /// Enters subscribe mode: every frame on the connection goes to this client.
    Subscribe,
}

/// One entry of the command table.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    pub class: Class,
}

const fn spec(name: &'static str, class: Class) -> CommandSpec {
    CommandSpec { name, class }
}

/// Commands whose handling differs from plain forwarding. Every other command is forwarded.
static SPECIAL: &[CommandSpec] = &[
    spec("auth", Class::Local(Local::Auth)),
    spec("hello", Class::Local(Local::Hello)),
    spec("select", Class::Local(Local::Select)),
    spec("ping", Class::Local(Local::Ping)),
    spec("echo", Class::Local(Local::Echo)),
    spec("client", Class::Local(Local::Client)),
    spec("readonly", Class::Local(Local::ReadOnly)),
    spec("readwrite", Class::Local(Local::ReadOnly)),
    spec("quit", Class::Local(Local::Quit)),
    spec("reset", Class::Local(Local::Reset)),
    spec("unsubscribe", Class::Local(Local::Unsubscribe)),
    spec("punsubscribe", Class::Local(Local::Unsubscribe)),
    spec("sunsubscribe", Class::Local(Local::Unsubscribe)),
    spec("multi", Class::Pin(Pin::Multi)),
    spec("exec", Class::Pin(Pin::Exec)),
    spec("discard", Class::Pin(Pin::Discard)),
    spec("watch", Class::Pin(Pin::Watch)),
    spec("unwatch", Class::Pin(Pin::Unwatch)),
    spec("blpop", Class::Pin(Pin::Blocking)),
    spec("brpop", Class::Pin(Pin::Blocking)),
    spec("brpoplpush", Class::Pin(Pin::Blocking)),
    spec("blmove", Class::Pin(Pin::Blocking)),
    spec("blmpop", Class::Pin(Pin::Blocking)),
    spec("bzpopmin", Class::Pin(Pin::Blocking)),
    spec("bzpopmax", Class::Pin(Pin::Blocking)),
    spec("bzmpop", Class::Pin(Pin::Blocking)),
    spec("wait", Class::Pin(Pin::Blocking)),
    spec("waitaof", Class::Pin(Pin::Blocking)),
    spec("xread", Class::Pin(Pin::BlockingWithArg)),
    spec("xreadgroup", Class::Pin(Pin::BlockingWithArg)),
    spec("subscribe", Class::Pin(Pin::Subscribe)),
    spec("psubscribe", Class::Pin(Pin::Subscribe)),
    spec("ssubscribe", Class::Pin(Pin::Subscribe)),
    spec(
        "monitor",
        Class::Refuse("ERR MONITOR is not supported through rekey; run it against Redis directly"),
    ),
    spec(
        "shutdown",
        Class::Refuse("ERR SHUTDOWN is not allowed through rekey; run it against Redis directly"),
    ),
    spec(
        "sync",
        Class::Refuse("ERR replication commands are not supported through rekey"),
    ),
    spec(
        "psync",
        Class::Refuse("ERR replication commands are not supported through rekey"),
    ),
    spec(
        "replconf",
        Class::Refuse("ERR replication commands are not supported through rekey"),
    ),
];

static FORWARD: CommandSpec = spec("", Class::Forward);

/// Longest command name worth looking up; longer names are unknown commands.
const MAX_NAME: usize = 32;

fn table() -> &'static HashMap<&'static [u8], &'static CommandSpec> {
    static TABLE: OnceLock<HashMap<&'static [u8], &'static CommandSpec>> = OnceLock::new();
    TABLE.get_or_init(|| SPECIAL.iter().map(|s| (s.name.as_bytes(), s)).collect())
}

/// The spec of command `name` (any case). Unknown commands are forwarded.
pub fn lookup(name: &[u8]) -> &'static CommandSpec {
    if name.len() > MAX_NAME {
        return &FORWARD;
    }
    let mut buf = [0u8; MAX_NAME];
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    table().get(&*lower).copied().unwrap_or(&FORWARD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup(b"BLPOP").class, Class::Pin(Pin::Blocking));
        assert_eq!(lookup(b"Ping").class, Class::Local(Local::Ping));
        assert_eq!(lookup(b"get").class, Class::Forward);
        assert_eq!(lookup(&[b'x'; 100]).class, Class::Forward);
    }
}
