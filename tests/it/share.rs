//! Each identity's fair share against a real Redis: `max_clients` (Redis's own error for the
//! one over it, the others unaffected), `max_pinned` (a clear error, the pinned connection
//! given back makes room), `max_requests_per_sec` (reading pauses, nothing is refused or
//! lost, the pause is counted), and `/status` listing each identity's ACL and share.

use crate::common::{free_port, metric, RawClient, RedisServer, Rekey, Resp};
use std::net::TcpStream;
use std::time::Duration;

fn connect(port: u16) -> RawClient {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    RawClient::from_stream(s)
}

/// Whether the server closed `c` (within five seconds).
fn closed(c: &mut RawClient) -> bool {
    use std::io::Read;
    c.s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    matches!(c.s.read(&mut byte), Ok(0))
}

/// A client of an app's listener, logged in (the config has users, so everyone logs in; the
/// identity stays the listener's app).
fn app_client(port: u16) -> RawClient {
    let mut c = connect(port);
    assert_eq!(c.call(&["AUTH", "u2", "pw"]), Resp::Simple("OK".into()));
    c
}

/// rekey with app `appa` on a listener of its own under `share` (TOML lines), app `appb`
/// with no limits, and user `u` (password `pw`) under `user_share`.
fn start(share: &str, user_share: &str) -> (RedisServer, Rekey, u16, u16) {
    let redis = RedisServer::start();
    let (pa, pb) = (free_port(), free_port());
    let rekey = Rekey::start(
        &redis,
        &format!(
            "[[apps]]\nname = \"appa\"\nlisten = \"127.0.0.1:{pa}\"\n{share}\n\
             [[apps]]\nname = \"appb\"\nlisten = \"127.0.0.1:{pb}\"\n\
             [[users]]\nname = \"u\"\npassword = \"pw\"\n{user_share}\n\
             [[users]]\nname = \"u2\"\npassword = \"pw\"\n"
        ),
    );
    (redis, rekey, pa, pb)
}

const MAX_CLIENTS: &str = "ERR max number of clients reached";

#[test]
fn max_clients_per_app_and_per_user() {
    let (redis, rekey, pa, pb) = start("max_clients = 2", "max_clients = 1");
    // Redis's own text for a client over its maxclients.
    let mut full = RedisServer::start_with(&["--maxclients", "1"]);
    let _hold = connect(full.port);
    let mut over = connect(full.port);
    let redis_says = over.read_reply();
    full.kill();
    assert_eq!(redis_says, Resp::Error(MAX_CLIENTS.into()));
    for round in 0..2 {
        let mut a1 = app_client(pa);
        let mut a2 = app_client(pa);
        assert_eq!(a1.call(&["PING"]), Resp::Simple("PONG".into()), "{round}");
        assert_eq!(a2.call(&["PING"]), Resp::Simple("PONG".into()));
        let mut a3 = connect(pa);
        assert_eq!(a3.read_reply(), redis_says, "the third client of appa");
        assert!(closed(&mut a3), "closed");
        // Another app and the main listener are not counted against appa.
        for port in [pb, pb, pb, rekey.port] {
            assert_eq!(
                app_client(port).call(&["PING"]),
                Resp::Simple("PONG".into())
            );
        }
        // A user over its max_clients is told at AUTH, and closed.
        let mut u1 = connect(rekey.port);
        assert_eq!(u1.call(&["AUTH", "u", "pw"]), Resp::Simple("OK".into()));
        let mut u2 = connect(rekey.port);
        assert_eq!(u2.call(&["AUTH", "u", "pw"]), redis_says);
        assert!(closed(&mut u2), "closed");
        drop((a1, a2, u1));
        // The places are given back when clients leave.
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(redis);
}

#[test]
fn max_pinned_per_identity() {
    let (_redis, _rekey, pa, pb) = start("max_pinned = 1", "");
    for _round in 0..2 {
        let mut blocked = app_client(pa);
        blocked.cmd(&["BLPOP", "appa_list", "0"]);
        std::thread::sleep(Duration::from_millis(200));
        let mut second = app_client(pa);
        let r = second.call(&["MULTI"]);
        assert!(
            matches!(&r, Resp::Error(e) if e.contains("max_pinned")),
            "{r:?}"
        );
        // The transaction never started: commands run at once.
        assert_eq!(second.call(&["SET", "k", "1"]), Resp::Simple("OK".into()));
        // Another app still gets pinned connections.
        let mut other = app_client(pb);
        assert_eq!(other.call(&["MULTI"]), Resp::Simple("OK".into()));
        assert_eq!(other.call(&["DISCARD"]), Resp::Simple("OK".into()));
        // The blocked client is served; its connection goes back, and makes room.
        assert_eq!(second.call(&["RPUSH", "appa_list", "x"]), Resp::Int(1));
        assert_eq!(
            blocked.read_reply(),
            Resp::Array(vec![
                crate::common::bulk("appa_list"),
                crate::common::bulk("x")
            ])
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(second.call(&["MULTI"]), Resp::Simple("OK".into()));
        assert_eq!(second.call(&["EXEC"]), Resp::Array(vec![]));
    }
}

#[test]
fn max_requests_per_sec_pauses_reading_and_loses_nothing() {
    let (_redis, rekey, pa, pb) = start("max_requests_per_sec = 500", "");
    for _round in 0..2 {
        let mut flood = app_client(pa);
        let mut calm = app_client(pb);
        // 1,500 pipelined requests: three seconds of budget, nothing refused.
        let n = 1500;
        let mut bytes = Vec::new();
        for i in 0..n {
            let v = i.to_string();
            bytes.extend_from_slice(
                format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{v}\r\n", v.len()).as_bytes(),
            );
        }
        flood.send(&bytes);
        assert_eq!(calm.call(&["PING"]), Resp::Simple("PONG".into()));
        for _ in 0..n {
            assert_eq!(flood.read_reply(), Resp::Simple("OK".into()));
        }
        assert_eq!(
            flood.call(&["GET", "k"]),
            crate::common::bulk(&(n - 1).to_string())
        );
    }
    let (_, body) = rekey.admin("GET", "/metrics");
    let paused = metric(&body, "rekey_app_throttled_seconds_total{app=\"appa\"}");
    assert!(paused > 1.0, "appa was paused for {paused} s");
    assert_eq!(
        metric(
            &body,
            "rekey_app_limit{app=\"appa\",limit=\"max_requests_per_sec\"}"
        ),
        500.0
    );
}

#[test]
fn status_lists_each_identity_acl_and_share() {
    let (_redis, rekey, pa, _pb) = start(
        "acl = \"+@all -@dangerous ~appa_*\"\nmax_clients = 5",
        "acl = \"-@all +get ~*\"",
    );
    let _client = app_client(pa).call(&["PING"]);
    let (_, body) = rekey.admin("GET", "/status");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids = status["identities"].as_array().unwrap();
    let find = |name: &str| ids.iter().find(|i| i["name"] == name).unwrap().clone();
    assert_eq!(find("default")["acl"], "~* &* +@all");
    let appa = find("appa");
    assert_eq!(appa["acl"], "~appa_* resetchannels +@all -@dangerous");
    assert_eq!(appa["max_clients"], 5);
    assert_eq!(find("u")["acl"], "~* resetchannels -@all +get");
    assert_eq!(find("appb")["acl"], "~* &* +@all");
}
