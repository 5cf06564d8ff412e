//! Who gets in and what they can learn: client auth at the proxy, upstream credentials kept
//! from clients, the admin token; and limits: max clients, upstream reply timeout, a slow
//! reader that never reads its replies.

use crate::common::{http_with, rss_kib, RedisServer, Rekey};
use std::io::Write;
use std::time::{Duration, Instant};

fn raw_reply(c: &mut crate::common::RawClient, args: &[&str]) -> String {
    c.cmd(args);
    let mut buf = vec![0u8; 64 * 1024];
    let n = std::io::Read::read(&mut c.s, &mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn clients_authenticate_at_the_proxy() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(
        &redis,
        "requirepass = \"pw\"\n[[users]]\nname = \"alice\"\npassword = \"a-secret\"\n",
    );
    let mut c = rekey.raw();
    assert!(raw_reply(&mut c, &["GET", "x"]).starts_with("-NOAUTH"));
    assert!(raw_reply(&mut c, &["SET", "x", "1"]).starts_with("-NOAUTH"));
    assert!(raw_reply(&mut c, &["AUTH", "wrong"]).starts_with("-WRONGPASS"));
    assert!(raw_reply(&mut c, &["AUTH", "alice", "pw"]).starts_with("-WRONGPASS"));
    assert_eq!(raw_reply(&mut c, &["AUTH", "pw"]), "+OK\r\n");
    assert_eq!(raw_reply(&mut c, &["SET", "x", "1"]), "+OK\r\n");
    assert_eq!(raw_reply(&mut c, &["ACL", "WHOAMI"]), "$7\r\ndefault\r\n");

    // A named user, through HELLO 3 AUTH; a bad password in HELLO leaves the client out.
    let mut h = rekey.raw();
    assert!(raw_reply(&mut h, &["HELLO", "3", "AUTH", "alice", "nope"]).starts_with("-WRONGPASS"));
    assert!(raw_reply(&mut h, &["GET", "x"]).starts_with("-NOAUTH"));
    let hello = raw_reply(&mut h, &["HELLO", "3", "AUTH", "alice", "a-secret"]);
    assert!(hello.starts_with('%'), "HELLO 3 reply is a map: {hello}");
    assert_eq!(raw_reply(&mut h, &["GET", "x"]), "$1\r\n1\r\n");
    assert_eq!(raw_reply(&mut h, &["ACL", "WHOAMI"]), "$5\r\nalice\r\n");

    // A real client library with credentials in its URL.
    let client =
        redis::Client::open(format!("redis://alice:a-secret@127.0.0.1:{}/", rekey.port)).unwrap();
    let mut con = client.get_connection().unwrap();
    let v: String = redis::cmd("GET").arg("x").query(&mut con).unwrap();
    assert_eq!(v, "1");
    // QUIT is allowed before AUTH.
    let mut q = rekey.raw();
    assert_eq!(raw_reply(&mut q, &["QUIT"]), "+OK\r\n");
}

#[test]
fn upstream_credentials_never_reach_clients() {
    // The URL's password, and each `[upstream_auth]` source that runs locally (the cloud ones
    // are checked in tests/it/cloud_auth.rs).
    let secret = "up-s3cret-pw";
    let dir = crate::common::scratch_dir("leak");
    std::fs::write(dir.join("password"), format!("{secret}\n")).unwrap();
    let helper = dir.join("helper.sh");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\necho '{{\"password\": \"{secret}\", \"expires_at\": 4102444800}}'\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sources = [
        (true, String::new()),
        (
            false,
            format!(
                "[upstream_auth]\npassword_file = \"{}\"",
                dir.join("password").display()
            ),
        ),
        (
            false,
            format!("[upstream_auth]\ncommand = [\"{}\"]", helper.display()),
        ),
    ];
    for (in_url, table) in sources {
        secret_stays_in_the_proxy(secret, in_url, &table);
    }
}

/// Clients learn nothing of the upstream login `secret` (in the URL when `in_url`, else from
/// the `[upstream_auth]` `table`): not by CONFIG, ACL, CLIENT LIST, INFO, errors or `/status`.
fn secret_stays_in_the_proxy(secret: &str, in_url: bool, table: &str) {
    let redis = RedisServer::start_with(&["--requirepass", secret]);
    let upstream = match in_url {
        true => format!("redis://:{secret}@127.0.0.1:{}", redis.port),
        false => format!("redis://127.0.0.1:{}", redis.port),
    };
    let rekey = Rekey::start_url(&upstream, table);
    let mut con = rekey.client();

    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("requirepass")
        .query(&mut con)
        .unwrap();
    assert_eq!(got, vec!["requirepass".to_string(), String::new()]);
    let all: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("*")
        .query(&mut con)
        .unwrap();
    assert!(all.len() > 100, "CONFIG GET * passes through");
    assert!(!all.iter().any(|v| v.contains(secret)));

    // Session providers still configure keyspace events.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Egx")
        .query(&mut con)
        .unwrap();
    let ev: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut con)
        .unwrap();
    assert!(ev[1].contains('g') && ev[1].contains('x'));

    // Nobody changes the upstream password or users through the proxy.
    for args in [
        vec!["CONFIG", "SET", "requirepass", "x"],
        vec!["CONFIG", "SET", "maxmemory", "0", "masterauth", "x"],
        vec!["ACL", "SETUSER", "evil", "on", ">pw", "~*", "+@all"],
        vec!["ACL", "DELUSER", "default"],
    ] {
        let err = redis::cmd(args[0])
            .arg(&args[1..])
            .query::<redis::Value>(&mut con)
            .unwrap_err();
        assert!(err.to_string().contains("rekey"), "{args:?}: {err}");
        assert!(!err.to_string().contains(secret));
    }
    // ACL LIST and GETUSER describe rekey's own users, never the upstream's.
    let list: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut con).unwrap();
    assert_eq!(list, ["user default on nopass ~* &* +@all"]);
    let user = redis::cmd("ACL")
        .arg("GETUSER")
        .arg("default")
        .query::<redis::Value>(&mut con)
        .unwrap();
    assert!(!format!("{user:?}").contains(secret));
    let who: String = redis::cmd("ACL").arg("WHOAMI").query(&mut con).unwrap();
    assert_eq!(who, "default");
    let v: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, "v", "the upstream login still works");

    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    assert!(!list.contains(secret));
    let info: String = redis::cmd("INFO")
        .arg("everything")
        .query(&mut con)
        .unwrap();
    assert!(!info.contains(secret));

    // Errors when the upstream is down name the address, never the password.
    let mut redis = redis;
    redis.kill();
    let err = redis::cmd("GET")
        .arg("k")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(err.to_string().contains("rekey"), "{err}");
    assert!(!err.to_string().contains(secret), "{err}");
    let (_, status) = rekey.admin("GET", "/status");
    assert!(!status.contains(secret), "{status}");
}

