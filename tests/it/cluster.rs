//! rekey in front of a real 3-primary Redis Cluster (started here on loopback ports with
//! `redis-server --cluster-enabled yes` and `redis-cli --cluster create`): keys are routed by
//! the slot of their rewritten name, cross-slot commands are split or refused like Redis does,
//! keyless commands cover the whole cluster, and a slot migration in the middle of load is
//! followed through `-ASK` and `-MOVED` without a failed request.

use crate::common::cluster::{keyslot, RedisCluster};
use crate::common::{encode, Rekey};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RULES: &str =
    "[[rules]]\nname = \"sessions\"\nmatch = '^(\\{?)(AppA|AppB)_'\nreplace = '${1}shared_'\n";

#[test]
fn cluster_routes_splits_and_fans_out() {
    let cluster = RedisCluster::start();
    let rekey = Rekey::start_url(&cluster.url(), RULES);
    let mut con = rekey.client();

    // Written through AppA's prefix, read through AppB's: keys spread over every node.
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("AppA_k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    for i in 0..300 {
        let v: i64 = redis::cmd("GET")
            .arg(format!("AppB_k{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(v, i);
    }
    let mut direct = cluster.nodes[0].direct();
    let mut per_node = [0usize; 3];
    for i in 0..300 {
        per_node[cluster.owner(keyslot(&mut direct, &format!("shared_k{i}")))] += 1;
    }
    for (n, node) in cluster.nodes.iter().enumerate() {
        let size: usize = redis::cmd("DBSIZE").query(&mut node.direct()).unwrap();
        assert_eq!(size, per_node[n], "node {n} holds the keys of its slots");
        assert!(size > 0);
    }

    // Keyless commands see the whole cluster, in the app's names.
    let size: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(size, 300);
    let any: String = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
    assert!(
        any.starts_with("AppA_k") || any.starts_with("AppB_k"),
        "{any}"
    );
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("AppA_k*").query(&mut con).unwrap();
    keys.sort();
    assert_eq!(keys.len(), 300);
    assert!(keys.iter().all(|k| k.starts_with("AppA_k")));
    let mut scanned: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("AppB_k*")
            .arg("COUNT")
            .arg(50)
            .query(&mut con)
            .unwrap();
        scanned.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    scanned.sort();
    scanned.dedup();
    assert_eq!(scanned.len(), 300, "SCAN walks every primary");
    assert!(scanned.iter().all(|k| k.starts_with("AppB_k")));

    // Cross-slot multi-key commands are split and merged in order.
    let names: Vec<String> = (0..20).map(|i| format!("AppB_k{i}")).collect();
    let got: Vec<Option<i64>> = redis::cmd("MGET")
        .arg(&names)
        .arg("AppB_missing")
        .query(&mut con)
        .unwrap();
    let mut want: Vec<Option<i64>> = (0..20).map(Some).collect();
    want.push(None);
    assert_eq!(got, want);
    let _: () = redis::cmd("MSET")
        .arg("AppA_m1")
        .arg("x")
        .arg("AppA_m2")
        .arg("y")
        .arg("AppA_m3")
        .arg("z")
        .query(&mut con)
        .unwrap();
    let n: i64 = redis::cmd("EXISTS")
        .arg("AppB_m1")
        .arg("AppB_m2")
        .arg("AppB_m3")
        .arg("nope")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3);
    let n: i64 = redis::cmd("DEL")
        .arg("AppA_m1")
        .arg("AppA_m2")
        .arg("AppA_m3")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3);
    // Others get Redis's own CROSSSLOT error.
    let err = redis::cmd("SUNIONSTORE")
        .arg("AppA_d")
        .arg("AppA_s1")
        .arg("AppA_s2")
        .query::<i64>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");

    // A session's keys share a hash tag, so its transaction runs on one node.
    let (data, ttl): (String, i64) = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg("{AppA_sess1}_Data")
        .arg("user")
        .arg("alice")
        .ignore()
        .cmd("SET")
        .arg("{AppA_sess1}_Internal")
        .arg("meta")
        .ignore()
        .cmd("EXPIRE")
        .arg("{AppA_sess1}_Data")
        .arg(1200)
        .ignore()
        .cmd("HGET")
        .arg("{AppB_sess1}_Data")
        .arg("user")
        .cmd("TTL")
        .arg("{AppB_sess1}_Data")
        .query(&mut con)
        .unwrap();
    assert_eq!(data, "alice");
    assert!(ttl > 1000);
    // EVALSHA-style scripts with keys in one slot work too.
    let v: String = redis::cmd("EVAL")
        .arg("return redis.call('HGET', KEYS[1], 'user')")
        .arg(1)
        .arg("{AppB_sess1}_Data")
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "alice");

    // Blocking on one node while another client pushes.
    let port = rekey.port;
    let waiter = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        let got: (String, String) = redis::cmd("BLPOP")
            .arg("AppA_queue")
            .arg(5)
            .query(&mut c)
            .unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(200));
    let _: () = redis::cmd("RPUSH")
        .arg("AppB_queue")
        .arg("job")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        waiter.join().unwrap(),
        ("AppA_queue".to_string(), "job".to_string())
    );

    // Pub/sub through the cluster bus: the subscriber gets the message whichever node each
    // side's connection is on (PUBLISH's count is the receiving node's own, as in Redis Cluster).
    let mut sub = rekey.client();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("news").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hello")
        .query(&mut con)
        .unwrap();
    let msg = pubsub.get_message().expect("the message arrives");
    assert_eq!(msg.get_channel_name(), "news");
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
}

