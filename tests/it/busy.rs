//! Long-running commands through rekey, as Redis behaves: a busy script is ended by
//! `SCRIPT KILL` / `FUNCTION KILL` from another client (sent on a connection of its own, not
//! queued behind the script), a slow command on a live Redis is waited for however long it
//! takes, and only an upstream that does not answer a probe is given up.

use crate::common::{metric, RedisServer, Rekey, Variant};
use std::time::{Duration, Instant};

/// A script that spins for up to 15 seconds (it is killed long before).
const SPIN: &str = "local t = redis.call('TIME')[1] + 0 \
    while redis.call('TIME')[1] + 0 < t + 15 do end return 1";

const SPIN_LIBRARY: &str = "#!lua name=spinlib\n\
    redis.register_function('spin', function() \
    local t = redis.call('TIME')[1] + 0 \
    while redis.call('TIME')[1] + 0 < t + 15 do end return 1 end)";

fn reconnects(rekey: &Rekey) -> f64 {
    let (_, text) = rekey.admin("GET", "/metrics");
    metric(&text, "rekey_upstream_reconnects_total")
}

/// Waits until Redis reports a script (or function) running.
fn wait_busy(redis: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probe = redis.direct();
    while Instant::now() < deadline {
        let r: redis::RedisResult<String> = redis::cmd("PING").query(&mut probe);
        if let Err(e) = r {
            if e.to_string().contains("BUSY") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the script never made Redis busy");
}

/// Client A runs `busy` (a spinning script or function); B sends a command meanwhile; C
/// ends the script with `kill`. A gets Redis's error, B an answer (`-BUSY` when its command
/// reached Redis on another connection, else the value once the script ended), and no
/// upstream connection is dropped.
fn busy_then_killed(variant: Variant, busy: redis::Cmd, kill: &str, killed_error: &str) {
    let redis = RedisServer::start_variant_with(variant, &["--busy-reply-threshold", "300"]);
    // A short reply timeout: the shared connection is silent far longer while the script
    // runs, and must not be given up for it.
    let rekey = Rekey::start(&redis, "[limits]\nreply_timeout_ms = 500\n");
    let mut setup = rekey.client();
    if kill == "FUNCTION" {
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(SPIN_LIBRARY)
            .query(&mut setup)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("b_key")
        .arg("v")
        .query(&mut setup)
        .unwrap();
    let before = reconnects(&rekey);

    let url = rekey.url();
    let a = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        busy.query::<i64>(&mut c).map_err(|e| e.to_string())
    });
    wait_busy(&redis);
    std::thread::sleep(Duration::from_millis(700)); // past the reply timeout

    let url = rekey.url();
    let b = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        redis::cmd("GET")
            .arg("b_key")
            .query::<String>(&mut c)
            .map_err(|e| e.to_string())
    });
    std::thread::sleep(Duration::from_millis(200));

    let mut c = rekey.client();
    let killed: String = redis::cmd(kill).arg("KILL").query(&mut c).unwrap();
    assert_eq!(killed, "OK");

    let a = a.join().unwrap();
    let err = a.expect_err("the killed script's caller gets an error");
    assert!(err.contains(killed_error), "A got {err}");
    match b.join().unwrap() {
        Ok(v) => assert_eq!(v, "v"),
        Err(e) => assert!(e.contains("BUSY"), "B got {e}"),
    }
    // Everybody goes on.
    let v: String = redis::cmd("GET").arg("b_key").query(&mut c).unwrap();
    assert_eq!(v, "v");
    let v: String = redis::cmd("GET").arg("b_key").query(&mut setup).unwrap();
    assert_eq!(v, "v");
    assert_eq!(
        reconnects(&rekey),
        before,
        "no upstream connection was dropped"
    );
    // With nothing busy, the kill commands give Redis's own error.
    let r: redis::RedisResult<String> = redis::cmd(kill).arg("KILL").query(&mut c);
    let e = r.unwrap_err();
    assert!(format!("{e:?}").to_uppercase().contains("NOTBUSY"), "{e:?}");
}

#[test]
fn script_kill_ends_a_busy_script_through_rekey() {
    for variant in [Variant::PLAIN, Variant::PASSWORD, Variant::ACL_USER_DB3] {
        let mut eval = redis::cmd("EVAL");
        eval.arg(SPIN).arg(0);
        busy_then_killed(variant, eval, "SCRIPT", "Script killed by user");
    }
}

#[test]
fn function_kill_ends_a_busy_function_through_rekey() {
    let mut fcall = redis::cmd("FCALL");
    fcall.arg("spin").arg(0);
    busy_then_killed(Variant::PASSWORD, fcall, "FUNCTION", "killed by user");
}

#[test]
fn a_slow_command_on_a_live_redis_is_waited_for() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let rekey = Rekey::start(&redis, "[limits]\nreply_timeout_ms = 500\n");
    let mut c = rekey.client();
    let before = reconnects(&rekey);
    let url = rekey.url();
    // Another client queued behind the slow command on the same shared connection.
    let other = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        redis::cmd("PING").query::<String>(&mut c)
    });
    // Longer than the reply timeout. Redis answers nothing meanwhile, not even a probe: the
    // bound is the reply timeout twice (the silence, then the probe's own wait).
    let ok: String = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg("0.8")
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(other.join().unwrap().unwrap(), "PONG");
    assert_eq!(reconnects(&rekey), before);
}

#[test]
fn an_upstream_that_answers_no_probe_is_given_up() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(
        &redis,
        "[limits]\nreply_timeout_ms = 300\nconnect_timeout_ms = 300\n",
    );
    let mut c = rekey.client();
    let _: String = redis::cmd("PING").query(&mut c).unwrap();
    redis.signal("STOP");
    let r: redis::RedisResult<String> = redis::cmd("GET").arg("k").query(&mut c);
    redis.signal("CONT");
    let err = r.expect_err("a stopped upstream is given up").to_string();
    assert!(err.contains("upstream"), "{err}");
    let mut c = rekey.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match redis::cmd("PING").query::<String>(&mut c) {
            Ok(p) => break assert_eq!(p, "PONG"),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("rekey did not recover: {e}"),
        }
    }
}
