//! Differential test (issue #19): a client whose keys a rule rewrites must see exactly what its
//! own Redis would show it.
//!
//! A seeded generator writes command sequences (all data types, key-space commands, KEYS/SCAN,
//! scripts, transactions, WATCH, blocking commands with short timeouts, pub/sub, keyspace
//! notifications on a second connection, client tracking (in RESP3 also `BCAST` with several
//! prefixes, some rewritten, and writes under them in one pipeline), binary names, wrong types
//! and arities, pipelines of 1–300 commands in one write, RESP2 and RESP3). Each sequence goes
//! both to a private `redis-server` holding the client's own names (`AppA_k1`) and through rekey
//! (rule `^AppA_` → `shared_`) in front of a second `redis-server`; the raw replies are compared
//! frame by frame, byte for byte, after normalising only what Redis itself leaves unordered or
//! timed (set-like arrays sorted, TTLs bucketed, idle times masked, the `HELLO` client id).
//! `BCAST` invalidations sent together are checked to come in the order of the client's prefixes.
//! A difference is shrunk (delta debugging against fresh state) and printed with the seed.
//!
//! Environment:
//! - `REKEY_DIFF_COMMANDS=N`: run N commands per protocol (default: about 10 s per protocol).
//! - `REKEY_DIFF_SECONDS=S`: time budget per protocol when no command count is given.
//! - `REKEY_DIFF_SEED=S`: the seed (default: fixed, so CI runs are reproducible; `random`).
//! - `REKEY_DIFF_SEQ=I`: run only sequence I of the seed (to replay a reported failure).
//! - `REKEY_DIFF_PROTO=2|3`: one protocol only.
//! - `REKEY_DIFF_FAMILIES=+tracking,-blocking` (or `all`, or `only:lists,multi`): switch
//!   command families on and off from the committed default (see `FAMILIES`).
//! - `REKEY_DIFF_KEEP_GOING=1`: do not stop at the first difference; shrink and print one
//!   example per difference class, fail at the end.
//! - `REKEY_DIFF_VERBOSE=1`: print every sequence.

use crate::common::{RedisServer, Rekey};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const RULE: &str = "[[rules]]\nname = \"t\"\nmatch = '^AppA_'\nreplace = 'shared_'\n";

/// Command families: (name, on by default, what it covers). Every family is on; a family can
/// be switched off for a run with `REKEY_DIFF_FAMILIES=-name` while a difference is chased.
const FAMILIES: &[(&str, bool, &str)] = &[
    ("strings", true, "SET/GET/INCR/APPEND/MSET/GETEX/LCS…"),
    ("hashes", true, "HSET/HGETALL/HINCRBY/HSCAN/HRANDFIELD…"),
    (
        "lists",
        true,
        "LPUSH/LRANGE/LMOVE/LPOS/SORT with BY/GET/STORE…",
    ),
    ("sets", true, "SADD/SINTER*/SMOVE/SPOP/SSCAN…"),
    ("zsets", true, "ZADD/ZRANGE/ZUNIONSTORE/ZRANGESTORE/ZSCAN…"),
    (
        "streams",
        true,
        "XADD (explicit ids)/XRANGE/XREAD/XTRIM/XINFO STREAM…",
    ),
    (
        "streamgroups",
        true,
        "XGROUP/XREADGROUP/XACK/XPENDING/XCLAIM/XAUTOCLAIM/XINFO",
    ),
    (
        "nogroup",
        true,
        "stream group commands on a missing group (NOGROUP errors quote the key)",
    ),
    ("bitmaps", true, "SETBIT/BITCOUNT/BITOP/BITFIELD…"),
    ("hll", true, "PFADD/PFCOUNT/PFMERGE"),
    ("geo", true, "GEOADD/GEOSEARCH/GEORADIUS STORE…"),
    (
        "keyspace",
        true,
        "DEL/EXISTS/RENAME/COPY/TYPE/EXPIRE/TTL/OBJECT/MOVE/DBSIZE…",
    ),
    (
        "scan",
        true,
        "KEYS and SCAN with MATCH patterns that reach the prefix",
    ),
    (
        "globfilter",
        true,
        "KEYS/SCAN patterns that match the upstream prefix only",
    ),
    ("randomkey", true, "RANDOMKEY in a database holding one key"),
    ("scripts", true, "EVAL/EVALSHA/EVAL_RO/FCALL with numkeys"),
    ("multi", true, "MULTI/EXEC/DISCARD around other families"),
    (
        "execnames",
        true,
        "commands replying key names inside MULTI (KEYS, LMPOP, XREAD…)",
    ),
    ("watch", true, "WATCH/UNWATCH"),
    (
        "blocking",
        true,
        "BLPOP/BLMPOP/BZPOPMIN/BLMOVE/XREAD BLOCK 10/WAIT, short timeouts",
    ),
    ("mpop", true, "LMPOP/ZMPOP"),
    (
        "pubsub",
        true,
        "SUBSCRIBE/PSUBSCRIBE/UNSUBSCRIBE on the main connection",
    ),
    (
        "publish",
        true,
        "PUBLISH (to the subscriber connection and the main one)",
    ),
    ("pubsubintro", true, "PUBSUB NUMSUB/CHANNELS/NUMPAT/SHARD*"),
    (
        "notify",
        true,
        "keyspace/keyevent notifications on a second connection",
    ),
    (
        "tracking",
        true,
        "CLIENT TRACKING (BCAST PREFIX; in RESP3 several, writes under them), TRACKINGINFO",
    ),
    (
        "arity",
        true,
        "wrong arities, bad numkeys, unknown commands",
    ),
    ("conn", true, "PING/ECHO/SELECT/CLIENT SETNAME/DBSIZE"),
    (
        "connmulti",
        true,
        "connection commands (PING, ECHO, CLIENT SETNAME/GETNAME) inside MULTI",
    ),
    (
        "bigpipes",
        true,
        "pipelines of 10–300 commands in one write",
    ),
    (
        "pinpipe",
        true,
        "pinning commands (MULTI, WATCH, blocking…) pipelined with others",
    ),
    ("selectpipe", true, "SELECT pipelined with other commands"),
    ("binary", true, "binary key names"),
    (
        "trackingswitch",
        true,
        "with several BCAST prefixes, TRACKING OFF behind writes or a refused ON",
    ),
];

// ---------------------------------------------------------------------------------------------
// Random numbers: xorshift64*, seeded through splitmix64.

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as usize) as i64
    }
}

// ---------------------------------------------------------------------------------------------
// RESP frames, kept exactly as received.

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Frame {
    /// `+ - : _ , # (` and null headers (`$-1`, `*-1`): type byte and the line.
    Line(u8, Vec<u8>),
    /// `$ ! =`: type byte and payload.
    Blob(u8, Vec<u8>),
    /// `* ~ % | >`: type byte and elements (maps flattened, key then value).
    Agg(u8, Vec<Frame>),
}

impl Frame {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Line(t, l) => {
                out.push(*t);
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Blob(t, d) => {
                out.push(*t);
                out.extend_from_slice(d.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(d);
                out.extend_from_slice(b"\r\n");
            }
            Frame::Agg(t, items) => {
                let n = if *t == b'%' || *t == b'|' {
                    items.len() / 2
                } else {
                    items.len()
                };
                out.push(*t);
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                for i in items {
                    i.write(out);
                }
            }
        }
    }
    fn bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write(&mut v);
        v
    }
    fn text(&self) -> Option<&[u8]> {
        match self {
            Frame::Blob(b'$', d) => Some(d),
            Frame::Line(b'+', d) => Some(d),
            _ => None,
        }
    }
    /// A message pushed to a subscriber or tracking client, which answers no request.
    fn is_push_message(&self) -> bool {
        match self {
            Frame::Agg(t @ (b'>' | b'*'), items) if !items.is_empty() => {
                let kind = items[0].text().unwrap_or(b"");
                match *t {
                    b'>' => matches!(kind, b"message" | b"pmessage" | b"smessage" | b"invalidate"),
                    _ => {
                        (items.len() == 3 && (kind == b"message" || kind == b"smessage"))
                            || (items.len() == 4 && kind == b"pmessage")
                    }
                }
            }
            _ => false,
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn parse_int(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad length {:?}", String::from_utf8_lossy(line)))
}

/// One frame from the start of `b`: `Ok(None)` when incomplete.
fn parse(b: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    let Some(eol) = find_crlf(b) else {
        return Ok(None);
    };
    if eol == 0 {
        return Err("empty line".into());
    }
    let t = b[0];
    let line = &b[1..eol];
    let mut at = eol + 2;
    match t {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
            Ok(Some((Frame::Line(t, line.to_vec()), at)))
        }
        b'$' | b'!' | b'=' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some((Frame::Line(t, line.to_vec()), at)));
            }
            let n = n as usize;
            if b.len() < at + n + 2 {
                return Ok(None);
            }
            let data = b[at..at + n].to_vec();
            at += n + 2;
            Ok(Some((Frame::Blob(t, data), at)))
        }
        b'*' | b'~' | b'%' | b'|' | b'>' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some((Frame::Line(t, line.to_vec()), at)));
            }
            let count = if t == b'%' || t == b'|' { 2 * n } else { n } as usize;
            let mut items = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                match parse(&b[at..])? {
                    None => return Ok(None),
                    Some((f, used)) => {
                        items.push(f);
                        at += used;
                    }
                }
            }
            Ok(Some((Frame::Agg(t, items), at)))
        }
        _ => Err(format!("bad type byte {:?}", t as char)),
    }
}

enum ReadErr {
    Timeout,
    Closed,
    Bad(String),
}

impl ReadErr {
    fn label(&self) -> String {
        match self {
            ReadErr::Timeout => "<no reply within the time limit>".into(),
            ReadErr::Closed => "<connection closed>".into(),
            ReadErr::Bad(e) => format!("<malformed reply: {e}>"),
        }
    }
}

struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

const REPLY_LIMIT: Duration = Duration::from_secs(5);

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Conn { s, buf: Vec::new() }
    }
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).is_ok()
    }
    fn read_frame(&mut self, limit: Duration) -> Result<Frame, ReadErr> {
        let deadline = Instant::now() + limit;
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            if !self.buf.is_empty() {
                match parse(&self.buf) {
                    Ok(Some((f, n))) => {
                        self.buf.drain(..n);
                        return Ok(f);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(ReadErr::Bad(e)),
                }
            }
            if Instant::now() >= deadline {
                return Err(ReadErr::Timeout);
            }
            match self.s.read(&mut tmp) {
                Ok(0) => return Err(ReadErr::Closed),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return Err(ReadErr::Closed),
            }
        }
    }
    /// Sends one command and reads one frame (for setup on direct connections).
    fn call(&mut self, args: &[&[u8]]) -> Frame {
        let c: Cmd = args.iter().map(|a| a.to_vec()).collect();
        assert!(self.send(&encode(&c)));
        match self.read_frame(REPLY_LIMIT) {
            Ok(f) => f,
            Err(e) => panic!("setup command {}: {}", show_cmd(&c), e.label()),
        }
    }
}

type Cmd = Vec<Vec<u8>>;
/// Commands that must stay together (shrinking removes or keeps all of them).
type Item = Vec<Cmd>;