/// Pipelines of plain commands take the cluster lane: each request goes to the node of its
/// rewritten key (hash tags included), and the replies come back in request order.
#[test]
fn pipelined_requests_reach_the_node_of_their_rewritten_key() {
    let cluster = RedisCluster::start();
    let rekey = Rekey::start_url(&cluster.url(), RULES);
    let mut con = rekey.client();
    for round in 0..2 {
        let mut pipe = redis::pipe();
        for i in 0..200 {
            pipe.cmd("SET").arg(format!("AppA_p{i}")).arg(i + round);
            pipe.cmd("HSET")
                .arg(format!("{{AppA_s{i}}}_Data"))
                .arg("f")
                .arg(i);
            pipe.cmd("EXPIRE")
                .arg(format!("{{AppA_s{i}}}_Data"))
                .arg(600);
        }
        let _: () = pipe.query(&mut con).unwrap();
        let mut pipe = redis::pipe();
        for i in 0..200 {
            pipe.cmd("GET").arg(format!("AppB_p{i}"));
            pipe.cmd("HGET").arg(format!("{{AppB_s{i}}}_Data")).arg("f");
        }
        let got: Vec<i64> = pipe.query(&mut con).unwrap();
        let want: Vec<i64> = (0..200).flat_map(|i| [i + round, i]).collect();
        assert_eq!(got, want, "round {round}: replies in request order");
    }
    let mut direct = cluster.nodes[0].direct();
    let mut per_node = [0usize; 3];
    for i in 0..200 {
        per_node[cluster.owner(keyslot(&mut direct, &format!("shared_p{i}")))] += 1;
        per_node[cluster.owner(keyslot(&mut direct, &format!("shared_s{i}")))] += 1;
    }
    for (n, node) in cluster.nodes.iter().enumerate() {
        let size: usize = redis::cmd("DBSIZE").query(&mut node.direct()).unwrap();
        assert_eq!(size, per_node[n], "node {n} holds the keys of its slots");
        // Sent to the right node the first time: no node answered -MOVED.
        let errors: String = redis::cmd("INFO")
            .arg("errorstats")
            .query(&mut node.direct())
            .unwrap();
        // (Its other errors are the test's own: redis-rs sends CLIENT SETINFO, which 7.0 lacks.)
        assert!(!errors.contains("errorstat_MOVED"), "node {n}: {errors}");
    }
}

