//! Per-identity ACLs, with Redis as the oracle: the same user is defined on a real Redis
//! with `ACL SETUSER` and in rekey with the same `acl` string, and the same commands are
//! sent as that user straight to the one and through rekey in front of another (a fresh
//! Redis of its own, so that what one side runs does not change what the other sees). The
//! replies, `ACL DRYRUN`'s answers and `ACL LOG`'s entries must be the same.

use crate::common::{metric, RawClient, RedisServer, Rekey, Resp, Variant};
use rekey::commands::acl_table::ACL_COMMANDS;
use std::net::TcpStream;
use std::time::Duration;

/// ACLs under test: categories, subcommands, first args, key patterns with permissions,
/// channels, selectors.
const ACLS: &[&str] = &[
    "+@all -@dangerous ~AppB_* &AppB_*",
    "-@all +@read +@write -@dangerous +config|get +client|id %R~r* %W~w* ~AppB_* &news.*",
    "-@all +get +select|0 +@hash ~* (+set +del ~s* &s*) (+@list -lpush %R~l*)",
    "+@all -@admin -flushall -flushdb -swapdb -client|pause -config|set -script|flush -function|flush resetchannels &AppB_* ~AppB_*",
    "nocommands +@string +@keyspace -@write allkeys allchannels +publish +subscribe +psubscribe",
];

/// A raw client to `port`, logged in with `auth` (none when empty), speaking `proto`.
fn login(port: u16, proto: u8, auth: &[&str]) -> RawClient {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c = RawClient::from_stream(s);
    let mut hello = vec!["HELLO".to_string(), proto.to_string()];
    if !auth.is_empty() {
        hello.push("AUTH".into());
        hello.extend(auth.iter().map(|a| a.to_string()));
    }
    let hello: Vec<&str> = hello.iter().map(String::as_str).collect();
    let r = c.call(&hello);
    assert!(!r.is_error(), "HELLO failed: {r:?}");
    c
}

/// The oracle Redis with user `appb` (password `pw`) under `acl`, and rekey in front of a
/// Redis of its own with `[[users]] appb` under the same `acl` (and `admin`, unrestricted).
struct Pair {
    oracle: RedisServer,
    _upstream: RedisServer,
    rekey: Rekey,
}

impl Pair {
    fn start(acl: &str) -> Pair {
        let oracle = RedisServer::start();
        let mut setup = login(oracle.port, 2, &[]);
        let mut args = vec!["ACL", "SETUSER", "appb", "on", ">pw"];
        args.extend(acl_args(acl));
        assert_eq!(setup.call(&args), Resp::Simple("OK".into()), "{acl}");
        let upstream = RedisServer::start();
        let rekey = Rekey::start(
            &upstream,
            &format!(
                "[[users]]\nname = \"appb\"\npassword = \"pw\"\nacl = \"{acl}\"\n\
                 [[users]]\nname = \"admin\"\npassword = \"adm\"\n"
            ),
        );
        Pair {
            oracle,
            _upstream: upstream,
            rekey,
        }
    }

    /// `appb` straight to the oracle and through rekey.
    fn clients(&self, proto: u8) -> (RawClient, RawClient) {
        (
            login(self.oracle.port, proto, &["appb", "pw"]),
            login(self.rekey.port, proto, &["appb", "pw"]),
        )
    }

    /// A client that may ask `ACL DRYRUN` on each side.
    fn admins(&self) -> (RawClient, RawClient) {
        (
            login(self.oracle.port, 2, &[]),
            login(self.rekey.port, 2, &["admin", "adm"]),
        )
    }
}

/// The rules of an `acl` string as `ACL SETUSER` arguments (a `(…)` selector is one).
fn acl_args(acl: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for w in acl.split(' ') {
        let at = w.as_ptr() as usize - acl.as_ptr() as usize;
        match start {
            Some(s) if w.ends_with(')') => {
                out.push(&acl[s..at + w.len()]);
                start = None;
            }
            Some(_) => {}
            None if w.starts_with('(') && !w.ends_with(')') => start = Some(at),
            None => out.push(w),
        }
    }
    out
}

/// Every command and subcommand of the table, called with the `fill` arguments in turn
/// (as many as its arity asks for, and `extra` more).
fn every_command(fill: &[&str], extra: usize) -> Vec<Vec<String>> {
    ACL_COMMANDS
        .iter()
        .filter(|c| !c.container)
        .map(|c| {
            let mut args: Vec<String> = c.name.split('|').map(str::to_uppercase).collect();
            let want = c.arity.unsigned_abs() as usize + if c.arity < 0 { extra } else { 0 };
            let mut next = fill.iter().cycle();
            while args.len() < want {
                args.push(next.next().unwrap().to_string());
            }
            args
        })
        .collect()
}

