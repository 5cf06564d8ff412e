//! `rekey migrate` against a real redis-server and a real 3-primary cluster: keys written
//! under the apps' own names before rekey (strings, hashes with a TTL, lock keys, other
//! types) move to the names the rules give them with their value, type and TTL; a name that
//! exists is never overwritten (a collision, reported, exit status 2); a dry run changes
//! nothing; a run killed half-way is finished by the next one; `--rate`, `--app`,
//! `--reverse`; upstreams with a password, an ACL user and a db other than 0; a Sentinel's
//! primary; and 100,000 keys (the time is printed). After each migration a running rekey
//! shows the apps their sessions under their own names.

use crate::common::cluster::RedisCluster;
use crate::common::sentinel::Sentinel;
use crate::common::{scratch_dir, RedisServer, Rekey, Variant};
use rekey::cluster::slot::slot_of;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const RULES: &str =
    "[[rules]]\nname = \"sessions\"\nmatch = '^(\\{?)(AppA|AppB)_'\nreplace = '${1}shared_'\n";

/// A config file with `upstream` and `rules`.
fn config(upstream: &str, rules: &str) -> PathBuf {
    let path = scratch_dir("migrate").join("rekey.toml");
    std::fs::write(&path, format!("upstream = \"{upstream}\"\n{rules}")).unwrap();
    path
}

fn rekey_migrate(config: &PathBuf, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rekey"));
    cmd.arg("-c").arg(config).arg("migrate").args(args);
    cmd
}

/// Runs `rekey -c CONFIG migrate ARGS`: exit status, stdout, stderr.
fn migrate(config: &PathBuf, args: &[&str]) -> (i32, String, String) {
    let out: Output = rekey_migrate(config, args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

fn cmd(con: &mut redis::Connection, args: &[&str]) -> redis::Value {
    redis::cmd(args[0]).arg(&args[1..]).query(con).unwrap()
}

fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).unwrap()
}

fn pttl(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(con).unwrap()
}

fn exists(con: &mut redis::Connection, key: &str) -> bool {
    redis::cmd("EXISTS").arg(key).query::<i64>(con).unwrap() == 1
}

fn key_type(con: &mut redis::Connection, key: &str) -> String {
    redis::cmd("TYPE").arg(key).query(con).unwrap()
}

/// Every key of a Redis with its type, value dump and whether it has a TTL: to compare
/// before and after.
fn snapshot(con: &mut redis::Connection) -> Vec<(String, Vec<u8>, bool)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    let mut out: Vec<_> = keys
        .into_iter()
        .map(|k| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(con).unwrap();
            let ttl = pttl(con, &k) > 0;
            (k, dump, ttl)
        })
        .collect();
    out.sort();
    out
}

/// The session data a pre-rekey deployment leaves: ASP.NET-style strings with a TTL,
/// `_Data` hashes with a TTL and their lock keys, keys of other types, a key the rules do not
/// touch, and one session already rewritten through rekey under the shared name (the
/// collision). Returns how many keys the rules should move.
fn write_sessions(con: &mut redis::Connection) -> usize {
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("AppA_sess{i}"))
            .arg(format!("v{i}"))
            .arg("EX")
            .arg(3600)
            .query(con)
            .unwrap();
    }
    for i in 0..20 {
        let data = format!("{{AppB_s{i}}}_Data");
        cmd(
            con,
            &["HSET", &data, "items", &format!("x{i}"), "timeout", "20"],
        );
        cmd(con, &["EXPIRE", &data, "1800"]);
        let lock = format!("{{AppB_s{i}}}_Write_Lock");
        cmd(
            con,
            &["SET", &lock, &format!("lock{i}"), "NX", "PX", "90000"],
        );
    }
    cmd(con, &["SET", "{AppA_s0}_Internal", "persistent"]);
    cmd(con, &["RPUSH", "AppA_list", "a", "b", "c"]);
    cmd(con, &["SADD", "AppA_set", "m1", "m2"]);
    cmd(con, &["ZADD", "AppA_zset", "1", "one", "2", "two"]);
    cmd(con, &["XADD", "AppA_stream", "1-1", "f", "v"]);
    cmd(con, &["SET", "other:1", "untouched"]);
    cmd(con, &["SET", "AppC_x", "not a rule's"]);
    cmd(con, &["SET", "AppA_taken", "old"]);
    cmd(con, &["SET", "shared_taken", "new, written through rekey"]);
    50 + 40 + 1 + 4
}