#[test]
fn reload_needs_the_admin_token_when_one_is_set() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "admin_token = \"t0ken\"");
    let (code, _) = rekey.admin("POST", "/reload");
    assert_eq!(code, 401);
    let (code, _) = http_with(
        rekey.admin_port,
        "POST",
        "/reload",
        "Authorization: Bearer wrong\r\n",
    );
    assert_eq!(code, 401);
    let (code, body) = http_with(
        rekey.admin_port,
        "POST",
        "/reload",
        "Authorization: Bearer t0ken\r\n",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(rekey.admin("GET", "/status").0, 200, "reads need no token");
}

/// The admin listener speaks HTTP/1.1 as clients expect (hyper): two requests on one
/// keep-alive connection are both answered, and a garbled request gets a 400, not a hang.
#[test]
fn admin_http_keeps_alive_and_refuses_garbage() {
    use std::io::{BufRead, BufReader, Read, Write};
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", rekey.admin_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    for path in ["/healthz", "/status"] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
    }
    let mut bad = std::net::TcpStream::connect(("127.0.0.1", rekey.admin_port)).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut got = String::new();
    let _ = bad.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 400"), "{got:?}");
    assert_eq!(rekey.admin("GET", "/nope").0, 404);
    assert_eq!(rekey.admin("DELETE", "/reload").0, 405);
}

