//! rekey as a transparent Redis: real redis-server behind a real rekey process, driven by the
//! `redis` client crate and by raw RESP bytes.

use crate::common::{RedisServer, Rekey};
use redis::Commands;
use std::time::Duration;

fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> i64 {
    let info: String = redis::cmd("INFO").arg(section).query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO"))
        .trim()
        .parse()
        .unwrap()
}

/// Runs `n` clients of `rekey` at once, client `i` running `work(con, i)` on its own
/// connection; returns the connections, still open.
fn clients_at_once(
    rekey: &Rekey,
    n: usize,
    work: fn(&mut redis::Connection, usize),
) -> Vec<redis::Connection> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let url = rekey.url();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                work(&mut con, i);
                con
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn pipeline_of_ten_thousand_commands_in_order() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut con = rekey.client();
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.cmd("INCR").arg("counter");
        if i % 1000 == 0 {
            pipe.cmd("PING"); // answered locally, must stay in order
        }
    }
    let replies: Vec<redis::Value> = pipe.query(&mut con).unwrap();
    let ints: Vec<i64> = replies
        .iter()
        .filter_map(|v| match v {
            redis::Value::Int(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(ints, (1..=10_000).collect::<Vec<i64>>());
    assert_eq!(replies.len(), 10_010);
    assert_eq!(replies[0], redis::Value::Int(1));
    assert_eq!(replies[1], redis::Value::SimpleString("PONG".into()));
}

/// Requests that arrive a few bytes at a time (cut inside headers, names and values) are
/// taken only once complete, and answered in order.
#[test]
fn requests_trickling_in_small_pieces_are_answered_in_order() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut raw = rekey.raw();
    raw.s.set_nodelay(true).unwrap();
    let mut wire = Vec::new();
    let mut expected = String::new();
    for i in 0..40 {
        let value = format!("value-{i}");
        wire.extend(
            format!(
                "*3\r\n$3\r\nSET\r\n$4\r\nk{i:03}\r\n${}\r\n{value}\r\n",
                value.len()
            )
            .bytes(),
        );
        wire.extend(format!("*2\r\n$3\r\nGET\r\n$4\r\nk{i:03}\r\n").bytes());
        wire.extend(b"*1\r\n$4\r\nPING\r\n");
        expected.push_str(&format!("+OK\r\n${}\r\n{value}\r\n+PONG\r\n", value.len()));
    }
    for (n, piece) in wire.chunks(5).enumerate() {
        raw.send(piece);
        if n % 4 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    raw.expect(&expected);
}

/// Error replies in the middle of a pipelined run of one command (the replies are then
/// placed one by one, not relayed as a run) keep their place.
#[test]
fn errors_inside_pipelined_runs_keep_their_place() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut con = rekey.client();
    let _: () = con.set("text", "not a number").unwrap();
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        let key = if i % 7 == 3 { "text" } else { "counter" };
        pipe.cmd("INCR").arg(key);
    }
    use redis::ConnectionLike;
    let replies: Vec<redis::RedisResult<i64>> = con
        .req_packed_commands(&pipe.get_packed_pipeline(), 0, 3000)
        .unwrap()
        .into_iter()
        .map(|v| redis::from_redis_value(&v))
        .collect();
    let mut next = 1;
    for (i, r) in replies.iter().enumerate() {
        if i % 7 == 3 {
            assert!(r.is_err(), "reply {i}: {r:?}");
        } else {
            assert_eq!(r.as_ref().ok(), Some(&next), "reply {i}");
            next += 1;
        }
    }
}

#[test]
fn by_default_a_worker_has_one_pipelined_upstream_connection() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "threads = 1");
    let cons = clients_at_once(&rekey, 40, |con, i| {
        let key = format!("pipelined:{i}");
        let mut pipe = redis::pipe();
        for _ in 0..100 {
            pipe.incr(&key, 1);
        }
        let counts: Vec<i64> = pipe.query(con).unwrap();
        assert_eq!(counts, (1..=100).collect::<Vec<i64>>());
    });
    // 40 clients pipelining at once: Redis sees one pooled connection (+ this one).
    let mut direct = redis.direct();
    let upstream_clients = info_field(&mut direct, "clients", "connected_clients");
    assert_eq!(upstream_clients, 2, "redis sees {upstream_clients} clients");
    drop(cons);
}

