//! A client of rekey sees exactly what its own Redis would show it: each test sends the same
//! bytes, in one write, to a private redis-server holding the data under the client's own
//! names, and through rekey (rule `^AppA_` → `shared_`) to another, and requires the same
//! reply bytes in the same order, in RESP2 and RESP3. One regression test per difference
//! found (issue #19); the randomized differential test is `tests/differential.rs`.

use crate::common::{encode, RedisServer, Rekey};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const RULE: &str = "[[rules]]\nname = \"t\"\nmatch = '^AppA_'\nreplace = 'shared_'\n";
const CHANNEL_RULE: &str =
    "[[rules]]\nname = \"c\"\nmatch = '^AppA_c'\nreplace = 'shared_c'\nchannels = true\n";

/// A private Redis and rekey in front of another one.
struct Pair {
    private: RedisServer,
    upstream: RedisServer,
    rekey: Rekey,
}

impl Pair {
    fn start(rules: &str) -> Pair {
        let private = RedisServer::start();
        let upstream = RedisServer::start();
        let rekey = Rekey::start(&upstream, rules);
        Pair {
            private,
            upstream,
            rekey,
        }
    }

    /// Sends `cmds` (after `HELLO 3` for RESP3) in one write to both and compares the first
    /// `n` reply frames. Arrays listed in `unordered` (reply indexes) are compared as sets.
    fn same(&self, proto: u8, cmds: &[&[&str]], n: usize, unordered: &[usize]) {
        self.same_steps(proto, &[(cmds, n)], unordered)
    }

    /// [`Pair::same`] in steps: each step's commands in one write, then its `n` frames read
    /// before the next step is sent.
    fn same_steps(&self, proto: u8, steps: &[(&[&[&str]], usize)], unordered: &[usize]) {
        for p in [&self.private, &self.upstream] {
            let _: () = redis::cmd("FLUSHALL").query(&mut p.direct()).unwrap();
        }
        let cmds: Vec<&[&str]> = steps.iter().flat_map(|(c, _)| c.iter().copied()).collect();
        let direct = exchange(self.private.port, proto, steps);
        let proxied = exchange(self.rekey.port, proto, steps);
        for (i, (d, p)) in direct.iter().zip(&proxied).enumerate() {
            let (d, p) = if unordered.contains(&i) {
                (sorted(d), sorted(p))
            } else {
                (d.clone(), p.clone())
            };
            assert_eq!(
                String::from_utf8_lossy(&p),
                String::from_utf8_lossy(&d),
                "reply {i} to {cmds:?} in RESP{proto} (left: rekey, right: Redis)"
            );
        }
        assert_eq!(proxied.len(), direct.len());
    }
}

fn exchange(port: u16, proto: u8, steps: &[(&[&[&str]], usize)]) -> Vec<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = Frames::default();
    if proto == 3 {
        s.write_all(&encode(&["HELLO", "3"])).unwrap();
        r.frame(&mut s);
    }
    let mut out = Vec::new();
    for (cmds, n) in steps {
        let bytes: Vec<u8> = cmds.iter().flat_map(|c| encode(c)).collect();
        s.write_all(&bytes).unwrap();
        out.extend((0..*n).map(|_| r.frame(&mut s)));
    }
    out
}

/// Reads whole RESP2/RESP3 frames, as bytes.
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    fn fill(&mut self, s: &mut TcpStream) {
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).expect("a reply in time");
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    fn line(&mut self, s: &mut TcpStream) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.buf.drain(..i + 2).collect();
            }
            self.fill(s);
        }
    }

    fn frame(&mut self, s: &mut TcpStream) -> Vec<u8> {
        let mut out = self.line(s);
        let n: i64 = std::str::from_utf8(&out[1..out.len() - 2])
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        match out[0] {
            b'$' | b'=' | b'!' if n >= 0 => {
                let n = n as usize + 2;
                while self.buf.len() < n {
                    self.fill(s);
                }
                out.extend(self.buf.drain(..n));
            }
            b'*' | b'>' | b'~' => (0..n.max(0)).for_each(|_| out.extend(self.frame(s))),
            b'%' | b'|' => (0..2 * n.max(0)).for_each(|_| out.extend(self.frame(s))),
            _ => {}
        }
        out
    }
}

/// An array frame with its element lines sorted (for replies Redis leaves unordered; the
/// elements compared here are single-line-headed bulk strings).
fn sorted(frame: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(frame);
    let mut lines: Vec<&str> = text.split("\r\n").collect();
    lines.sort();
    lines.join("\r\n").into_bytes()
}