#[test]
fn slot_migration_under_load_loses_no_request() {
    let cluster = RedisCluster::start();
    let rekey = Rekey::start_url(&cluster.url(), RULES);
    let mut direct = cluster.nodes[0].direct();
    // Keys that all live in one slot (a hash tag), written and read by clients under load.
    let slot = keyslot(&mut direct, "{shared_hot}");
    let source = cluster.owner(slot);
    let target = (source + 1) % 3;

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let port = rekey.port;
    let clients: Vec<_> = (0..8)
        .map(|t| {
            let (stop, ops) = (stop.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("{{AppA_hot}}:{t}:{}", n % 50);
                    let _: () = redis::cmd("SET")
                        .arg(&key)
                        .arg(n)
                        .query(&mut c)
                        .unwrap_or_else(|e| panic!("SET {key}: {e}"));
                    let v: u64 = redis::cmd("GET")
                        .arg(format!("{{AppB_hot}}:{t}:{}", n % 50))
                        .query(&mut c)
                        .unwrap_or_else(|e| panic!("GET {key}: {e}"));
                    assert_eq!(v, n, "client {t} read back {key}");
                    if n.is_multiple_of(10) {
                        // A split MGET with one part in the moving slot.
                        let other = format!("AppA_cold{t}");
                        let _: () = redis::cmd("SET").arg(&other).arg(t).query(&mut c).unwrap();
                        let got: (u64, usize) = redis::cmd("MGET")
                            .arg(&key)
                            .arg(&other)
                            .query(&mut c)
                            .unwrap_or_else(|e| panic!("MGET {key} {other}: {e}"));
                        assert_eq!(got, (n, t), "client {t}: MGET across slots");
                    }
                    n += 1;
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // Migrate the slot from its owner to another primary, key by key, as redis-cli does.
    let (src_id, dst_id) = (cluster.id(source), cluster.id(target));
    let mut src = cluster.nodes[source].direct();
    let mut dst = cluster.nodes[target].direct();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&src_id)
        .query(&mut dst)
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&dst_id)
        .query(&mut src)
        .unwrap();
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(10)
            .query(&mut src)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(cluster.nodes[target].port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("REPLACE")
            .arg("KEYS")
            .arg(&keys)
            .query(&mut src)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20)); // let the load hit the migrating state
    }
    cluster.assign_slot(slot, target);
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("a request failed during the migration");
    }
    assert_eq!(cluster.owner(slot), target);
    let on_target: usize = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut dst)
        .unwrap();
    assert!(on_target > 0, "the keys moved");
    assert!(ops.load(Ordering::Relaxed) > 100, "the load ran");
}

