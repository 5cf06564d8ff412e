//! Soak: hundreds of clients run mixed commands through rekey, each checking every reply
//! against its own model of its keys, while the rules are reloaded every few seconds and the
//! upstream Redis is killed and restarted once. rekey's memory must stay flat.
//!
//! `REKEY_SOAK_SECS` sets the length (default 60 s, what CI runs); `tests/soak.sh [SECS]`
//! runs it longer on a release build.

use crate::common::{rss_kib, RedisServer, Rekey};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 200;

fn rules(variant: usize) -> String {
    // Both variants map AppA_ and AppB_ onto shared_; they differ in an unrelated rule, so
    // every reload really swaps the rule set.
    format!(
        "[[rules]]\nname = \"sessions\"\nmatch = '^(AppA|AppB)_'\nreplace = 'shared_'\n\
         [[rules]]\nname = \"other{variant}\"\nmatch = '^Other{variant}_'\nreplace = 'o_'\n"
    )
}

/// What a client knows of one of its keys.
#[derive(Clone, PartialEq, Debug)]
enum State {
    /// An error left it uncertain (the command may or may not have run).
    Unknown,
    Missing,
    Value(String),
}

struct Counts {
    ops: AtomicU64,
    upstream_errors: AtomicU64,
}

/// xorshift: a cheap, seedable random sequence per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn connect(port: u16) -> redis::Connection {
    let con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    con
}

/// One random operation on one of the client's keys, checked against `keys`.
fn operate(
    con: &mut redis::Connection,
    tid: usize,
    n: u64,
    rng: &mut Rng,
    keys: &mut HashMap<u64, State>,
) -> redis::RedisResult<()> {
    let slot = rng.next() % 8;
    // Written through one app's prefix, read through the other's: the same key upstream.
    let (w, r) = if rng.next().is_multiple_of(2) {
        ("AppA", "AppB")
    } else {
        ("AppB", "AppA")
    };
    let (wk, rk) = (format!("{w}_{tid}:{slot}"), format!("{r}_{tid}:{slot}"));
    let known = keys.get(&slot).cloned().unwrap_or(State::Unknown);
    keys.insert(slot, State::Unknown); // until the reply says otherwise
    let after = match rng.next() % 5 {
        0 => {
            let v = format!("v{n}");
            redis::cmd("SET").arg(&wk).arg(&v).query::<()>(con)?;
            State::Value(v)
        }
        1 => {
            let got: Option<String> = redis::cmd("GET").arg(&rk).query(con)?;
            let seen = got.map(State::Value).unwrap_or(State::Missing);
            if known != State::Unknown {
                assert_eq!(seen, known, "client {tid}: GET {rk}");
            }
            seen
        }
        2 => {
            // A session-shaped transaction: HSET + EXPIRE, read back through the other app.
            let v = format!("h{n}");
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("HSET")
                .arg(format!("{wk}_Data"))
                .arg("f")
                .arg(&v)
                .ignore()
                .cmd("EXPIRE")
                .arg(format!("{wk}_Data"))
                .arg(600)
                .ignore()
                .cmd("HGET")
                .arg(format!("{rk}_Data"))
                .arg("f");
            let (got,): (String,) = pipe.query(con)?;
            assert_eq!(got, v, "client {tid}: HGET inside MULTI");
            known
        }
        3 => {
            redis::cmd("DEL").arg(&wk).query::<i64>(con)?;
            State::Missing
        }
        _ => {
            let e: i64 = redis::cmd("EXISTS").arg(&rk).query(con)?;
            let seen = if e == 1 {
                known.clone()
            } else {
                State::Missing
            };
            if known != State::Unknown {
                assert_eq!(
                    e == 1,
                    matches!(known, State::Value(_)),
                    "client {tid}: EXISTS {rk}"
                );
            }
            seen
        }
    };
    keys.insert(slot, after);
    Ok(())
}

fn client(port: u16, tid: usize, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let mut con = connect(port);
    let mut rng = Rng((tid as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut keys: HashMap<u64, State> = HashMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if let Err(e) = operate(&mut con, tid, n, &mut rng, &mut keys) {
            // Only the upstream outage may fail a command: with rekey's -ERR, or by closing a
            // client whose transaction connection was lost (as Redis would drop it).
            let text = e.to_string();
            assert!(!e.is_timeout(), "client {tid}: a request hung: {text}");
            if e.is_connection_dropped() || e.is_io_error() {
                con = connect(port);
            } else {
                // Redis's own -LOADING while it reads its AOF back after the restart.
                let outage = text.contains("rekey: ") || text.contains("loading the dataset");
                assert!(outage, "client {tid}: unexpected error: {text}");
            }
            counts.upstream_errors.fetch_add(1, Ordering::Relaxed);
        }
        counts.ops.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn soak_mixed_load_with_reloads_and_an_upstream_restart() {
    let secs: u64 = std::env::var("REKEY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let rekey = Rekey::start(&redis, &rules(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts {
        ops: AtomicU64::new(0),
        upstream_errors: AtomicU64::new(0),
    });
    let threads: Vec<_> = (0..CLIENTS)
        .map(|tid| {
            let (stop, counts, port) = (stop.clone(), counts.clone(), rekey.port);
            std::thread::spawn(move || client(port, tid, stop, counts))
        })
        .collect();

    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let restart_at = start + Duration::from_secs(secs * 2 / 5);
    let mut restarted = false;
    let mut variant = 0;
    let mut next_reload = start + Duration::from_secs(3);
    let mut samples: Vec<(u64, u64)> = Vec::new();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        let now = Instant::now();
        if now >= next_reload {
            variant = 1 - variant;
            rekey.write_config(&redis.url(), &rules(variant));
            next_reload = now + Duration::from_secs(3);
        }
        if !restarted && now >= restart_at {
            redis.kill();
            std::thread::sleep(Duration::from_millis(300));
            redis.restart();
            restarted = true;
        }
        samples.push((now.duration_since(start).as_secs(), rss_kib(rekey.pid())));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a client found a wrong reply");
    }
    let (_, status) = rekey.admin("GET", "/status");
    let ops = counts.ops.load(Ordering::Relaxed);
    let errors = counts.upstream_errors.load(Ordering::Relaxed);
    eprintln!("soak: {secs} s, {CLIENTS} clients, {ops} operations, {errors} upstream errors");
    eprintln!("soak: RSS samples (s, KiB): {samples:?}");
    assert!(ops > 1000, "the load ran");
    assert!(status.contains("\"last_result\": \"ok\""), "{status}");

    // Memory is flat: after the first quarter (warm-up, the restart's reconnects), RSS does
    // not keep growing.
    let warm: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= secs / 4)
        .map(|(_, r)| *r)
        .collect();
    let first = warm.first().copied().unwrap_or(0);
    let last = warm.last().copied().unwrap_or(0);
    assert!(
        last <= first + first / 4 + 16 * 1024,
        "RSS grew from {first} KiB to {last} KiB"
    );
}