/// What [`write_sessions`] wrote is under the shared names, with its TTLs.
fn check_moved(con: &mut redis::Connection) {
    for i in 0..50 {
        assert!(!exists(con, &format!("AppA_sess{i}")));
        assert_eq!(get(con, &format!("shared_sess{i}")), Some(format!("v{i}")));
        let ttl = pttl(con, &format!("shared_sess{i}"));
        assert!(ttl > 3_500_000 && ttl <= 3_600_000, "TTL kept: {ttl}");
    }
    for i in 0..20 {
        let data = format!("{{shared_s{i}}}_Data");
        assert!(!exists(con, &format!("{{AppB_s{i}}}_Data")));
        let items: String = redis::cmd("HGET")
            .arg(&data)
            .arg("items")
            .query(con)
            .unwrap();
        assert_eq!(items, format!("x{i}"));
        let ttl = pttl(con, &data);
        assert!(ttl > 1_700_000 && ttl <= 1_800_000, "hash TTL kept: {ttl}");
        let lock = format!("{{shared_s{i}}}_Write_Lock");
        assert_eq!(get(con, &lock), Some(format!("lock{i}")));
        let ttl = pttl(con, &lock);
        assert!(ttl > 0 && ttl <= 90_000, "lock TTL kept: {ttl}");
    }
    assert_eq!(
        get(con, "{shared_s0}_Internal").as_deref(),
        Some("persistent")
    );
    assert_eq!(pttl(con, "{shared_s0}_Internal"), -1, "no TTL stays no TTL");
    for (key, t) in [
        ("shared_list", "list"),
        ("shared_set", "set"),
        ("shared_zset", "zset"),
        ("shared_stream", "stream"),
    ] {
        assert_eq!(key_type(con, key), t, "{key}");
    }
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("shared_list")
        .arg(0)
        .arg(-1)
        .query(con)
        .unwrap();
    assert_eq!(list, ["a", "b", "c"]);
    assert_eq!(get(con, "other:1").as_deref(), Some("untouched"));
    assert_eq!(get(con, "AppC_x").as_deref(), Some("not a rule's"));
    // The collision: the newer key stays, the old one is left where it was.
    assert_eq!(get(con, "AppA_taken").as_deref(), Some("old"));
    assert_eq!(
        get(con, "shared_taken").as_deref(),
        Some("new, written through rekey")
    );
}

/// Through a running rekey, each app sees the sessions under its own names.
fn check_through_rekey(rekey: &Rekey) {
    let mut app = rekey.client();
    assert_eq!(get(&mut app, "AppA_sess7").as_deref(), Some("v7"));
    assert_eq!(get(&mut app, "AppB_sess7").as_deref(), Some("v7"), "shared");
    assert!(pttl(&mut app, "AppA_sess7") > 3_500_000);
    let items: String = redis::cmd("HGET")
        .arg("{AppA_s3}_Data")
        .arg("items")
        .query(&mut app)
        .unwrap();
    assert_eq!(items, "x3");
    assert_eq!(
        get(&mut app, "{AppB_s3}_Write_Lock").as_deref(),
        Some("lock3")
    );
    assert_eq!(
        get(&mut app, "AppA_taken").as_deref(),
        Some("new, written through rekey"),
        "the app sees the key it wrote through rekey"
    );
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("AppA_sess1*")
        .query(&mut app)
        .unwrap();
    keys.sort();
    assert_eq!(keys.len(), 11, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("AppA_sess1")), "{keys:?}");
}