#[test]
fn primary_failover_is_followed() {
    let mut cluster = RedisCluster::start_with_replicas(1);
    let rekey = Rekey::start_url(&cluster.url(), RULES);
    let mut con = rekey.client();
    let mut direct = cluster.nodes[0].direct();
    // A key whose primary is not the seed node, so the seed stays up for discovery.
    let key = (0..)
        .map(|i| format!("shared_f{i}"))
        .find(|k| cluster.owner(keyslot(&mut direct, k)) != 0)
        .unwrap();
    let app_key = key.replacen("shared_", "AppA_", 1);
    let slot = keyslot(&mut direct, &key);
    let _: () = redis::cmd("SET")
        .arg(&app_key)
        .arg("v1")
        .query(&mut con)
        .unwrap();
    // Wait until the write reached the replica, then kill the primary.
    std::thread::sleep(Duration::from_millis(500));
    let old = cluster.owner(slot);
    cluster.nodes[old].kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no failover was followed");
        let ready = cluster.ready();
        let moved = ready && cluster.owner(slot) != old;
        let got = redis::cmd("GET").arg(&app_key).query::<String>(&mut con);
        if moved {
            if let Ok(v) = got {
                assert_eq!(v, "v1", "the promoted replica serves the key");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _: () = redis::cmd("SET")
        .arg(&app_key)
        .arg("v2")
        .query(&mut con)
        .unwrap();
    let v: String = redis::cmd("GET").arg(&app_key).query(&mut con).unwrap();
    assert_eq!(v, "v2");
}

#[test]
fn sharded_pubsub_goes_by_the_channel_slot() {
    let cluster = RedisCluster::start();
    let rekey = Rekey::start_url(&cluster.url(), "");
    let mut sub = rekey.raw();
    sub.cmd(&["SSUBSCRIBE", "orders"]);
    sub.expect("*3\r\n$10\r\nssubscribe\r\n$6\r\norders\r\n:1\r\n");
    let mut con = rekey.client();
    let n: i64 = redis::cmd("SPUBLISH")
        .arg("orders")
        .arg("o1")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1, "published on the node that owns the channel's slot");
    sub.expect("*3\r\n$8\r\nsmessage\r\n$6\r\norders\r\n$2\r\no1\r\n");
}

/// A scoped FLUSHDB from a rewritten client deletes its namespace on every primary, not only
/// on the seed, and leaves other keys alone.
#[test]
fn scoped_flush_reaches_every_primary() {
    let cluster = RedisCluster::start();
    let rekey = Rekey::start_url(&cluster.url(), &format!("flush = \"scoped\"\n{RULES}"));
    let mut con = rekey.client();
    let keys: Vec<String> = (0..60).map(|i| format!("AppA_{i}")).collect();
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg("v").query(&mut con).unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("other_{k}"))
            .arg("v")
            .query(&mut con)
            .unwrap();
    }
    let owners: std::collections::HashSet<usize> = keys
        .iter()
        .map(|k| {
            cluster.owner(keyslot(
                &mut cluster.nodes[0].direct(),
                &k.replace("AppA_", "shared_"),
            ))
        })
        .collect();
    assert_eq!(owners.len(), 3, "the keys are spread over every primary");
    let ok: String = redis::cmd("FLUSHDB").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    for node in &cluster.nodes {
        let left: Vec<String> = redis::cmd("KEYS")
            .arg("shared_*")
            .query(&mut node.direct())
            .unwrap();
        assert!(left.is_empty(), "node {} kept {left:?}", node.port);
    }
    let others: usize = cluster
        .nodes
        .iter()
        .map(|n| {
            redis::cmd("DBSIZE")
                .query::<usize>(&mut n.direct())
                .unwrap()
        })
        .sum();
    assert_eq!(others, keys.len(), "keys of no rule stay");
}

/// A pipeline whose requests alternate between nodes goes out as one batch per node; each
/// reply, an error or not, still answers its own request.
#[test]
fn replies_of_a_pipeline_spread_over_nodes_keep_their_places() {
    let cluster = RedisCluster::start();
    let rekey = Rekey::start_url(&cluster.url(), RULES);
    let mut raw = rekey.raw();
    for round in 0..2 {
        let mut bytes = Vec::new();
        let mut push = |args: &[&str]| bytes.extend_from_slice(&encode(args));
        for i in 0..60 {
            let list = format!("AppA_l{round}_{i}");
            let plain = format!("AppA_k{round}_{i}");
            push(&["RPUSH", &list, "x"]);
            push(&["GET", &list]); // WRONGTYPE, from the list's node
            push(&["SET", &plain, &i.to_string()]);
            push(&["GET", &plain]);
        }
        raw.send(&bytes);
        for i in 0..60 {
            assert_eq!(raw.read_reply(), crate::common::Resp::Int(1), "RPUSH {i}");
            let wrong = raw.read_reply();
            assert!(
                matches!(&wrong, crate::common::Resp::Error(e) if e.starts_with("WRONGTYPE")),
                "GET of list {i}: {wrong:?}"
            );
            assert_eq!(raw.read_reply(), crate::common::Resp::Simple("OK".into()));
            assert_eq!(
                raw.read_reply(),
                crate::common::bulk(&i.to_string()),
                "GET {i}"
            );
        }
    }
}