fn encode(c: &Cmd) -> Vec<u8> {
    let mut out = format!("*{}\r\n", c.len()).into_bytes();
    for a in c {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

macro_rules! cmd {
    ($($a:expr),* $(,)?) => { vec![$(AsRef::<[u8]>::as_ref(&$a).to_vec()),*] };
}

fn upper(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_uppercase()
}

fn name_of(c: &Cmd) -> String {
    c.first().map(|a| upper(a)).unwrap_or_default()
}

/// The command name, with the subcommand for container commands.
fn full_name(c: &Cmd) -> String {
    let n = name_of(c);
    if matches!(
        n.as_str(),
        "CLIENT" | "XGROUP" | "XINFO" | "PUBSUB" | "OBJECT" | "SCRIPT" | "FUNCTION" | "CONFIG"
    ) && c.len() > 1
    {
        format!("{n} {}", upper(&c[1]))
    } else {
        n
    }
}

fn esc(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

fn show_cmd(c: &Cmd) -> String {
    c.iter()
        .map(|a| {
            let e = esc(a);
            if a.is_empty() || a.iter().any(|&b| b == b' ' || !(0x21..=0x7e).contains(&b)) {
                format!("\"{e}\"")
            } else {
                e
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Key names, values, scripts.

const STR: &[&[u8]] = &[
    b"AppA_s1", b"AppA_s2", b"AppA_s3", b"AppA_", b"plain_s", b"AppAx_s",
];
const BIN: &[&[u8]] = &[b"AppA_b\x00\r\n\xff", b"\xffraw\x00 k"];
const HASH: &[&[u8]] = &[b"AppA_h1", b"AppA_h2", b"plain_h"];
const LIST: &[&[u8]] = &[b"AppA_l1", b"AppA_l2", b"AppA_l3", b"plain_l"];
const SET: &[&[u8]] = &[b"AppA_S1", b"AppA_S2", b"AppA_S3", b"plain_S"];
const ZSET: &[&[u8]] = &[b"AppA_z1", b"AppA_z2", b"plain_z"];
const STREAM: &[&[u8]] = &[b"AppA_x1", b"AppA_x2", b"plain_x"];
const HLL: &[&[u8]] = &[b"AppA_p1", b"AppA_p2"];
const GEO: &[&[u8]] = &[b"AppA_g1", b"AppA_g2"];
const WEIGHT: &[&[u8]] = &[
    b"AppA_w_1",
    b"AppA_w_2",
    b"AppA_w_3",
    b"AppA_o_1",
    b"AppA_o_2",
];
const CLASSES: &[&[&[u8]]] = &[STR, BIN, HASH, LIST, SET, ZSET, STREAM, HLL, GEO, WEIGHT];

const VALS: &[&str] = &[
    "1", "2", "3", "10", "-5", "a", "b", "hello", "", "3.5", "x y", "7",
];
const MEMBERS: &[&str] = &["1", "2", "3", "a", "b", "c"];
const FIELDS: &[&str] = &["f1", "f2", "f3", "n"];
const SCORES: &[&str] = &["1", "2", "2.5", "-1", "+inf", "10", "0"];
const CHANNELS: &[&str] = &["chan1", "chan2", "AppA_c1"];
const PATTERNS: &[&str] = &["chan*", "AppA_c*"];

const SCRIPTS: &[&str] = &[
    "return redis.call('GET', KEYS[1])",
    "return redis.call('INCR', KEYS[1])",
    "return {#KEYS, #ARGV}",
    "return redis.call('LPUSH', KEYS[1], ARGV[1])",
    "return redis.call('EXISTS', KEYS[1], KEYS[2])",
    "return redis.pcall('HGET', KEYS[1], 'f1')",
    "return redis.call('SET', KEYS[1], ARGV[1])",
    "return redis.error_reply('my err')",
    "return redis.call('TYPE', KEYS[1])",
    "return redis.call('LRANGE', KEYS[1], 0, -1)",
];
const RO_SCRIPTS: &[usize] = &[0, 2, 4, 5, 8, 9];
const FUNCTIONS: &str = "#!lua name=difflib\n\
redis.register_function('dget', function(keys, args) return redis.call('GET', keys[1]) end)\n\
redis.register_function{function_name='dlen', callback=function(keys, args) return redis.call('LLEN', keys[1]) end, flags={'no-writes'}}\n\
redis.register_function('dincr', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)\n";

const PATS_OK: &[&str] = &[
    "*",
    "AppA_*",
    "AppA_s*",
    "AppA_?1",
    "AppA_[lz]*",
    "*1",
    "*2",
    "plain*",
    "nomatch*",
    "AppA_x[0-9]",
];
const PATS_GLOB: &[&str] = &["sh*", "s*", "*red_*", "shared_*"];

/// `CLIENT TRACKING … BCAST` prefixes the rule rewrites: upstream they are `shared_…`, which
/// sorts after every prefix of `BCAST_PLAIN`, while `AppA_…` sorts before them all, so Redis
/// behind rekey walks them in another order than the client's Redis. `AppA_` covers the others
/// (Redis refuses overlapping prefixes).
const BCAST_REWRITTEN: &[&str] = &["AppA_s", "AppA_h", "AppA_l", "AppA_S", "AppA_z", "AppA_"];
/// Prefixes the rule leaves alone; `plain_` covers the `plain_…` ones.
const BCAST_PLAIN: &[&str] = &["plain_s", "plain_h", "plain_l", "AppAx_", "plain_"];

/// Commands that may reply with key names (these must be mapped back).
const NAME_REPLIES: &[&str] = &[
    "KEYS",
    "SCAN",
    "RANDOMKEY",
    "BLPOP",
    "BRPOP",
    "BLMPOP",
    "LMPOP",
    "ZMPOP",
    "BZMPOP",
    "BZPOPMIN",
    "BZPOPMAX",
    "XREAD",
    "XREADGROUP",
];

fn pins(c: &Cmd) -> bool {
    let n = name_of(c);
    matches!(
        n.as_str(),
        "MULTI"
            | "EXEC"
            | "DISCARD"
            | "WATCH"
            | "UNWATCH"
            | "BLPOP"
            | "BRPOP"
            | "BLMOVE"
            | "BRPOPLPUSH"
            | "BLMPOP"
            | "BZPOPMIN"
            | "BZPOPMAX"
            | "BZMPOP"
            | "WAIT"
            | "SUBSCRIBE"
            | "UNSUBSCRIBE"
            | "PSUBSCRIBE"
            | "PUNSUBSCRIBE"
    ) || (n == "CLIENT" && c.len() > 1 && upper(&c[1]) == "TRACKING")
        || ((n == "XREAD" || n == "XREADGROUP") && c.iter().any(|a| upper(a) == "BLOCK"))
}

// ---------------------------------------------------------------------------------------------
// Connection model, shared by the generator and by the shrinker's validity check.

#[derive(Clone, Default)]
struct Model {
    proto: u8,
    in_multi: bool,
    subs: BTreeSet<(bool, Vec<u8>)>,
    tracking: bool,
    /// `BCAST` prefixes asked for since tracking was last switched off (refused ones too).
    bcast_prefixes: usize,
}

impl Model {
    fn new(proto: u8) -> Model {
        Model {
            proto,
            ..Default::default()
        }
    }
    fn resp2_subscribed(&self) -> bool {
        self.proto == 2 && !self.subs.is_empty()
    }
    /// Whether `c` may be sent now (commands whose behaviour the README documents as a
    /// difference, or that would make the reply count unknown, are not).
    fn allows(&self, c: &Cmd, fams: &Families) -> bool {
        let n = name_of(c);
        // Redis 7.0 writes RESP3 pushes to the client itself (its own PUBLISH while
        // subscribed, tracking invalidations) into the middle of the EXEC array: the oracle's
        // reply is malformed there, so such transactions are not generated.
        if self.proto == 3
            && ((self.in_multi && !self.subs.is_empty() && n == "PUBLISH")
                || (self.tracking && n == "MULTI"))
        {
            return false;
        }
        // See `trackingswitch`.
        if n == "CLIENT"
            && c.len() > 2
            && upper(&c[1]) == "TRACKING"
            && upper(&c[2]) == "ON"
            && !c.iter().any(|a| upper(a) == "BCAST")
            && self.bcast_prefixes > 1
            && !fams.on("trackingswitch")
        {
            return false;
        }
        if self.in_multi {
            if matches!(
                n.as_str(),
                "SELECT"
                    | "HELLO"
                    | "RESET"
                    | "SUBSCRIBE"
                    | "UNSUBSCRIBE"
                    | "PSUBSCRIBE"
                    | "PUNSUBSCRIBE"
            ) {
                return false;
            }
            if !fams.on("connmulti")
                && (matches!(n.as_str(), "PING" | "ECHO")
                    || (n == "CLIENT" && c.len() > 1 && upper(&c[1]).ends_with("NAME")))
            {
                return false;
            }
            if !fams.on("execnames")
                && (NAME_REPLIES.contains(&n.as_str())
                    || (n == "CLIENT" && c.len() > 1 && upper(&c[1]) == "TRACKINGINFO"))
            {
                return false;
            }
        }
        true
    }
    fn apply(&mut self, c: &Cmd) {
        let n = name_of(c);
        let gated = self.resp2_subscribed();
        match n.as_str() {
            "MULTI" if c.len() == 1 && !gated => self.in_multi = true,
            "EXEC" | "DISCARD" if c.len() == 1 && !gated => self.in_multi = false,
            "CLIENT" if c.len() > 2 && upper(&c[1]) == "TRACKING" => {
                let on = upper(&c[2]) == "ON";
                if !self.in_multi {
                    self.tracking = on;
                }
                if on && c.iter().any(|a| upper(a) == "BCAST") {
                    self.bcast_prefixes += c.iter().filter(|a| upper(a) == "PREFIX").count();
                } else if !on && !self.in_multi {
                    self.bcast_prefixes = 0;
                }
            }
            "SUBSCRIBE" | "PSUBSCRIBE" if c.len() == 2 && !self.in_multi => {
                self.subs.insert((n == "PSUBSCRIBE", c[1].clone()));
            }
            "UNSUBSCRIBE" | "PUNSUBSCRIBE" if c.len() == 2 && !self.in_multi => {
                self.subs.remove(&(n == "PUNSUBSCRIBE", c[1].clone()));
            }
            _ => {}
        }
    }
}

#[derive(Clone)]
struct Families(BTreeSet<&'static str>);

impl Families {
    fn on(&self, f: &str) -> bool {
        self.0.contains(f)
    }
    fn from_spec(spec: &str) -> Families {
        let mut set: BTreeSet<&'static str> =
            FAMILIES.iter().filter(|f| f.1).map(|f| f.0).collect();
        let spec = spec.trim();
        let lookup = |name: &str| -> &'static str {
            FAMILIES
                .iter()
                .find(|f| f.0 == name)
                .unwrap_or_else(|| panic!("unknown family {name:?} in REKEY_DIFF_FAMILIES"))
                .0
        };
        if spec == "all" {
            set = FAMILIES.iter().map(|f| f.0).collect();
        } else if let Some(list) = spec.strip_prefix("only:") {
            set = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(lookup)
                .collect();
        } else {
            for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if let Some(n) = part.strip_prefix('-') {
                    set.remove(lookup(n));
                } else {
                    set.insert(lookup(part.trim_start_matches('+')));
                }
            }
        }
        Families(set)
    }
}

// ---------------------------------------------------------------------------------------------
// The generator.

#[derive(Clone)]
struct Sequence {
    batches: Vec<Vec<Item>>,
    subscriber: bool,
}

impl Sequence {
    fn commands(&self) -> usize {
        self.batches.iter().flatten().map(|i| i.len()).sum()
    }
    fn valid(&self, proto: u8, fams: &Families) -> bool {
        let mut m = Model::new(proto);
        for c in self.batches.iter().flatten().flatten() {
            if !m.allows(c, fams) {
                return false;
            }
            m.apply(c);
        }
        true
    }
    fn show(&self) -> String {
        let mut s = String::new();
        if self.subscriber {
            s.push_str("  (second connection subscribed to keyspace/keyevent notifications)\n");
        }
        for (i, b) in self.batches.iter().enumerate() {
            let cmds: Vec<&Cmd> = b.iter().flatten().collect();
            let label = if cmds.len() > 1 {
                format!("write {} ({} commands in one write)", i + 1, cmds.len())
            } else {
                format!("write {}", i + 1)
            };
            s.push_str(&format!("  {label}:\n"));
            for c in cmds {
                s.push_str(&format!("    {}\n", show_cmd(c)));
            }
        }
        s
    }
}

struct Gen<'a> {
    r: Rng,
    fams: &'a Families,
    m: Model,
    shas: &'a [String],
}

impl Gen<'_> {
    fn k(&mut self, class: &[&[u8]]) -> Vec<u8> {
        if std::ptr::eq(class, STR) && self.fams.on("binary") && self.r.chance(10) {
            return self.r.pick(BIN).to_vec();
        }
        self.r.pick(class).to_vec()
    }
    /// A key for a command that does not create it: sometimes of another type.
    fn kr(&mut self, class: &[&[u8]]) -> Vec<u8> {
        if self.r.chance(8) {
            let c = self.r.pick(CLASSES);
            if !std::ptr::eq(c, BIN) || self.fams.on("binary") {
                return self.r.pick(c).to_vec();
            }
        }
        self.k(class)
    }
    fn v(&mut self) -> &'static str {
        self.r.pick(VALS)
    }
    fn num(&mut self, lo: i64, hi: i64) -> String {
        self.r.range(lo, hi).to_string()
    }
    fn id(&mut self) -> String {
        format!("{}-{}", self.r.range(1, 30), self.r.range(0, 3))
    }

    fn item(&mut self, fam: &str) -> Item {
        match fam {
            "strings" => vec![self.strings()],
            "hashes" => vec![self.hashes()],
            "lists" => vec![self.lists()],
            "sets" => vec![self.sets()],
            "zsets" => vec![self.zsets()],
            "streams" => vec![self.streams()],
            "streamgroups" => self.with_group(Self::streamgroups),
            "bitmaps" => vec![self.bitmaps()],
            "hll" => vec![self.hll()],
            "geo" => vec![self.geo()],
            "keyspace" => vec![self.keyspace()],
            "scan" => vec![self.scan(PATS_OK)],
            "globfilter" => vec![self.scan(PATS_GLOB)],
            "randomkey" => self.randomkey(),
            "scripts" => vec![self.scripts()],
            "multi" => vec![self.multi()],
            "watch" => vec![self.watch()],
            "blocking" => self.with_group(Self::blocking),
            "mpop" => vec![self.mpop()],
            "pubsub" => vec![self.pubsub()],
            "publish" => vec![cmd!["PUBLISH", self.r.pick(CHANNELS), self.v()]],
            "pubsubintro" => vec![self.pubsubintro()],
            "tracking" => self.tracking(),
            "arity" => vec![self.arity()],
            "conn" => vec![self.conn()],
            _ => unreachable!("{fam}"),
        }
    }

    /// With `nogroup` off, a command naming group `g1`/`g2` of a stream comes right after
    /// creating that group (so no NOGROUP error, whose text quotes the key, can happen).
    fn with_group(&mut self, f: fn(&mut Self) -> Cmd) -> Item {
        let c = f(self);
        if self.fams.on("nogroup") {
            return vec![c];
        }
        let n = full_name(&c);
        let uses_group = matches!(
            n.as_str(),
            "XGROUP CREATECONSUMER"
                | "XGROUP DELCONSUMER"
                | "XGROUP SETID"
                | "XREADGROUP"
                | "XACK"
                | "XPENDING"
                | "XCLAIM"
                | "XAUTOCLAIM"
                | "XINFO CONSUMERS"
        );
        if !uses_group {
            return vec![c];
        }
        let (k, g) = if n == "XREADGROUP" {
            let s = c.iter().position(|a| upper(a) == "STREAMS").unwrap();
            (c[s + 1].clone(), c[2].clone())
        } else if n.starts_with("XGROUP") || n.starts_with("XINFO") {
            (c[2].clone(), c[3].clone())
        } else {
            (c[1].clone(), c[2].clone())
        };
        vec![
            vec![
                b"XGROUP".to_vec(),
                b"CREATE".to_vec(),
                k,
                g,
                b"0".to_vec(),
                b"MKSTREAM".to_vec(),
            ],
            c,
        ]
    }

    fn strings(&mut self) -> Cmd {
        let k = self.k(STR);
        let v = self.v();
        match self.r.below(24) {
            0 | 1 => cmd!["SET", k, v],
            2 => {
                let opt = self.r.pick(&["NX", "XX", "GET", "KEEPTTL"]);
                cmd!["SET", k, v, opt]
            }
            3 => cmd!["SET", k, v, "EX", "1000"],
            4 | 5 => cmd!["GET", self.kr(STR)],
            6 => cmd!["GETSET", k, v],
            7 => cmd!["GETDEL", self.kr(STR)],
            8 => {
                let opt = self.r.pick(&["PERSIST", "EX"]);
                if opt == "EX" {
                    cmd!["GETEX", self.kr(STR), "EX", "2000"]
                } else {
                    cmd!["GETEX", self.kr(STR), "PERSIST"]
                }
            }
            9 => cmd!["APPEND", k, v],
            10 => cmd!["INCR", k],
            11 => cmd!["INCRBY", k, self.num(-3, 5)],
            12 => cmd!["DECRBY", k, self.num(-3, 5)],
            13 => cmd!["INCRBYFLOAT", k, "1.5"],
            14 => cmd!["STRLEN", self.kr(STR)],
            15 => cmd!["GETRANGE", self.kr(STR), "0", self.num(-2, 4)],
            16 => cmd!["SETRANGE", k, self.num(0, 4), v],
            17 => {
                let k2 = self.k(STR);
                let v2 = self.v();
                cmd!["MSET", k, v, k2, v2]
            }
            18 => cmd!["MGET", self.kr(STR), self.kr(STR), self.kr(STR)],
            19 => {
                let k2 = self.k(STR);
                cmd!["MSETNX", k, v, k2, "m"]
            }
            20 => cmd!["SETNX", k, v],
            21 => cmd!["SETEX", k, "1000", v],
            22 => cmd!["LCS", self.kr(STR), self.kr(STR)],
            _ => cmd!["SUBSTR", self.kr(STR), "0", "1"],
        }
    }

    fn hashes(&mut self) -> Cmd {
        let k = self.k(HASH);
        let f = self.r.pick(FIELDS);
        let v = self.v();
        match self.r.below(17) {
            0 | 1 => cmd!["HSET", k, f, v],
            2 => {
                let f2 = self.r.pick(FIELDS);
                cmd!["HSET", k, f, v, f2, "9"]
            }
            3 => cmd!["HGET", self.kr(HASH), f],
            4 => cmd!["HMGET", self.kr(HASH), f, "f2", "zz"],
            5 => cmd!["HDEL", k, f],
            6 => cmd!["HLEN", self.kr(HASH)],
            7 => cmd!["HEXISTS", self.kr(HASH), f],
            8 => cmd!["HINCRBY", k, f, self.num(-2, 3)],
            9 => cmd!["HINCRBYFLOAT", k, f, "0.5"],
            10 => cmd!["HGETALL", self.kr(HASH)],
            11 => cmd!["HKEYS", self.kr(HASH)],
            12 => cmd!["HVALS", self.kr(HASH)],
            13 => cmd!["HSETNX", k, f, v],
            14 => cmd!["HSTRLEN", self.kr(HASH), f],
            15 => {
                if self.r.chance(50) {
                    cmd!["HRANDFIELD", self.kr(HASH), "100", "WITHVALUES"]
                } else {
                    cmd!["HRANDFIELD", self.kr(HASH), "100"]
                }
            }
            _ => cmd!["HSCAN", self.kr(HASH), "0", "COUNT", "1000"],
        }
    }

    fn lists(&mut self) -> Cmd {
        let k = self.k(LIST);
        let v = self.r.pick(&["1", "2", "3", "10", "5", "a"]);
        match self.r.below(22) {
            0..=2 => {
                let v2 = self.r.pick(&["1", "2", "3", "4"]);
                let c = self.r.pick(&["LPUSH", "RPUSH"]);
                cmd![c, k, v, v2]
            }
            3 => cmd![self.r.pick(&["LPUSHX", "RPUSHX"]), self.kr(LIST), v],
            4 => {
                if self.r.chance(50) {
                    cmd![self.r.pick(&["LPOP", "RPOP"]), self.kr(LIST)]
                } else {
                    cmd![
                        self.r.pick(&["LPOP", "RPOP"]),
                        self.kr(LIST),
                        self.num(0, 3)
                    ]
                }
            }
            5 | 6 => cmd!["LRANGE", self.kr(LIST), "0", "-1"],
            7 => cmd!["LLEN", self.kr(LIST)],
            8 => cmd!["LINDEX", self.kr(LIST), self.num(-2, 3)],
            9 => cmd!["LSET", k, self.num(-1, 2), v],
            10 => cmd!["LINSERT", k, self.r.pick(&["BEFORE", "AFTER"]), "1", v],
            11 => cmd!["LREM", k, self.num(-1, 1), v],
            12 => cmd!["LTRIM", k, "0", self.num(0, 4)],
            13 => cmd!["LPOS", self.kr(LIST), v, "COUNT", "0"],
            14 => {
                let d = self.k(LIST);
                let a = self.r.pick(&["LEFT", "RIGHT"]);
                let b = self.r.pick(&["LEFT", "RIGHT"]);
                cmd!["LMOVE", k, d, a, b]
            }
            15 => cmd!["RPOPLPUSH", k, self.k(LIST)],
            16 => {
                let w = self.r.pick(WEIGHT);
                cmd!["SET", w, self.num(-3, 9)]
            }
            17 => cmd!["SORT", self.kr(LIST)],
            18 => cmd!["SORT", k, "BY", "AppA_w_*", "GET", "#", "GET", "AppA_o_*"],
            19 => cmd![
                "SORT",
                k,
                "ALPHA",
                "DESC",
                "LIMIT",
                "0",
                "2",
                "STORE",
                self.k(LIST)
            ],
            20 => cmd!["SORT_RO", self.kr(LIST), "BY", "AppA_w_*"],
            _ => cmd![
                "SORT",
                k,
                "BY",
                "nosort",
                "GET",
                "AppA_o_*",
                "STORE",
                self.k(LIST)
            ],
        }
    }

    fn sets(&mut self) -> Cmd {
        let k = self.k(SET);
        let m = self.r.pick(MEMBERS);
        match self.r.below(18) {
            0..=2 => {
                let m2 = self.r.pick(MEMBERS);
                cmd!["SADD", k, m, m2]
            }
            3 => cmd!["SREM", k, m],
            4 | 5 => cmd!["SMEMBERS", self.kr(SET)],
            6 => cmd!["SISMEMBER", self.kr(SET), m],
            7 => cmd!["SMISMEMBER", self.kr(SET), m, "zz"],
            8 => cmd!["SCARD", self.kr(SET)],
            9 => cmd![
                self.r.pick(&["SINTER", "SUNION", "SDIFF"]),
                self.kr(SET),
                self.kr(SET)
            ],
            10 => {
                let c = self.r.pick(&["SINTERSTORE", "SUNIONSTORE", "SDIFFSTORE"]);
                cmd![c, k, self.kr(SET), self.kr(SET)]
            }
            11 => cmd!["SINTERCARD", "2", self.kr(SET), self.kr(SET), "LIMIT", "1"],
            12 => cmd!["SMOVE", k, self.k(SET), m],
            13 => cmd!["SPOP", k, "100"],
            14 => cmd!["SRANDMEMBER", self.kr(SET), "100"],
            15 => cmd!["SSCAN", self.kr(SET), "0", "COUNT", "1000"],
            16 => cmd!["SORT", self.kr(SET), "ALPHA"],
            _ => cmd!["SINTERCARD", "2", self.kr(SET), self.kr(SET)],
        }
    }

    fn zsets(&mut self) -> Cmd {
        let k = self.k(ZSET);
        let m = self.r.pick(MEMBERS);
        let s = self.r.pick(SCORES);
        match self.r.below(24) {
            0..=2 => {
                let m2 = self.r.pick(MEMBERS);
                cmd!["ZADD", k, s, m, "3", m2]
            }
            3 => cmd![
                "ZADD",
                k,
                self.r.pick(&["NX", "XX", "GT", "LT", "CH"]),
                s,
                m
            ],
            4 => cmd!["ZADD", k, "INCR", "1", m],
            5 => cmd!["ZREM", k, m],
            6 | 7 => cmd!["ZRANGE", self.kr(ZSET), "0", "-1", "WITHSCORES"],
            8 => cmd![
                "ZRANGE",
                self.kr(ZSET),
                "-inf",
                "+inf",
                "BYSCORE",
                "LIMIT",
                "0",
                "2"
            ],
            9 => cmd!["ZRANGE", self.kr(ZSET), "+", "-", "BYLEX", "REV"],
            10 => cmd!["ZSCORE", self.kr(ZSET), m],
            11 => cmd!["ZMSCORE", self.kr(ZSET), m, "zz"],
            12 => cmd!["ZINCRBY", k, "2", m],
            13 => cmd!["ZCARD", self.kr(ZSET)],
            14 => cmd!["ZCOUNT", self.kr(ZSET), "0", "5"],
            15 => cmd![self.r.pick(&["ZRANK", "ZREVRANK"]), self.kr(ZSET), m],
            16 => cmd![
                self.r.pick(&["ZPOPMIN", "ZPOPMAX"]),
                self.kr(ZSET),
                self.num(1, 2)
            ],
            17 => {
                let c = self.r.pick(&["ZUNIONSTORE", "ZINTERSTORE"]);
                cmd![
                    c,
                    k,
                    "2",
                    self.kr(ZSET),
                    self.kr(ZSET),
                    "WEIGHTS",
                    "1",
                    "2",
                    "AGGREGATE",
                    "MAX"
                ]
            }
            18 => cmd!["ZDIFFSTORE", k, "2", self.kr(ZSET), self.kr(ZSET)],
            19 => {
                let c = self.r.pick(&["ZUNION", "ZINTER", "ZDIFF"]);
                cmd![c, "2", self.kr(ZSET), self.kr(ZSET), "WITHSCORES"]
            }
            20 => cmd!["ZRANGESTORE", k, self.kr(ZSET), "0", "-1"],
            21 => cmd!["ZINTERCARD", "2", self.kr(ZSET), self.kr(ZSET)],
            22 => cmd!["ZSCAN", self.kr(ZSET), "0", "COUNT", "1000"],
            _ => cmd!["ZREMRANGEBYSCORE", k, "-inf", "1"],
        }
    }

    fn streams(&mut self) -> Cmd {
        let k = self.k(STREAM);
        let f = self.r.pick(FIELDS);
        let v = self.v();
        match self.r.below(14) {
            0..=3 => cmd!["XADD", k, self.id(), f, v],
            4 => cmd!["XADD", k, "NOMKSTREAM", "MAXLEN", "3", self.id(), f, v],
            5 => cmd!["XADD", k, format!("{}-*", self.r.range(1, 30)), f, v],
            6 => cmd!["XLEN", self.kr(STREAM)],
            7 => cmd!["XRANGE", self.kr(STREAM), "-", "+", "COUNT", "3"],
            8 => cmd!["XREVRANGE", self.kr(STREAM), "+", "-"],
            9 => cmd!["XDEL", k, self.id()],
            10 => cmd!["XTRIM", k, "MAXLEN", self.num(0, 3)],
            11 => cmd![
                "XREAD",
                "COUNT",
                "2",
                "STREAMS",
                self.kr(STREAM),
                self.kr(STREAM),
                "0",
                self.id()
            ],
            12 => cmd!["XINFO", "STREAM", self.kr(STREAM)],
            _ => cmd!["XSETID", k, self.id()],
        }
    }

    fn streamgroups(&mut self) -> Cmd {
        let k = self.k(STREAM);
        let g = self.r.pick(&["g1", "g2"]);
        let c = self.r.pick(&["c1", "c2"]);
        match self.r.below(13) {
            0 | 1 => cmd![
                "XGROUP",
                "CREATE",
                k,
                g,
                self.r.pick(&["0", "$"]),
                "MKSTREAM"
            ],
            2 => cmd!["XGROUP", "CREATE", k, g, "0"],
            3 => cmd![
                "XGROUP",
                self.r.pick(&["CREATECONSUMER", "DELCONSUMER"]),
                k,
                g,
                c
            ],
            4 => cmd!["XGROUP", "DESTROY", k, g],
            5 => cmd!["XGROUP", "SETID", k, g, "0"],
            6 | 7 => cmd![
                "XREADGROUP",
                "GROUP",
                g,
                c,
                "COUNT",
                "2",
                "STREAMS",
                k,
                self.r.pick(&[">", "0"])
            ],
            8 => cmd!["XACK", k, g, self.id()],
            9 => {
                if self.r.chance(50) {
                    cmd!["XPENDING", k, g]
                } else {
                    cmd!["XPENDING", k, g, "-", "+", "10"]
                }
            }
            10 => cmd!["XCLAIM", k, g, c, "0", self.id(), "JUSTID"],
            11 => cmd!["XAUTOCLAIM", k, g, c, "0", "0-0", "COUNT", "2"],
            _ => {
                if self.r.chance(50) {
                    cmd!["XINFO", "GROUPS", self.kr(STREAM)]
                } else {
                    cmd!["XINFO", "CONSUMERS", k, g]
                }
            }
        }
    }

    fn bitmaps(&mut self) -> Cmd {
        let k = self.k(STR);
        match self.r.below(8) {
            0 | 1 => cmd!["SETBIT", k, self.num(0, 20), self.num(0, 1)],
            2 => cmd!["GETBIT", self.kr(STR), self.num(0, 20)],
            3 => cmd!["BITCOUNT", self.kr(STR), "0", "-1"],
            4 => cmd!["BITPOS", self.kr(STR), self.num(0, 1)],
            5 => {
                let op = self.r.pick(&["AND", "OR", "XOR"]);
                cmd!["BITOP", op, k, self.kr(STR), self.kr(STR)]
            }
            6 => cmd!["BITFIELD", k, "INCRBY", "u8", "0", "3", "GET", "u4", "4"],
            _ => cmd!["BITFIELD_RO", self.kr(STR), "GET", "u8", "0"],
        }
    }

    fn hll(&mut self) -> Cmd {
        let k = self.k(HLL);
        match self.r.below(3) {
            0 => cmd!["PFADD", k, self.r.pick(MEMBERS), self.r.pick(MEMBERS)],
            1 => cmd!["PFCOUNT", self.kr(HLL), self.kr(HLL)],
            _ => cmd!["PFMERGE", k, self.kr(HLL)],
        }
    }

    fn geo(&mut self) -> Cmd {
        let k = self.k(GEO);
        let m = self.r.pick(&["p1", "p2", "p3"]);
        match self.r.below(7) {
            0 | 1 => cmd!["GEOADD", k, self.num(0, 5), self.num(0, 5), m],
            2 => cmd!["GEOPOS", self.kr(GEO), m, "zz"],
            3 => cmd!["GEODIST", self.kr(GEO), "p1", "p2", "km"],
            4 => cmd!["GEOHASH", self.kr(GEO), m],
            5 => cmd![
                "GEOSEARCH",
                self.kr(GEO),
                "FROMLONLAT",
                "0",
                "0",
                "BYRADIUS",
                "2000",
                "km",
                "ASC",
                "WITHDIST"
            ],
            _ => cmd![
                "GEOSEARCHSTORE",
                k,
                self.kr(GEO),
                "FROMLONLAT",
                "0",
                "0",
                "BYRADIUS",
                "2000",
                "km",
                "ASC"
            ],
        }
    }

    fn any_class(&mut self) -> &'static [&'static [u8]] {
        loop {
            let c = self.r.pick(CLASSES);
            if !std::ptr::eq(c, BIN) || self.fams.on("binary") {
                return c;
            }
        }
    }

    fn keyspace(&mut self) -> Cmd {
        let class = self.any_class();
        let k = self.k(class);
        match self.r.below(22) {
            0 => cmd!["DEL", k, self.k(class)],
            1 => cmd!["UNLINK", k],
            2 | 3 => cmd!["EXISTS", k, self.k(class), k],
            4 => cmd!["TOUCH", k],
            5 | 6 => cmd!["TYPE", k],
            7 => cmd!["RENAME", k, self.k(class)],
            8 => cmd!["RENAMENX", k, self.k(class)],
            9 => {
                if self.r.chance(50) {
                    cmd!["COPY", k, self.k(class), "REPLACE"]
                } else {
                    cmd!["COPY", k, self.k(class)]
                }
            }
            10 => cmd!["EXPIRE", k, "1000"],
            11 => cmd!["EXPIRE", k, "2000", self.r.pick(&["NX", "XX", "GT", "LT"])],
            12 => cmd!["PEXPIRE", k, "1000000"],
            13 => cmd!["EXPIREAT", k, "4000000000"],
            14 => cmd!["PERSIST", k],
            15 => cmd![self.r.pick(&["TTL", "PTTL"]), k],
            16 => cmd![self.r.pick(&["EXPIRETIME", "PEXPIRETIME"]), k],
            17 => cmd!["OBJECT", self.r.pick(&["ENCODING", "IDLETIME"]), k],
            18 => cmd!["DBSIZE"],
            19 => cmd!["MOVE", k, "1"],
            20 => cmd!["EXPIRE", k, "0"],
            _ => cmd!["EXISTS", k],
        }
    }

    fn scan(&mut self, pats: &[&str]) -> Cmd {
        let p = self.r.pick(pats);
        match self.r.below(4) {
            0 | 1 => cmd!["KEYS", p],
            2 => cmd!["SCAN", "0", "MATCH", p, "COUNT", "1000"],
            _ => {
                let t = self
                    .r
                    .pick(&["string", "list", "hash", "set", "zset", "stream"]);
                cmd!["SCAN", "0", "COUNT", "1000", "TYPE", t]
            }
        }
    }

    fn randomkey(&mut self) -> Item {
        let mut del: Cmd = cmd!["DEL"];
        for c in CLASSES {
            for k in c.iter() {
                del.push(k.to_vec());
            }
        }
        let class = self.any_class();
        let k = self.k(class);
        vec![del, cmd!["SET", k, "r"], cmd!["RANDOMKEY"]]
    }

    fn scripts(&mut self) -> Cmd {
        let i = self.r.below(SCRIPTS.len());
        let k1 = self.kr(if i == 3 || i == 9 { LIST } else { STR });
        let k2 = self.kr(STR);
        let a = self.v();
        match self.r.below(8) {
            0..=2 => cmd!["EVAL", SCRIPTS[i], "2", k1, k2, a],
            3 => cmd!["EVALSHA", self.shas[i].as_str(), "1", k1, a],
            4 => {
                let i = self.r.pick(RO_SCRIPTS);
                cmd!["EVAL_RO", SCRIPTS[i], "2", k1, k2]
            }
            5 => {
                let i = self.r.pick(RO_SCRIPTS);
                cmd!["EVALSHA_RO", self.shas[i].as_str(), "2", k1, k2]
            }
            6 => {
                let f = self.r.pick(&["dget", "dincr"]);
                cmd!["FCALL", f, "1", self.kr(STR), "2"]
            }
            _ => cmd!["FCALL_RO", "dlen", "1", self.kr(LIST)],
        }
    }

    fn multi(&mut self) -> Cmd {
        if !self.m.in_multi {
            cmd!["MULTI"]
        } else if self.r.chance(75) {
            cmd!["EXEC"]
        } else {
            cmd!["DISCARD"]
        }
    }

    fn watch(&mut self) -> Cmd {
        if self.r.chance(70) {
            let class = self.any_class();
            cmd!["WATCH", self.k(class), self.k(class)]
        } else {
            cmd!["UNWATCH"]
        }
    }

    fn blocking(&mut self) -> Cmd {
        match self.r.below(10) {
            0 | 1 => cmd![
                self.r.pick(&["BLPOP", "BRPOP"]),
                self.kr(LIST),
                self.kr(LIST),
                "0.01"
            ],
            2 => cmd![
                "BLMOVE",
                self.kr(LIST),
                self.k(LIST),
                "LEFT",
                "RIGHT",
                "0.01"
            ],
            3 => cmd!["BRPOPLPUSH", self.kr(LIST), self.k(LIST), "0.01"],
            4 => cmd![
                "BLMPOP",
                "0.01",
                "2",
                self.kr(LIST),
                self.kr(LIST),
                "LEFT",
                "COUNT",
                "2"
            ],
            5 => cmd![
                self.r.pick(&["BZPOPMIN", "BZPOPMAX"]),
                self.kr(ZSET),
                self.kr(ZSET),
                "0.01"
            ],
            6 => cmd![
                "BZMPOP",
                "0.01",
                "1",
                self.kr(ZSET),
                self.r.pick(&["MIN", "MAX"])
            ],
            7 => cmd![
                "XREAD",
                "BLOCK",
                "10",
                "STREAMS",
                self.kr(STREAM),
                self.r.pick(&["$", "0", "5-0"])
            ],
            8 if self.fams.on("nogroup") => {
                cmd![
                    "XREADGROUP",
                    "GROUP",
                    "g1",
                    "c1",
                    "BLOCK",
                    "10",
                    "STREAMS",
                    self.k(STREAM),
                    ">"
                ]
            }
            _ => cmd!["WAIT", "0", "0"],
        }
    }

    fn mpop(&mut self) -> Cmd {
        if self.r.chance(50) {
            let dir = self.r.pick(&["LEFT", "RIGHT"]);
            cmd![
                "LMPOP",
                "2",
                self.kr(LIST),
                self.kr(LIST),
                dir,
                "COUNT",
                self.num(1, 3)
            ]
        } else {
            let dir = self.r.pick(&["MIN", "MAX"]);
            cmd!["ZMPOP", "1", self.kr(ZSET), dir]
        }
    }

    fn pubsub(&mut self) -> Cmd {
        let ch = self.r.pick(CHANNELS);
        let pat = self.r.pick(PATTERNS);
        match self.r.below(8) {
            0 => cmd!["SUBSCRIBE", ch],
            1 => cmd!["UNSUBSCRIBE", ch],
            2 => cmd!["PSUBSCRIBE", pat],
            3 => cmd!["PUNSUBSCRIBE", pat],
            _ => cmd!["PING"],
        }
    }

    fn pubsubintro(&mut self) -> Cmd {
        match self.r.below(5) {
            0 | 1 => {
                let c = self.r.pick(&[
                    "__keyspace@0__:AppA_l1",
                    "__keyspace@0__:AppA_s1",
                    "chan1",
                    "AppA_c1",
                    "zzend",
                ]);
                cmd!["PUBSUB", "NUMSUB", c, "__keyspace@0__:plain_s"]
            }
            2 => {
                let p = self.r.pick(&[
                    "__keyspace@0__:*",
                    "__keyspace@0__:AppA_*",
                    "chan*",
                    "*",
                    "__key*",
                ]);
                cmd!["PUBSUB", "CHANNELS", p]
            }
            3 => cmd!["PUBSUB", "NUMPAT"],
            _ => {
                if self.r.chance(50) {
                    cmd!["PUBSUB", "SHARDCHANNELS"]
                } else {
                    cmd!["PUBSUB", "SHARDNUMSUB", "AppA_c1"]
                }
            }
        }
    }

    fn tracking(&mut self) -> Item {
        if self.m.proto == 3 && self.r.chance(30) {
            return self.bcast_prefixes();
        }
        vec![match self.r.below(7) {
            0 => cmd!["CLIENT", "TRACKING", "ON"],
            1 => cmd!["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "AppA_s"],
            2 => cmd!["CLIENT", "TRACKING", "ON", "NOLOOP"],
            3 => cmd!["CLIENT", "TRACKING", "OFF"],
            4 => cmd!["CLIENT", "TRACKINGINFO"],
            5 => cmd!["GET", self.kr(STR)],
            _ => cmd!["SET", self.k(STR), self.v()],
        }]
    }

    /// `CLIENT TRACKING ON BCAST PREFIX p1 PREFIX p2 [PREFIX p3]`, at least one prefix the rule
    /// rewrites and one it does not (so their order upstream differs from the client's), then
    /// writes under several of them and a `PING` in the same write: Redis sends one
    /// invalidation per prefix, together, walking the prefixes sorted by name.
    fn bcast_prefixes(&mut self) -> Item {
        let mut prefixes = vec![self.r.pick(BCAST_REWRITTEN), self.r.pick(BCAST_PLAIN)];
        if self.r.chance(40) {
            let pool = if self.r.chance(50) {
                BCAST_REWRITTEN
            } else {
                BCAST_PLAIN
            };
            let p = self.r.pick(pool);
            // Sometimes the same prefix twice: refused, like overlapping ones.
            if !prefixes.contains(&p) || self.r.chance(20) {
                prefixes.push(p);
            }
        }
        self.shuffle(&mut prefixes);
        // Redis 7.0 answers an overlap between two prefixes after the first with its error and
        // then `+OK`, and tracks them all: overlaps are kept to those it refuses cleanly.
        let overlap = |a: &str, b: &str| a.starts_with(b) || b.starts_with(a);
        if prefixes.len() == 3
            && overlap(prefixes[1], prefixes[2])
            && !overlap(prefixes[0], prefixes[1])
            && !overlap(prefixes[0], prefixes[2])
        {
            prefixes.swap(0, 1);
        }
        let mut item = Vec::new();
        // Mostly from scratch: prefixes add up while BCAST stays on (and may then overlap),
        // and a client tracking in the default mode cannot switch to BCAST.
        if self.r.chance(80) {
            item.push(cmd!["CLIENT", "TRACKING", "OFF"]);
        }
        let mut on = cmd!["CLIENT", "TRACKING", "ON", "BCAST"];
        for p in &prefixes {
            on.extend([b"PREFIX".to_vec(), p.as_bytes().to_vec()]);
        }
        item.push(on);
        let binary = self.fams.on("binary");
        let mut writes: Vec<Cmd> = Vec::new();
        for p in &prefixes {
            // Stream keys are left out: an explicit id may be refused, an automatic one differs.
            let under: Vec<(&[&[u8]], &[u8])> = CLASSES
                .iter()
                .filter(|c| !std::ptr::eq(**c, STREAM) && (binary || !std::ptr::eq(**c, BIN)))
                .flat_map(|c| c.iter().map(move |k| (*c, *k)))
                .filter(|(_, k)| k.starts_with(p.as_bytes()))
                .collect();
            for _ in 0..1 + usize::from(self.r.chance(25)) {
                let (class, k) = self.r.pick(&under);
                let w = self.write_to(class, k);
                writes.push(w);
            }
        }
        self.shuffle(&mut writes);
        // Sometimes one command writes under two prefixes.
        let sets: Vec<usize> = (0..writes.len())
            .filter(|&i| name_of(&writes[i]) == "SET")
            .collect();
        if sets.len() >= 2 && self.r.chance(40) {
            let b = writes.remove(sets[1]);
            let a = &mut writes[sets[0]];
            *a = vec![
                b"MSET".to_vec(),
                a[1].clone(),
                a[2].clone(),
                b[1].clone(),
                b[2].clone(),
            ];
        }
        item.extend(writes);
        item.push(cmd!["PING"]);
        item
    }

    /// A write that creates or changes `k`, a name of `class`.
    fn write_to(&mut self, class: &[&[u8]], k: &[u8]) -> Cmd {
        let m = self.r.pick(MEMBERS);
        if std::ptr::eq(class, HASH) {
            cmd!["HSET", k, self.r.pick(FIELDS), self.v()]
        } else if std::ptr::eq(class, LIST) {
            cmd!["RPUSH", k, m]
        } else if std::ptr::eq(class, SET) {
            cmd!["SADD", k, m]
        } else if std::ptr::eq(class, ZSET) {
            cmd!["ZADD", k, self.r.pick(SCORES), m]
        } else if std::ptr::eq(class, HLL) {
            cmd!["PFADD", k, m]
        } else if std::ptr::eq(class, GEO) {
            cmd!["GEOADD", k, self.num(0, 5), self.num(0, 5), m]
        } else {
            cmd!["SET", k, self.v()]
        }
    }

    fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.r.below(i + 1));
        }
    }

    fn arity(&mut self) -> Cmd {
        let k = self.kr(STR);
        let l = self.kr(LIST);
        let z = self.kr(ZSET);
        let x = self.kr(STREAM);
        let options: Vec<Cmd> = vec![
            cmd!["GET"],
            cmd!["GET", k, "extra"],
            cmd!["SET", k],
            cmd!["HSET", self.kr(HASH), "f"],
            cmd!["LPUSH", l],
            cmd!["SADD"],
            cmd!["ZADD", z, "1"],
            cmd!["XADD", x],
            cmd!["EVAL", "return 1"],
            cmd!["EVAL", "return 1", "3", k],
            cmd!["EVAL", "return 1", "-1"],
            cmd!["EVAL", "return 1", "x", k],
            cmd!["LMPOP", "1"],
            cmd!["LMPOP", "0", l, "LEFT"],
            cmd!["LMPOP", "3", l, "LEFT"],
            cmd!["ZMPOP", "1", z, "SIDEWAYS"],
            cmd!["BLPOP", l],
            cmd!["DEL"],
            cmd!["EXISTS"],
            cmd!["RENAME", k],
            cmd!["XREAD", "STREAMS", x],
            cmd!["XREAD", "STREAMS", x, self.kr(STREAM), "0"],
            cmd!["XREAD", "COUNT"],
            cmd!["ZUNIONSTORE", z, "2", z],
            cmd!["SINTERCARD", "2", k],
            cmd!["OBJECT"],
            cmd!["OBJECT", "ENCODING"],
            cmd!["MSET", k],
            cmd!["HMGET", k],
            cmd!["COPY", k],
            cmd!["SORT", l, "BY"],
            cmd!["SORT", l, "GET"],
            cmd!["BITOP", "AND"],
            cmd!["GEOADD", k, "1"],
            cmd!["KEYS"],
            cmd!["SCAN"],
            cmd!["SCAN", "0", "MATCH"],
            cmd!["TYPE"],
            cmd!["EXPIRE", k],
            cmd!["FOOBAR", k],
            cmd!["XGROUP", "CREATE", x],
            cmd!["XREADGROUP", "GROUP", "g1", "STREAMS", x, ">"],
            cmd!["FCALL", "dget", "2", k],
            cmd!["MEMORY", "USAGE"],
            cmd!["GETEX", k, "EX"],
            cmd!["SET", k, "v", "EX", "0"],
            cmd!["INCR", k, k],
            cmd!["LRANGE", l, "a", "b"],
            cmd!["WATCH"],
            cmd!["MULTI", "now"],
            cmd!["BZMPOP", "0.01", "1"],
            cmd!["PUBLISH", "chan1"],
        ];
        let i = self.r.below(options.len());
        options[i].clone()
    }

    fn conn(&mut self) -> Cmd {
        match self.r.below(8) {
            0 => cmd!["PING"],
            1 => cmd!["PING", "hi"],
            2 => cmd!["ECHO", self.v()],
            3 => cmd!["SELECT", self.r.pick(&["0", "1"])],
            4 => cmd!["SELECT", "0"],
            5 => cmd!["DBSIZE"],
            6 => cmd!["CLIENT", "SETNAME", "diff"],
            _ => cmd!["CLIENT", "GETNAME"],
        }
    }
}

