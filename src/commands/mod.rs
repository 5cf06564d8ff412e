//! What each Redis command is to a proxy: the one table that says how a command is routed
//! (forwarded on a shared connection, answered locally, pinned to a dedicated connection, or
//! refused), where its keys are (from Redis's key specs, [`table`]), which other arguments name
//! keys or channels, and which replies carry key names to map back. Looking a command up costs
//! no allocation: the name is lowercased on the stack.
//! It knows command semantics only: nothing of sockets, rules or connections.

pub mod acl_table;
pub mod keys;
pub mod secrets;
pub mod table;

use keys::KeySpec;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
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
    /// CONFIG: passes through, but never reveals or changes upstream credentials.
    Config,
    /// ACL: only WHOAMI/CAT/HELP; the upstream user is shared by every client.
    Acl,
    /// MONITOR: a feed of the commands rekey's clients send (see `proxy::monitor`).
    Monitor,
    /// SCRIPT KILL, FUNCTION KILL, FUNCTION STATS: what Redis answers while a script is busy,
    /// sent on a connection of their own (a shared one may be the one stuck behind the script).
    SideChannel,
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

/// Key names in a command's reply, to be mapped back to the client's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKeys {
    None,
    /// `[key, …]`: BLPOP, BRPOP, BZPOPMIN/MAX, LMPOP, BLMPOP, ZMPOP, BZMPOP.
    First,
    /// XREAD/XREADGROUP: `[[key, entries], …]` (a map in RESP3).
    Streams,
    /// KEYS: a list of keys (filtered to the client's view).
    List,
    /// SCAN: `[cursor, [keys]]` (filtered to the client's view).
    Scan,
    /// RANDOMKEY: one key.
    Single,
    /// CONFIG GET: values of credential parameters are blanked (no key names).
    Secrets,
    /// PUBSUB CHANNELS/SHARDCHANNELS: a list of channel names (filtered by the pattern).
    Channels,
    /// PUBSUB NUMSUB/SHARDNUMSUB: `[channel, count, …]`.
    NumSub,
    /// CLIENT TRACKINGINFO: its `prefixes` are key prefixes.
    TrackingInfo,
}

/// Arguments other than key-spec keys that name keys or channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    None,
    /// SORT/SORT_RO: BY/GET patterns and STORE.
    Sort,
    /// KEYS pattern (argument 1).
    KeysPattern,
    /// SCAN … MATCH pattern.
    ScanMatch,
    /// Channel names from argument 1 on (SUBSCRIBE, UNSUBSCRIBE, SSUBSCRIBE…).
    Channels,
    /// One channel name at argument 1 (PUBLISH, SPUBLISH).
    Channel,
    /// Channel patterns from argument 1 on (PSUBSCRIBE, PUNSUBSCRIBE).
    ChannelPatterns,
    /// PUBSUB subcommands: NUMSUB/SHARDNUMSUB channels, CHANNELS/SHARDCHANNELS pattern.
    Pubsub,
    /// FLUSHDB/FLUSHALL: refused or scoped for clients whose keys are rewritten.
    Flush,
}

/// One entry of the command table.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Index into [`names`]; 0 is `other` (commands the table does not know).
    pub id: u16,
    pub name: &'static str,
    pub class: Class,
    pub keys: &'static [KeySpec],
    pub reply: ReplyKeys,
    pub extra: Extra,
    /// Index of the same command in [`acl_table::ACL_COMMANDS`] ([`NO_ACL`]: none, or a
    /// container whose subcommand decides).
    pub acl: u16,
    /// What an ACL must allow of its keys, when that is plain to see (the forwarding lane's
    /// check): [`ACL_NO_KEYS`], the need of its one key at argument 1 ([`acl_table::KEY_READ`]
    /// | [`acl_table::KEY_WRITE`]), or [`ACL_KEYS_ELSEWHERE`].
    pub acl_keys: u8,
}

/// [`CommandSpec::acl`] of a spec that names no one ACL command.
pub const NO_ACL: u16 = u16::MAX;
/// [`CommandSpec::acl_keys`]: no keys, no channels.
pub const ACL_NO_KEYS: u8 = 0x10;
/// [`CommandSpec::acl_keys`]: keys or channels beyond argument 1, or none known.
pub const ACL_KEYS_ELSEWHERE: u8 = 0xff;