fn sessions_move(variant: Variant) {
    let redis = RedisServer::start_variant(variant);
    let mut con = redis.direct();
    let expected = write_sessions(&mut con);
    if variant.db != 0 {
        // Another db is not the migration's business.
        let mut db0 = redis.direct_db(0);
        cmd(&mut db0, &["SET", "AppA_db0", "stays"]);
    }
    let cfg = config(&redis.url(), RULES);
    let (code, out, err) = migrate(&cfg, &[]);
    assert_eq!(code, 2, "a collision: exit 2\n{out}\n{err}");
    assert!(
        out.contains("collision: \"AppA_taken\" -> \"shared_taken\""),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "moved {expected}, skipped 0, collisions 1, failed 0"
        )),
        "{out}"
    );
    check_moved(&mut con);
    if variant.db != 0 {
        let mut db0 = redis.direct_db(0);
        assert_eq!(get(&mut db0, "AppA_db0").as_deref(), Some("stays"));
    }

    // Again: nothing left to move but the collision.
    let (code, out, _) = migrate(&cfg, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("moved 0, skipped 0, collisions 1, failed 0"),
        "{out}"
    );
    // Resolved by hand: a clean run.
    cmd(&mut con, &["DEL", "AppA_taken"]);
    let (code, out, _) = migrate(&cfg, &[]);
    assert_eq!(code, 0, "{out}");

    let rekey = Rekey::start(&redis, RULES);
    check_through_rekey(&rekey);
}

#[test]
fn sessions_move_keeping_type_and_ttl() {
    sessions_move(Variant::PLAIN);
}

#[test]
fn sessions_move_with_a_password() {
    sessions_move(Variant::PASSWORD);
}

#[test]
fn sessions_move_as_an_acl_user() {
    sessions_move(Variant::ACL_USER);
}

#[test]
fn sessions_move_in_db3() {
    sessions_move(Variant::DB3);
}

#[test]
fn a_dry_run_changes_nothing() {
    let redis = RedisServer::start();
    let mut con = redis.direct();
    let expected = write_sessions(&mut con);
    let before = snapshot(&mut con);
    let cfg = config(&redis.url(), RULES);
    let (code, out, err) = migrate(&cfg, &["--dry-run"]);
    assert_eq!(code, 2, "a collision would happen: exit 2\n{out}\n{err}");
    assert_eq!(snapshot(&mut con), before, "nothing changed");
    let would: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("would move: "))
        .collect();
    assert_eq!(would.len(), expected, "{out}");
    assert!(
        out.contains("would move: \"{AppB_s4}_Write_Lock\" -> \"{shared_s4}_Write_Lock\""),
        "{out}"
    );
    assert!(
        out.contains("would collide: \"AppA_taken\" -> \"shared_taken\""),
        "{out}"
    );
    assert!(out.contains("dry run (nothing changed)"), "{out}");
}

/// Writes `n` keys `AppA_k<i>` = `<i>` with a TTL, in pipelines.
fn write_many(con: &mut redis::Connection, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("AppA_k{i}"))
                .arg(i)
                .arg("EX")
                .arg(7200)
                .ignore();
        }
        let _: () = pipe.query(con).unwrap();
    }
}

