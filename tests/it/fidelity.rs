//! The answers a client gets through rekey are the ones its own Redis gives, where they used
//! to differ: `PING` and `ECHO` are Redis's to answer (`-BUSY` while a script runs, `-LOADING`
//! while Redis loads, an error when Redis is gone, `-NOAUTH` before and after `RESET`), and
//! long pipelines of commands rekey answers itself flow without the client sending more.
//! Redis is the oracle: the same bytes go to a plain redis-server and through rekey.

use crate::common::{
    encode, Auth, RawClient, RedisServer, Rekey, Resp, Variant, UPSTREAM_PASSWORD, UPSTREAM_USER,
};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A script that spins for up to 15 seconds (it is killed long before).
const SPIN: &str = "local t = redis.call('TIME')[1] + 0 \
    while redis.call('TIME')[1] + 0 < t + 15 do end return 1";

/// A raw connection straight to `redis`, logged in as the variant's user.
fn direct(redis: &RedisServer) -> RawClient {
    let s = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = RawClient::from_stream(s);
    let ok = match redis.variant.auth {
        Auth::None => return c,
        Auth::Password => c.call(&["AUTH", UPSTREAM_PASSWORD]),
        Auth::AclUser => c.call(&["AUTH", UPSTREAM_USER, UPSTREAM_PASSWORD]),
    };
    assert_eq!(ok, Resp::Simple("OK".into()));
    c
}

/// The replies of `PING`, `PING msg`, `ECHO msg` and a bad `ECHO`, in that order.
fn pings(c: &mut RawClient) -> Vec<Resp> {
    [
        &["PING"][..],
        &["PING", "hello"],
        &["ECHO", "there"],
        &["ECHO"],
    ]
    .iter()
    .map(|args| c.call(args))
    .collect()
}