const fn spec(name: &'static str, class: Class) -> CommandSpec {
    CommandSpec {
        id: 0,
        name,
        class,
        keys: &[],
        reply: ReplyKeys::None,
        extra: Extra::None,
        acl: NO_ACL,
        acl_keys: ACL_KEYS_ELSEWHERE,
    }
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
    spec("config", Class::Local(Local::Config)),
    spec("acl", Class::Local(Local::Acl)),
    spec("unsubscribe", Class::Local(Local::Unsubscribe)),
    spec("punsubscribe", Class::Local(Local::Unsubscribe)),
    spec("sunsubscribe", Class::Local(Local::Unsubscribe)),
    spec("script|kill", Class::Local(Local::SideChannel)),
    spec("function|kill", Class::Local(Local::SideChannel)),
    spec("function|stats", Class::Local(Local::SideChannel)),
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
    spec("monitor", Class::Local(Local::Monitor)),
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

/// Keyless commands that are not containers, known by name so that `CLIENT LIST`'s `cmd=`
/// and the metrics name them (containers such as `SCRIPT` must stay out: a name found in the
/// table is not looked up further by subcommand).
static KEYLESS: &[&str] = &[
    "asking",
    "bgrewriteaof",
    "bgsave",
    "dbsize",
    "debug",
    "failover",
    "info",
    "lastsave",
    "lolwut",
    "replicaof",
    "role",
    "save",
    "slaveof",
    "swapdb",
    "time",
];

/// Replies that carry key names.
static REPLY_KEYS: &[(&str, ReplyKeys)] = &[
    ("blpop", ReplyKeys::First),
    ("brpop", ReplyKeys::First),
    ("bzpopmin", ReplyKeys::First),
    ("bzpopmax", ReplyKeys::First),
    ("lmpop", ReplyKeys::First),
    ("blmpop", ReplyKeys::First),
    ("zmpop", ReplyKeys::First),
    ("bzmpop", ReplyKeys::First),
    ("xread", ReplyKeys::Streams),
    ("xreadgroup", ReplyKeys::Streams),
    ("keys", ReplyKeys::List),
    ("scan", ReplyKeys::Scan),
    ("randomkey", ReplyKeys::Single),
];

/// Arguments beyond the key specs.
static EXTRAS: &[(&str, Extra)] = &[
    ("sort", Extra::Sort),
    ("sort_ro", Extra::Sort),
    ("keys", Extra::KeysPattern),
    ("scan", Extra::ScanMatch),
    ("subscribe", Extra::Channels),
    ("unsubscribe", Extra::Channels),
    ("ssubscribe", Extra::Channels),
    ("sunsubscribe", Extra::Channels),
    ("publish", Extra::Channel),
    ("spublish", Extra::Channel),
    ("psubscribe", Extra::ChannelPatterns),
    ("punsubscribe", Extra::ChannelPatterns),
    ("pubsub", Extra::Pubsub),
    ("flushdb", Extra::Flush),
    ("flushall", Extra::Flush),
];

static FORWARD: CommandSpec = spec("", Class::Forward);

/// Longest command name worth looking up (`container|subcommand`).
const MAX_NAME: usize = 64;

/// FNV-1a: command names are short and trusted to be few; SipHash's DoS resistance buys
/// nothing here and costs on every command.
struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Table = HashMap<&'static [u8], CommandSpec, BuildHasherDefault<NameHasher>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map = Table::default();
        for s in SPECIAL {
            map.insert(s.name.as_bytes(), *s);
        }
        for (name, keys) in table::KEY_SPECS {
            map.entry(name.as_bytes())
                .or_insert_with(|| spec(name, Class::Forward))
                .keys = keys;
        }
        for name in KEYLESS {
            map.entry(name.as_bytes())
                .or_insert_with(|| spec(name, Class::Forward));
        }
        for (name, reply) in REPLY_KEYS {
            map.entry(name.as_bytes())
                .or_insert_with(|| spec(name, Class::Forward))
                .reply = *reply;
        }
        for (name, extra) in EXTRAS {
            map.entry(name.as_bytes())
                .or_insert_with(|| spec(name, Class::Forward))
                .extra = *extra;
        }
        let mut names: Vec<&'static [u8]> = map.keys().copied().collect();
        names.sort();
        for (i, name) in names.iter().enumerate() {
            let spec = map.get_mut(name).expect("listed");
            spec.id = i as u16 + 1;
            spec.acl = acl_index(name)
                .filter(|&i| !acl_table::ACL_COMMANDS[i as usize].container)
                .unwrap_or(NO_ACL);
            spec.acl_keys = acl_keys(spec);
        }
        map
    })
}

/// Every command the table knows (one spec per id, 1..=`specs().len()`; id 0 is a command
/// it does not know).
pub fn specs() -> impl ExactSizeIterator<Item = &'static CommandSpec> {
    table().values()
}

