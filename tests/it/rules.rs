//! Rules through a real rekey: the command table against the live Redis, reverse mapping of
//! every kind of reply that carries keys, client identity, FLUSHDB policy, and the CLI.

use crate::common::{free_port, RedisServer, Rekey};
use redis::{cmd, Commands, Value};
use std::collections::BTreeMap;
use std::process::Command;

const SHARED: &str = r#"
[[rules]]
name    = "sessions"
match   = '^(\{?)(AppA|AppB)_'
replace = '${1}shared_'
"#;

/// One key spec in a comparable text form.
fn spec_text(begin: &str, find: &str) -> String {
    format!("{begin}/{find}")
}

#[test]
fn command_table_matches_live_redis() {
    let redis = RedisServer::start();
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--json", "COMMAND", "INFO"])
        .output()
        .unwrap();
    let live: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut live_specs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    fn visit(entry: &serde_json::Value, out: &mut BTreeMap<String, Vec<String>>) {
        let name = entry[0].as_str().unwrap().to_lowercase();
        let specs: Vec<String> = entry[8]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let bs = &s["begin_search"];
                        let fk = &s["find_keys"];
                        let begin = match bs["type"].as_str().unwrap() {
                            "index" => format!("index:{}", bs["spec"]["index"]),
                            "keyword" => format!(
                                "keyword:{}:{}",
                                bs["spec"]["keyword"].as_str().unwrap(),
                                bs["spec"]["startfrom"]
                            ),
                            other => other.to_string(),
                        };
                        let find = match fk["type"].as_str().unwrap() {
                            "range" => format!(
                                "range:{}:{}:{}",
                                fk["spec"]["lastkey"], fk["spec"]["keystep"], fk["spec"]["limit"]
                            ),
                            "keynum" => format!(
                                "keynum:{}:{}:{}",
                                fk["spec"]["keynumidx"],
                                fk["spec"]["firstkey"],
                                fk["spec"]["keystep"]
                            ),
                            other => other.to_string(),
                        };
                        spec_text(&begin, &find)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !specs.is_empty() {
            out.insert(name, specs);
        }
        for sub in entry[9].as_array().into_iter().flatten() {
            visit(sub, out);
        }
    }
    for entry in live.as_array().unwrap() {
        visit(entry, &mut live_specs);
    }
    assert!(
        live_specs.len() > 150,
        "COMMAND INFO looks wrong: {} commands with keys",
        live_specs.len()
    );
    let ours: BTreeMap<String, Vec<String>> = rekey::commands::key_specs()
        .map(|(name, specs)| {
            let texts = specs
                .iter()
                .map(|s| {
                    use rekey::commands::keys::{Begin, Find};
                    let begin = match s.begin {
                        Begin::Index(i) => format!("index:{i}"),
                        Begin::Keyword(w, f) => format!("keyword:{w}:{f}"),
                        Begin::Unknown => "unknown".into(),
                    };
                    let find = match s.find {
                        Find::Range { last, step, limit } => format!("range:{last}:{step}:{limit}"),
                        Find::Keynum { idx, first, step } => format!("keynum:{idx}:{first}:{step}"),
                        Find::Unknown => "unknown".into(),
                    };
                    spec_text(&begin, &find)
                })
                .collect();
            (name.to_string(), texts)
        })
        .collect();
    let mut problems = Vec::new();
    for (name, specs) in &live_specs {
        match ours.get(name) {
            None => problems.push(format!("{name}: missing from the table")),
            Some(o) if o != specs => {
                problems.push(format!("{name}: table {o:?} but Redis says {specs:?}"))
            }
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "command table disagrees with live COMMAND INFO:\n{}",
        problems.join("\n")
    );
}

/// Rewritten requests take three encodings (the single-key splice, the multi-key plan, and a
/// rebuilt request when it is larger than a batch); in one pipeline with untouched requests,
/// everything lands in Redis under the shared names and the replies come back in order.
#[test]
fn rewritten_pipelines_keep_order_and_values() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, SHARED);
    let mut con = rekey.client();
    let big = "v".repeat(100_000);
    type Replies = (
        String,
        Option<String>,
        String,
        String,
        String,
        String,
        i64,
        Vec<String>,
    );
    let (set1, plain, set_big, get1, mset, got_big, n, mget): Replies = redis::pipe()
        .cmd("SET")
        .arg("AppA_1")
        .arg("one")
        .cmd("GET")
        .arg("plain")
        .cmd("SET")
        .arg("{AppB_big}_Data")
        .arg(&big)
        .cmd("GET")
        .arg("AppA_1")
        .cmd("MSET")
        .arg("AppA_x")
        .arg("1")
        .arg("plain")
        .arg("p")
        .arg("AppB_y")
        .arg("2")
        .cmd("GET")
        .arg("{AppA_big}_Data")
        .cmd("INCRBY")
        .arg("AppB_n")
        .arg(3)
        .cmd("MGET")
        .arg("AppA_x")
        .arg("plain")
        .arg("AppB_y")
        .query(&mut con)
        .unwrap();
    assert_eq!((set1.as_str(), plain, set_big.as_str()), ("OK", None, "OK"));
    assert_eq!((get1.as_str(), mset.as_str(), n), ("one", "OK", 3));
    assert_eq!(got_big, big);
    assert_eq!(mget, ["1", "p", "2"]);
    let mut direct = redis.direct();
    let mut keys: Vec<String> = cmd("KEYS").arg("*").query(&mut direct).unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "plain",
            "shared_1",
            "shared_n",
            "shared_x",
            "shared_y",
            "{shared_big}_Data"
        ]
    );
    let stored: String = direct.get("{shared_big}_Data").unwrap();
    assert_eq!(stored.len(), big.len());

    // An inline command is rewritten too.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", rekey.port)).unwrap();
    raw.write_all(b"SET AppA_inline hello\r\n").unwrap();
    let mut reply = [0u8; 5];
    raw.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"+OK\r\n");
    let inline: String = direct.get("shared_inline").unwrap();
    assert_eq!(inline, "hello");
}