#[test]
fn max_clients_refuses_the_extra_client_only() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "[limits]\nmax_clients = 3\n");
    // The harness's own port probe may still count as a client for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rekey.admin("GET", "/status").1.contains("\"clients\": 0,") {
        assert!(Instant::now() < deadline, "probe connection never left");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut held: Vec<_> = (0..3).map(|_| rekey.raw()).collect();
    for c in &mut held {
        assert_eq!(raw_reply(c, &["PING"]), "+PONG\r\n");
    }
    let mut extra = rekey.raw();
    let got = String::from_utf8_lossy(&extra.read_to_close()).into_owned();
    assert_eq!(got, "-ERR max number of clients reached\r\n");
    assert_eq!(raw_reply(&mut held[0], &["PING"]), "+PONG\r\n");
    drop(held.pop());
    // The freed place is taken again (the count drops once rekey sees the close).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = rekey.raw();
        c.cmd(&["PING"]);
        let got = String::from_utf8_lossy(&c.read_exact_n(7)).into_owned();
        if got == "+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "place never freed: {got}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_hung_upstream_gives_an_error_after_the_reply_timeout() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "[limits]\nreply_timeout_ms = 300\n");
    let mut con = rekey.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    redis.signal("STOP");
    let started = Instant::now();
    let err = redis::cmd("GET").arg("k").query::<String>(&mut con);
    let waited = started.elapsed();
    redis.signal("CONT");
    let err = err.unwrap_err();
    assert!(err.to_string().contains("no reply within 300 ms"), "{err}");
    // The client's own read timeout is 10 s; the error came from rekey well before it.
    assert!(waited < Duration::from_secs(9), "waited {waited:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match redis::cmd("GET").arg("k").query::<String>(&mut con) {
            Ok(v) => break assert_eq!(v, "v"),
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying after: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("never recovered: {e}"),
        }
    }
}

#[test]
fn a_client_that_never_reads_cannot_grow_memory_without_bound() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "[limits]\nmax_output_bytes = 16777216\n");
    let mut con = rekey.client();
    let value = vec![b'x'; 100 * 1024];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut con)
        .unwrap();
    let before = rss_kib(rekey.pid());

    // Pipelines a million GETs of the 100 KB value and never reads a byte.
    let slow = rekey.raw();
    let mut w = slow.s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(10_000);
        let mut sent = 0usize;
        for _ in 0..100 {
            if w.write_all(&chunk).is_err() {
                break; // rekey stopped reading: backpressure reached the client
            }
            sent += 10_000;
        }
        sent
    });
    let sent = writer.join().unwrap();
    assert!(
        sent < 1_000_000,
        "rekey kept reading a client that never reads"
    );

    // Others are served meanwhile, and rekey's memory stayed bounded.
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("o{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
        let v: i64 = redis::cmd("GET")
            .arg(format!("o{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(v, i);
    }
    let peak = rss_kib(rekey.pid());
    eprintln!("slow reader: {sent} GETs written; RSS {before} KiB before, {peak} KiB with it");
    // 16 MB of output plus up to max_pipeline (1024) replies of 100 KB in flight, and the
    // kernel's socket buffers: far below what a million replies (100 GB) would take.
    assert!(peak < before + 400 * 1024, "RSS grew to {peak} KiB");
    drop(slow);
}

#[test]
fn idle_clients_are_closed_but_subscribers_are_not() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "[limits]\nidle_timeout_secs = 1\n");
    let mut idle = rekey.raw();
    assert_eq!(raw_reply(&mut idle, &["PING"]), "+PONG\r\n");
    let mut sub = rekey.raw();
    sub.cmd(&["SUBSCRIBE", "news"]);
    sub.expect("*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    std::thread::sleep(Duration::from_millis(2500));
    // The idle client was closed (Redis's `timeout` does the same); the subscriber was not.
    assert!(idle.read_to_close().is_empty());
    let mut con = rekey.client();
    let n: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hi")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    sub.expect("*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
}

/// The quick start on a fresh container: Redis installed but not started. rekey serves anyway
/// and says, at start, exactly how to start Redis at the address it was given.
#[test]
fn a_redis_not_started_gets_the_exact_hint() {
    use std::io::BufRead;
    let (port, closed) = (crate::common::free_port(), crate::common::free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &format!("redis://127.0.0.1:{closed}")])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let hint = format!("redis-server --daemonize yes --port {closed}");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains(&hint) {
                let _ = tx.send(());
            }
        }
    });
    let seen = rx.recv_timeout(Duration::from_secs(20)).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen, "no start hint naming port {closed}");
}