/// Metric label of every command id: `names()[spec.id]`. Subcommands count under their
/// container (`object|encoding` is `object`), keeping labels few and bounded.
pub fn names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let mut out = vec![""; table().len() + 1];
        out[0] = "other";
        for s in table().values() {
            out[s.id as usize] = s.name.split('|').next().unwrap_or(s.name);
        }
        out
    })
}

/// The table's full name of command `id` (`object|encoding`, `get`); `None` for 0, a
/// command the table does not know.
pub fn full_name(id: u16) -> Option<&'static str> {
    static FULL: OnceLock<Vec<&'static str>> = OnceLock::new();
    let full = FULL.get_or_init(|| {
        let mut out = vec![""; table().len() + 1];
        for s in table().values() {
            out[s.id as usize] = s.name;
        }
        out
    });
    full.get(id as usize).copied().filter(|n| !n.is_empty())
}

/// The spec of the request's command (any case), or of its subcommand (`object|encoding`)
/// for containers. Unknown commands are forwarded with no keys.
pub fn lookup(req: &crate::protocol::Request) -> &'static CommandSpec {
    lookup_top(req).0
}

/// [`lookup`], and whether the name alone decided it (no subcommand was looked at).
fn lookup_top(req: &crate::protocol::Request) -> (&'static CommandSpec, bool) {
    lookup_parts(req.arg(0).unwrap_or_default(), req.arg(1))
}

/// [`lookup_top`] from the command name and the first argument (a container's subcommand).
fn lookup_parts(name: &[u8], sub: Option<&[u8]>) -> (&'static CommandSpec, bool) {
    if name.len() > MAX_NAME / 2 {
        return (&FORWARD, false);
    }
    let mut buf = [0u8; MAX_NAME];
    buf[..name.len()].copy_from_slice(name);
    buf[..name.len()].make_ascii_lowercase();
    let table = table();
    if let Some(s) = table.get(&buf[..name.len()]) {
        return (s, true);
    }
    if let Some(sub) = sub.filter(|s| s.len() < MAX_NAME / 2) {
        let end = name.len() + 1 + sub.len();
        buf[name.len()] = b'|';
        buf[name.len() + 1..end].copy_from_slice(sub);
        buf[name.len() + 1..end].make_ascii_lowercase();
        if let Some(s) = table.get(&buf[..end]) {
            return (s, false);
        }
    }
    (&FORWARD, false)
}

/// Longest command name [`LookupCache`] remembers.
const CACHED_NAME: usize = 16;

/// A client's last command name, exactly as it was sent, and its spec: a pipeline of the same
/// command looks each one up with one short comparison instead of the table.
#[derive(Debug, Default)]
pub struct LookupCache {
    name: [u8; CACHED_NAME],
    len: usize,
    spec: Option<&'static CommandSpec>,
}

impl LookupCache {
    /// [`lookup`], remembering names that decide the spec alone (not containers).
    pub fn lookup(&mut self, req: &crate::protocol::Request) -> &'static CommandSpec {
        self.lookup_parts(req.arg(0).unwrap_or_default(), req.arg(1))
    }

    /// [`LookupCache::lookup`] from the command name and its first argument. Inlined into
    /// the forwarding lane (it runs once per request there); a miss goes out of line.
    #[inline]
    pub fn lookup_parts(&mut self, name: &[u8], sub: Option<&[u8]>) -> &'static CommandSpec {
        if let Some(spec) = self.spec {
            // Short names (nearly all) compare as one 8-byte word, without a memcmp call.
            if name.len() == self.len && self.len <= 8 {
                let mut word = [0u8; 8];
                word[..name.len()].copy_from_slice(name);
                let cached: [u8; 8] = self.name[..8].try_into().expect("8 of 16 bytes");
                if u64::from_ne_bytes(word) == u64::from_ne_bytes(cached) {
                    return spec;
                }
            } else if name == &self.name[..self.len] {
                return spec;
            }
        }
        self.miss(name, sub)
    }

    /// A lookup the cache could not answer: the table's, remembered when by name alone.
    #[inline(never)]
    fn miss(&mut self, name: &[u8], sub: Option<&[u8]>) -> &'static CommandSpec {
        let (spec, by_name) = lookup_parts(name, sub);
        if by_name && name.len() <= CACHED_NAME {
            self.name = [0; CACHED_NAME]; // zero-padded: compared as a word above
            self.name[..name.len()].copy_from_slice(name);
            self.len = name.len();
            self.spec = Some(spec);
        }
        spec
    }
}