/// A long pipeline where rewritten and untouched single-key commands alternate in uneven
/// runs, interleaved with commands answered by rekey and multi-key ones: many upstream
/// batches, with keys spliced in at every position of a batch. Every reply comes back in
/// order and every key lands under its upstream name.
#[test]
fn long_mixed_pipelines_splice_keys_across_batches() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, SHARED);
    let mut con = rekey.client();
    let value = "x".repeat(120);
    let mut pipe = redis::pipe();
    let mut expected = Vec::new();
    for i in 0..3000 {
        let key = match i % 7 {
            0 | 3 | 4 => format!("AppA_{i}"),
            5 => format!("AppB_{i}"),
            _ => format!("other_{i}"),
        };
        pipe.cmd("SET").arg(&key).arg(format!("{i}{value}"));
        expected.push(Value::Okay);
        pipe.cmd("GET").arg(&key);
        expected.push(Value::BulkString(format!("{i}{value}").into_bytes()));
        if i % 500 == 0 {
            pipe.cmd("PING");
            expected.push(Value::SimpleString("PONG".into()));
            pipe.cmd("MGET").arg(&key).arg("other_1");
            let other = (i > 1).then(|| format!("1{value}").into_bytes());
            expected.push(Value::Array(vec![
                Value::BulkString(format!("{i}{value}").into_bytes()),
                other.map_or(Value::Nil, Value::BulkString),
            ]));
        }
    }
    let replies: Vec<Value> = pipe.query(&mut con).unwrap();
    assert_eq!(replies.len(), expected.len());
    for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "reply {i}");
    }
    let mut direct = redis.direct();
    let n: usize = cmd("DBSIZE").query(&mut direct).unwrap();
    assert_eq!(n, 3000);
    let shared: String = direct.get("shared_4").unwrap();
    assert_eq!(shared, format!("4{value}"));
    let shared: String = direct.get("shared_2999").unwrap();
    assert_eq!(shared, format!("2999{value}"));
    let untouched: String = direct.get("other_2").unwrap();
    assert_eq!(untouched, format!("2{value}"));
    let leaked: Vec<String> = cmd("KEYS").arg("App*").query(&mut direct).unwrap();
    assert!(leaked.is_empty(), "keys left unrewritten: {leaked:?}");

    // Every key is counted once: SET's and GET's, and MGET's two.
    let app = |i: &usize| [0, 3, 4, 5].contains(&(i % 7));
    let rewritten = 2 * (0..3000).filter(app).count();
    let unmatched = 2 * 3000 - rewritten;
    let mget = (0..3000).step_by(500).filter(app).count();
    let (_, text) = rekey.admin("GET", "/metrics");
    let series = "rekey_keys_rewritten_total{rule=\"sessions\",direction=\"forward\",app=\"-\"}";
    assert_eq!(
        crate::common::metric(&text, series) as usize,
        rewritten + mget
    );
    let missed = crate::common::metric(&text, "rekey_keys_unmatched_total") as usize;
    assert_eq!(missed, unmatched + 2 * 6 - mget, "{text}");
}