#[test]
fn pipelines_keep_their_order_around_pinning_commands() {
    for rules in ["", RULE] {
        let pair = Pair::start(rules);
        for proto in [2, 3] {
            pair.same(
                proto,
                &[
                    &["GET", "AppA_k"],
                    &["MULTI"],
                    &["SET", "AppA_k", "3"],
                    &["EXEC"],
                ],
                4,
                &[],
            );
            pair.same(
                proto,
                &[
                    &["SET", "AppA_k", "1"],
                    &["WATCH", "AppA_k"],
                    &["GET", "AppA_k"],
                    &["UNWATCH"],
                ],
                4,
                &[],
            );
            pair.same(
                proto,
                &[
                    &["SET", "AppA_k", "1"],
                    &["BLPOP", "nol", "0.01"],
                    &["GET", "AppA_k"],
                ],
                3,
                &[],
            );
            // After the transaction, nothing on the shared connection overtakes EXEC.
            pair.same(
                proto,
                &[
                    &["MULTI"],
                    &["INCR", "AppA_n"],
                    &["EXEC"],
                    &["GET", "AppA_n"],
                    &["INCR", "AppA_n"],
                    &["GET", "AppA_n"],
                ],
                6,
                &[],
            );
            pair.same(
                proto,
                &[
                    &["SET", "AppA_k", "1"],
                    &["CLIENT", "TRACKING", "ON"],
                    &["SET", "AppA_k", "2"],
                    &["CLIENT", "TRACKING", "OFF"],
                    &["GET", "AppA_k"],
                ],
                5,
                &[],
            );
        }
    }
}

#[test]
fn names_are_mapped_back_after_tracking_and_subscriptions() {
    let pair = Pair::start(RULE);
    for proto in [2, 3] {
        pair.same(
            proto,
            &[
                &["SET", "AppA_k", "1"],
                &["CLIENT", "TRACKING", "ON"],
                &["KEYS", "AppA_*"],
                &["SCAN", "0", "MATCH", "AppA_*"],
                &["RPUSH", "AppA_l", "a", "b"],
                &["LMPOP", "1", "AppA_l", "LEFT"],
                &["BLPOP", "AppA_l", "0"],
                &["CLIENT", "TRACKING", "OFF"],
                &["KEYS", "AppA_*"],
            ],
            9,
            &[],
        );
        // RESP2: after the last UNSUBSCRIBE (pipelined right behind it).
        pair.same(
            proto,
            &[
                &["SET", "AppA_k", "1"],
                &["SUBSCRIBE", "x", "y"],
                &["UNSUBSCRIBE", "x"],
                &["UNSUBSCRIBE"],
                &["KEYS", "AppA_*"],
                &["XADD", "AppA_x", "1-1", "f", "v"],
                &["XREAD", "STREAMS", "AppA_x", "0"],
            ],
            8,
            &[],
        );
    }
    // RESP3: while still subscribed.
    pair.same(
        3,
        &[
            &["SET", "AppA_k", "1"],
            &["SUBSCRIBE", "x"],
            &["KEYS", "AppA_*"],
            &["ZADD", "AppA_z", "1", "m"],
            &["ZMPOP", "1", "AppA_z", "MIN"],
            &["PING"],
            &["UNSUBSCRIBE"],
            &["RANDOMKEY"],
        ],
        8,
        &[],
    );
}

#[test]
fn replies_inside_exec_are_mapped_back() {
    let pair = Pair::start(RULE);
    for proto in [2, 3] {
        pair.same(
            proto,
            &[
                &["RPUSH", "AppA_l", "a", "b", "c"],
                &["XADD", "AppA_x", "1-1", "f", "v"],
                &["MULTI"],
                &["KEYS", "AppA_l*"],
                &["LMPOP", "1", "AppA_l", "LEFT"],
                &["BLPOP", "AppA_l", "0.01"],
                &["SCAN", "0", "MATCH", "AppA_x*"],
                &["XREAD", "STREAMS", "AppA_x", "0"],
                &["ZADD", "AppA_z", "1", "m"],
                &["ZMPOP", "1", "AppA_z", "MIN"],
                &["XPENDING", "AppA_x", "g1"],
                &["CLIENT", "GETNAME"],
                &["PING"],
                &["EXEC"],
            ],
            14,
            &[],
        );
        pair.same(
            proto,
            &[
                &["SET", "AppA_k", "1"],
                &["MULTI"],
                &["RANDOMKEY"],
                &["EXEC"],
            ],
            4,
            &[],
        );
    }
}