/// Waits until a direct `PING` answers with an error starting with `prefix`.
fn wait_for_error(redis: &RedisServer, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probe = direct(redis);
    while Instant::now() < deadline {
        if let Resp::Error(e) = probe.call(&["PING"]) {
            if e.starts_with(prefix) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("Redis never answered PING with {prefix}");
}

fn is_error_starting(r: &Resp, prefix: &str) -> bool {
    matches!(r, Resp::Error(e) if e.starts_with(prefix))
}

#[test]
fn ping_and_echo_get_busy_while_a_script_runs_as_from_redis() {
    for variant in [Variant::PLAIN, Variant::PASSWORD, Variant::ACL_USER_DB3] {
        let redis = RedisServer::start_variant_with(variant, &["--busy-reply-threshold", "300"]);
        let rekey = Rekey::start(&redis, "");
        // Twice: the second round runs on the pooled connections the first one used.
        for round in 0..2 {
            // The script runs through rekey, on the shared connection the next clients use
            // too (Redis's own test suite does the same with a deferred client).
            let mut runner = rekey.raw();
            runner.cmd(&["EVAL", SPIN, "0"]);
            wait_for_error(&redis, "BUSY");
            let want = pings(&mut direct(&redis));
            assert!(is_error_starting(&want[0], "BUSY"), "{want:?}");
            let got = pings(&mut rekey.raw());
            assert_eq!(got, want, "{variant:?} round {round}");
            // RESP3 too.
            let mut c = rekey.raw_protocol(crate::common::Protocol::Resp3);
            let r = c.call(&["PING"]);
            assert!(is_error_starting(&r, "BUSY"), "{variant:?} {r:?}");
            let killed = rekey.raw().call(&["SCRIPT", "KILL"]);
            assert_eq!(killed, Resp::Simple("OK".into()));
            assert!(is_error_starting(&runner.read_reply(), "ERR Script killed"));
            assert_eq!(rekey.raw().call(&["PING"]), Resp::Simple("PONG".into()));
            assert_eq!(c.call(&["PING"]), Resp::Simple("PONG".into()));
        }
    }
}

#[test]
fn ping_gets_loading_while_redis_loads_its_dataset() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let rekey = Rekey::start(&redis, "");
    let mut admin = direct(&redis);
    let _ = admin.call(&["DEBUG", "POPULATE", "100000"]);
    // 100,000 keys at 60 µs each: six seconds of loading, answering clients every 1 KiB.
    let slow = [
        "key-load-delay",
        "60",
        "loading-process-events-interval-bytes",
        "1024",
    ];
    let mut config_set = vec!["CONFIG", "SET"];
    config_set.extend(slow);
    assert_eq!(admin.call(&config_set), Resp::Simple("OK".into()));
    let mut c = rekey.raw();
    assert_eq!(c.call(&["PING"]), Resp::Simple("PONG".into()));
    admin.cmd(&["DEBUG", "RELOAD"]);
    wait_for_error(&redis, "LOADING");
    let want = pings(&mut direct(&redis));
    assert!(is_error_starting(&want[0], "LOADING"), "{want:?}");
    // A client that was already connected, and a new one.
    assert_eq!(pings(&mut c), want);
    assert_eq!(pings(&mut rekey.raw()), want);
    assert_eq!(admin.read_reply(), Resp::Simple("OK".into()));
    assert_eq!(c.call(&["PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn ping_is_an_error_when_redis_is_gone_or_stopped() {
    let mut redis = RedisServer::start();
    let rekey = Rekey::start(
        &redis,
        "[limits]\nreply_timeout_ms = 300\nconnect_timeout_ms = 300\n",
    );
    let mut c = rekey.raw();
    assert_eq!(c.call(&["PING"]), Resp::Simple("PONG".into()));
    redis.signal("STOP");
    for _ in 0..2 {
        for args in [&["PING"][..], &["ECHO", "x"]] {
            let r = rekey.raw().call(args);
            assert!(is_error_starting(&r, "ERR rekey: upstream"), "{r:?}");
        }
    }
    redis.signal("CONT");
    redis.kill();
    for _ in 0..2 {
        let r = c.call(&["PING"]);
        assert!(is_error_starting(&r, "ERR rekey: upstream"), "{r:?}");
        let r = rekey.raw().call(&["PING", "m"]);
        assert!(is_error_starting(&r, "ERR rekey: upstream"), "{r:?}");
    }
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.call(&["PING"]) != Resp::Simple("PONG".into()) {
        assert!(Instant::now() < deadline, "rekey did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ping_before_auth_and_after_reset_is_noauth_as_from_redis() {
    let redis = RedisServer::start_variant(Variant::PASSWORD);
    let rekey = Rekey::start(&redis, &format!("requirepass = \"{UPSTREAM_PASSWORD}\"\n"));
    let plain = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut want_c = RawClient::from_stream(plain);
    let mut got_c = rekey.raw();
    for c in [&mut want_c, &mut got_c] {
        let before = c.call(&["PING"]);
        assert!(is_error_starting(&before, "NOAUTH"), "{before:?}");
    }
    for _ in 0..2 {
        let mut replies = Vec::new();
        for c in [&mut want_c, &mut got_c] {
            let mut seen = vec![c.call(&["PING"]), c.call(&["AUTH", UPSTREAM_PASSWORD])];
            seen.extend(pings(c));
            seen.push(c.call(&["RESET"]));
            seen.push(c.call(&["PING"]));
            seen.push(c.call(&["ECHO", "x"]));
            replies.push(seen);
        }
        assert_eq!(replies[1], replies[0]);
    }
}

/// One command of a kind rekey answers itself (PING and ECHO: used to), or a forwarded GET.
fn pipeline_of(kind: &str) -> Vec<&'static str> {
    match kind {
        "ping" => vec!["PING"],
        "echo" => vec!["ECHO", "e"],
        "client_id" => vec!["CLIENT", "ID"],
        "client_getname" => vec!["CLIENT", "GETNAME"],
        "client_setname" => vec!["CLIENT", "SETNAME", "n1"],
        "select" => vec!["SELECT", "0"],
        "hello" => vec!["HELLO", "2"],
        "auth" => vec!["AUTH", "anything"],
        "unsubscribe" => vec!["UNSUBSCRIBE"],
        "client_info" => vec!["CLIENT", "INFO"],
        "get" => vec!["GET", "k"],
        _ => unreachable!(),
    }
}

/// Sends `n` commands at once (from another thread, so that neither side waits for the
/// other's buffers) and reads every reply, without sending anything more.
fn pipelined(rekey: &Rekey, kinds: &[&str], n: usize) -> Vec<Resp> {
    let mut c = rekey.raw();
    let mut bytes = Vec::new();
    for i in 0..n {
        let kind = kinds[i % kinds.len()];
        bytes.extend_from_slice(&encode(&pipeline_of(kind)));
        if kinds.len() > 1 {
            bytes.extend_from_slice(&encode(&["ECHO", &i.to_string()]));
        }
    }
    let mut w = c.s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&bytes).unwrap());
    let per = if kinds.len() > 1 { 2 } else { 1 };
    let replies = (0..n * per).map(|_| c.read_reply()).collect();
    writer.join().unwrap();
    replies
}

#[test]
fn long_pipelines_of_commands_rekey_answers_itself_all_flow() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let kinds = [
        "ping",
        "echo",
        "client_id",
        "client_getname",
        "client_setname",
        "select",
        "hello",
        "auth",
        "unsubscribe",
        "client_info",
    ];
    const N: usize = 10_000;
    for kind in kinds {
        let replies = pipelined(&rekey, &[kind], N);
        assert_eq!(replies.len(), N);
        let first = &replies[0];
        assert!(!first.is_error(), "{kind}: {first:?}");
        if kind != "client_info" {
            // The same command in the same state gets the same reply every time.
            assert!(replies.iter().all(|r| r == first), "{kind}");
        }
    }
    // Mixed with one another and with forwarded commands, each followed by an ECHO of its
    // position: every reply arrives, in order.
    let mut mixed: Vec<&str> = kinds.to_vec();
    mixed.push("get");
    let replies = pipelined(&rekey, &mixed, N);
    for (i, pair) in replies.chunks(2).enumerate() {
        assert_eq!(
            pair[1],
            Resp::Bulk(i.to_string().into_bytes()),
            "position {i}"
        );
        assert!(!pair[0].is_error(), "position {i}: {:?}", pair[0]);
    }
}

/// `CLIENT TRACKING ON REDIRECT <id>` with the id `CLIENT ID` gave another client (redis-py's
/// and Lettuce's RESP2 client-side caching): Redis's `+OK`, and the invalidations reach the
/// other client; an id of no client (or of one that holds no connection for them) gets
/// Redis's own error.
#[test]
fn tracking_redirects_to_the_id_another_client_was_given() {
    for variant in [Variant::PLAIN, Variant::ACL_USER_DB3] {
        redirect_to_another_client(variant);
    }
}

fn redirect_to_another_client(variant: Variant) {
    let redis = RedisServer::start_variant(variant);
    let rekey = Rekey::start(&redis, "");
    let missing = direct(&redis).call(&["CLIENT", "TRACKING", "ON", "REDIRECT", "999999"]);
    assert!(missing.is_error(), "{missing:?}");
    // Twice: the second round borrows the pinned connections the first gave back.
    for round in 0..2 {
        let mut idle = rekey.raw();
        let idle_id = idle.call(&["CLIENT", "ID"]);
        let mut sub = rekey.raw();
        let Resp::Int(sub_id) = sub.call(&["CLIENT", "ID"]) else {
            panic!("CLIENT ID is an integer");
        };
        let confirmed = sub.call(&["SUBSCRIBE", "__redis__:invalidate"]);
        assert_eq!(confirmed.texts()[0].as_deref(), Some("subscribe"));
        let mut tracker = rekey.raw();
        let ok = tracker.call(&["CLIENT", "TRACKING", "ON", "REDIRECT", &sub_id.to_string()]);
        assert_eq!(ok, Resp::Simple("OK".into()), "{variant:?} round {round}");
        let _ = tracker.call(&["GET", "tracked"]);
        let _ = rekey.raw().call(&["SET", "tracked", "1"]);
        let message = sub.read_reply();
        let items = message.items().expect("an invalidation message");
        assert_eq!(items[0].text().as_deref(), Some("message"));
        assert_eq!(items[1].text().as_deref(), Some("__redis__:invalidate"));
        assert_eq!(items[2].texts(), vec![Some("tracked".to_string())]);
        // Redis's error, word for word, for no such client and for a client with nothing
        // to receive invalidations on.
        let Resp::Int(idle_id) = idle_id else {
            panic!("CLIENT ID is an integer");
        };
        for id in ["999999".to_string(), idle_id.to_string()] {
            let r = rekey
                .raw()
                .call(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id]);
            assert_eq!(r, missing, "REDIRECT {id}");
        }
        assert_eq!(
            tracker.call(&["CLIENT", "TRACKING", "OFF"]),
            Resp::Simple("OK".into())
        );
    }
}

/// Reads `MONITOR` lines from `c` until `stop` (a command's own line) appears; the lines
/// before it, as they came.
fn monitor_lines_until(c: &mut RawClient, stop: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let Resp::Simple(line) = c.read_reply() else {
            panic!("MONITOR sends simple strings");
        };
        if line.contains(stop) {
            return lines;
        }
        lines.push(line);
    }
}

