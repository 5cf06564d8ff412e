//! Each session-provider preset, driven with that provider's documented key layout and command
//! sequence (written by us, from ../shared/PROVIDERS.md) by two apps with different prefixes
//! through one rekey: a session created by one is read, locked, refreshed and deleted by the
//! other, and lives upstream under the shared prefix.

use crate::common::{RedisServer, Rekey, Variant};
use redis::{cmd, Connection, Value};

fn preset(name: &str) -> String {
    let text = std::fs::read_to_string(format!(
        "{}/config/presets/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    if !WITH_ACL.with(|w| w.get()) {
        return text;
    }
    // Both example apps are this test's clients (no identity): the preset's recommended ACL,
    // for the default user, with every pattern for appA given for appB too.
    let acl = recommended_acl(&text);
    let mut rules: Vec<String> = Vec::new();
    for rule in acl.split(' ') {
        rules.push(rule.to_string());
        let other = rule
            .replace("appA", "appB")
            .replace("AppA", "AppB")
            .replace("APPA", "APPB");
        if other != rule {
            rules.push(other);
        }
    }
    format!("acl = \"{}\"\n{text}", rules.join(" "))
}

/// The `# acl = "…"` line a preset recommends.
fn recommended_acl(preset: &str) -> String {
    let line = preset
        .lines()
        .find_map(|l| l.strip_prefix("# acl = "))
        .expect("every preset recommends an ACL");
    line.trim_matches('"').to_string()
}

thread_local! {
    /// This test runs its preset under the preset's recommended ACL.
    static WITH_ACL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Redis of `variant`, rekey with the preset `name` in front, and two clients.
fn setup(variant: Variant, name: &str) -> (RedisServer, Rekey, Connection, Connection) {
    let redis = RedisServer::start_variant(variant);
    let rekey = Rekey::start(&redis, &preset(name));
    let a = rekey.client();
    let b = rekey.client();
    (redis, rekey, a, b)
}

fn exists(con: &mut Connection, key: &str) -> bool {
    cmd("EXISTS").arg(key).query::<i64>(con).unwrap() == 1
}

fn ttl(con: &mut Connection, key: &str) -> i64 {
    cmd("TTL").arg(key).query(con).unwrap()
}

fn aspnet_session_state_provider_v5_and_v4_scripts(v: Variant) {
    let (redis, _rekey, mut a, mut b) = setup(v, "aspnet-session-state");
    // v5: the provider loads its scripts once and calls EVALSHA with 3 keys (hash-tagged).
    let write = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('EXPIRE', KEYS[1], ARGV[2]); \
                 redis.call('SET', KEYS[3], ARGV[2]); redis.call('EXPIRE', KEYS[3], ARGV[2]); return 1";
    let sha: String = cmd("SCRIPT").arg("LOAD").arg(write).query(&mut a).unwrap();
    let keys_a = [
        "{AppA_s1}_SessionStateItemCollection",
        "{AppA_s1}_WriteLock",
        "{AppA_s1}_SessionTimeout",
    ];
    let keys_b = [
        "{AppB_s1}_SessionStateItemCollection",
        "{AppB_s1}_WriteLock",
        "{AppB_s1}_SessionTimeout",
    ];
    let _: i64 = cmd("EVALSHA")
        .arg(&sha)
        .arg(3)
        .arg(&keys_a[..])
        .arg("user=alice")
        .arg(1200)
        .query(&mut a)
        .unwrap();
    // Read from app B: its own key names, same data.
    let read = "return {redis.call('GET', KEYS[1]), redis.call('TTL', KEYS[3])}";
    let got: (String, i64) = cmd("EVAL")
        .arg(read)
        .arg(3)
        .arg(&keys_b[..])
        .query(&mut b)
        .unwrap();
    assert_eq!(got.0, "user=alice");
    assert!(got.1 > 1000);
    // Lock from B (SETNX in a script), seen by A.
    let lock = "return redis.call('SETNX', KEYS[2], ARGV[1])";
    let took: i64 = cmd("EVAL")
        .arg(lock)
        .arg(3)
        .arg(&keys_b[..])
        .arg("lock-b")
        .query(&mut b)
        .unwrap();
    assert_eq!(took, 1);
    let took: i64 = cmd("EVAL")
        .arg(lock)
        .arg(3)
        .arg(&keys_a[..])
        .arg("lock-a")
        .query(&mut a)
        .unwrap();
    assert_eq!(took, 0, "app A must see app B's lock");
    // Refresh expiry from A, seen by B; delete from B, gone for A.
    let _: i64 = cmd("EVAL")
        .arg("return redis.call('EXPIRE', KEYS[1], ARGV[1])")
        .arg(3)
        .arg(&keys_a[..])
        .arg(3000)
        .query(&mut a)
        .unwrap();
    assert!(ttl(&mut b, keys_b[0]) > 2000);
    let _: i64 = cmd("EVAL")
        .arg("return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])")
        .arg(3)
        .arg(&keys_b[..])
        .query(&mut b)
        .unwrap();
    assert!(!exists(&mut a, keys_a[0]));
    // v1-v4 layout: a hash per session, HMSET/HGETALL inside scripts.
    let set =
        "redis.call('HMSET', KEYS[1], 'cart', ARGV[1]); redis.call('SET', KEYS[3], '20'); return 1";
    let _: i64 = cmd("EVAL")
        .arg(set)
        .arg(3)
        .arg("{AppA_s2}_Data")
        .arg("{AppA_s2}_Write_Lock")
        .arg("{AppA_s2}_Internal")
        .arg("3 items")
        .query(&mut a)
        .unwrap();
    let got: Vec<String> = cmd("EVAL")
        .arg("return redis.call('HGETALL', KEYS[1])")
        .arg(3)
        .arg("{AppB_s2}_Data")
        .arg("{AppB_s2}_Write_Lock")
        .arg("{AppB_s2}_Internal")
        .query(&mut b)
        .unwrap();
    assert_eq!(got, vec!["cart", "3 items"]);
    // Upstream: one shared namespace, and the three keys keep one hash tag.
    let mut direct = redis.direct();
    let mut upstream: Vec<String> = cmd("KEYS").arg("*").query(&mut direct).unwrap();
    upstream.sort();
    assert_eq!(upstream, vec!["{shared_s2}_Data", "{shared_s2}_Internal"]);
}

fn aspnetcore_rediscache_session(v: Variant) {
    let (_redis, _rekey, mut a, mut b) = setup(v, "aspnetcore-session");
    let mut p = redis::pipe();
    p.cmd("HSET")
        .arg("AppA_sess42")
        .arg("absexp")
        .arg(-1)
        .arg("sldexp")
        .arg(1_200_000_000i64)
        .arg("data")
        .arg("payload");
    p.cmd("EXPIRE").arg("AppA_sess42").arg(1200);
    let _: (i64, i64) = p.query(&mut a).unwrap();
    let got: Vec<String> = cmd("HMGET")
        .arg("AppB_sess42")
        .arg("absexp")
        .arg("sldexp")
        .arg("data")
        .query(&mut b)
        .unwrap();
    assert_eq!(got, vec!["-1", "1200000000", "payload"]);
    let _: i64 = cmd("EXPIRE")
        .arg("AppB_sess42")
        .arg(2400)
        .query(&mut b)
        .unwrap();
    assert!(ttl(&mut a, "AppA_sess42") > 1200);
    let _: i64 = cmd("DEL").arg("AppB_sess42").query(&mut b).unwrap();
    assert!(!exists(&mut a, "AppA_sess42"));
}

fn harbour_session_with_lock_transactions(v: Variant) {
    let (redis, _rekey, mut a, mut b) = setup(v, "harbour-session");
    let _: Value = redis::pipe()
        .atomic()
        .cmd("HMSET")
        .arg("AppA/s9")
        .arg("created")
        .arg("2026")
        .arg("locked")
        .arg("false")
        .arg("items")
        .arg("blob")
        .cmd("EXPIRE")
        .arg("AppA/s9")
        .arg(1200)
        .query(&mut a)
        .unwrap();
    let all: Vec<String> = cmd("HGETALL").arg("AppB/s9").query(&mut b).unwrap();
    assert_eq!(
        all,
        vec!["created", "2026", "locked", "false", "items", "blob"]
    );
    // Lock: SETNX, then WATCH + GET + MULTI SET EXEC from the other app.
    let got: i64 = cmd("SETNX")
        .arg("AppB/s9/lock")
        .arg("lock-1")
        .query(&mut b)
        .unwrap();
    assert_eq!(got, 1);
    let _: () = cmd("WATCH").arg("AppA/s9/lock").query(&mut a).unwrap();
    let holder: String = cmd("GET").arg("AppA/s9/lock").query(&mut a).unwrap();
    assert_eq!(holder, "lock-1");
    let res: Vec<String> = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("AppA/s9/lock")
        .arg("lock-2")
        .query(&mut a)
        .unwrap();
    assert_eq!(res, vec!["OK"]);
    let holder: String = cmd("GET").arg("AppB/s9/lock").query(&mut b).unwrap();
    assert_eq!(holder, "lock-2");
    let _: i64 = cmd("EXPIRE").arg("AppB/s9").arg(99).query(&mut b).unwrap();
    assert!(ttl(&mut a, "AppA/s9") <= 99);
    let _: Value = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg("AppB/s9")
        .arg("AppB/s9/lock")
        .query(&mut b)
        .unwrap();
    assert!(!exists(&mut a, "AppA/s9"));
    let n: i64 = cmd("DBSIZE").query(&mut redis.direct()).unwrap();
    assert_eq!(n, 0);
}

fn connect_redis_with_scan_listing(v: Variant) {
    let (_redis, _rekey, mut a, mut b) = setup(v, "connect-redis");
    let _: () = cmd("SET")
        .arg("appA:sess:abc")
        .arg(r#"{"user":"alice"}"#)
        .arg("EX")
        .arg(86400)
        .query(&mut a)
        .unwrap();
    let _: () = cmd("SET")
        .arg("appB:sess:def")
        .arg(r#"{"user":"bob"}"#)
        .arg("EX")
        .arg(86400)
        .query(&mut b)
        .unwrap();
    let v: String = cmd("GET").arg("appB:sess:abc").query(&mut b).unwrap();
    assert_eq!(v, r#"{"user":"alice"}"#);
    // "touch" refreshes expiry.
    let _: i64 = cmd("EXPIRE")
        .arg("appB:sess:abc")
        .arg(100)
        .query(&mut b)
        .unwrap();
    assert!(ttl(&mut a, "appA:sess:abc") <= 100);
    // all(): SCAN MATCH prefix*, then MGET; each app sees its own prefix, exactly.
    let (cursor, mut keys): (String, Vec<String>) = cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("appA:sess:*")
        .arg("COUNT")
        .arg(100)
        .query(&mut a)
        .unwrap();
    assert_eq!(cursor, "0");
    keys.sort();
    assert_eq!(keys, vec!["appA:sess:abc", "appA:sess:def"]);
    let ids: Vec<&str> = keys.iter().map(|k| &k["appA:sess:".len()..]).collect();
    assert_eq!(ids, vec!["abc", "def"]);
    let vals: Vec<String> = cmd("MGET").arg(&keys).query(&mut a).unwrap();
    assert_eq!(vals.len(), 2);
    let (_, keys_b): (String, Vec<String>) = cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg("appB:sess:*")
        .query(&mut b)
        .unwrap();
    assert!(
        keys_b.iter().all(|k| k.starts_with("appB:sess:")),
        "{keys_b:?}"
    );
    let _: i64 = cmd("DEL").arg("appB:sess:abc").query(&mut b).unwrap();
    let gone: Option<String> = cmd("GET").arg("appA:sess:abc").query(&mut a).unwrap();
    assert_eq!(gone, None);
}

fn phpredis_session_with_lock_and_unlock_script(v: Variant) {
    let (_redis, _rekey, mut a, mut b) = setup(v, "phpredis-session");
    let _: () = cmd("SETEX")
        .arg("APPA_sid7")
        .arg(1440)
        .arg("user|s:5:\"alice\";")
        .query(&mut a)
        .unwrap();
    let v: String = cmd("GETEX")
        .arg("APPB_sid7")
        .arg("EX")
        .arg(1440)
        .query(&mut b)
        .unwrap();
    assert_eq!(v, "user|s:5:\"alice\";");
    // Locking: SET NX PX on <key>_LOCK; the other app cannot take it.
    let ok: Option<String> = cmd("SET")
        .arg("APPB_sid7_LOCK")
        .arg("secret-b")
        .arg("NX")
        .arg("PX")
        .arg(30000)
        .query(&mut b)
        .unwrap();
    assert_eq!(ok.as_deref(), Some("OK"));
    let taken: Option<String> = cmd("SET")
        .arg("APPA_sid7_LOCK")
        .arg("secret-a")
        .arg("NX")
        .arg("PX")
        .arg(30000)
        .query(&mut a)
        .unwrap();
    assert_eq!(taken, None);
    let unlock = "if redis.call('get',KEYS[1]) == ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";
    let sha: String = cmd("SCRIPT").arg("LOAD").arg(unlock).query(&mut b).unwrap();
    let released: i64 = cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("APPB_sid7_LOCK")
        .arg("secret-b")
        .query(&mut b)
        .unwrap();
    assert_eq!(released, 1);
    assert!(!exists(&mut a, "APPA_sid7_LOCK"));
    let _: i64 = cmd("EXPIRE")
        .arg("APPA_sid7")
        .arg(60)
        .query(&mut a)
        .unwrap();
    assert!(ttl(&mut b, "APPB_sid7") <= 60);
    let _: i64 = cmd("DEL").arg("APPA_sid7").query(&mut a).unwrap();
    assert!(!exists(&mut b, "APPB_sid7"));
}

fn spring_session_keys_events_and_keyspace_notifications(v: Variant) {
    let (redis, rekey, mut a, mut b) = setup(v, "spring-session");
    let _: () = cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Egx")
        .query(&mut redis.direct())
        .unwrap();
    let ns_a = "spring:session:appA";
    let ns_b = "spring:session:appB";
    // App B listens for deletions/expiries and for its session-created events.
    let mut sub = rekey.client();
    let mut ps = sub.as_pubsub();
    ps.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    ps.subscribe(format!("__keyevent@{}__:del", v.db)).unwrap();
    ps.psubscribe(format!("{ns_b}:event:0:created:*")).unwrap();
    // App A creates a session the way Spring does.
    let id = "7d3c";
    let _: () = cmd("HMSET")
        .arg(format!("{ns_a}:sessions:{id}"))
        .arg("creationTime")
        .arg(1)
        .arg("maxInactiveInterval")
        .arg(1800)
        .arg("sessionAttr:user")
        .arg("alice")
        .query(&mut a)
        .unwrap();
    let _: i64 = cmd("PEXPIRE")
        .arg(format!("{ns_a}:sessions:{id}"))
        .arg(2_100_000)
        .query(&mut a)
        .unwrap();
    let _: () = cmd("APPEND")
        .arg(format!("{ns_a}:sessions:expires:{id}"))
        .arg("")
        .query(&mut a)
        .unwrap();
    let _: i64 = cmd("SADD")
        .arg(format!("{ns_a}:expirations:1700000"))
        .arg(format!("expires:{id}"))
        .query(&mut a)
        .unwrap();
    let receivers: i64 = cmd("PUBLISH")
        .arg(format!("{ns_a}:event:0:created:{id}"))
        .arg("created")
        .query(&mut a)
        .unwrap();
    assert_eq!(
        receivers, 1,
        "app B's pattern subscription receives app A's event"
    );
    let msg = ps.get_message().unwrap();
    assert_eq!(
        msg.get_channel_name(),
        format!("{ns_b}:event:0:created:{id}")
    );
    assert_eq!(
        msg.get_pattern::<String>().unwrap(),
        format!("{ns_b}:event:0:created:*")
    );
    // App B reads the same session through its own namespace.
    let attrs: Vec<String> = cmd("HGETALL")
        .arg(format!("{ns_b}:sessions:{id}"))
        .query(&mut b)
        .unwrap();
    assert!(attrs.contains(&"alice".to_string()), "{attrs:?}");
    let members: Vec<String> = cmd("SMEMBERS")
        .arg(format!("{ns_b}:expirations:1700000"))
        .query(&mut b)
        .unwrap();
    assert_eq!(members, vec![format!("expires:{id}")]);
    let _: i64 = cmd("PEXPIRE")
        .arg(format!("{ns_b}:sessions:{id}"))
        .arg(60_000)
        .query(&mut b)
        .unwrap();
    assert!(ttl(&mut a, &format!("{ns_a}:sessions:{id}")) <= 60);
    // RENAME (session id change) and DEL from A; B is notified with B's own key name.
    let _: () = cmd("RENAME")
        .arg(format!("{ns_a}:sessions:{id}"))
        .arg(format!("{ns_a}:sessions:new1"))
        .query(&mut a)
        .unwrap();
    let _: i64 = cmd("DEL")
        .arg(format!("{ns_a}:sessions:new1"))
        .query(&mut a)
        .unwrap();
    let msg = ps.get_message().unwrap();
    assert_eq!(msg.get_channel_name(), format!("__keyevent@{}__:del", v.db));
    assert_eq!(
        msg.get_payload::<String>().unwrap(),
        format!("{ns_b}:sessions:new1")
    );
    assert!(!exists(&mut b, &format!("{ns_b}:sessions:new1")));
}

fn django_cache_sessions(v: Variant) {
    let (redis, _rekey, mut a, mut b) = setup(v, "django-session");
    let key_a = "appA:1:django.contrib.sessions.cachezx81";
    let key_b = "appB:1:django.contrib.sessions.cachezx81";
    let _: () = cmd("SET")
        .arg(key_a)
        .arg("pickled")
        .arg("PX")
        .arg(1_209_600_000i64)
        .query(&mut a)
        .unwrap();
    let v: String = cmd("GET").arg(key_b).query(&mut b).unwrap();
    assert_eq!(v, "pickled");
    let added: Option<String> = cmd("SET")
        .arg(key_b)
        .arg("other")
        .arg("EX")
        .arg(10)
        .arg("NX")
        .query(&mut b)
        .unwrap();
    assert_eq!(added, None, "session exists for both apps");
    let _: i64 = cmd("EXPIRE").arg(key_b).arg(500).query(&mut b).unwrap();
    assert!(ttl(&mut a, key_a) <= 500);
    let _: i64 = cmd("PERSIST").arg(key_a).query(&mut a).unwrap();
    assert_eq!(ttl(&mut b, key_b), -1);
    // django-redis keys()/iter_keys(): each app sees its own prefix (it splits on ':').
    let keys: Vec<String> = cmd("KEYS").arg("appB:1:*").query(&mut b).unwrap();
    assert_eq!(keys, vec![key_b.to_string()]);
    let all: Vec<String> = cmd("KEYS").arg("*").query(&mut a).unwrap();
    assert_eq!(all, vec![key_a.to_string()]);
    let vals: Vec<Option<String>> = cmd("MGET")
        .arg(key_a)
        .arg("appA:1:missing")
        .query(&mut a)
        .unwrap();
    assert_eq!(vals, vec![Some("pickled".to_string()), None]);
    // cache.clear() is FLUSHDB: refused (by the rules, or first by the ACL), nothing is lost.
    let err = cmd("FLUSHDB").query::<()>(&mut a).unwrap_err();
    let by_acl = WITH_ACL.with(|w| w.get()) && err.to_string().contains("NOPERM");
    assert!(err.to_string().contains("refused") || by_acl, "{err}");
    let _: i64 = cmd("DEL").arg(key_b).query(&mut b).unwrap();
    assert!(!exists(&mut a, key_a));
    let n: i64 = cmd("DBSIZE").query(&mut redis.direct()).unwrap();
    assert_eq!(n, 0);
}

fn flask_session_keys(v: Variant) {
    let (_redis, _rekey, mut a, mut b) = setup(v, "flask-session");
    let _: () = cmd("SET")
        .arg("appA_session:9f1e")
        .arg("msgpack-bytes")
        .arg("EX")
        .arg(2_678_400)
        .query(&mut a)
        .unwrap();
    let v: String = cmd("GET").arg("appB_session:9f1e").query(&mut b).unwrap();
    assert_eq!(v, "msgpack-bytes");
    let _: () = cmd("SETEX")
        .arg("appB_session:9f1e")
        .arg(100)
        .arg("updated")
        .query(&mut b)
        .unwrap();
    assert!(ttl(&mut a, "appA_session:9f1e") <= 100);
    let v: String = cmd("GET").arg("appA_session:9f1e").query(&mut a).unwrap();
    assert_eq!(v, "updated");
    let _: i64 = cmd("DEL").arg("appA_session:9f1e").query(&mut a).unwrap();
    assert!(!exists(&mut b, "appB_session:9f1e"));
}

/// Each preset's test, as a test per upstream variant (`cargo test --test presets requirepass`).
macro_rules! presets_for {
    ($module:ident, $variant:expr) => {
        presets_for!($module, $variant, false);
    };
    ($module:ident, $variant:expr, $acl:expr) => {
        mod $module {
            use super::Variant;

            #[test]
            fn aspnet_session_state_provider_v5_and_v4_scripts() {
                super::WITH_ACL.with(|w| w.set($acl));
                super::aspnet_session_state_provider_v5_and_v4_scripts($variant);
            }

            #[test]
            fn aspnetcore_rediscache_session() {
                super::WITH_ACL.with(|w| w.set($acl));
                super::aspnetcore_rediscache_session($variant);
            }

            #[test]
            fn harbour_session_with_lock_transactions() {
                super::WITH_ACL.with(|w| w.set($acl));
                super::harbour_session_with_lock_transactions($variant);
            }

            #[test]
            fn connect_redis_with_scan_listing() {
                super::WITH_ACL.with(|w| w.set($acl));
                super::connect_redis_with_scan_listing($variant);
            }

            #[test]
            fn phpredis_session_with_lock_and_unlock_script() {
                super::WITH_ACL.with(|w| w.set($acl));
                super::phpredis_session_with_lock_and_unlock_script($variant);
            }

            #[test]
            fn spring_session_keys_events_and_keyspace_notifications() {
                super::WITH_ACL.with(|w| w.set($acl));
                super::spring_session_keys_events_and_keyspace_notifications($variant);
            }

            #[test]
            fn django_cache_sessions() {
                super::WITH_ACL.with(|w| w.set($acl));
                super::django_cache_sessions($variant);
            }

            #[test]
            fn flask_session_keys() {
                super::WITH_ACL.with(|w| w.set($acl));
                super::flask_session_keys($variant);
            }
        }
    };
}

presets_for!(no_auth, Variant::PLAIN);
presets_for!(requirepass, Variant::PASSWORD);
presets_for!(acl_user, Variant::ACL_USER);
presets_for!(db3, Variant::DB3);
presets_for!(acl_user_db3, Variant::ACL_USER_DB3);
presets_for!(tls_acl_user, Variant::TLS_ACL_USER);
// Each preset's flow again, under the ACL the preset recommends (through an ACL user).
presets_for!(recommended_acl, Variant::ACL_USER, true);

/// Every preset's recommended ACL compiles and keeps the app to its own keys and away from
/// the dangerous commands.
#[test]
fn recommended_acls_keep_each_app_to_its_own() {
    use rekey::acl::{Acl, Denial};
    use rekey::protocol::Request;
    let dir = format!("{}/config/presets", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let acl = Acl::parse(&recommended_acl(&text)).unwrap();
        let check = |args: &[&str]| {
            let req = Request::from_args(args.iter().copied());
            acl.check(rekey::commands::lookup(&req), &req)
                .err()
                .map(|d| d.kind)
        };
        for dangerous in [
            &["FLUSHALL"][..],
            &["SWAPDB", "0", "1"],
            &["CLIENT", "PAUSE", "1"],
        ] {
            assert_eq!(check(dangerous), Some(Denial::Command), "{dangerous:?}");
        }
        assert_eq!(check(&["GET", "other_secret"]), Some(Denial::Key));
    }
}