#[test]
fn replies_with_keys_are_mapped_back() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, SHARED);
    let mut a = rekey.client();
    let mut b = rekey.client();
    let _: () = a.set("AppA_k1", "v").unwrap();
    let _: i64 = a.rpush("AppA_list", "x").unwrap();
    // BLPOP/BRPOP name the key the client asked with.
    let got: (String, String) = cmd("BLPOP").arg("AppB_list").arg(5).query(&mut b).unwrap();
    assert_eq!(got, ("AppB_list".into(), "x".into()));
    let _: i64 = a.rpush("AppA_list", "y").unwrap();
    let got: (String, Vec<String>) = cmd("LMPOP")
        .arg(2)
        .arg("AppB_none")
        .arg("AppB_list")
        .arg("LEFT")
        .query(&mut b)
        .unwrap();
    assert_eq!(got, ("AppB_list".into(), vec!["y".into()]));
    let _: i64 = cmd("ZADD")
        .arg("AppA_z")
        .arg(1)
        .arg("m")
        .query(&mut a)
        .unwrap();
    let got: Vec<String> = cmd("BZPOPMIN").arg("AppB_z").arg(5).query(&mut b).unwrap();
    assert_eq!(got, vec!["AppB_z", "m", "1"]);
    // XREAD names streams.
    let _: String = cmd("XADD")
        .arg("AppA_s")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut a)
        .unwrap();
    let v: Value = cmd("XREAD")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg("AppB_s")
        .arg("0")
        .query(&mut b)
        .unwrap();
    assert!(
        format!("{v:?}").contains("AppB_s") && !format!("{v:?}").contains("shared_"),
        "{v:?}"
    );
    // KEYS/SCAN/RANDOMKEY show each app its own prefix, and hide raw keys of other apps.
    let _: () = redis.direct().set("AppB_raw_written_directly", 1).unwrap();
    let mut keys: Vec<String> = b.keys("*").unwrap();
    keys.sort();
    assert_eq!(keys, vec!["AppB_k1", "AppB_s"]);
    let (_, scanned): (String, Vec<String>) = cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(1000)
        .query(&mut a)
        .unwrap();
    let mut scanned = scanned;
    scanned.sort();
    assert_eq!(scanned, vec!["AppA_k1", "AppA_s"]);
    let _: i64 = cmd("DEL").arg("AppA_s").query(&mut a).unwrap();
    let random: String = cmd("RANDOMKEY").query(&mut a).unwrap();
    assert!(
        random == "AppA_k1" || random == "AppB_raw_written_directly",
        "{random}"
    );
}

#[test]
fn tracking_invalidations_are_mapped_back() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, SHARED);
    let mut a = rekey.client();
    let _: () = a.set("AppA_cached", "1").unwrap();
    let mut t = rekey.raw();
    t.cmd(&["HELLO", "3"]);
    t.cmd(&["CLIENT", "TRACKING", "ON"]);
    t.cmd(&["GET", "AppB_cached"]);
    t.cmd(&["PING"]);
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).ends_with("$1\r\n1\r\n+PONG\r\n") {
        seen.extend(t.read_exact_n(1));
    }
    let _: () = a.set("AppA_cached", "2").unwrap();
    t.expect(">2\r\n$10\r\ninvalidate\r\n*1\r\n$11\r\nAppB_cached\r\n");
}

