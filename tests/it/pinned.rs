//! Every pinned flow (MULTI/EXEC, WATCH, SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, BLPOP, XREAD BLOCK,
//! CLIENT TRACKING, and a SELECTed db) against every upstream variant (no auth, `requirepass`,
//! an ACL user with `default` disabled, db 3, ACL user + db 3), in RESP2 and RESP3.
//!
//! rekey runs with `pool.max_pinned = 1`, and each flow runs several rounds in a row, each with a
//! new client: from the second round on the flow gets the one pinned upstream connection back
//! after the `RESET` that ended the previous lease, so it must have been brought back to
//! "ready" (logged in, protocol, db). After each round, a plain command on the same client and
//! a new client must still work, and values must be where the client's db says (checked on a
//! direct connection to Redis).

use crate::common::{bulk, Auth, Protocol, RawClient, RedisServer, Rekey, Resp, Variant};
use redis::Connection;
use std::time::{Duration, Instant};

/// The protocols of the rounds of each flow, in order: every protocol at least twice in a row
/// (the pinned connection is reused by the same protocol) and switches both ways.
const ROUNDS: [Protocol; 5] = [
    Protocol::Resp2,
    Protocol::Resp2,
    Protocol::Resp3,
    Protocol::Resp3,
    Protocol::Resp2,
];

struct Ctx {
    variant: Variant,
    redis: RedisServer,
    rekey: Rekey,
    /// Straight to Redis, in the variant's db.
    direct: Connection,
}

impl Ctx {
    /// A new client of rekey in `proto`, with short timeouts.
    fn client(&self, proto: Protocol) -> RawClient {
        let c = self.rekey.raw_protocol(proto);
        c.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    }

    /// The value of `key` in the variant's db, read directly; when that db is not 0, also
    /// checks that db 0 does not have the key (the write did not land in the wrong db).
    #[track_caller]
    fn upstream_get(&mut self, key: &str) -> Option<String> {
        if self.variant.db != 0 {
            let in_db0: bool = redis::cmd("EXISTS")
                .arg(key)
                .query(&mut self.redis.direct_db(0))
                .unwrap();
            assert!(
                !in_db0,
                "{key} was written to db 0, not db {}",
                self.variant.db
            );
        }
        redis::cmd("GET").arg(key).query(&mut self.direct).unwrap()
    }