/// The requests of a pipeline that reach a node which no longer serves their slot are sent
/// again, from their place in the node's batch (its bytes kept by rekey), to the node the
/// `-MOVED` names; every reply answers its own request.
#[test]
fn moved_requests_inside_a_pipelines_batch_are_sent_again() {
    let cluster = RedisCluster::start();
    let rekey = Rekey::start_url(&cluster.url(), RULES);
    let mut direct = cluster.nodes[0].direct();
    // `{AppA_mv}:<i>` is rewritten to `{shared_mv}:<i>`: one slot, moved behind rekey's back.
    let slot = keyslot(&mut direct, "shared_mv");
    let old = cluster.owner(slot);
    let new = (old + 1) % 3;
    // Keys that stay on the old node, to surround the moved ones in its batch.
    let stay: Vec<String> = (0..)
        .map(|j| format!("f{j}"))
        .filter(|k| {
            let s = keyslot(&mut direct, &format!("shared_{k}"));
            s != slot && cluster.owner(s) == old
        })
        .take(20)
        .collect();
    let mut raw = rekey.raw();
    assert_eq!(
        raw.call(&["SET", &format!("AppA_{}", stay[0]), "warm"]),
        crate::common::Resp::Simple("OK".into())
    );
    cluster.assign_slot(slot, new);
    let mut bytes = Vec::new();
    let mut push = |args: &[&str]| bytes.extend_from_slice(&encode(args));
    for (i, k) in stay.iter().enumerate() {
        let (v, moved) = (i.to_string(), format!("{{AppA_mv}}:{i}"));
        push(&["SET", &format!("AppA_{k}"), &v]);
        push(&["SET", &moved, &v]);
        push(&["GET", &moved]);
        push(&["GET", &format!("AppB_{k}")]);
    }
    raw.send(&bytes);
    for i in 0..stay.len() {
        let v = i.to_string();
        assert_eq!(raw.read_reply(), crate::common::Resp::Simple("OK".into()));
        assert_eq!(raw.read_reply(), crate::common::Resp::Simple("OK".into()));
        assert_eq!(raw.read_reply(), crate::common::bulk(&v), "GET moved {i}");
        assert_eq!(raw.read_reply(), crate::common::bulk(&v), "GET stay {i}");
    }
    let on_new: usize = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut cluster.nodes[new].direct())
        .unwrap();
    assert_eq!(
        on_new,
        stay.len(),
        "the moved slot's keys are on its new node"
    );
    let errors: String = redis::cmd("INFO")
        .arg("errorstats")
        .query(&mut cluster.nodes[old].direct())
        .unwrap();
    assert!(errors.contains("errorstat_MOVED"), "redirected: {errors}");
}

/// A request too large to join a node's batch does not overtake the smaller requests before
/// it for the same node: Redis runs them in the order the client sent them.
#[test]
fn a_large_request_keeps_its_place_behind_a_nodes_batch() {
    let cluster = RedisCluster::start();
    let rekey = Rekey::start_url(&cluster.url(), RULES);
    let mut raw = rekey.raw();
    let big = "x".repeat(40 * 1024);
    let mut bytes = Vec::new();
    let mut push = |args: &[&str]| bytes.extend_from_slice(&encode(args));
    for i in 0..10 {
        let key = format!("AppA_big{i}");
        push(&["SET", &key, "small"]);
        push(&["SET", &key, &big]);
        push(&["STRLEN", &key]);
    }
    raw.send(&bytes);
    for i in 0..10 {
        assert_eq!(raw.read_reply(), crate::common::Resp::Simple("OK".into()));
        assert_eq!(raw.read_reply(), crate::common::Resp::Simple("OK".into()));
        assert_eq!(
            raw.read_reply(),
            crate::common::Resp::Int(big.len() as i64),
            "key {i}: the large SET ran last"
        );
    }
}
