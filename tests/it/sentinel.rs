//! rekey in front of a Sentinel-managed primary: a real primary, a real replica and a real
//! sentinel on loopback ports. rekey finds the primary through the sentinel, and after a
//! failover it follows the new primary by itself.

use crate::common::sentinel::Sentinel;
use crate::common::{RedisServer, Rekey};
use std::time::{Duration, Instant};

fn role(server: &RedisServer) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut server.direct())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn follows_the_primary_through_a_failover() {
    let primary = RedisServer::start();
    let port = primary.port.to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let sentinel = Sentinel::start(primary.port);
    let rekey = Rekey::start_url(
        &format!("redis-sentinel://127.0.0.1:{}/mymaster", sentinel.port),
        "flush = \"scoped\"\n[[rules]]\nname = \"sessions\"\nmatch = '^(AppA|AppB)_'\nreplace = 'shared_'\n",
    );
    let mut con = rekey.client();
    let _: () = redis::cmd("SET")
        .arg("AppA_before")
        .arg("1")
        .query(&mut con)
        .unwrap();
    let v: Option<String> = redis::cmd("GET")
        .arg("shared_before")
        .query(&mut primary.direct())
        .unwrap();
    assert_eq!(
        v.as_deref(),
        Some("1"),
        "rekey writes to the primary the sentinel names"
    );

    // The replica is in sync and known to the sentinel; then the sentinel fails over.
    wait_until("the replica to sync", 20, || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.direct())
            .unwrap();
        info.contains("master_link_status:up")
    });
    wait_until("the sentinel to accept the failover", 30, || {
        sentinel
            .query(&["SENTINEL", "FAILOVER", "mymaster"])
            .is_ok()
    });
    wait_until("the replica to be promoted", 30, || {
        role(&replica) == "master"
    });

    // rekey moves to the new primary by itself: writes land there.
    wait_until("writes through rekey to reach the new primary", 30, || {
        redis::cmd("SET")
            .arg("AppB_after")
            .arg("2")
            .query::<()>(&mut con)
            .is_ok()
            && redis::cmd("GET")
                .arg("shared_after")
                .query::<Option<String>>(&mut replica.direct())
                .unwrap()
                .as_deref()
                == Some("2")
    });
    let v: String = redis::cmd("GET")
        .arg("AppA_before")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        v, "1",
        "data written before the failover is served by the new primary"
    );

    // A scoped FLUSHDB goes to the live primary (not the address rekey started with, now a
    // replica): the client's namespace is gone there, other keys stay.
    let _: () = redis::cmd("SET")
        .arg("untouched")
        .arg("3")
        .query(&mut replica.direct())
        .unwrap();
    let ok: String = redis::cmd("FLUSHDB").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("shared_*")
        .query(&mut replica.direct())
        .unwrap();
    assert!(left.is_empty(), "the new primary kept {left:?}");
    let kept: Option<String> = redis::cmd("GET")
        .arg("untouched")
        .query(&mut replica.direct())
        .unwrap();
    assert_eq!(kept.as_deref(), Some("3"));
}