#[test]
fn two_hundred_clients_share_two_upstream_connections() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "[pool]\nconnections = 2");
    let cons = clients_at_once(&rekey, 200, |con, i| {
        let key = format!("client:{i}");
        for n in 1..=50i64 {
            let got: i64 = con.incr(&key, 1).unwrap();
            assert_eq!(got, n);
        }
        let v: String = con.get(&key).unwrap();
        assert_eq!(v, "50");
    });
    let mut direct = redis.direct();
    // 200 clients are connected to rekey; Redis sees the two pooled connections (+ this one).
    let upstream_clients = info_field(&mut direct, "clients", "connected_clients");
    assert!(
        upstream_clients <= 3,
        "redis sees {upstream_clients} clients"
    );
    drop(cons);
    for i in 0..200 {
        let v: i64 = direct.get(format!("client:{i}")).unwrap();
        assert_eq!(v, 50);
    }
}

#[test]
fn multi_exec_and_watch_abort() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut a = rekey.client();
    let mut b = rekey.client();
    let (x, y): (i64, i64) = redis::pipe()
        .atomic()
        .incr("tx", 1)
        .incr("tx", 10)
        .query(&mut a)
        .unwrap();
    assert_eq!((x, y), (1, 11));

    let _: () = redis::cmd("WATCH").arg("tx").query(&mut a).unwrap();
    let _: () = b.set("tx", 100).unwrap(); // conflicting write from another client
    let _: () = redis::cmd("MULTI").query(&mut a).unwrap();
    let q: String = redis::cmd("SET").arg("tx").arg(1).query(&mut a).unwrap();
    assert_eq!(q, "QUEUED");
    let exec: redis::Value = redis::cmd("EXEC").query(&mut a).unwrap();
    assert_eq!(
        exec,
        redis::Value::Nil,
        "EXEC must abort after a watched key changed"
    );
    let v: i64 = a.get("tx").unwrap();
    assert_eq!(v, 100);

    // Without a conflict the same transaction commits.
    let _: () = redis::cmd("WATCH").arg("tx").query(&mut a).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut a).unwrap();
    let _: String = redis::cmd("SET").arg("tx").arg(1).query(&mut a).unwrap();
    let exec: Vec<String> = redis::cmd("EXEC").query(&mut a).unwrap();
    assert_eq!(exec, vec!["OK"]);
    let err = redis::cmd("EXEC")
        .query::<redis::Value>(&mut a)
        .unwrap_err();
    assert!(err.to_string().contains("EXEC without MULTI"), "{err}");
}

#[test]
fn blpop_is_unblocked_while_others_are_served() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "[pool]\nconnections = 1");
    let url = rekey.url();
    let waiter = std::thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let got: (String, String) = redis::cmd("BLPOP")
            .arg("queue")
            .arg(20)
            .query(&mut con)
            .unwrap();
        got
    });
    // Wait until Redis reports the blocked client, serving others meanwhile.
    let mut direct = redis.direct();
    let mut other = rekey.client();
    for i in 0..500 {
        let _: () = other.set(format!("k{i}"), i).unwrap();
        let v: i64 = other.get(format!("k{i}")).unwrap();
        assert_eq!(v, i);
        if info_field(&mut direct, "clients", "blocked_clients") == 1 && i > 50 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(info_field(&mut direct, "clients", "blocked_clients"), 1);
    let _: () = other.lpush("queue", "job-1").unwrap();
    let (list, value) = waiter.join().unwrap();
    assert_eq!((list.as_str(), value.as_str()), ("queue", "job-1"));
}