    /// Waits until Redis has exactly `n` blocked clients (the request really blocks before it
    /// is served).
    #[track_caller]
    fn wait_blocked(&mut self, n: i64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query(&mut self.direct)
                .unwrap();
            let blocked: i64 = info
                .lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("blocked_clients in INFO");
            if blocked == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Redis has {blocked} blocked clients, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// An out-of-band message in `proto`: a push in RESP3, an array in RESP2.
#[track_caller]
fn expect_message(got: &Resp, proto: Protocol, expected: &[&str]) {
    match (proto, got) {
        (Protocol::Resp3, Resp::Push(_)) | (Protocol::Resp2, Resp::Array(_)) => {}
        _ => panic!("{proto:?}: expected a message {expected:?}, got {got:?}"),
    }
    let texts = got.texts();
    let want: Vec<Option<String>> = expected.iter().map(|s| Some(s.to_string())).collect();
    // The subscriber count is an integer, not text: compare it separately.
    match got.items().unwrap().last() {
        Some(Resp::Int(n)) => {
            assert_eq!(texts[..texts.len() - 1], want[..want.len() - 1], "{got:?}");
            assert_eq!(n.to_string(), expected[expected.len() - 1], "{got:?}");
        }
        _ => assert_eq!(texts, want, "{got:?}"),
    }
}

#[track_caller]
fn ok(r: Resp) {
    assert_eq!(r, Resp::Simple("OK".into()));
}

#[track_caller]
fn queued(r: Resp) {
    assert_eq!(r, Resp::Simple("QUEUED".into()));
}

// ---------------------------------------------------------------- the flows

/// MULTI / SET / INCR / EXEC.
fn multi_exec(ctx: &mut Ctx, proto: Protocol, r: usize) -> RawClient {
    let mut c = ctx.client(proto);
    let (k, n) = (format!("m:{r}"), format!("n:{r}"));
    ok(c.call(&["MULTI"]));
    queued(c.call(&["SET", &k, &format!("v{r}")]));
    queued(c.call(&["INCR", &n]));
    queued(c.call(&["INCR", &n]));
    assert_eq!(
        c.call(&["EXEC"]),
        Resp::Array(vec![Resp::Simple("OK".into()), Resp::Int(1), Resp::Int(2)])
    );
    assert_eq!(ctx.upstream_get(&k), Some(format!("v{r}")));
    assert_eq!(ctx.upstream_get(&n), Some("2".into()));
    c
}

/// WATCH + MULTI/EXEC that commits, then a WATCH that aborts because another client changed
/// the key (nil EXEC). Also checks, through the pinned connection's real `CLIENT ID`, that the
/// rounds share one upstream connection.
fn watch(ctx: &mut Ctx, proto: Protocol, r: usize) -> RawClient {
    let mut c = ctx.client(proto);
    let mut other = ctx.client(Protocol::Resp2);
    let (k, k2) = (format!("w:{r}"), format!("w2:{r}"));
    ok(c.call(&["WATCH", &k]));
    assert_eq!(c.call(&["GET", &k]), Resp::Nil);
    ok(c.call(&["MULTI"]));
    queued(c.call(&["SET", &k, "mine"]));
    assert_eq!(
        c.call(&["EXEC"]),
        Resp::Array(vec![Resp::Simple("OK".into())])
    );
    assert_eq!(ctx.upstream_get(&k), Some("mine".into()));

    ok(c.call(&["WATCH", &k2]));
    ok(other.call(&["SET", &k2, "theirs"]));
    ok(c.call(&["MULTI"]));
    queued(c.call(&["SET", &k2, "mine"]));
    assert_eq!(c.call(&["EXEC"]), Resp::Nil, "the watched key changed");
    assert_eq!(ctx.upstream_get(&k2), Some("theirs".into()));
    c
}

/// SUBSCRIBE, a PUBLISH from another client arrives, UNSUBSCRIBE; then a second client
/// subscribes and vanishes while subscribed (the next round gets the connection after that).
fn subscribe(ctx: &mut Ctx, proto: Protocol, r: usize) -> RawClient {
    let mut c = ctx.client(proto);
    let mut other = ctx.client(Protocol::Resp2);
    let ch = format!("ch:{r}");
    expect_message(
        &c.call(&["SUBSCRIBE", &ch]),
        proto,
        &["subscribe", &ch, "1"],
    );
    assert_eq!(other.call(&["PUBLISH", &ch, "hello"]), Resp::Int(1));
    expect_message(&c.read_reply(), proto, &["message", &ch, "hello"]);
    expect_message(
        &c.call(&["UNSUBSCRIBE", &ch]),
        proto,
        &["unsubscribe", &ch, "0"],
    );
    assert_eq!(other.call(&["PUBLISH", &ch, "gone"]), Resp::Int(0));
    drop(c);

    // The reproduction: subscribe, receive, disconnect without unsubscribing.
    let mut c = ctx.client(proto);
    let ch = format!("ch2:{r}");
    expect_message(
        &c.call(&["SUBSCRIBE", &ch]),
        proto,
        &["subscribe", &ch, "1"],
    );
    assert_eq!(other.call(&["PUBLISH", &ch, "hi"]), Resp::Int(1));
    expect_message(&c.read_reply(), proto, &["message", &ch, "hi"]);
    drop(c);

    // And the one the round hands on for its plain command.
    let mut c = ctx.client(proto);
    let ch = format!("ch3:{r}");
    expect_message(
        &c.call(&["SUBSCRIBE", &ch]),
        proto,
        &["subscribe", &ch, "1"],
    );
    assert_eq!(other.call(&["PUBLISH", &ch, "x"]), Resp::Int(1));
    expect_message(&c.read_reply(), proto, &["message", &ch, "x"]);
    expect_message(&c.call(&["UNSUBSCRIBE"]), proto, &["unsubscribe", &ch, "0"]);
    c
}

/// PSUBSCRIBE, a matching PUBLISH arrives as a pmessage, PUNSUBSCRIBE.
fn psubscribe(ctx: &mut Ctx, proto: Protocol, r: usize) -> RawClient {
    let mut c = ctx.client(proto);
    let mut other = ctx.client(Protocol::Resp2);
    let pat = format!("pat:{r}:*");
    let ch = format!("pat:{r}:news");
    expect_message(
        &c.call(&["PSUBSCRIBE", &pat]),
        proto,
        &["psubscribe", &pat, "1"],
    );
    assert_eq!(other.call(&["PUBLISH", &ch, "hello"]), Resp::Int(1));
    expect_message(&c.read_reply(), proto, &["pmessage", &pat, &ch, "hello"]);
    expect_message(
        &c.call(&["PUNSUBSCRIBE", &pat]),
        proto,
        &["punsubscribe", &pat, "0"],
    );
    c
}

/// SSUBSCRIBE (sharded pub/sub, on a non-cluster Redis 7), SPUBLISH arrives as an smessage,
/// SUNSUBSCRIBE.
fn ssubscribe(ctx: &mut Ctx, proto: Protocol, r: usize) -> RawClient {
    let mut c = ctx.client(proto);
    let mut other = ctx.client(Protocol::Resp2);
    let ch = format!("sch:{r}");
    expect_message(
        &c.call(&["SSUBSCRIBE", &ch]),
        proto,
        &["ssubscribe", &ch, "1"],
    );
    assert_eq!(other.call(&["SPUBLISH", &ch, "hello"]), Resp::Int(1));
    expect_message(&c.read_reply(), proto, &["smessage", &ch, "hello"]);
    expect_message(
        &c.call(&["SUNSUBSCRIBE", &ch]),
        proto,
        &["sunsubscribe", &ch, "0"],
    );
    c
}

/// BLPOP that blocks on Redis and is served by an RPUSH from another client.
fn blpop(ctx: &mut Ctx, proto: Protocol, r: usize) -> RawClient {
    let mut c = ctx.client(proto);
    let mut other = ctx.client(Protocol::Resp2);
    let list = format!("list:{r}");
    c.cmd(&["BLPOP", &list, "5"]);
    ctx.wait_blocked(1);
    assert_eq!(other.call(&["RPUSH", &list, "a", "b"]), Resp::Int(2));
    assert_eq!(c.read_reply(), Resp::Array(vec![bulk(&list), bulk("a")]));
    // The rest of the push stays in the client's db.
    let left: Vec<String> = redis::cmd("LRANGE")
        .arg(&list)
        .arg(0)
        .arg(-1)
        .query(&mut ctx.direct)
        .unwrap();
    assert_eq!(left, vec!["b"]);
    c
}

/// Clients that vanish while blocked in BLPOP and XREAD BLOCK (rekey closes that upstream
/// connection rather than resetting it), then a BLPOP served as usual on the connection opened
/// after them.
fn blocked_client_vanishes(ctx: &mut Ctx, proto: Protocol, r: usize) -> RawClient {
    // Blocked forever: only closing the upstream connection ends these.
    let mut gone = ctx.client(proto);
    gone.cmd(&["BLPOP", &format!("never:{r}"), "0"]);
    ctx.wait_blocked(1);
    drop(gone);
    let mut gone = ctx.client(proto);
    let stream = format!("never-stream:{r}");
    gone.cmd(&["XREAD", "BLOCK", "0", "STREAMS", &stream, "$"]);
    // With max_pinned = 1 this XREAD can only run once the BLPOP's connection is gone.
    ctx.wait_blocked(1);
    drop(gone);
    blpop(ctx, proto, r)
}

/// XREAD BLOCK that blocks on Redis and is served by an XADD from another client.
fn xread_block(ctx: &mut Ctx, proto: Protocol, r: usize) -> RawClient {
    let mut c = ctx.client(proto);
    let mut other = ctx.client(Protocol::Resp2);
    let stream = format!("stream:{r}");
    c.cmd(&[
        "XREAD", "COUNT", "1", "BLOCK", "5000", "STREAMS", &stream, "$",
    ]);
    ctx.wait_blocked(1);
    assert_eq!(
        other.call(&["XADD", &stream, "1-1", "field", "value"]),
        bulk("1-1")
    );
    let entry = Resp::Array(vec![
        bulk("1-1"),
        Resp::Array(vec![bulk("field"), bulk("value")]),
    ]);
    let got = c.read_reply();
    let expected = match proto {
        Protocol::Resp2 => Resp::Array(vec![Resp::Array(vec![
            bulk(&stream),
            Resp::Array(vec![entry]),
        ])]),
        Protocol::Resp3 => Resp::Map(vec![(bulk(&stream), Resp::Array(vec![entry]))]),
    };
    assert_eq!(got, expected);
    let len: i64 = redis::cmd("XLEN")
        .arg(&stream)
        .query(&mut ctx.direct)
        .unwrap();
    assert_eq!(len, 1);
    c
}

/// CLIENT TRACKING ON. RESP3: after a GET and another client's SET of that key, an
/// `invalidate` push arrives. RESP2 (no REDIRECT): the command is accepted and later commands
/// work.
fn client_tracking(ctx: &mut Ctx, proto: Protocol, r: usize) -> RawClient {
    let mut c = ctx.client(proto);
    let mut other = ctx.client(Protocol::Resp2);
    let k = format!("t:{r}");
    ok(other.call(&["SET", &k, "old"]));
    ok(c.call(&["CLIENT", "TRACKING", "ON"]));
    assert_eq!(c.call(&["GET", &k]), bulk("old"));
    ok(other.call(&["SET", &k, "new"]));
    if proto == Protocol::Resp3 {
        let push = c.read_reply();
        assert_eq!(
            push,
            Resp::Push(vec![bulk("invalidate"), Resp::Array(vec![bulk(&k)])])
        );
    }
    assert_eq!(c.call(&["GET", &k]), bulk("new"));
    assert_eq!(ctx.upstream_get(&k), Some("new".into()));
    ok(c.call(&["CLIENT", "TRACKING", "OFF"]));
    if proto == Protocol::Resp3 {
        ok(other.call(&["SET", &k, "newer"]));
        assert_eq!(
            c.read_reply_within(Duration::from_millis(50)),
            None,
            "no invalidation after TRACKING OFF"
        );
    }
    c
}

/// A client that SELECTs another db, then MULTI/EXEC and WATCH there (values land in that db);
/// the next client, without SELECT, gets the pinned connection back in the variant's own db.
fn select_then_multi(ctx: &mut Ctx, proto: Protocol, r: usize) -> RawClient {
    let other_db = if ctx.variant.db == 5 { 6 } else { 5 };
    let mut c = ctx.client(proto);
    let k = format!("sel:{r}");
    ok(c.call(&["SELECT", &other_db.to_string()]));
    ok(c.call(&["WATCH", &k]));
    ok(c.call(&["MULTI"]));
    queued(c.call(&["SET", &k, "there"]));
    assert_eq!(
        c.call(&["EXEC"]),
        Resp::Array(vec![Resp::Simple("OK".into())])
    );
    let there: Option<String> = redis::cmd("GET")
        .arg(&k)
        .query(&mut ctx.redis.direct_db(other_db))
        .unwrap();
    assert_eq!(there.as_deref(), Some("there"));
    assert_eq!(ctx.upstream_get(&k), None, "not in the variant's db");
    drop(c);

    let mut c = ctx.client(proto);
    let k = format!("home:{r}");
    ok(c.call(&["MULTI"]));
    queued(c.call(&["SET", &k, "here"]));
    assert_eq!(
        c.call(&["EXEC"]),
        Resp::Array(vec![Resp::Simple("OK".into())])
    );
    assert_eq!(ctx.upstream_get(&k), Some("here".into()));
    c
}

// ---------------------------------------------------------------- the runner

type Flow = fn(&mut Ctx, Protocol, usize) -> RawClient;

/// Runs `flow` round after round on `variant`. With `reuses`, checks that every round after
/// the first got the same pinned upstream connection back.
fn run_flow(variant: Variant, flow: Flow, reuses: bool) {
    let redis = RedisServer::start_variant(variant);
    // One pinned connection: every round after the first reuses it after its RESET.
    let rekey = Rekey::start(&redis, "[pool]\nmax_pinned = 1\n");
    let direct = redis.direct();
    let mut ctx = Ctx {
        variant,
        redis,
        rekey,
        direct,
    };
    let mut pinned_ids = Vec::new();
    for (r, &proto) in ROUNDS.iter().enumerate() {
        eprintln!("variant {variant}, round {r}, {proto:?}");
        let mut c = flow(&mut ctx, proto, r);

        // A plain command on the same client.
        let k = format!("after:{r}");
        ok(c.call(&["SET", &k, "plain"]));
        assert_eq!(c.call(&["GET", &k]), bulk("plain"));
        assert_eq!(ctx.upstream_get(&k), Some("plain".into()));
        drop(c);

        // A new client.
        let mut c = ctx.client(proto);
        let k = format!("new:{r}");
        assert_eq!(c.call(&["INCR", &k]), Resp::Int(1));
        assert_eq!(ctx.upstream_get(&k), Some("1".into()));
        // The pinned connection's real id (CLIENT ID inside WATCH is answered by Redis).
        ok(c.call(&["WATCH", &k]));
        match c.call(&["CLIENT", "ID"]) {
            Resp::Int(id) => pinned_ids.push(id),
            other => panic!("CLIENT ID answered {other:?}"),
        }
        ok(c.call(&["UNWATCH"]));
        assert_eq!(c.call(&["GET", &k]), bulk("1"));
    }
    pinned_ids.dedup();
    if reuses {
        assert_eq!(
            pinned_ids.len(),
            1,
            "the pinned connection was replaced between rounds: {pinned_ids:?}"
        );
    }
}

fn run(variant: Variant, flow: Flow) {
    run_flow(variant, flow, true);
}

macro_rules! flows_for {
    ($module:ident, $variant:expr) => {
        mod $module {
            use super::*;

            #[test]
            fn multi_exec() {
                run($variant, super::multi_exec);
            }

            #[test]
            fn watch() {
                run($variant, super::watch);
            }

            #[test]
            fn subscribe() {
                run($variant, super::subscribe);
            }

            #[test]
            fn psubscribe() {
                run($variant, super::psubscribe);
            }

            #[test]
            fn ssubscribe() {
                run($variant, super::ssubscribe);
            }

            #[test]
            fn blpop() {
                run($variant, super::blpop);
            }

            #[test]
            fn blocked_client_vanishes() {
                // Connections are closed each round: ids change.
                run_flow($variant, super::blocked_client_vanishes, false);
            }

            #[test]
            fn xread_block() {
                run($variant, super::xread_block);
            }

            #[test]
            fn client_tracking() {
                run($variant, super::client_tracking);
            }

            #[test]
            fn select_then_multi() {
                run($variant, super::select_then_multi);
            }
        }
    };
}

flows_for!(no_auth, Variant::PLAIN);
flows_for!(requirepass, Variant::PASSWORD);
flows_for!(acl_user, Variant::ACL_USER);
flows_for!(db3, Variant::DB3);
flows_for!(acl_user_db3, Variant::ACL_USER_DB3);
flows_for!(tls_acl_user, Variant::TLS_ACL_USER);

/// The harness's variants are what they claim: without credentials Redis refuses, the ACL
/// variant logs in as its user with `default` disabled, `direct()` is in the variant's db.
#[test]
fn upstream_variants_are_what_they_claim() {
    for variant in Variant::all() {
        let mut redis = RedisServer::start_variant(variant);
        // restart() brings the same users and password back, and sees the server up.
        redis.kill();
        redis.restart();
        let mut anonymous = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port))
            .unwrap()
            .get_connection()
            .unwrap();
        let ping = redis::cmd("PING").query::<String>(&mut anonymous);
        match variant.auth {
            Auth::None => assert_eq!(ping.unwrap(), "PONG", "{variant}"),
            Auth::Password | Auth::AclUser => {
                let err = ping.unwrap_err().to_string();
                assert!(err.contains("NOAUTH"), "{variant}: {err}");
            }
        }
        let mut direct = redis.direct();
        let who: String = redis::cmd("ACL").arg("WHOAMI").query(&mut direct).unwrap();
        let expected = if variant.auth == Auth::AclUser {
            crate::common::UPSTREAM_USER
        } else {
            "default"
        };
        assert_eq!(who, expected, "{variant}");
        if variant.auth == Auth::AclUser {
            let err = redis::cmd("AUTH")
                .arg("default")
                .arg(crate::common::UPSTREAM_PASSWORD)
                .query::<()>(&mut anonymous)
                .unwrap_err();
            assert!(err.to_string().contains("WRONGPASS"), "{variant}: {err}");
        }
        let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut direct).unwrap();
        assert!(
            info.contains(&format!(" db={} ", variant.db)),
            "{variant}: {info}"
        );
        assert!(redis.url().contains(&variant.userinfo()), "{variant}");
        assert_eq!(
            redis.url().starts_with("rediss://"),
            variant.tls,
            "{variant}"
        );
    }
}