#[test]
fn rules_follow_client_identity() {
    let redis = RedisServer::start();
    let app_port = free_port();
    let rekey = Rekey::start(
        &redis,
        &format!(
            r#"
requirepass = "pw-default"

[[users]]
name = "appB"
password = "pw-b"

[[apps]]
name = "appA"
listen = "127.0.0.1:{app_port}"

[[rules]]
name = "a-only"
match = '^sess:'
replace = 'A:sess:'
apps = ["appA"]

[[rules]]
name = "b-only"
match = '^sess:'
replace = 'B:sess:'
apps = ["appB"]
"#
        ),
    );
    let mut on_app_listener =
        redis::Client::open(format!("redis://:pw-default@127.0.0.1:{app_port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
    let _: () = on_app_listener.set("sess:1", "from-a").unwrap();
    let mut as_user = redis::Client::open(format!("redis://appB:pw-b@127.0.0.1:{}/", rekey.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = as_user.set("sess:1", "from-b").unwrap();
    let mut anonymous = rekey.client();
    let err = anonymous.set::<_, _, ()>("sess:1", "x").unwrap_err();
    assert!(
        err.to_string().contains("NOAUTH"),
        "a password is configured, so AUTH is required: {err}"
    );
    let mut direct = redis.direct();
    let a: String = direct.get("A:sess:1").unwrap();
    let b: String = direct.get("B:sess:1").unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("from-a", "from-b"));
}

#[test]
fn flushdb_refused_or_scoped() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, SHARED);
    let mut a = rekey.client();
    let _: () = a.set("AppA_1", 1).unwrap();
    let err = cmd("FLUSHALL").query::<()>(&mut a).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    let exists: bool = a.exists("AppA_1").unwrap();
    assert!(exists);
    drop(rekey);

    let scoped = Rekey::start(&redis, &format!("flush = \"scoped\"\n{SHARED}"));
    let mut a = scoped.client();
    let _: () = a.set("AppA_2", 2).unwrap();
    let _: () = a.set("{AppA_3}_Data", 3).unwrap();
    let _: () = redis.direct().set("unrelated", 1).unwrap();
    let _: () = cmd("FLUSHDB").query(&mut a).unwrap();
    let mut left: Vec<String> = redis.direct().keys("*").unwrap();
    left.sort();
    assert_eq!(left, vec!["unrelated"]);
}

#[test]
fn cli_check_and_rewrite() {
    let bin = env!("CARGO_BIN_EXE_rekey");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rekey.toml");
    let ok = Command::new(bin)
        .args(["-c", example, "--check"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let dir = crate::common::scratch_dir("cli");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[rules]]\nname = 'broken'\nmatch = '(AppA'\nreplace = 'x'\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["-c", bad.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin)
        .args(["-c", example, "--rewrite", "{AppA_x1}_Data"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("{AppA_x1}_Data -> {shared_x1}_Data"),
        "{text}"
    );
    assert!(
        text.contains("{shared_x1}_Data -> {AppA_x1}_Data"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn keyspace_notifications_are_mapped_back() {
    let redis = RedisServer::start();
    let _: () = cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .query(&mut redis.direct())
        .unwrap();
    let rekey = Rekey::start(&redis, SHARED);
    let mut sub = rekey.client();
    let mut ps = sub.as_pubsub();
    ps.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    ps.psubscribe("__keyspace@*__:AppB_*").unwrap();
    ps.subscribe("__keyevent@0__:set").unwrap();
    let mut a = rekey.client();
    let _: () = a.set("AppA_watched", "1").unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = ps.get_message().unwrap();
        got.push((
            m.get_channel_name().to_string(),
            m.get_payload::<String>().unwrap(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("__keyevent@0__:set".to_string(), "AppB_watched".to_string()),
            ("__keyspace@0__:AppB_watched".to_string(), "set".to_string()),
        ]
    );
}