#[test]
fn pubsub_and_pattern_subscribe() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut sub_con = rekey.client();
    let mut publisher = rekey.client();
    let mut ps = sub_con.as_pubsub();
    ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ps.subscribe("news").unwrap();
    ps.psubscribe("events:*").unwrap();
    let receivers: i64 = publisher.publish("news", "hello").unwrap();
    assert_eq!(receivers, 1);
    let _: i64 = publisher.publish("events:login", "bob").unwrap();
    let m1 = ps.get_message().unwrap();
    assert_eq!(m1.get_channel_name(), "news");
    assert_eq!(m1.get_payload::<String>().unwrap(), "hello");
    let m2 = ps.get_message().unwrap();
    assert_eq!(m2.get_channel_name(), "events:login");
    assert_eq!(m2.get_pattern::<String>().unwrap(), "events:*");
    assert_eq!(m2.get_payload::<String>().unwrap(), "bob");
    ps.unsubscribe("news").unwrap();
    ps.punsubscribe("events:*").unwrap();
    drop(ps);
    // After unsubscribing from everything, the same connection works for commands again.
    let pong: String = redis::cmd("PING").query(&mut sub_con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn resp3_push_messages_and_hello() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut sub = rekey.raw();
    sub.cmd(&["HELLO", "3"]);
    let hello = String::from_utf8_lossy(&sub.read_exact_n(7)).into_owned();
    assert_eq!(hello, "%7\r\n$6\r");
    // Drain the rest of the HELLO map by asking for something small afterwards.
    sub.cmd(&["PING"]);
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).ends_with("+PONG\r\n") {
        seen.extend(sub.read_exact_n(1));
    }
    assert!(String::from_utf8_lossy(&seen).contains("proto\r\n:3\r\n"));
    sub.cmd(&["SUBSCRIBE", "ch"]);
    sub.expect(">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    let mut publisher = rekey.client();
    let n: i64 = publisher.publish("ch", "payload").unwrap();
    assert_eq!(n, 1);
    sub.expect(">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$7\r\npayload\r\n");
    // RESP3 allows normal commands in subscribe mode; the reply comes in order.
    sub.cmd(&["SET", "k", "v"]);
    sub.expect("+OK\r\n");

    // Client-side caching: an invalidation push after another client writes the key.
    let mut tracker = rekey.raw();
    tracker.cmd(&["HELLO", "3"]);
    tracker.cmd(&["CLIENT", "TRACKING", "ON"]);
    tracker.cmd(&["GET", "k"]);
    tracker.cmd(&["PING"]);
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).ends_with("+OK\r\n$1\r\nv\r\n+PONG\r\n") {
        seen.extend(tracker.read_exact_n(1));
    }
    let _: () = publisher.set("k", "changed").unwrap();
    tracker.expect(">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
}

#[test]
fn select_is_isolated_between_clients_sharing_the_pool() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "[pool]\nconnections = 1");
    let mut a = rekey.client();
    let mut b = rekey.client();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut a).unwrap();
    let _: () = a.set("k", "in-db-3").unwrap();
    let _: () = b.set("k", "in-db-0").unwrap();
    let va: String = a.get("k").unwrap();
    let vb: String = b.get("k").unwrap();
    assert_eq!((va.as_str(), vb.as_str()), ("in-db-3", "in-db-0"));
    let mut direct = redis.direct();
    let v0: String = direct.get("k").unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut direct).unwrap();
    let v3: String = direct.get("k").unwrap();
    assert_eq!((v0.as_str(), v3.as_str()), ("in-db-0", "in-db-3"));
    let err = redis::cmd("SELECT")
        .arg(99)
        .query::<()>(&mut b)
        .unwrap_err();
    assert!(
        err.to_string().contains("DB index is out of range"),
        "{err}"
    );
    // A client connecting with a db in its URL is still isolated.
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{}/3", rekey.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let vc: String = c.get("k").unwrap();
    assert_eq!(vc, "in-db-3");
}

#[test]
fn client_killed_mid_multi_does_not_poison_the_next() {
    let redis = RedisServer::start();
    // One pinned connection: the next client must get the very same one, reset.
    let rekey = Rekey::start(&redis, "[pool]\nmax_pinned = 1");
    {
        let mut a = rekey.raw();
        a.cmd(&["WATCH", "guarded"]);
        a.cmd(&["MULTI"]);
        a.cmd(&["SET", "poison", "1"]);
        a.expect("+OK\r\n+OK\r\n+QUEUED\r\n");
        a.cmd(&["SUBSCRIBE", "x"]); // queued inside MULTI
    } // dropped: the client vanishes mid-transaction
    let mut b = rekey.client();
    let _: () = redis::cmd("MULTI").query(&mut b).unwrap();
    let _: String = redis::cmd("SET").arg("clean").arg(1).query(&mut b).unwrap();
    let _: () = redis.direct().set("guarded", "changed").unwrap();
    let exec: Vec<String> = redis::cmd("EXEC").query(&mut b).unwrap();
    assert_eq!(
        exec,
        vec!["OK"],
        "the new client's EXEC ran only its own command, with no stale WATCH"
    );
    let poison: Option<String> = b.get("poison").unwrap();
    assert_eq!(poison, None);
    // Subscriptions do not leak either: a subscriber killed, then a normal transaction.
    {
        let mut s = rekey.raw();
        s.cmd(&["SUBSCRIBE", "leak"]);
        s.expect("*3\r\n$9\r\nsubscribe\r\n$4\r\nleak\r\n:1\r\n");
    }
    let _: () = redis::cmd("MULTI").query(&mut b).unwrap();
    let _: String = redis::cmd("INCR").arg("n").query(&mut b).unwrap();
    let exec: Vec<i64> = redis::cmd("EXEC").query(&mut b).unwrap();
    assert_eq!(exec, vec![1]);
    let subs: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query(&mut redis.direct())
        .unwrap();
    assert!(subs.is_empty(), "stale subscription survived: {subs:?}");
}