/// The `redis` crate as an application uses it (RESP3 through `?protocol=resp3`): optimistic
/// transactions (`WATCH` … `MULTI`/`EXEC` with retry) and BLPOP, each from a new client in a
/// row, on every variant.
#[test]
fn library_clients_reuse_pinned_connections() {
    for variant in Variant::all() {
        let redis = RedisServer::start_variant(variant);
        let rekey = Rekey::start(&redis, "[pool]\nmax_pinned = 1\n");
        let mut direct = redis.direct();
        for (r, &proto) in ROUNDS.iter().enumerate() {
            let what = format!("variant {variant}, round {r}, {proto:?}");
            let mut con = rekey.client_protocol(proto);
            let (n,): (i64,) = redis::transaction(&mut con, &["counter"], |con, pipe| {
                let old: Option<i64> = redis::cmd("GET").arg("counter").query(con)?;
                pipe.cmd("SET")
                    .arg("counter")
                    .arg(old.unwrap_or(0) + 1)
                    .ignore()
                    .cmd("GET")
                    .arg("counter")
                    .query(con)
            })
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(n, r as i64 + 1, "{what}");
            drop(con);

            let mut con = rekey.client_protocol(proto);
            let _: () = redis::cmd("RPUSH")
                .arg("queue")
                .arg(format!("job{r}"))
                .query(&mut direct)
                .unwrap();
            let got: (String, String) = redis::cmd("BLPOP")
                .arg("queue")
                .arg(1)
                .query(&mut con)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(got, ("queue".into(), format!("job{r}")), "{what}");
            let v: i64 = redis::cmd("GET")
                .arg("counter")
                .query(&mut con)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(v, r as i64 + 1, "{what}");
        }
        let counter: i64 = redis::cmd("GET").arg("counter").query(&mut direct).unwrap();
        assert_eq!(counter, ROUNDS.len() as i64, "variant {variant}");
    }
}