/// A line without its time and client address: `[<db>] "cmd" …`; `None` for the lines of
/// commands a script ran (`lua`), which no proxy sees.
fn without_time_and_addr(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(" [").expect("a MONITOR line");
    let (db_client, args) = rest.split_once("] ").expect("a MONITOR line");
    let (db, client) = db_client.split_once(' ').expect("db and client");
    (client != "lua").then(|| format!("[{db} {}] {args}", client.starts_with("upstream:")))
}

/// What a client sends while others watch: data commands, connection commands, secrets,
/// admin commands Redis keeps out of the feed, a transaction, a script, odd bytes.
const WATCHED: &[&[&str]] = &[
    &["SET", "AppA_k", "v"],
    &["get", "AppA_k"],
    &["PING"],
    &["ECHO", "a\"b\n\x01"],
    &["AUTH", "secret-1"],
    &["AUTH", "user-1", "secret-2"],
    &["CLIENT", "SETNAME", "watched"],
    &["CLIENT", "LIST"],
    &["CONFIG", "GET", "maxmemory"],
    &["SELECT", "2"],
    &["SET", "AppA_in2", "1"],
    &["SELECT", "0"],
    &["MULTI"],
    &["INCR", "AppA_n"],
    &["EXEC"],
    &["EVAL", "return redis.call('GET', KEYS[1])", "1", "AppA_k"],
    &["MSET", "AppA_a", "1", "plain", "2"],
    &["NOSUCHCOMMAND", "x"],
];