fn command_families(fams: &Families) -> Vec<&'static str> {
    const MODIFIERS: &[&str] = &[
        "execnames",
        "bigpipes",
        "pinpipe",
        "selectpipe",
        "binary",
        "notify",
        "nogroup",
        "connmulti",
        "trackingswitch",
    ];
    FAMILIES
        .iter()
        .map(|f| f.0)
        .filter(|f| fams.on(f) && !MODIFIERS.contains(f))
        .collect()
}

fn generate(seed: u64, proto: u8, index: u64, fams: &Families, shas: &[String]) -> Sequence {
    let mut g = Gen {
        r: Rng::new(seed ^ (u64::from(proto) << 56) ^ index.wrapping_mul(0x9E37_79B9)),
        fams,
        m: Model::new(proto),
        shas,
    };
    let families = command_families(fams);
    let mut batches: Vec<Vec<Item>> = Vec::new();
    let nbatches = 1 + g.r.below(6);
    for _ in 0..nbatches {
        let size = match g.r.below(100) {
            0..=39 => 1,
            40..=79 => g.r.range(2, 10) as usize,
            80..=94 if fams.on("bigpipes") => g.r.range(10, 50) as usize,
            95..=99 if fams.on("bigpipes") => g.r.range(50, 300) as usize,
            _ => g.r.range(2, 6) as usize,
        };
        let mut cur: Vec<Item> = Vec::new();
        let mut made = 0;
        while made < size && !families.is_empty() {
            let fam = g.r.pick(&families);
            let item = g.item(fam);
            let mut probe = g.m.clone();
            let ok = item.iter().all(|c| {
                let ok = probe.allows(c, fams);
                probe.apply(c);
                ok
            });
            if !ok {
                continue;
            }
            // Tracking switched off in the write of earlier writes whose BCAST invalidations
            // may still be due: see `trackingswitch`.
            let fresh = !fams.on("trackingswitch")
                && g.m.bcast_prefixes > 1
                && item.first() == Some(&cmd!["CLIENT", "TRACKING", "OFF"]);
            g.m = probe;
            made += item.len();
            let alone = (!fams.on("pinpipe") && item.iter().any(pins))
                || (!fams.on("selectpipe") && item.iter().any(|c| name_of(c) == "SELECT"));
            if (alone || fresh) && !cur.is_empty() {
                batches.push(std::mem::take(&mut cur));
            }
            if alone {
                batches.push(vec![item]);
            } else {
                cur.push(item);
            }
        }
        if !cur.is_empty() {
            batches.push(cur);
        }
    }
    Sequence {
        batches,
        subscriber: fams.on("notify") && g.r.chance(60),
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation of what Redis itself leaves unordered or timed.

fn sort_elems(f: &mut Frame) {
    if let Frame::Agg(_, items) = f {
        items.sort();
    }
}

fn sort_pairs(f: &mut Frame) {
    if let Frame::Agg(_, items) = f {
        if items.iter().all(|i| matches!(i, Frame::Agg(..))) {
            items.sort();
            return;
        }
        let mut pairs: Vec<(Frame, Frame)> = items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        pairs.sort();
        *items = pairs.into_iter().flat_map(|(a, b)| [a, b]).collect();
    }
}

fn mask_after(f: &mut Frame, keys: &[&[u8]]) {
    if let Frame::Agg(_, items) = f {
        let mut i = 0;
        while i + 1 < items.len() {
            if items[i].text().is_some_and(|t| keys.contains(&t)) {
                items[i + 1] = Frame::Line(b':', b"<masked>".to_vec());
                i += 2;
                continue;
            }
            i += 1;
        }
        for it in items.iter_mut() {
            mask_after(it, keys);
        }
    }
}

fn normalize(c: &Cmd, f: &mut Frame) {
    let n = name_of(c);
    let sub = c.get(1).map(|a| upper(a)).unwrap_or_default();
    match n.as_str() {
        "KEYS" | "SMEMBERS" | "SINTER" | "SUNION" | "SDIFF" | "HKEYS" | "HVALS" => sort_elems(f),
        "SPOP" | "SRANDMEMBER" if c.len() == 3 => sort_elems(f),
        "HGETALL" => sort_pairs(f),
        "HRANDFIELD" | "ZRANDMEMBER" if c.len() == 4 => sort_pairs(f),
        "HRANDFIELD" | "ZRANDMEMBER" if c.len() == 3 => sort_elems(f),
        "SCAN" | "SSCAN" => {
            if let Frame::Agg(_, items) = f {
                if let Some(x) = items.get_mut(1) {
                    sort_elems(x)
                }
            }
        }
        "HSCAN" | "ZSCAN" => {
            if let Frame::Agg(_, items) = f {
                if let Some(x) = items.get_mut(1) {
                    sort_pairs(x)
                }
            }
        }
        "TTL" | "PTTL" | "EXPIRETIME" | "PEXPIRETIME" => bucket_positive(f),
        "OBJECT" if sub == "IDLETIME" || sub == "FREQ" => {
            if let Frame::Line(b':', l) = f {
                *l = b"<time>".to_vec();
            }
        }
        "XPENDING" if c.len() > 3 => {
            if let Frame::Agg(_, items) = f {
                for e in items.iter_mut() {
                    if let Frame::Agg(_, parts) = e {
                        if parts.len() == 4 {
                            parts[2] = Frame::Line(b':', b"<idle>".to_vec());
                        }
                    }
                }
            }
        }
        "XINFO" if sub == "CONSUMERS" => mask_after(f, &[b"idle", b"inactive"]),
        "HELLO" => mask_after(f, &[b"id"]),
        "PUBSUB" if sub == "CHANNELS" || sub == "SHARDCHANNELS" => sort_elems(f),
        _ => {}
    }
}

fn bucket_positive(f: &mut Frame) {
    if let Frame::Line(b':', l) = f {
        if parse_int(l).is_ok_and(|n| n > 0) {
            *l = b"<positive>".to_vec();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running a sequence against one side.

#[derive(Clone, PartialEq, Eq)]
struct Rec {
    /// Index of the command (flattened) this reply answers or arrived while waiting for;
    /// `usize::MAX` for the setup (HELLO).
    at: usize,
    push: bool,
    bytes: Vec<u8>,
}

impl Rec {
    /// Frame `f`, read while waiting at command `at`.
    fn of(at: usize, f: &Frame) -> Rec {
        Rec {
            at,
            push: f.is_push_message(),
            bytes: f.bytes(),
        }
    }

    /// A read that failed while waiting at command `at`.
    fn failed(at: usize, e: &ReadErr) -> Rec {
        Rec {
            at,
            push: false,
            bytes: e.label().into_bytes(),
        }
    }
}

#[derive(Default)]
struct Transcript {
    main: Vec<Rec>,
    sub: Vec<Vec<u8>>,
}

struct Side {
    label: &'static str,
    /// Where the client connects (private Redis, or rekey).
    client_port: u16,
    /// The Redis behind it, reached directly for FLUSHALL and quiescence checks.
    admin: Conn,
    /// `AUTH` every client connection sends first (ACL mode: a user under the ACL).
    login: Option<Vec<u8>>,
}

impl Side {
    /// A client connection, logged in as the ACL mode's user when there is one.
    fn client(&self) -> Conn {
        let mut c = Conn::open(self.client_port);
        if let Some(auth) = &self.login {
            assert!(c.send(auth));
            let r = c.read_frame(REPLY_LIMIT).map_err(|e| e.label());
            assert_eq!(
                r,
                Ok(Frame::Line(b'+', b"OK".to_vec())),
                "{}: AUTH",
                self.label
            );
        }
        c
    }
}

const SUBSCRIBER_SETUP: &[(&str, &str)] = &[
    ("PSUBSCRIBE", "__keyspace@0__:AppA_*"),
    ("PSUBSCRIBE", "__keyevent@0__:*"),
    ("SUBSCRIBE", "__keyspace@0__:AppA_l1"),
    ("SUBSCRIBE", "__keyspace@0__:plain_s"),
    ("SUBSCRIBE", "chan1"),
    ("SUBSCRIBE", "zzend"),
];

impl Side {
    /// FLUSHALL, then wait until no subscriber, pattern or blocked client of an earlier run is
    /// left (rekey resets pinned connections asynchronously).
    fn reset(&mut self) {
        let r = self.admin.call(&[b"FLUSHALL"]);
        assert_eq!(
            r,
            Frame::Line(b'+', b"OK".to_vec()),
            "{} FLUSHALL",
            self.label
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let numpat = self.admin.call(&[b"PUBSUB", b"NUMPAT"]);
            let chans = self.admin.call(&[b"PUBSUB", b"CHANNELS"]);
            let info = self.admin.call(&[b"INFO", b"clients"]);
            let blocked = info
                .text()
                .map(|t| String::from_utf8_lossy(t).contains("blocked_clients:0\r"))
                .unwrap_or(false);
            let quiet = numpat == Frame::Line(b':', b"0".to_vec())
                && chans == Frame::Agg(b'*', vec![])
                && blocked;
            if quiet || Instant::now() >= deadline {
                if !quiet {
                    eprintln!("warning: {} not quiet after 3 s", self.label);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn run(&mut self, seq: &Sequence, proto: u8) -> Transcript {
        self.reset();
        let mut t = Transcript::default();
        let mut sub = None;
        if seq.subscriber {
            let mut s = self.client();
            let mut bytes = Vec::new();
            if proto == 3 {
                bytes.extend(encode(&cmd!["HELLO", "3"]));
            }
            for (c, ch) in SUBSCRIBER_SETUP {
                bytes.extend(encode(&cmd![c, ch]));
            }
            s.send(&bytes);
            let n = SUBSCRIBER_SETUP.len() + usize::from(proto == 3);
            for i in 0..n {
                match s.read_frame(REPLY_LIMIT) {
                    Ok(mut f) => {
                        if proto == 3 && i == 0 {
                            normalize(&cmd!["HELLO"], &mut f);
                        }
                        t.sub.push(f.bytes())
                    }
                    Err(e) => {
                        t.sub.push(e.label().into_bytes());
                        break;
                    }
                }
            }
            sub = Some(s);
        }
        let mut main = self.client();
        if proto == 3 {
            main.send(&encode(&cmd!["HELLO", "3"]));
            let bytes = match main.read_frame(REPLY_LIMIT) {
                Ok(mut f) => {
                    normalize(&cmd!["HELLO"], &mut f);
                    f.bytes()
                }
                Err(e) => e.label().into_bytes(),
            };
            t.main.push(Rec {
                at: usize::MAX,
                push: false,
                bytes,
            });
        }
        // The connection uses the rule's prefix once first: names in KEYS/SCAN/RANDOMKEY
        // replies go back to the prefix the connection last used (README "Limits").
        main.send(&encode(&cmd!["EXISTS", "AppA_s1"]));
        let _ = main.read_frame(REPLY_LIMIT);

        let mut queued: Option<Vec<Cmd>> = None;
        let mut at = 0;
        'batches: for batch in &seq.batches {
            let cmds: Vec<&Cmd> = batch.iter().flatten().collect();
            let mut bytes = Vec::new();
            for c in &cmds {
                bytes.extend(encode(c));
            }
            if !main.send(&bytes) {
                t.main.push(Rec {
                    at,
                    push: false,
                    bytes: b"<write failed>".to_vec(),
                });
                break;
            }
            for c in cmds {
                loop {
                    match main.read_frame(REPLY_LIMIT) {
                        Ok(f) if f.is_push_message() => t.main.push(Rec {
                            at,
                            push: true,
                            bytes: f.bytes(),
                        }),
                        Ok(mut f) => {
                            let n = name_of(c);
                            if n == "EXEC" {
                                if let (Some(q), Frame::Agg(b'*', items)) = (&queued, &mut f) {
                                    for (qc, item) in q.iter().zip(items.iter_mut()) {
                                        normalize(qc, item);
                                    }
                                }
                            } else {
                                normalize(c, &mut f);
                            }
                            let ok = f == Frame::Line(b'+', b"OK".to_vec());
                            match n.as_str() {
                                "MULTI" if ok && c.len() == 1 => queued = Some(Vec::new()),
                                "EXEC" | "DISCARD" => queued = None,
                                _ => {
                                    if f == Frame::Line(b'+', b"QUEUED".to_vec()) {
                                        if let Some(q) = &mut queued {
                                            q.push(c.clone());
                                        }
                                    }
                                }
                            }
                            t.main.push(Rec {
                                at,
                                push: false,
                                bytes: f.bytes(),
                            });
                            break;
                        }
                        Err(e) => {
                            t.main.push(Rec::failed(at, &e));
                            break 'batches;
                        }
                    }
                }
                at += 1;
            }
        }
        // BCAST invalidations Redis sends after the last replies (those of the `PING` closing
        // a write under several prefixes, say) come with the reply to one more `PING`.
        if proto == 3 && at == flat(seq).len() && has_bcast(seq) {
            main.send(&encode(&cmd!["PING"]));
            loop {
                match main.read_frame(REPLY_LIMIT) {
                    Ok(f) => {
                        let push = f.is_push_message();
                        t.main.push(Rec::of(at, &f));
                        if !push {
                            break;
                        }
                    }
                    Err(e) => {
                        t.main.push(Rec::failed(at, &e));
                        break;
                    }
                }
            }
        }
        if let Some(mut s) = sub {
            // Everything the main connection did is done: a marker published from a fresh
            // connection arrives after all of its notifications.
            let mut ctl = self.client();
            let _ = ctl.call(&[b"PUBLISH", b"zzend", b"end"]);
            loop {
                match s.read_frame(REPLY_LIMIT) {
                    Ok(f) => {
                        let end = matches!(&f, Frame::Agg(_, items)
                            if items.len() == 3 && items[1].text() == Some(b"zzend"));
                        t.sub.push(f.bytes());
                        if end {
                            break;
                        }
                    }
                    Err(e) => {
                        t.sub.push(e.label().into_bytes());
                        break;
                    }
                }
            }
        }
        t
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing the two sides.

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Signature {
    stream: &'static str,
    command: String,
    kind: &'static str,
}

struct Difference {
    sig: Signature,
    detail: String,
}

fn flat(seq: &Sequence) -> Vec<&Cmd> {
    seq.batches.iter().flatten().flatten().collect()
}

fn show_reply(b: &[u8]) -> String {
    esc(b)
}

fn has_bcast(seq: &Sequence) -> bool {
    flat(seq).iter().any(|c| show_cmd(c).contains("BCAST"))
}

fn is_invalidation(r: &Rec) -> bool {
    r.push && r.bytes.starts_with(b">2\r\n$10\r\ninvalidate\r\n")
}

/// The first name an invalidation carries (`None` for a flush's null one).
fn first_invalidated(r: &Rec) -> Option<Vec<u8>> {
    if !is_invalidation(r) {
        return None;
    }
    match parse(&r.bytes).ok().flatten()?.0 {
        Frame::Agg(_, items) => match items.get(1)? {
            Frame::Agg(_, keys) => keys.first()?.text().map(<[u8]>::to_vec),
            _ => None,
        },
        _ => None,
    }
}

/// The runs of BCAST invalidations that came back to back, each push with its first name.
/// Redis sends those of one turn together, after that turn's replies, one per prefix, walking
/// the prefixes sorted by name; prefixes never overlap, so the order of the pushes is that of
/// their first names. Invalidations of the default mode come in the order of the writes: only
/// those that came before the first `CLIENT TRACKING ON` without `BCAST` was answered count.
fn bcast_runs<'t>(seq: &Sequence, t: &'t Transcript) -> Vec<Vec<(Vec<u8>, &'t Rec)>> {
    let until = flat(seq)
        .iter()
        .position(|c| {
            full_name(c) == "CLIENT TRACKING"
                && c.len() > 2
                && upper(&c[2]) == "ON"
                && !c.iter().any(|a| upper(a) == "BCAST")
        })
        .unwrap_or(usize::MAX);
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for r in t.main.iter().map(Some).chain([None]) {
        match r
            .filter(|r| r.at <= until)
            .and_then(|r| Some((first_invalidated(r)?, r)))
        {
            Some(x) => run.push(x),
            None if run.len() > 1 => runs.push(std::mem::take(&mut run)),
            None => run.clear(),
        }
    }
    runs
}

/// The first run of BCAST invalidations not in the order of the client's names.
fn misordered_bcast_run(seq: &Sequence, t: &Transcript) -> Option<Vec<Vec<u8>>> {
    bcast_runs(seq, t)
        .into_iter()
        .find(|run| run.windows(2).any(|w| w[0].0 >= w[1].0))
        .map(|run| run.into_iter().map(|(_, r)| r.bytes.clone()).collect())
}

/// Whether a run holds names of a rewritten prefix and of one left alone, whose order upstream
/// is not the client's.
fn crosses_rule(run: &[(Vec<u8>, &Rec)]) -> bool {
    let rewritten = |k: &[u8]| k.starts_with(b"AppA_");
    run.iter().any(|(k, _)| rewritten(k)) && run.iter().any(|(k, _)| !rewritten(k))
}

/// Client-tracking invalidations, and the other frames in order. Redis sends an
/// invalidation when its event loop gets to it (BCAST ones once per turn, after every command
/// read in that turn), so where it falls among the replies depends on how the client's bytes
/// were split into reads: invalidations are compared as a multiset, apart from the replies.
fn split_invalidations(t: &Transcript) -> (Transcript, Vec<Vec<u8>>) {
    let mut invalidations: Vec<Vec<u8>> = t
        .main
        .iter()
        .filter(|r| is_invalidation(r))
        .map(|r| r.bytes.clone())
        .collect();
    invalidations.sort();
    let main = t
        .main
        .iter()
        .filter(|r| !is_invalidation(r))
        .cloned()
        .collect();
    (
        Transcript {
            main,
            sub: t.sub.clone(),
        },
        invalidations,
    )
}

fn compare(seq: &Sequence, p: &Transcript, r: &Transcript) -> Option<Difference> {
    let bcast = has_bcast(seq);
    // Which BCAST invalidations come together depends on the reads too, but those that do
    // come in the order of the client's prefixes, on both sides.
    if bcast {
        let (p_run, r_run) = (misordered_bcast_run(seq, p), misordered_bcast_run(seq, r));
        if p_run.is_some() != r_run.is_some() {
            let show = |run: Option<Vec<Vec<u8>>>| match run {
                None => "<every run in order>".to_string(),
                Some(run) => run
                    .iter()
                    .map(|b| show_reply(b))
                    .collect::<Vec<_>>()
                    .join(" | "),
            };
            return Some(Difference {
                sig: Signature {
                    stream: "main",
                    command: "CLIENT TRACKING".into(),
                    kind: "invalidation order",
                },
                detail: format!(
                    "BCAST invalidations that came together are not in the order of the client's prefixes\n    redis: {}\n    rekey: {}\n",
                    show(p_run),
                    show(r_run)
                ),
            });
        }
    }
    let (p, p_inv) = split_invalidations(p);
    let (r, r_inv) = split_invalidations(r);
    let (p, r) = (&p, &r);
    // BCAST invalidations go out once per event-loop turn, and whether Redis sends one at
    // all depends on how the commands were split into reads (seen with direct Redis alone):
    // with BCAST only their names are checked (and the order above), never their count.
    let leaked = |inv: &[Vec<u8>]| inv.iter().any(|b| b.windows(7).any(|w| w == b"shared_"));
    if bcast && leaked(&r_inv) {
        return Some(Difference {
            sig: Signature {
                stream: "main",
                command: "CLIENT TRACKING".into(),
                kind: "invalidation names",
            },
            detail: format!(
                "an invalidation carries an upstream name\n    rekey: {}\n",
                r_inv
                    .iter()
                    .map(|b| show_reply(b))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        });
    }
    if !bcast && p_inv != r_inv {
        return Some(Difference {
            sig: Signature {
                stream: "main",
                command: "CLIENT TRACKING".into(),
                kind: "invalidations",
            },
            detail: format!(
                "tracking invalidations differ\n    redis: {}\n    rekey: {}\n",
                p_inv
                    .iter()
                    .map(|b| show_reply(b))
                    .collect::<Vec<_>>()
                    .join(" | "),
                r_inv
                    .iter()
                    .map(|b| show_reply(b))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        });
    }
    let cmds = flat(seq);
    let describe = |at: usize| -> (String, String) {
        if at == usize::MAX {
            ("HELLO".into(), "HELLO 3".into())
        } else if at == cmds.len() {
            ("PING".into(), "PING (after the sequence)".into())
        } else if let Some(c) = cmds.get(at) {
            (full_name(c), show_cmd(c))
        } else {
            ("?".into(), "?".into())
        }
    };
    let n = p.main.len().max(r.main.len());
    for i in 0..n {
        let (a, b) = (p.main.get(i), r.main.get(i));
        if a == b {
            continue;
        }
        let at = a.or(b).map(|x| x.at).unwrap();
        let (name, shown) = describe(at);
        let kind = match (a, b) {
            (Some(a), Some(b)) if a.push != b.push => "push vs reply",
            (Some(a), _) if a.push => "push",
            (_, Some(b)) if b.push => "push",
            (Some(_), None) | (None, Some(_)) => "missing",
            _ => "reply",
        };
        let fmt = |x: Option<&Rec>| match x {
            None => "<nothing>".to_string(),
            Some(x) => format!(
                "{}{}",
                if x.push { "(push) " } else { "" },
                show_reply(&x.bytes)
            ),
        };
        let mut detail = format!(
            "main connection, frame {i}, while waiting for the reply to: {shown}\n    redis: {}\n    rekey: {}\n",
            fmt(a),
            fmt(b)
        );
        // The rest, for context.
        let ctx = |t: &Transcript| {
            t.main
                .iter()
                .skip(i + 1)
                .take(4)
                .map(|x| show_reply(&x.bytes))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        detail.push_str(&format!(
            "    (next frames) redis: {}\n                  rekey: {}\n",
            ctx(p),
            ctx(r)
        ));
        return Some(Difference {
            sig: Signature {
                stream: "main",
                command: name,
                kind,
            },
            detail,
        });
    }
    let n = p.sub.len().max(r.sub.len());
    for i in 0..n {
        let (a, b) = (p.sub.get(i), r.sub.get(i));
        if a == b {
            continue;
        }
        let fmt = |x: Option<&Vec<u8>>| x.map(|x| show_reply(x)).unwrap_or("<nothing>".into());
        let what = a
            .or(b)
            .and_then(|x| parse(x).ok().flatten())
            .and_then(|(f, _)| match f {
                Frame::Agg(_, items) => items.first().and_then(|x| x.text().map(upper)),
                _ => None,
            })
            .unwrap_or_else(|| "?".into());
        return Some(Difference {
            sig: Signature {
                stream: "subscriber",
                command: what,
                kind: "message",
            },
            detail: format!(
                "subscriber connection, frame {i}\n    redis: {}\n    rekey: {}\n",
                fmt(a),
                fmt(b)
            ),
        });
    }
    None
}

struct Harness {
    private: Side,
    proxied: Side,
    fams: Families,
    shas: Vec<String>,
    runs: usize,
    /// Runs of BCAST invalidations through rekey that cross the rule (see [`crosses_rule`]).
    crossing_runs: usize,
}

impl Harness {
    fn run_pair(&mut self, seq: &Sequence, proto: u8) -> Option<Difference> {
        self.runs += 1;
        let (p, r) = std::thread::scope(|s| {
            let private = &mut self.private;
            let proxied = &mut self.proxied;
            let a = s.spawn(move || private.run(seq, proto));
            let b = s.spawn(move || proxied.run(seq, proto));
            (a.join().unwrap(), b.join().unwrap())
        });
        self.crossing_runs += bcast_runs(seq, &r)
            .iter()
            .filter(|run| crosses_rule(run))
            .count();
        compare(seq, &p, &r)
    }

    /// Delta debugging: drop chunks of commands (then single ones), keeping only candidates
    /// that still show a difference of the same signature; then try without pipelining and
    /// without the subscriber.
    fn shrink(&mut self, seq: &Sequence, proto: u8, sig: &Signature) -> Sequence {
        let started = Instant::now();
        let budget = Duration::from_secs(90);
        let start_runs = self.runs;
        let fails = |h: &mut Harness, s: &Sequence| -> bool {
            if !s.valid(proto, &h.fams) || s.batches.is_empty() {
                return false;
            }
            matches!(h.run_pair(s, proto), Some(d) if d.sig == *sig)
        };
        let mut best = seq.clone();
        let items_of = |s: &Sequence| -> Vec<(usize, Item)> {
            s.batches
                .iter()
                .enumerate()
                .flat_map(|(b, items)| items.iter().map(move |i| (b, i.clone())))
                .collect()
        };
        let build = |items: &[(usize, Item)], subscriber: bool| -> Sequence {
            let mut batches: Vec<Vec<Item>> = Vec::new();
            let mut last = usize::MAX;
            for (b, it) in items {
                if *b != last || batches.is_empty() {
                    batches.push(Vec::new());
                    last = *b;
                }
                batches.last_mut().unwrap().push(it.clone());
            }
            Sequence {
                batches,
                subscriber,
            }
        };
        let mut items = items_of(&best);
        let mut n = 2usize;
        while items.len() > 1 && started.elapsed() < budget && self.runs - start_runs < 600 {
            let chunk = items.len().div_ceil(n);
            let mut reduced = false;
            let mut startpos = 0;
            while startpos < items.len() {
                let mut cand = items.clone();
                cand.drain(startpos..(startpos + chunk).min(items.len()));
                let s = build(&cand, best.subscriber);
                if fails(self, &s) {
                    items = cand;
                    best = s;
                    reduced = true;
                    break;
                }
                startpos += chunk;
            }
            if reduced {
                n = (n - 1).max(2);
            } else if n >= items.len() {
                break;
            } else {
                n = (n * 2).min(items.len());
            }
        }
        // Without the subscriber connection.
        if best.subscriber {
            let s = build(&items, false);
            if fails(self, &s) {
                best = s;
            }
        }
        // Each command in its own write.
        let singles: Vec<(usize, Item)> = items
            .iter()
            .enumerate()
            .map(|(i, (_, it))| (i, it.clone()))
            .collect();
        let s = build(&singles, best.subscriber);
        if best.batches.len() != s.batches.len() && fails(self, &s) {
            best = s;
        }
        best
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn load_scripts(c: &mut Conn) -> Vec<String> {
    let shas: Vec<String> = SCRIPTS
        .iter()
        .map(|s| match c.call(&[b"SCRIPT", b"LOAD", s.as_bytes()]) {
            Frame::Blob(_, sha) => String::from_utf8(sha).unwrap(),
            other => panic!("SCRIPT LOAD: {other:?}"),
        })
        .collect();
    let r = c.call(&[b"FUNCTION", b"LOAD", b"REPLACE", FUNCTIONS.as_bytes()]);
    assert!(matches!(r, Frame::Blob(..)), "FUNCTION LOAD: {r:?}");
    let r = c.call(&[b"CONFIG", b"SET", b"notify-keyspace-events", b"KEA"]);
    assert_eq!(r, Frame::Line(b'+', b"OK".to_vec()));
    // Blocking timeouts fire on the server's event-loop tick: 2 ms instead of 100 ms.
    let r = c.call(&[b"CONFIG", b"SET", b"hz", b"500"]);
    assert_eq!(r, Frame::Line(b'+', b"OK".to_vec()));
    shas
}

#[test]
fn replies_through_rekey_match_a_private_redis() {
    differential(None, 10.0);
}

/// The ACL under test in ACL mode: commands, read-only and read-write key patterns, and
/// channels (some of the generator's allowed, some not). No command a script calls is
/// refused: what a script calls, only Redis sees (docs/access-control.md).
const DIFF_ACL: &str = "+@all -@dangerous -hdel -rpush -xadd -sadd ~AppA_* %R~plain_* &chan1 &AppA_c* &zzend &__keyspace@0__:* &__keyspace@0__:AppA_* &__keyevent@0__:*";

/// The same sequences as one user under [`DIFF_ACL`] on both sides: the private Redis's ACL
/// user and rekey's `[[users]]` entry with the same `acl` (checked on the client's names,
/// before the rule) must refuse and allow alike, byte for byte.
#[test]
fn replies_under_an_acl_match_a_private_redis() {
    differential(Some(DIFF_ACL), 4.0);
}

/// Runs generated sequences through rekey and against a private Redis and compares them
/// (`REKEY_DIFF_*` to steer it); with `acl`, every client logs in as a user under it.
fn differential(acl: Option<&str>, default_seconds: f64) {
    let seed: u64 = match env("REKEY_DIFF_SEED").as_deref() {
        None => 19,
        Some("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
        Some(s) => s.parse().expect("REKEY_DIFF_SEED is a number"),
    };
    let commands: Option<usize> = env("REKEY_DIFF_COMMANDS").map(|s| s.parse().expect("number"));
    let seconds: f64 =
        env("REKEY_DIFF_SECONDS").map_or(default_seconds, |s| s.parse().expect("number"));
    let only_seq: Option<u64> = env("REKEY_DIFF_SEQ").map(|s| s.parse().expect("number"));
    let protos: Vec<u8> = match env("REKEY_DIFF_PROTO").as_deref() {
        Some("2") => vec![2],
        Some("3") => vec![3],
        _ => vec![2, 3],
    };
    let keep_going = env("REKEY_DIFF_KEEP_GOING").is_some_and(|v| v != "0");
    let verbose = env("REKEY_DIFF_VERBOSE").is_some_and(|v| v != "0");
    // Under the ACL, refused deletes leave several keys about: which one RANDOMKEY picks is
    // Redis's chance, not rekey's.
    let default_fams = if acl.is_some() { "-randomkey" } else { "" };
    let fams = Families::from_spec(&env("REKEY_DIFF_FAMILIES").unwrap_or(default_fams.into()));

    let private_redis = RedisServer::start();
    let upstream = RedisServer::start();
    let rekey = match acl {
        None => Rekey::start(&upstream, RULE),
        Some(acl) => Rekey::start(
            &upstream,
            &format!("{RULE}[[users]]\nname = \"diff\"\npassword = \"pw\"\nacl = \"{acl}\"\n"),
        ),
    };
    let mut private_admin = Conn::open(private_redis.port);
    let mut upstream_admin = Conn::open(upstream.port);
    let shas = load_scripts(&mut private_admin);
    assert_eq!(load_scripts(&mut upstream_admin), shas);
    if let Some(acl) = acl {
        let mut setuser: Vec<&[u8]> = vec![b"ACL", b"SETUSER", b"diff", b"on", b">pw"];
        setuser.extend(acl.split(' ').map(str::as_bytes));
        assert_eq!(
            private_admin.call(&setuser),
            Frame::Line(b'+', b"OK".to_vec())
        );
    }
    let login = acl.map(|_| encode(&cmd!["AUTH", "diff", "pw"]));

    let mut h = Harness {
        private: Side {
            label: "private redis",
            client_port: private_redis.port,
            admin: private_admin,
            login: login.clone(),
        },
        proxied: Side {
            label: "rekey",
            client_port: rekey.port,
            admin: upstream_admin,
            login,
        },
        fams: fams.clone(),
        shas,
        runs: 0,
        crossing_runs: 0,
    };
    eprintln!(
        "differential: seed {seed}, families {}",
        fams.0.iter().copied().collect::<Vec<_>>().join(",")
    );
    let mut found: BTreeMap<Signature, String> = BTreeMap::new();
    let mut summary = Vec::new();
    'protos: for &proto in &protos {
        let started = Instant::now();
        let crossing_before = h.crossing_runs;
        let mut done = 0usize;
        let mut index = only_seq.unwrap_or(0);
        let mut sequences = 0;
        loop {
            match (commands, only_seq) {
                (_, Some(_)) if sequences == 1 => break,
                (Some(n), None) if done >= n => break,
                (None, None) if started.elapsed().as_secs_f64() >= seconds => break,
                _ => {}
            }
            let seq = generate(seed, proto, index, &fams, &h.shas);
            if verbose {
                eprintln!("RESP{proto} sequence {index}:\n{}", seq.show());
            }
            if let Some(d) = h.run_pair(&seq, proto) {
                let repro = (0..2).filter(|_| h.run_pair(&seq, proto).is_some()).count();
                if repro < 2 {
                    eprintln!(
                        "\n=== NOT REPRODUCIBLE ({repro}/2 reruns) {:?} (seed {seed}, RESP{proto}, sequence {index}):\n{}{}",
                        d.sig,
                        seq.show(),
                        d.detail
                    );
                    found
                        .entry(d.sig.clone())
                        .or_insert_with(|| format!("not reproducible:\n{}", d.detail));
                } else if !found.contains_key(&d.sig) {
                    eprintln!(
                        "\n=== difference {:?} (seed {seed}, RESP{proto}, sequence {index}); shrinking {} commands…",
                        d.sig,
                        seq.commands()
                    );
                    let min = h.shrink(&seq, proto, &d.sig);
                    let again = h.run_pair(&min, proto);
                    let repro = (0..2).filter(|_| h.run_pair(&min, proto).is_some()).count();
                    let detail = again.map(|d| d.detail).unwrap_or_else(|| d.detail.clone());
                    let report = format!(
                        "seed {seed}, RESP{proto}, sequence {index} (replay: REKEY_DIFF_SEED={seed} REKEY_DIFF_PROTO={proto} REKEY_DIFF_SEQ={index})\n\
                         minimal sequence ({} commands, reproduced {}/2 more times):\n{}{}",
                        min.commands(),
                        repro,
                        min.show(),
                        detail
                    );
                    eprintln!("{report}");
                    found.insert(d.sig.clone(), report);
                }
                if !keep_going {
                    break 'protos;
                }
            }
            done += seq.commands();
            sequences += 1;
            index += 1;
        }
        let line = format!(
            "RESP{proto}: {done} commands in {sequences} sequences ({:.1} s), seed {seed}, \
             {} runs of BCAST invalidations across the rule",
            started.elapsed().as_secs_f64(),
            h.crossing_runs - crossing_before
        );
        eprintln!("{line}");
        summary.push(line);
    }
    eprintln!("differential summary: {}", summary.join("; "));
    if !found.is_empty() {
        eprintln!("\n{} difference class(es):", found.len());
        for (sig, report) in &found {
            eprintln!("--- {sig:?}\n{report}");
        }
        panic!(
            "{} difference class(es) between rekey and a private Redis (see above)",
            found.len()
        );
    }
}
