//! Faults under load: SIGTERM while many clients pipeline writes (no torn reply, no
//! acknowledged write lost, exit 0), and the upstream Redis killed and restarted on the same
//! port (every request gets its reply or an error, nothing is retried behind the client's back,
//! every acknowledged write survives, with a Redis that runs AOF).

use crate::common::{RedisServer, Rekey};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one pipelining client saw: the bytes of every reply it read, until rekey closed.
fn pipeline_sets_until_closed(port: u16, tid: usize) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut seen = Vec::new();
    let mut next = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut batch = Vec::new();
        for _ in 0..50 {
            let key = format!("t{tid}:{next}");
            next += 1;
            batch.extend_from_slice(
                format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len()).as_bytes(),
            );
        }
        if s.write_all(&batch).is_err() {
            break;
        }
        let want = seen.len() + 50 * 5;
        while seen.len() < want {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return seen,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    }
    // Write refused: read whatever rekey still sends before it closes.
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

#[test]
fn sigterm_under_load_finishes_replies_and_exits_zero() {
    let redis = RedisServer::start();
    let mut rekey = Rekey::start(&redis, "");
    let port = rekey.port;
    let clients: Vec<_> = (0..16)
        .map(|tid| std::thread::spawn(move || pipeline_sets_until_closed(port, tid)))
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    rekey.signal("TERM");
    let status = rekey
        .wait_exit(Duration::from_secs(15))
        .expect("rekey exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");

    let mut direct = redis.direct();
    let mut total = 0;
    for (tid, c) in clients.into_iter().enumerate() {
        let seen = c.join().unwrap();
        assert_eq!(seen.len() % 5, 0, "client {tid} saw a torn reply");
        assert!(
            seen.chunks(5).all(|r| r == b"+OK\r\n"),
            "client {tid}: unexpected reply"
        );
        let acked = seen.len() / 5;
        total += acked;
        // Every acknowledged write is in Redis.
        let mut pipe = redis::pipe();
        for n in 0..acked {
            pipe.cmd("EXISTS").arg(format!("t{tid}:{n}"));
        }
        let exists: Vec<i64> = pipe.query(&mut direct).unwrap();
        assert!(
            exists.iter().all(|&e| e == 1),
            "client {tid}: acknowledged write missing"
        );
    }
    assert!(total > 1000, "the load ran: {total} acknowledged writes");
}

/// Per-client tallies of the upstream-failure test.
#[derive(Default, Debug)]
struct Tally {
    acked: Vec<u64>,
    errors: u64,
    incr_ok: u64,
    incr_err: u64,
}

fn write_through_failures(port: u16, tid: usize, stop: Arc<AtomicBool>) -> Tally {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut con = client.get_connection().unwrap();
    // A hang would trip this; rekey must answer well before.
    con.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut t = Tally::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match redis::cmd("SET")
            .arg(format!("w{tid}:{n}"))
            .arg(n)
            .query::<()>(&mut con)
        {
            Ok(()) => t.acked.push(n),
            Err(e) => {
                assert!(!e.is_timeout(), "client {tid}: request hung: {e}");
                assert!(!e.is_connection_dropped(), "client {tid}: dropped: {e}");
                t.errors += 1;
            }
        }
        n += 1;
        match redis::cmd("INCR")
            .arg(format!("ctr{tid}"))
            .query::<i64>(&mut con)
        {
            Ok(_) => t.incr_ok += 1,
            Err(e) => {
                assert!(!e.is_timeout(), "client {tid}: INCR hung: {e}");
                t.incr_err += 1;
            }
        }
    }
    t
}

#[test]
fn upstream_killed_under_load_loses_no_acknowledged_write() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let rekey = Rekey::start(&redis, "");
    let stop = Arc::new(AtomicBool::new(false));
    let port = rekey.port;
    let clients: Vec<_> = (0..20)
        .map(|tid| {
            let stop = stop.clone();
            std::thread::spawn(move || write_through_failures(port, tid, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    redis.kill(); // SIGKILL: no shutdown save, only the AOF
    std::thread::sleep(Duration::from_millis(500));
    redis.restart();
    // rekey reconnects by itself and serves again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probe = rekey.client();
    while redis::cmd("SET")
        .arg("probe")
        .arg(1)
        .query::<()>(&mut probe)
        .is_err()
    {
        assert!(Instant::now() < deadline, "rekey never served again");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<Tally> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let errors: u64 = tallies.iter().map(|t| t.errors + t.incr_err).sum();
    let acked: usize = tallies.iter().map(|t| t.acked.len()).sum();
    eprintln!("upstream restart: {acked} writes acknowledged, {errors} requests errored");
    assert!(errors > 0, "the kill happened under load");

    // After a restart of the proxy too, every acknowledged write is there.
    drop(rekey);
    let rekey = Rekey::start(&redis, "");
    let mut con = rekey.client();
    for (tid, t) in tallies.iter().enumerate() {
        let mut pipe = redis::pipe();
        for n in &t.acked {
            pipe.cmd("GET").arg(format!("w{tid}:{n}"));
        }
        let got: Vec<Option<u64>> = pipe.query(&mut con).unwrap();
        for (n, v) in t.acked.iter().zip(got) {
            assert_eq!(v, Some(*n), "client {tid}: acknowledged w{tid}:{n} lost");
        }
        // No silent retry: the counter ran at most once per INCR sent.
        let ctr: i64 = redis::cmd("GET")
            .arg(format!("ctr{tid}"))
            .query::<Option<i64>>(&mut con)
            .unwrap()
            .unwrap_or(0);
        assert!(
            ctr as u64 >= t.incr_ok && ctr as u64 <= t.incr_ok + t.incr_err,
            "client {tid}: counter {ctr}, {} acknowledged, {} errored",
            t.incr_ok,
            t.incr_err
        );
    }
}