/// Sends [`WATCHED`] (then `ECHO end-of-feed`) on `c`, one command at a time, after
/// `HELLO 3` when `resp3`.
fn send_watched(c: &mut RawClient, resp3: bool) {
    if resp3 {
        let _ = c.call(&["HELLO", "3"]);
    }
    for cmd in WATCHED {
        let _ = c.call(cmd);
    }
    let _ = c.call(&["ECHO", "end-of-feed"]);
}

#[test]
fn monitor_shows_what_clients_send_as_redis_shows_it() {
    // A plain upstream with a RESP2 client, a password upstream with a RESP3 client.
    for (variant, resp3) in [(Variant::PLAIN, false), (Variant::PASSWORD, true)] {
        monitor_lines_match_redis(variant, resp3);
    }
}

fn monitor_lines_match_redis(variant: Variant, resp3: bool) {
    let plain = RedisServer::start();
    let redis = RedisServer::start_variant(variant);
    let rule = "[[rules]]\nname = \"t\"\nmatch = '^AppA_'\nreplace = 'shared_'\n";
    let rekey = Rekey::start(&redis, rule);
    // Redis's own feed of the same commands, sent to it directly.
    let mut watcher = direct(&plain);
    assert_eq!(watcher.call(&["MONITOR"]), Resp::Simple("OK".into()));
    send_watched(&mut direct(&plain), resp3);
    let want: Vec<String> = monitor_lines_until(&mut watcher, "end-of-feed")
        .iter()
        .filter_map(|l| without_time_and_addr(l))
        .collect();
    assert!(want.iter().any(|l| l.contains("(redacted)")), "{want:?}");
    // Twice through rekey: the second time on pooled and pinned connections already used.
    for round in 0..2 {
        let mut watcher = rekey.raw();
        assert_eq!(watcher.call(&["MONITOR"]), Resp::Simple("OK".into()));
        let mut sender = rekey.raw();
        send_watched(&mut sender, resp3);
        let lines = monitor_lines_until(&mut watcher, "end-of-feed");
        let got: Vec<String> = lines
            .iter()
            .filter_map(|l| without_time_and_addr(l))
            .collect();
        // The client's own names, as Redis shows them; then, where a rule rewrote the
        // command, what went upstream.
        let clients: Vec<String> = got
            .iter()
            .filter(|l| l.contains(" false] "))
            .cloned()
            .collect();
        assert_eq!(clients, want, "{variant:?}, RESP3 {resp3}, round {round}");
        let upstream: Vec<&String> = got.iter().filter(|l| l.contains(" true] ")).collect();
        assert!(
            upstream
                .iter()
                .any(|l| l.contains("\"SET\" \"shared_k\" \"v\"")),
            "{upstream:?}"
        );
        assert!(
            upstream.iter().all(|l| !l.contains("AppA_")),
            "{upstream:?}"
        );
        // Each line carries the sender's address, as Redis's does.
        let addr = sender.s.local_addr().unwrap().to_string();
        assert!(lines.iter().all(|l| l.contains(&addr)), "{lines:?}");
        assert_eq!(watcher.call(&["RESET"]), Resp::Simple("RESET".into()));
        // After RESET the feed has stopped.
        let _ = sender.call(&["GET", "after-reset"]);
        assert_eq!(watcher.call(&["PING"]), Resp::Simple("PONG".into()));
    }
}