/// Argument fillers: one name everywhere (allowed or not, read or write patterns, a
/// channel), and mixes that put key counts, allowed and refused names in key positions.
const FILLS: &[(&[&str], usize)] = &[
    (&["AppB_x"], 0),
    (&["other"], 0),
    (&["r1"], 0),
    (&["w1"], 0),
    (&["s1"], 0),
    (&["news.eu"], 0),
    (&["1"], 0),
    (&["2", "AppB_a", "other", "AppB_b"], 3),
    (&["1", "AppB_a", "STORE", "w2", "GET"], 4),
    (&["AppB_a", "STREAMS", "AppB_b", "other", "0", "0"], 5),
];

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `ACL DRYRUN appb …` answers the same on both sides for every command of the table, and
/// every command the oracle refuses gets the same refusal through rekey (nothing runs).
#[test]
fn dryrun_and_refusals_match_redis_for_every_command() {
    let mut differences = Vec::new();
    for acl in ACLS {
        let pair = Pair::start(acl);
        let (mut oracle_admin, mut rekey_admin) = pair.admins();
        for proto in [2, 3] {
            let (mut oracle, mut rekey) = pair.clients(proto);
            for (fill, extra) in FILLS {
                for cmd in every_command(fill, *extra) {
                    let mut dry = vec!["ACL", "DRYRUN", "appb"];
                    dry.extend(strs(&cmd));
                    let expected = oracle_admin.call(&dry);
                    let got = rekey_admin.call(&dry);
                    if got != expected {
                        differences.push(format!("{acl}: DRYRUN {cmd:?}: {got:?} != {expected:?}"));
                    }
                    if expected == Resp::Simple("OK".into()) || expected.is_error() {
                        continue; // allowed (not run here) or not a command Redis would check
                    }
                    let want = oracle.call(&strs(&cmd));
                    let got = rekey.call(&strs(&cmd));
                    if got != want {
                        differences
                            .push(format!("{acl}: RESP{proto} {cmd:?}: {got:?} != {want:?}"));
                    }
                }
            }
        }
    }
    differences.dedup();
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences[..differences.len().min(40)].join("\n")
    );
}

/// Commands the ACLs allow and refuse in a sequence a session would send, pub/sub and
/// transactions included: the same replies in both protocols, twice (pooled connections
/// reused).
#[test]
fn sequences_match_redis() {
    let script: &[&[&str]] = &[
        &["SET", "AppB_a", "1"],
        &["GET", "AppB_a"],
        &["GET", "other_secret"],
        &["SET", "w1", "v"],
        &["GET", "w1"],
        &["GET", "r1"],
        &["SET", "r1", "v"],
        &["SET", "w1", "v", "GET"],
        &["MSET", "AppB_b", "1", "other", "2"],
        &["MGET", "AppB_a", "AppB_b"],
        &["FLUSHALL"],
        &["SWAPDB", "0", "1"],
        &["CLIENT", "PAUSE", "10"],
        &["CONFIG", "SET", "maxmemory", "1gb"],
        &["CONFIG", "GET", "maxmemory"],
        &["SCRIPT", "FLUSH"],
        &["FUNCTION", "FLUSH"],
        &["SELECT", "0"],
        &["SELECT", "1"],
        &["SELECT", "0"],
        &["EVAL", "return 1", "1", "AppB_a"],
        &["EVAL", "return 1", "1", "other"],
        &["HSET", "s1", "f", "v"],
        &["SET", "s1", "v"],
        &["DEL", "s1"],
        &["LRANGE", "l1", "0", "-1"],
        &["LPUSH", "l1", "x"],
        &["PUBLISH", "AppB_c", "m"],
        &["PUBLISH", "other", "m"],
        &["PUBLISH", "news.eu", "m"],
        &["MULTI"],
        &["SET", "AppB_t", "1"],
        &["FLUSHALL"],
        &["GET", "other"],
        &["EXEC"],
        &["GET", "AppB_t"],
        &["MULTI"],
        &["SET", "AppB_t", "2"],
        &["EXEC"],
        &["ACL", "WHOAMI"],
        &["ACL", "CAT", "nosuch"],
        &["ACL", "DRYRUN", "appb", "GET", "other"],
        &["ACL", "DRYRUN", "appb", "FLUSHALL"],
        &["ACL", "DRYRUN", "nosuch", "GET", "x"],
        &["ACL", "GETUSER", "nosuch"],
        &["SUBSCRIBE", "AppB_c", "other"],
        &["PSUBSCRIBE", "AppB_*"],
        &["PSUBSCRIBE", "news.*"],
        &["SSUBSCRIBE", "other"],
        &["PING"],
    ];
    for acl in ACLS {
        let pair = Pair::start(acl);
        for proto in [2, 3] {
            for round in 0..2 {
                let (mut oracle, mut rekey) = pair.clients(proto);
                for cmd in script {
                    let want = oracle.call(cmd);
                    let got = rekey.call(cmd);
                    assert_eq!(got, want, "{acl}: RESP{proto} round {round}: {cmd:?}");
                    if matches!(want, Resp::Array(_) | Resp::Push(_))
                        && cmd[0].ends_with("SUBSCRIBE")
                    {
                        // In subscribe mode now: the rest of the script is for another time.
                        break;
                    }
                }
            }
        }
    }
}