/// Counts the keys matching `pattern` (SCAN, so a big keyspace does not block Redis).
fn count(con: &mut redis::Connection, pattern: &str) -> usize {
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .unwrap();
        n += keys.len();
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

#[test]
fn an_interrupted_run_is_finished_by_the_next() {
    let redis = RedisServer::start();
    let mut con = redis.direct();
    let n = 20_000;
    write_many(&mut con, n);
    let cfg = config(&redis.url(), RULES);
    // 4,000 keys/s: five seconds for all; killed after two.
    let mut child: Child = rekey_migrate(&cfg, &["--rate", "4000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("keys scanned") && log.contains("moved"),
        "a log line a second without a terminal: {log}"
    );
    let (old, new) = (count(&mut con, "AppA_k*"), count(&mut con, "shared_k*"));
    assert!(new > 0 && old > 0, "killed half-way: {old} old, {new} new");
    assert_eq!(old + new, n, "no key lost or doubled");

    let started = Instant::now();
    let (code, out, err) = migrate(&cfg, &["--rate", "10000"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("moved {old}, skipped 0, collisions 0")),
        "only what was left moves: {out}"
    );
    // A lower bound only: --rate never lets the run go faster.
    assert!(
        took >= Duration::from_secs_f64(old as f64 / 10_000.0 * 0.9),
        "{old} keys at 10,000/s took {took:?}"
    );
    assert_eq!(count(&mut con, "AppA_k*"), 0);
    assert_eq!(count(&mut con, "shared_k*"), n);
    for i in [0, 1, n / 2, n - 1] {
        assert_eq!(get(&mut con, &format!("shared_k{i}")), Some(i.to_string()));
        assert!(pttl(&mut con, &format!("shared_k{i}")) > 7_000_000);
    }
}

#[test]
fn hundred_thousand_keys_on_one_redis() {
    let redis = RedisServer::start();
    let mut con = redis.direct();
    let n = 100_000;
    write_many(&mut con, n);
    let cfg = config(&redis.url(), RULES);
    let started = Instant::now();
    let (code, out, err) = migrate(&cfg, &["--quiet"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("moved {n}, skipped 0")), "{out}");
    println!(
        "migrate: {n} keys on one Redis in {:.2}s ({:.0} keys/s, this build)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    assert_eq!(count(&mut con, "AppA_k*"), 0);
    assert_eq!(count(&mut con, "shared_k*"), n);
    let rekey = Rekey::start(&redis, RULES);
    let mut app = rekey.client();
    assert_eq!(get(&mut app, "AppB_k99999").as_deref(), Some("99999"));
}

#[test]
fn rules_for_one_app_and_reverse() {
    let redis = RedisServer::start();
    let mut con = redis.direct();
    for i in 0..10 {
        cmd(&mut con, &["SET", &format!("sess:{i}"), "v", "EX", "600"]);
    }
    let rules = "[[apps]]\nname = \"appA\"\n\n[[rules]]\nname = \"appA-sessions\"\nmatch = '^sess:'\nreplace = 'appA:sess:'\napps = [\"appA\"]\n";
    let cfg = config(&redis.url(), rules);
    let (code, _, err) = migrate(&cfg, &[]);
    assert_eq!(code, 1, "no rule applies without --app: {err}");
    assert!(err.contains("--app"), "{err}");
    assert_eq!(count(&mut con, "sess:*"), 10, "nothing moved");

    let (code, out, _) = migrate(&cfg, &["--app", "appA"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&mut con, "appA:sess:*"), 10);
    assert!(pttl(&mut con, "appA:sess:3") > 500_000);

    // Rolled back: the keys go back to the app's own names.
    let (code, out, _) = migrate(&cfg, &["--app", "appA", "--reverse", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("would move: \"appA:sess:3\" -> \"sess:3\""),
        "{out}"
    );
    let (code, out, _) = migrate(&cfg, &["--app", "appA", "--reverse"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(count(&mut con, "sess:*"), 10);
    assert_eq!(count(&mut con, "appA:*"), 0);
    assert!(pttl(&mut con, "sess:3") > 500_000);

    // A rule that cannot be undone by a machine says so, and nothing moves.
    let cfg = config(&redis.url(), RULES);
    let (code, _, err) = migrate(&cfg, &["--reverse"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot be reversed automatically"), "{err}");
}

#[test]
fn a_namespace_rule_moves_each_key_once() {
    // `match = '^'` gives every key a namespace: a moved key matches the rule again, and a
    // second run must still leave it alone.
    let redis = RedisServer::start();
    let mut con = redis.direct();
    for i in 0..100 {
        cmd(&mut con, &["SET", &format!("k{i}"), &i.to_string()]);
    }
    let cfg = config(
        &redis.url(),
        "[[rules]]\nname = \"tenant\"\nmatch = '^'\nreplace = 't2:'\n",
    );
    let (code, out, _) = migrate(&cfg, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("moved 100,"), "{out}");
    let (code, out, _) = migrate(&cfg, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("moved 0, skipped 100,"), "{out}");
    assert_eq!(count(&mut con, "t2:k*"), 100);
    assert_eq!(count(&mut con, "t2:t2:*"), 0);
}

/// Writes `key` = `value` (with `args`) on the cluster node that serves it.
fn cluster_cmd(cluster: &RedisCluster, args: &[&str]) -> redis::Value {
    let node = cluster.owner(slot_of(args[1].as_bytes()));
    cmd(&mut cluster.nodes[node].direct(), args)
}

fn cluster_con(cluster: &RedisCluster, key: &str) -> redis::Connection {
    cluster.nodes[cluster.owner(slot_of(key.as_bytes()))].direct()
}

fn cluster_size(cluster: &RedisCluster) -> usize {
    cluster
        .nodes
        .iter()
        .map(|n| {
            redis::cmd("DBSIZE")
                .query::<usize>(&mut n.direct())
                .unwrap()
        })
        .sum()
}

#[test]
fn cluster_moves_across_slots_and_within_one() {
    let cluster = RedisCluster::start();
    for i in 0..50 {
        let k = format!("AppA_sess{i}");
        cluster_cmd(&cluster, &["SET", &k, &format!("v{i}"), "EX", "3600"]);
    }
    for i in 0..20 {
        let data = format!("{{AppB_s{i}}}_Data");
        cluster_cmd(&cluster, &["HSET", &data, "items", &format!("x{i}")]);
        cluster_cmd(&cluster, &["EXPIRE", &data, "1800"]);
        let lock = format!("{{AppB_s{i}}}_Write_Lock");
        cluster_cmd(&cluster, &["SET", &lock, "l", "NX", "PX", "90000"]);
    }
    // The hash tag is not the prefix: same slot before and after, RENAMENX in place.
    for i in 0..10 {
        cluster_cmd(&cluster, &["SET", &format!("AppA_t{i}{{tag}}"), "t"]);
    }
    cluster_cmd(&cluster, &["SET", "AppA_taken", "old"]);
    cluster_cmd(&cluster, &["SET", "shared_taken", "new"]);
    // A run killed between RESTORE and the delete: the new name holds the same value.
    cluster_cmd(&cluster, &["SET", "AppA_half", "copied", "EX", "600"]);
    let dump: Vec<u8> = redis::cmd("DUMP")
        .arg("AppA_half")
        .query(&mut cluster_con(&cluster, "AppA_half"))
        .unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("shared_half")
        .arg(600_000)
        .arg(dump)
        .query(&mut cluster_con(&cluster, "shared_half"))
        .unwrap();
    let total = cluster_size(&cluster);
    let before: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| snapshot(&mut n.direct()))
        .collect();

    let cfg = config(&cluster.url(), RULES);
    let (code, out, err) = migrate(&cfg, &["--dry-run"]);
    assert_eq!(code, 2, "{out}\n{err}");
    let after: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| snapshot(&mut n.direct()))
        .collect();
    assert_eq!(after, before, "a dry run changes nothing");
    assert!(out.contains("3 node(s)"), "{out}");

    let (code, out, err) = migrate(&cfg, &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("moved 101, skipped 0, collisions 1, failed 0"),
        "50 + 40 + 10 + the half-moved one: {out}"
    );
    assert_eq!(
        cluster_size(&cluster),
        total - 1,
        "the half-moved key's copy is one key"
    );
    for i in 0..50 {
        let k = format!("shared_sess{i}");
        let mut con = cluster_con(&cluster, &k);
        assert_eq!(get(&mut con, &k), Some(format!("v{i}")));
        let ttl = pttl(&mut con, &k);
        assert!(ttl > 3_500_000 && ttl <= 3_600_000, "TTL kept: {ttl}");
        let old = format!("AppA_sess{i}");
        assert!(!exists(&mut cluster_con(&cluster, &old), &old));
    }
    for i in 0..20 {
        let data = format!("{{shared_s{i}}}_Data");
        let mut con = cluster_con(&cluster, &data);
        assert_eq!(key_type(&mut con, &data), "hash");
        let ttl = pttl(&mut con, &data);
        assert!(ttl > 1_700_000 && ttl <= 1_800_000, "hash TTL kept: {ttl}");
        let lock = format!("{{shared_s{i}}}_Write_Lock");
        let ttl = pttl(&mut con, &lock);
        assert!(
            ttl > 0 && ttl <= 90_000,
            "lock TTL kept, same node as its data: {ttl}"
        );
    }
    let mut tagged = cluster_con(&cluster, "{tag}");
    assert_eq!(get(&mut tagged, "shared_t3{tag}").as_deref(), Some("t"));
    assert_eq!(pttl(&mut tagged, "shared_t3{tag}"), -1);
    assert_eq!(
        get(&mut cluster_con(&cluster, "AppA_taken"), "AppA_taken").as_deref(),
        Some("old")
    );
    assert!(!exists(
        &mut cluster_con(&cluster, "AppA_half"),
        "AppA_half"
    ));
    assert_eq!(
        get(&mut cluster_con(&cluster, "shared_half"), "shared_half").as_deref(),
        Some("copied")
    );

    let rekey = Rekey::start_url(&cluster.url(), RULES);
    let mut app = rekey.client();
    assert_eq!(get(&mut app, "AppB_sess9").as_deref(), Some("v9"));
    let items: String = redis::cmd("HGET")
        .arg("{AppA_s9}_Data")
        .arg("items")
        .query(&mut app)
        .unwrap();
    assert_eq!(items, "x9");
    assert_eq!(get(&mut app, "AppA_taken").as_deref(), Some("new"));
    assert_eq!(get(&mut app, "AppA_half").as_deref(), Some("copied"));
}

#[test]
fn hundred_thousand_keys_on_a_cluster() {
    let cluster = RedisCluster::start();
    let n = 100_000;
    let owners = cluster.slot_owners();
    let mut pipes: Vec<redis::Pipeline> = (0..3).map(|_| redis::pipe()).collect();
    for i in 0..n {
        let key = format!("AppA_k{i}");
        pipes[owners[slot_of(key.as_bytes()) as usize]]
            .cmd("SET")
            .arg(key)
            .arg(i)
            .arg("EX")
            .arg(7200)
            .ignore();
    }
    for (node, pipe) in pipes.iter().enumerate() {
        let _: () = pipe.query(&mut cluster.nodes[node].direct()).unwrap();
    }
    assert_eq!(cluster_size(&cluster), n);
    let cfg = config(&cluster.url(), RULES);
    let started = Instant::now();
    let (code, out, err) = migrate(&cfg, &["--quiet"]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("moved {n}, skipped 0")), "{out}");
    println!(
        "migrate: {n} keys on a 3-primary cluster in {:.2}s ({:.0} keys/s, this build)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    assert_eq!(cluster_size(&cluster), n);
    for node in &cluster.nodes {
        assert_eq!(count(&mut node.direct(), "AppA_*"), 0);
    }
    let rekey = Rekey::start_url(&cluster.url(), RULES);
    let mut app = rekey.client();
    assert_eq!(get(&mut app, "AppB_k12345").as_deref(), Some("12345"));
    assert!(pttl(&mut app, "AppB_k12345") > 7_000_000);
}

#[test]
fn a_sentinel_names_the_primary() {
    let redis = RedisServer::start();
    let sentinel = Sentinel::start(redis.port);
    let mut con = redis.direct();
    for i in 0..10 {
        cmd(&mut con, &["SET", &format!("AppB_s{i}"), "v"]);
    }
    let cfg = config(
        &format!("redis-sentinel://127.0.0.1:{}/mymaster", sentinel.port),
        RULES,
    );
    let (code, out, err) = migrate(&cfg, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(count(&mut con, "shared_s*"), 10);
}

/// The delete that ends a move across cluster slots removes the old key only while it holds
/// what was copied: a value an app wrote meanwhile is never lost.
#[test]
fn the_checked_delete_keeps_a_changed_key() {
    let redis = RedisServer::start();
    let mut con = redis.direct();
    let script = rekey::migrate::mover::DELETE_IF_SAME;
    cmd(&mut con, &["SET", "k", "copied"]);
    let copied: Vec<u8> = redis::cmd("DUMP").arg("k").query(&mut con).unwrap();
    cmd(&mut con, &["SET", "k", "written meanwhile"]);
    let eval = |con: &mut redis::Connection, payload: &[u8]| -> i64 {
        redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg("k")
            .arg(payload)
            .query(con)
            .unwrap()
    };
    assert_eq!(eval(&mut con, &copied), -1);
    assert_eq!(get(&mut con, "k").as_deref(), Some("written meanwhile"));
    let now: Vec<u8> = redis::cmd("DUMP").arg("k").query(&mut con).unwrap();
    assert_eq!(eval(&mut con, &now), 1);
    assert!(!exists(&mut con, "k"));
    assert_eq!(eval(&mut con, &now), 0, "gone already");
}

#[test]
fn sessions_move_as_an_acl_user_in_db3() {
    sessions_move(Variant::ACL_USER_DB3);
}