#[test]
fn errors_quoting_a_key_carry_the_clients_name() {
    let pair = Pair::start(RULE);
    for proto in [2, 3] {
        pair.same(
            proto,
            &[
                &["XADD", "AppA_x2", "1-1", "f", "v"],
                &["XPENDING", "AppA_x2", "g1"],
                &["XREADGROUP", "GROUP", "g1", "c", "STREAMS", "AppA_x2", ">"],
                &["XCLAIM", "AppA_x2", "g1", "c", "0", "1-1"],
                &["XAUTOCLAIM", "AppA_x2", "g1", "c", "0", "0"],
                &["XGROUP", "CREATECONSUMER", "AppA_x2", "g1", "c"],
                &["XGROUP", "DELCONSUMER", "AppA_x2", "g1", "c"],
                &["XINFO", "CONSUMERS", "AppA_x2", "g1"],
                &["XGROUP", "SETID", "AppA_x2", "g1", "0"],
            ],
            9,
            &[],
        );
    }
}

#[test]
fn pubsub_replies_show_the_clients_channel_names() {
    let pair = Pair::start(&format!("{CHANNEL_RULE}{RULE}"));
    for proto in [2, 3] {
        let listener = std::thread::spawn({
            let (private, proxied) = (pair.private.port, pair.rekey.port);
            move || {
                // Subscribers that stay while the other connection asks PUBSUB.
                let mut subs = Vec::new();
                for port in [private, proxied] {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut r = Frames::default();
                    s.write_all(&encode(&["SUBSCRIBE", "__keyspace@0__:AppA_l1", "AppA_c1"]))
                        .unwrap();
                    s.write_all(&encode(&["SSUBSCRIBE", "AppA_c2"])).unwrap();
                    for _ in 0..3 {
                        r.frame(&mut s);
                    }
                    subs.push(s);
                }
                subs
            }
        });
        let _subs = listener.join().unwrap();
        pair.same(
            proto,
            &[
                &[
                    "PUBSUB",
                    "NUMSUB",
                    "__keyspace@0__:AppA_l1",
                    "AppA_c1",
                    "other",
                ],
                &["PUBSUB", "CHANNELS", "__keyspace@0__:*"],
                &["PUBSUB", "CHANNELS", "AppA_c*"],
                &["PUBSUB", "CHANNELS", "sh*"],
                &["PUBSUB", "SHARDNUMSUB", "AppA_c2"],
                &["PUBSUB", "SHARDCHANNELS"],
            ],
            6,
            &[2],
        );
    }
}

#[test]
fn tracking_bcast_prefixes_are_rewritten_and_invalidations_mapped_back() {
    let pair = Pair::start(RULE);
    // Redis sends a BCAST invalidation right behind the reply to the write.
    pair.same_steps(
        3,
        &[
            (
                &[&[
                    "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "AppA_", "PREFIX", "x",
                ]],
                1,
            ),
            (&[&["SET", "AppA_s2", "1"]], 2),
            (&[&["SET", "other", "1"]], 1),
            (&[&["PING"]], 1),
        ],
        &[],
    );
}

#[test]
fn bcast_invalidations_of_one_write_come_in_the_clients_prefix_order() {
    let pair = Pair::start(RULE);
    // Upstream the prefixes are `shared_s` and `other_`, so Redis sends `other_`'s push
    // first; the client's own names (`AppA_s` < `other_`) give the order it must see.
    for _ in 0..2 {
        pair.same_steps(
            3,
            &[
                (
                    &[&[
                        "CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "AppA_s", "PREFIX", "other_",
                    ]],
                    1,
                ),
                (
                    &[
                        &["SET", "AppA_s1", "1"],
                        &["SET", "other_s1", "1"],
                        &["PING"],
                    ],
                    5,
                ),
                (&[&["PING"]], 1),
                // The prefixes are listed in the order of the client's names too.
                (&[&["CLIENT", "TRACKINGINFO"]], 1),
            ],
            &[],
        );
    }
}

#[test]
fn mapped_back_names_match_the_clients_own_pattern() {
    let pair = Pair::start(RULE);
    for proto in [2, 3] {
        pair.same(
            proto,
            &[
                &["SET", "AppA_k", "1"],
                &["SET", "AppA_k2", "1"],
                &["KEYS", "sh*"],
                &["SCAN", "0", "MATCH", "*red_*", "COUNT", "1000"],
                &["KEYS", "AppA_?"],
                &["KEYS", "*k2"],
                &["SCAN", "0", "MATCH", "AppA_[k]", "COUNT", "1000"],
            ],
            7,
            &[],
        );
    }
}