/// `ACL LOG` lists the same refusals (reason, context, object, user, count) as Redis's,
/// newest first, `RESET` empties it; failed logins are there too.
#[test]
fn acl_log_matches_redis() {
    let acl = "+@all -@dangerous +acl|log ~AppB_* &AppB_*";
    let pair = Pair::start(acl);
    let (mut oracle, mut rekey) = pair.clients(2);
    let script: &[&[&str]] = &[
        &["ACL", "LOG", "RESET"],
        &["GET", "other"],
        &["GET", "other"],
        &["FLUSHALL"],
        &["PUBLISH", "x", "m"],
        &["MULTI"],
        &["GET", "other2"],
        &["DISCARD"],
        &["AUTH", "appb", "wrong"],
    ];
    for cmd in script {
        assert_eq!(rekey.call(cmd), oracle.call(cmd), "{cmd:?}");
    }
    let fields = |r: Resp| -> Vec<Vec<(String, String)>> {
        r.items()
            .unwrap()
            .iter()
            .map(|entry| {
                let items = entry.items().unwrap();
                items
                    .chunks(2)
                    .filter_map(|kv| {
                        let k = kv[0].text().unwrap();
                        let v = match &kv[1] {
                            Resp::Int(n) => n.to_string(),
                            other => other.text().unwrap_or_default(),
                        };
                        (!["age-seconds", "client-info"].contains(&k.as_str())).then_some((k, v))
                    })
                    .collect()
            })
            .collect()
    };
    let want = fields(oracle.call(&["ACL", "LOG"]));
    assert_eq!(want.len(), 5, "{want:?}");
    assert_eq!(fields(rekey.call(&["ACL", "LOG"])), want);
    assert_eq!(fields(rekey.call(&["ACL", "LOG", "2"])), want[..2]);
    assert_eq!(
        rekey.call(&["ACL", "LOG", "RESET"]),
        Resp::Simple("OK".into())
    );
    assert_eq!(rekey.call(&["ACL", "LOG"]), Resp::Array(vec![]));
    let (_, body) = pair.rekey.admin("GET", "/metrics");
    let denied = |reason: &str| {
        metric(
            &body,
            &format!("rekey_acl_denied_total{{app=\"appb\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(denied("key"), 3.0);
    assert_eq!(denied("command"), 1.0);
    assert_eq!(denied("channel"), 1.0);
    assert_eq!(denied("auth"), 1.0);
}

/// `ACL GETUSER`, `LIST`, `USERS` and `WHOAMI` describe rekey's users as Redis describes
/// the same user.
#[test]
fn users_are_described_as_redis_describes_them() {
    let acl = "+@all -@dangerous ~AppB_* &AppB_*";
    let pair = Pair::start(acl);
    let (mut oracle, mut rekey) = pair.admins();
    assert_eq!(
        rekey.call(&["ACL", "GETUSER", "appb"]),
        oracle.call(&["ACL", "GETUSER", "appb"])
    );
    let line = |r: Resp| {
        r.texts()
            .into_iter()
            .flatten()
            .find(|l| l.starts_with("user appb "))
            .unwrap()
    };
    assert_eq!(
        line(rekey.call(&["ACL", "LIST"])),
        line(oracle.call(&["ACL", "LIST"]))
    );
    assert_eq!(
        rekey.call(&["ACL", "USERS"]).texts(),
        [
            Some("admin".into()),
            Some("appb".into()),
            Some("default".into())
        ]
    );
    assert_eq!(rekey.call(&["ACL", "WHOAMI"]), crate::common::bulk("admin"));
    let cat = |c: &mut RawClient, cat: &str| {
        let mut v = c.call(&["ACL", "CAT", cat]).texts();
        v.sort();
        v
    };
    for category in ["dangerous", "read", "pubsub"] {
        assert_eq!(cat(&mut rekey, category), cat(&mut oracle, category));
    }
    assert_eq!(rekey.call(&["ACL", "CAT"]), oracle.call(&["ACL", "CAT"]));
    let _ = Variant::PLAIN;
}

/// A reload that tightens an identity's ACL applies to its connected clients' next command;
/// an invalid ACL is refused at reload with the rule's position, and the old one stays.
#[test]
fn reload_applies_to_the_next_command() {
    let redis = RedisServer::start();
    let users =
        |acl: &str| format!("[[users]]\nname = \"appb\"\npassword = \"pw\"\nacl = \"{acl}\"\n");
    let rekey = Rekey::start(&redis, &users("+@all ~*"));
    let mut c = login(rekey.port, 2, &["appb", "pw"]);
    for _ in 0..2 {
        assert_eq!(c.call(&["SET", "other", "1"]), Resp::Simple("OK".into()));
    }
    rekey.write_config(&redis.url(), &users("+@all ~AppB_*"));
    let (status, body) = rekey.admin("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    for _ in 0..2 {
        assert_eq!(
            c.call(&["SET", "other", "1"]),
            Resp::Error(
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .into()
            )
        );
        assert_eq!(c.call(&["SET", "AppB_1", "1"]), Resp::Simple("OK".into()));
    }
    rekey.write_config(&redis.url(), &users("+@all ~AppB_* +nosuch"));
    let (status, body) = rekey.admin("POST", "/reload");
    assert_ne!(status, 200);
    assert!(body.contains("rule 3 ('+nosuch', at byte 14)"), "{body}");
    assert!(c.call(&["SET", "other", "1"]).is_error());
}

/// An identity with its own upstream login: its traffic (scripts included) reaches Redis as
/// that Redis user, so Redis's own ACL holds inside scripts, with the same replies a client
/// logged in as that user directly gets; other identities keep rekey's login.
#[test]
fn own_upstream_login_puts_scripts_under_redis_acl() {
    let redis = RedisServer::start();
    let mut admin = login(redis.port, 2, &[]);
    let setup = [
        "ACL",
        "SETUSER",
        "appb_up",
        "on",
        ">up-pw",
        "+@all",
        "-flushall",
        "~AppB_*",
    ];
    assert_eq!(admin.call(&setup), Resp::Simple("OK".into()));
    let rekey = Rekey::start(
        &redis,
        "[[users]]\nname = \"appb\"\npassword = \"pw\"\nacl = \"+@all -@dangerous ~AppB_*\"\n\
         upstream_user = \"appb_up\"\nupstream_password = \"up-pw\"\n\
         [[users]]\nname = \"other\"\npassword = \"pw2\"\n",
    );
    let script: &[&[&str]] = &[
        &["SET", "AppB_a", "1"],
        &["EVAL", "return redis.call('FLUSHALL')", "0"],
        &["EVAL", "return redis.call('GET', 'secret')", "0"],
        &["EVAL", "return redis.call('GET', KEYS[1])", "1", "AppB_a"],
    ];
    for proto in [2, 3] {
        for round in 0..2 {
            let mut direct = login(redis.port, proto, &["appb_up", "up-pw"]);
            let mut through = login(rekey.port, proto, &["appb", "pw"]);
            for cmd in script {
                let want = direct.call(cmd);
                assert_eq!(
                    through.call(cmd),
                    want,
                    "RESP{proto} round {round}: {cmd:?}"
                );
            }
            let mut other = login(rekey.port, proto, &["other", "pw2"]);
            assert_eq!(
                other.call(&["SET", "secret", "s"]),
                Resp::Simple("OK".into())
            );
        }
    }
    let list = admin.call(&["CLIENT", "LIST"]).text().unwrap();
    assert!(list.contains("user=appb_up"), "{list}");
    assert!(list.contains("user=default"), "{list}");
    // A cluster upstream cannot: refused at load.
    let err = rekey::config::Config::parse(
        "upstream = \"redis-cluster://127.0.0.1:7000\"\n[[users]]\nname = \"a\"\npassword = \"p\"\nupstream_password = \"x\"",
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a cluster"), "{err}");
}

/// The ACL facts of the command table (arity, categories, key use) are those of the Redis the
/// tests run: regenerating `src/commands/acl_table.rs` from it changes nothing.
#[test]
fn acl_table_matches_live_redis() {
    let redis = RedisServer::start();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("python3")
        .arg(format!("{root}/tests/tools/gen_acl_table.py"))
        .arg(redis.port.to_string())
        .output()
        .expect("python3 runs the generator");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = std::fs::read_to_string(format!("{root}/src/commands/acl_table.rs")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == table,
        "src/commands/acl_table.rs differs from this Redis: rerun tests/tools/gen_acl_table.py"
    );
}