#[test]
fn monitor_of_an_app_shows_only_that_apps_commands() {
    let redis = RedisServer::start();
    let app_port = crate::common::free_port();
    let rekey = Rekey::start(
        &redis,
        &format!("[[apps]]\nname = \"appA\"\nlisten = \"127.0.0.1:{app_port}\"\n"),
    );
    let app_client = || {
        let s = TcpStream::connect(("127.0.0.1", app_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        RawClient::from_stream(s)
    };
    let mut app_watcher = app_client();
    let mut all_watcher = rekey.raw();
    for w in [&mut app_watcher, &mut all_watcher] {
        assert_eq!(w.call(&["MONITOR"]), Resp::Simple("OK".into()));
    }
    let _ = rekey.raw().call(&["GET", "from-nobody"]);
    let _ = app_client().call(&["GET", "from-appA"]);
    let _ = app_client().call(&["ECHO", "end-of-feed"]);
    let app_lines = monitor_lines_until(&mut app_watcher, "end-of-feed");
    assert_eq!(app_lines.len(), 1, "{app_lines:?}");
    assert!(
        app_lines[0].ends_with("\"GET\" \"from-appA\""),
        "{app_lines:?}"
    );
    let all_lines = monitor_lines_until(&mut all_watcher, "end-of-feed");
    assert_eq!(all_lines.len(), 2, "{all_lines:?}");
}

/// The Python that has redis-py: `target/pyenv` when `tests/setup.sh` made one.
fn python() -> String {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
    match std::path::Path::new(venv).exists() {
        true => venv.to_string(),
        false => "python3".to_string(),
    }
}

#[test]
fn redis_py_reads_rekeys_monitor_lines() {
    let redis = RedisServer::start();
    let rule = "[[rules]]\nname = \"t\"\nmatch = '^AppA_'\nreplace = 'shared_'\n";
    let rekey = Rekey::start(&redis, rule);
    let script = format!(
        "import json, redis\n\
         r = redis.Redis(port={port})\n\
         out = []\n\
         with r.monitor() as m:\n\
         \x20   print('ready', flush=True)\n\
         \x20   for c in m.listen():\n\
         \x20       out.append([c['db'], c['client_address'], c['command']])\n\
         \x20       if 'end-of-feed' in c['command']:\n\
         \x20           break\n\
         print(json.dumps(out), flush=True)\n",
        port = rekey.port
    );
    let mut child = std::process::Command::new(python())
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    assert_eq!(first.trim(), "ready");
    // redis-py has sent MONITOR; wait until rekey registered it.
    std::thread::sleep(Duration::from_millis(300));
    let mut c = rekey.raw();
    let _ = c.call(&["SET", "AppA_k", "v w"]);
    let _ = c.call(&["ECHO", "end-of-feed"]);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let seen: serde_json::Value = serde_json::from_str(rest.trim()).unwrap();
    let seen = seen.as_array().unwrap();
    let commands: Vec<&str> = seen.iter().map(|e| e[2].as_str().unwrap()).collect();
    assert_eq!(
        commands,
        ["SET AppA_k v w", "SET shared_k v w", "ECHO end-of-feed"]
    );
    assert_eq!(seen[0][0], 0);
    assert_eq!(seen[1][1], "upstream:127.0.0.1");
}

/// The commands rekey keeps out of the feed are exactly those Redis flags `admin` (which
/// Redis keeps out of `MONITOR`), subcommands included.
#[test]
fn monitor_hides_exactly_the_commands_redis_flags_admin() {
    let redis = RedisServer::start();
    let mut c = redis.direct();
    let info: redis::Value = redis::cmd("COMMAND").query(&mut c).unwrap();
    fn text(v: &redis::Value) -> String {
        match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            other => panic!("not a string: {other:?}"),
        }
    }
    fn admin(entry: &redis::Value, out: &mut Vec<String>) {
        let redis::Value::Array(fields) = entry else {
            panic!("a COMMAND entry is an array");
        };
        let redis::Value::Array(flags) = &fields[2] else {
            panic!("flags are an array");
        };
        if flags.iter().any(|f| text(f) == "admin") {
            out.push(text(&fields[0]));
        }
        if let Some(redis::Value::Array(subs)) = fields.get(9) {
            subs.iter().for_each(|s| admin(s, out));
        }
    }
    let redis::Value::Array(entries) = info else {
        panic!("COMMAND is an array");
    };
    let mut want = Vec::new();
    entries.iter().for_each(|e| admin(e, &mut want));
    want.sort();
    let mut got: Vec<String> = rekey::proxy::monitor::hidden_commands()
        .iter()
        .map(|s| s.to_string())
        .collect();
    got.sort();
    assert_eq!(got, want);
}