#[test]
fn malformed_input_closes_only_that_client() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(
        &redis,
        "[limits]\nmax_bulk_bytes = 1024\nmax_array_len = 16",
    );
    let mut good = rekey.client();
    let _: () = good.set("k", "v").unwrap();
    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n$x\r\nPING\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2\r\n+no\r\n",
            "-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            b"*abc\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nSET\r\n$2000\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*17\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"SET k \"unterminated\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ];
    for (input, expected) in cases {
        let mut bad = rekey.raw();
        bad.send(b"PING\r\n");
        bad.send(input);
        let got = bad.read_to_close();
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!("+PONG\r\n{expected}")
        );
        let v: String = good.get("k").unwrap();
        assert_eq!(v, "v");
    }
    // Inline commands work like Redis's.
    let mut inline = rekey.raw();
    inline.send(b"SET greeting \"hello world\"\r\nGET greeting\r\n");
    inline.expect("+OK\r\n$11\r\nhello world\r\n");
}

#[test]
fn connection_scoped_commands_are_emulated() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "[pool]\nconnections = 1");
    let mut raw = rekey.raw();
    raw.cmd(&["CLIENT", "SETNAME", "worker-1"]);
    raw.cmd(&["CLIENT", "GETNAME"]);
    raw.cmd(&["ECHO", "hi"]);
    raw.cmd(&["CLIENT", "REPLY", "SKIP"]);
    raw.cmd(&["SET", "skipped", "1"]);
    raw.cmd(&["CLIENT", "KILL", "ID", "999999"]);
    raw.cmd(&["UNSUBSCRIBE"]);
    raw.cmd(&["RESET"]);
    raw.cmd(&["CLIENT", "GETNAME"]);
    raw.cmd(&["QUIT"]);
    let got = String::from_utf8_lossy(&raw.read_to_close()).into_owned();
    let expected_start = "+OK\r\n$8\r\nworker-1\r\n$2\r\nhi\r\n:0\r\n*3\r\n$11\r\nunsubscribe";
    assert!(got.starts_with(expected_start), "{got}");
    assert!(
        got.ends_with("*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n+RESET\r\n$-1\r\n+OK\r\n"),
        "{got}"
    );
    let mut direct = redis.direct();
    let v: String = direct.get("skipped").unwrap();
    assert_eq!(v, "1");
    // The shared upstream connection kept no name.
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut direct).unwrap();
    assert!(!list.contains("worker-1"), "{list}");
}

#[test]
fn upstream_killed_and_restarted() {
    let mut redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut con = rekey.client();
    let _: () = con.set("before", 1).unwrap();
    redis.kill();
    // Every request gets a fast error; the client read timeout (10 s) would catch a hang.
    for _ in 0..5 {
        let err = con.get::<_, String>("before").unwrap_err();
        assert!(err.to_string().contains("upstream"), "{err}");
    }
    redis.restart();
    let mut ok = false;
    for _ in 0..100 {
        if con.set::<_, _, ()>("after", 2).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "rekey did not reconnect to the restarted upstream");
    let v: i64 = con.get("after").unwrap();
    assert_eq!(v, 2);
}

#[test]
fn redis_benchmark_runs_clean() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let out = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &rekey.port.to_string(),
            "-h",
            "127.0.0.1",
            "-q",
            "-n",
            "2000",
            "-c",
            "50",
        ])
        .args([
            "-t",
            "ping,set,get,incr,lpush,rpop,sadd,hset,spop,zadd,lrange,mset",
        ])
        .output()
        .expect("redis-benchmark is installed with redis-server");
    assert!(out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("ERR"), "{text}");
    assert!(text.contains("MSET"), "{text}");
    let summary = text
        .lines()
        .filter(|l| l.contains("requests per second"))
        .count();
    assert!(summary >= 12, "{text}");
}