/// [`CommandSpec::acl_keys`] of `spec`.
fn acl_keys(spec: &CommandSpec) -> u8 {
    use keys::{Begin, Find};
    if spec.acl == NO_ACL || spec.extra != Extra::None {
        return ACL_KEYS_ELSEWHERE;
    }
    let needs = acl_table::ACL_COMMANDS[spec.acl as usize].key_needs;
    match (spec.keys, needs) {
        ([], []) => ACL_NO_KEYS,
        (
            [KeySpec {
                begin: Begin::Index(1),
                find: Find::Range { last: 0, .. },
                ..
            }],
            [need],
        ) if *need & acl_table::NOT_KEY == 0 => *need,
        _ => ACL_KEYS_ELSEWHERE,
    }
}

/// Index in [`acl_table::ACL_COMMANDS`] of the command named `name` (lowercase, `a|b` for a
/// subcommand).
fn acl_index(name: &[u8]) -> Option<u16> {
    acl_table::ACL_COMMANDS
        .binary_search_by(|c| c.name.as_bytes().cmp(name))
        .ok()
        .map(|i| i as u16)
}

/// The ACL command a request runs, as Redis's `lookupCommand` finds it: the command named by
/// argument 0, or its subcommand named by argument 1 when it is a container (a container
/// sent alone is itself). `None`: Redis knows no such command or subcommand (it answers
/// that error itself).
pub fn acl_command(name: &[u8], sub: Option<&[u8]>) -> Option<u16> {
    if name.len() > MAX_NAME / 2 {
        return None;
    }
    let mut buf = [0u8; MAX_NAME];
    buf[..name.len()].copy_from_slice(name);
    buf[..name.len()].make_ascii_lowercase();
    let top = acl_index(&buf[..name.len()])?;
    let Some(sub) = sub.filter(|_| acl_table::ACL_COMMANDS[top as usize].container) else {
        return Some(top);
    };
    if sub.len() >= MAX_NAME / 2 {
        return None;
    }
    let end = name.len() + 1 + sub.len();
    buf[name.len()] = b'|';
    buf[name.len() + 1..end].copy_from_slice(sub);
    buf[name.len() + 1..end].make_ascii_lowercase();
    acl_index(&buf[..end])
}

/// The ACL command named exactly `name` (`get`, `config|get`; any case).
pub fn acl_command_named(name: &str) -> Option<u16> {
    acl_index(name.to_ascii_lowercase().as_bytes())
}

/// Every command and subcommand the table knows keys for (for the live comparison test).
pub fn key_specs() -> impl Iterator<Item = (&'static str, &'static [KeySpec])> {
    table::KEY_SPECS.iter().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Request;

    #[test]
    fn the_cache_remembers_names_but_not_containers() {
        let mut cache = LookupCache::default();
        let l = |c: &mut LookupCache, args: &[&str]| c.lookup(&Request::from_args(args)).id;
        let get = lookup(&Request::from_args(["get", "k"])).id;
        assert_eq!(l(&mut cache, &["GET", "k"]), get);
        assert_eq!(l(&mut cache, &["GET", "other"]), get);
        assert_eq!(l(&mut cache, &["gEt", "k"]), get);
        let encoding = lookup(&Request::from_args(["object", "encoding", "k"])).id;
        let help = lookup(&Request::from_args(["object", "help"])).id;
        assert_ne!(encoding, help);
        assert_eq!(l(&mut cache, &["OBJECT", "ENCODING", "k"]), encoding);
        assert_eq!(l(&mut cache, &["OBJECT", "HELP"]), help);
        assert_eq!(
            l(&mut cache, &["SET", "k", "v"]),
            lookup(&Request::from_args(["set"])).id
        );
    }

    #[test]
    fn lookup_ignores_case_and_finds_subcommands() {
        let l = |args: &[&str]| lookup(&Request::from_args(args));
        assert_eq!(l(&["BLPOP", "k", "0"]).class, Class::Pin(Pin::Blocking));
        assert_eq!(l(&["BLPOP", "k", "0"]).reply, ReplyKeys::First);
        assert_eq!(l(&["Ping"]).class, Class::Local(Local::Ping));
        assert_eq!(l(&["get", "k"]).class, Class::Forward);
        assert_eq!(l(&["get", "k"]).keys.len(), 1);
        assert_eq!(l(&["OBJECT", "ENCODING", "k"]).name, "object|encoding");
        assert_eq!(l(&["memory", "usage", "k"]).keys.len(), 1);
        let long = "x".repeat(100);
        assert_eq!(l(&[long.as_str()]).class, Class::Forward);
    }
}
