//! `[upstream_auth]` against a real redis-server: the upstream login rotated under load from
//! many clients (pipelined, in transactions, blocked, subscribed in RESP2 and RESP3), by a
//! password file (a Kubernetes Secret `..data` swap) and by a helper command. Each rotation
//! must be invisible: no client sees an error, Redis sees the same connection ids before and
//! after (`CLIENT LIST`), `AUTH` ran on each of them (`INFO commandstats`), the old password
//! can then be removed from the ACL user and everything is still served. A user switch shows
//! in `CLIENT LIST`'s `user=` for the same ids. A source that fails is reported (status,
//! metrics) while the credential is still valid, and a source that fails at start stops rekey
//! with its name. No secret appears in logs, `/status` or `/metrics`.
//!
//! Every flow rotates twice in a row. Waits poll for a state (with a generous guard against a
//! hang), never for a time.

use crate::common::*;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Waits for `f` to hold; panics with `what` after a minute (a hang, not a slow machine).
fn wait_until(what: &str, f: impl FnMut() -> bool) {
    assert!(wait_for(f), "gave up waiting: {what}");
}

/// Waits for `f` to hold; false after a minute (a hang, not a slow machine).
fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A rekey process whose log (at `debug`) goes to a file, for the leak checks.
struct LoggedRekey {
    port: u16,
    admin_port: u16,
    log: PathBuf,
    child: Child,
}

impl LoggedRekey {
    fn start(upstream: &str, extra: &str) -> LoggedRekey {
        let (port, admin_port) = (free_port(), free_port());
        let dir = scratch_dir("rekey-creds");
        let config = dir.join("rekey.toml");
        let log = dir.join("rekey.log");
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:{admin_port}\"\nupstream = \"{upstream}\"\nthreads = 2\n[pool]\nconnections = 2\n{extra}\n"),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rekey"))
            .args(["-c", config.to_str().unwrap()])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let r = LoggedRekey {
            port,
            admin_port,
            log,
            child,
        };
        wait_until("rekey listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
        });
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn client(&self) -> redis::Connection {
        connect(&self.url())
    }

    fn status(&self) -> serde_json::Value {
        let (code, body) = http(self.admin_port, "GET", "/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn metrics(&self) -> String {
        http(self.admin_port, "GET", "/metrics").1
    }

    fn reload(&self) {
        let (code, body) = http(self.admin_port, "POST", "/reload");
        assert_eq!(code, 200, "{body}");
    }

    /// Connections that accepted a renewal `AUTH` so far.
    fn renewed(&self) -> u64 {
        self.status()["upstream"]["auth"]["connections"]["renewed"]
            .as_u64()
            .unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LoggedRekey {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One Redis connection as `CLIENT LIST` shows it.
#[derive(Debug, Clone)]
struct Upstream {
    user: String,
    resp: u32,
    subscribed: bool,
    /// Blocked in a command (`BLPOP`).
    blocked: bool,
    /// The last command it ran (shown by `Debug` in failure messages).
    #[allow(dead_code)]
    cmd: String,
}

impl Upstream {
    /// Redis refuses `AUTH` on a RESP2 connection in subscribe mode: renewed when its lease
    /// ends (docs/upstream-auth.md).
    fn takes_auth(&self) -> bool {
        !(self.resp == 2 && self.subscribed)
    }
}

/// Redis's connections by id, except `admin` (the test's own).
fn client_list(admin: &mut redis::Connection) -> HashMap<u64, Upstream> {
    let text: String = redis::cmd("CLIENT").arg("LIST").query(admin).unwrap();
    let mut out = HashMap::new();
    for line in text.lines() {
        let f: HashMap<&str, &str> = line
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        if f.get("name") == Some(&"test-admin") {
            continue;
        }
        let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.insert(
            num("id"),
            Upstream {
                user: f.get("user").unwrap_or(&"").to_string(),
                resp: num("resp") as u32,
                subscribed: num("sub") + num("psub") + num("ssub") > 0,
                blocked: f.get("flags").is_some_and(|f| f.contains('b')),
                cmd: f.get("cmd").unwrap_or(&"").to_string(),
            },
        );
    }
    out
}

fn auth_calls(admin: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(admin).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_auth:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A Redis whose ACL users `app` and `app2` start with password `pw1`, and a connection to
/// it as the (password-less) default user, named so it is left out of `CLIENT LIST` checks.
fn redis_with_users() -> (RedisServer, redis::Connection) {
    let redis = RedisServer::start();
    let mut admin = redis.direct();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("test-admin")
        .query(&mut admin)
        .unwrap();
    for user in ["app", "app2"] {
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", user, "on", ">pw1", "~*", "&*", "+@all"])
            .query(&mut admin)
            .unwrap();
    }
    (redis, admin)
}

fn acl(admin: &mut redis::Connection, args: &[&str]) {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(args)
        .query(admin)
        .unwrap();
}

/// Clients of every kind, each counting what it got right and recording anything wrong.
struct Load {
    stop: Arc<AtomicBool>,
    progress: Vec<(String, Arc<AtomicU64>)>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

/// Each client stops after this many rounds even if never told to (a bounded load).
const MAX_ROUNDS: u64 = 200_000;

impl Load {
    fn start(rekey: &LoggedRekey) -> Load {
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            progress: Vec::new(),
            errors: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
        };
        for i in 0..6 {
            load.spawn(&format!("pipelined {i}"), rekey.client(), move |con, n| {
                pipelined(con, i, n)
            });
        }
        let resp3 = redis::Client::open(format!("{}?protocol=resp3", rekey.url()))
            .unwrap()
            .get_connection()
            .unwrap();
        load.spawn("pipelined resp3", resp3, |con, n| pipelined(con, 99, n));
        for i in 0..2 {
            load.spawn(&format!("multi {i}"), rekey.client(), move |con, _| {
                let (a, b): (i64, i64) = redis::pipe()
                    .atomic()
                    .incr(format!("m{i}"), 1)
                    .incr(format!("m{i}"), 1)
                    .query(con)
                    .map_err(|e| e.to_string())?;
                match b == a + 1 {
                    true => Ok(()),
                    false => Err(format!("MULTI gave {a}, {b}")),
                }
            });
        }
        for i in 0..2 {
            let mut pusher = rekey.client();
            load.spawn(&format!("blocked {i}"), rekey.client(), move |con, n| {
                let _: () = redis::cmd("RPUSH")
                    .arg(format!("q{i}"))
                    .arg(n)
                    .query(&mut pusher)
                    .map_err(|e| e.to_string())?;
                let got: (String, u64) = redis::cmd("BLPOP")
                    .arg(format!("q{i}"))
                    .arg(0)
                    .query(con)
                    .map_err(|e| e.to_string())?;
                match got.1 == n {
                    true => Ok(()),
                    false => Err(format!("BLPOP gave {got:?}, wanted {n}")),
                }
            });
        }
        load.subscribers(rekey);
        load
    }

    /// A RESP2 subscriber (redis-rs), a RESP3 one (raw pushes) and their publisher.
    fn subscribers(&mut self, rekey: &LoggedRekey) {
        let got2 = self.counter("subscribed resp2");
        let mut con = rekey.client();
        let (stop, errors) = (self.stop.clone(), self.errors.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut ps = con.as_pubsub();
            ps.subscribe("news").unwrap();
            ps.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                match ps.get_message() {
                    Ok(m) if m.get_channel_name() == "news" => {
                        got2.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(m) => errors.lock().unwrap().push(format!("resp2 sub got {m:?}")),
                    Err(e) if e.is_timeout() => {}
                    Err(e) => errors.lock().unwrap().push(format!("resp2 sub: {e}")),
                }
            }
        }));
        let got3 = self.counter("subscribed resp3");
        let port = rekey.port;
        let (stop, errors) = (self.stop.clone(), self.errors.clone());
        self.threads.push(std::thread::spawn(move || {
            let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut c = RawClient::from_stream(s);
            assert!(matches!(c.call(&["HELLO", "3"]), Resp::Map(_)));
            c.cmd(&["SUBSCRIBE", "news"]);
            while !stop.load(Ordering::Relaxed) {
                match c.read_reply_within(Duration::from_millis(100)) {
                    None => {}
                    Some(Resp::Push(items))
                        if items.first().and_then(Resp::text).as_deref() == Some("message") =>
                    {
                        got3.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Resp::Push(_)) => {}
                    Some(other) => errors
                        .lock()
                        .unwrap()
                        .push(format!("resp3 sub got {other:?}")),
                }
            }
        }));
        self.spawn("publisher", rekey.client(), |con, n| {
            let _: i64 = redis::cmd("PUBLISH")
                .arg("news")
                .arg(n)
                .query(con)
                .map_err(|e| e.to_string())?;
            // Bounded rate: the subscribers keep up.
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        });
    }

    fn counter(&mut self, name: &str) -> Arc<AtomicU64> {
        let c = Arc::new(AtomicU64::new(0));
        self.progress.push((name.to_string(), c.clone()));
        c
    }

    /// A client thread running `round` until stopped; a failed round is recorded.
    fn spawn(
        &mut self,
        name: &str,
        mut con: redis::Connection,
        mut round: impl FnMut(&mut redis::Connection, u64) -> Result<(), String> + Send + 'static,
    ) {
        let done = self.counter(name);
        let (stop, errors, name) = (self.stop.clone(), self.errors.clone(), name.to_string());
        self.threads.push(std::thread::spawn(move || {
            for n in 0..MAX_ROUNDS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match round(&mut con, n) {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.lock().unwrap().push(format!("{name}: {e}"));
                        break;
                    }
                };
            }
        }));
    }

    /// Waits until every client has made progress since now.
    fn wait_for_progress(&self, what: &str) {
        let before: Vec<u64> = self
            .progress
            .iter()
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .collect();
        wait_until(what, || {
            self.assert_no_errors();
            self.progress
                .iter()
                .zip(&before)
                .all(|((_, c), b)| c.load(Ordering::Relaxed) > *b + 2)
        });
    }

    fn assert_no_errors(&self) {
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let errors = self.errors.lock().unwrap();
        assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    }
}

/// Ten SETs and a GET of each, as one pipeline.
fn pipelined(con: &mut redis::Connection, client: u64, n: u64) -> Result<(), String> {
    let mut p = redis::pipe();
    for k in 0..10 {
        p.set(format!("p{client}:{k}"), n * 10 + k).ignore();
    }
    for k in 0..10 {
        p.get(format!("p{client}:{k}"));
    }
    let got: Vec<u64> = p.query(con).map_err(|e| e.to_string())?;
    let want: Vec<u64> = (0..10).map(|k| n * 10 + k).collect();
    match got == want {
        true => Ok(()),
        false => Err(format!("pipeline gave {got:?}")),
    }
}

/// One rotation, checked: `rotate` changes what the source gives (to `user`, whose ACL
/// entry already accepts `new_pass` beside `old_pass`); then every connection that can take
/// `AUTH` has taken it, with the same ids, and `old_pass` is removed.
fn rotate_and_check(
    rekey: &LoggedRekey,
    admin: &mut redis::Connection,
    load: &Load,
    (user, old_pass, new_pass): (&str, &str, &str),
    rotate: impl FnOnce(),
) {
    load.wait_for_progress("every client served before the rotation");
    // A client blocked across the whole rotation: its `AUTH` waits behind its `BLPOP`.
    let key = format!("held-{new_pass}");
    let mut blocked = rekey.client();
    blocked.set_read_timeout(None).unwrap();
    let held_key = key.clone();
    let held = std::thread::spawn(move || {
        redis::cmd("BLPOP")
            .arg(&held_key)
            .arg(0)
            .query::<(String, String)>(&mut blocked)
    });
    wait_until("the BLPOP client is blocked", || {
        client_list(admin).values().any(|c| c.blocked)
    });
    let before = client_list(admin);
    let renewing = before.values().filter(|c| c.takes_auth()).count() as u64;
    let (auth_before, renewed_before) = (auth_calls(admin), rekey.renewed());
    rotate();
    wait_until("every connection but the blocked one renewed", || {
        load.assert_no_errors();
        rekey.renewed() >= renewed_before + renewing - 1
    });
    let _: () = redis::cmd("RPUSH")
        .arg(&key)
        .arg("released")
        .query(&mut rekey.client())
        .unwrap();
    let got = held.join().unwrap().expect("the blocked client is served");
    assert_eq!(got, (key, "released".to_string()));
    let all_renewed = wait_for(|| {
        load.assert_no_errors();
        rekey.renewed() >= renewed_before + renewing
    });
    assert!(
        all_renewed,
        "{} of {renewing} connections renewed; before: {before:?}; now: {:?}; status: {}",
        rekey.renewed() - renewed_before,
        client_list(admin),
        rekey.status()["upstream"]["auth"]
    );
    load.wait_for_progress("every client served after the rotation");
    let after = client_list(admin);
    for (id, c) in &before {
        let now = after
            .get(id)
            .unwrap_or_else(|| panic!("connection {id} ({c:?}) was dropped: {after:?}"));
        // (A pinned connection between two leases is logged out: `default`.)
        if c.takes_auth() && now.user != "default" {
            assert_eq!(
                now.user, user,
                "connection {id} logged in as the source's user"
            );
        }
    }
    let auth_delta = auth_calls(admin) - auth_before;
    assert!(
        auth_delta >= renewing,
        "AUTH ran {auth_delta} times for {renewing} connections"
    );
    for u in ["app", "app2"] {
        acl(
            admin,
            &[u, &format!(">{new_pass}"), &format!("<{old_pass}")],
        );
    }
    load.wait_for_progress("every client served with the old password gone");
    // A new pool dials with the new secret.
    let mut fresh = rekey.client();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut fresh).unwrap();
    let _: () = redis::cmd("SET")
        .arg("fresh")
        .arg(1)
        .query(&mut fresh)
        .unwrap();
    let who: String = redis::cmd("GET").arg("fresh").query(&mut fresh).unwrap();
    assert_eq!(who, "1");
}

/// What must never appear anywhere rekey writes.
fn assert_no_leak(rekey: &LoggedRekey, secrets: &[&str]) {
    let status = rekey.status().to_string();
    let metrics = rekey.metrics();
    let log = rekey.log_text();
    for s in secrets {
        assert!(!status.contains(s), "{s} in /status: {status}");
        assert!(!metrics.contains(s), "{s} in /metrics");
        assert!(!log.contains(s), "{s} in the log");
    }
}

/// A Kubernetes Secret volume: `password` and `user` are symlinks into `..data`, itself a
/// symlink the kubelet swaps to a new timestamped directory.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(user: &str, password: &str) -> SecretVolume {
        let mut v = SecretVolume {
            dir: scratch_dir("secret"),
            version: 0,
        };
        v.update(user, password);
        for name in ["user", "password"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), v.dir.join(name)).unwrap();
        }
        v
    }

    /// What the kubelet does: write a new directory, point `..data` at it atomically.
    fn update(&mut self, user: &str, password: &str) {
        self.version += 1;
        let name = format!("..2026_{}", self.version);
        let data = self.dir.join(&name);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("user"), format!("{user}\n")).unwrap();
        std::fs::write(data.join("password"), format!("{password}\n")).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[test]
fn a_rotated_secret_file_is_renewed_on_every_live_connection_under_load() {
    let (redis, mut admin) = redis_with_users();
    let mut secret = SecretVolume::new("app", "pw1");
    let rekey = LoggedRekey::start(
        &format!("redis://127.0.0.1:{}", redis.port),
        &format!(
            "[upstream_auth]\npassword_file = \"{}\"\nuser_file = \"{}\"",
            secret.path("password").display(),
            secret.path("user").display()
        ),
    );
    let load = Load::start(&rekey);
    for u in ["app", "app2"] {
        acl(&mut admin, &[u, ">pw2"]);
    }
    rotate_and_check(&rekey, &mut admin, &load, ("app", "pw1", "pw2"), || {
        secret.update("app", "pw2")
    });
    // Twice in a row, this time switching user too.
    for u in ["app", "app2"] {
        acl(&mut admin, &[u, ">pw3"]);
    }
    rotate_and_check(&rekey, &mut admin, &load, ("app2", "pw2", "pw3"), || {
        secret.update("app2", "pw3")
    });
    load.finish();
    let status = rekey.status();
    assert_eq!(status["upstream"]["auth"]["user"], "app2", "{status}");
    assert_eq!(status["upstream"]["auth"]["renewal"], "ok", "{status}");
    let m = rekey.metrics();
    assert!(metric(&m, "rekey_upstream_auth_renewals_total{result=\"ok\"}") > 0.0);
    assert_eq!(
        metric(&m, "rekey_upstream_auth_renewals_total{result=\"refused\"}"),
        0.0
    );
    assert_no_leak(&rekey, &["pw1", "pw2", "pw3"]);
}

/// A helper script printing the JSON in `json`, or failing while `fail` exists.
fn helper(dir: &Path) -> PathBuf {
    let script = dir.join("helper.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ -e {d}/fail ] && {{ echo 'vault: permission denied' >&2; exit 3; }}\ncat {d}/cred.json\n",
            d = dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn write_cred(dir: &Path, json: serde_json::Value) {
    let tmp = dir.join("cred.tmp");
    std::fs::write(&tmp, json.to_string()).unwrap();
    std::fs::rename(tmp, dir.join("cred.json")).unwrap();
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_helper_command_is_rerun_on_reload_and_renews_every_live_connection() {
    let (redis, mut admin) = redis_with_users();
    let dir = scratch_dir("helper");
    let script = helper(&dir);
    let expires = unix_now() + 3600;
    write_cred(
        &dir,
        serde_json::json!({"user": "app", "password": "pw1", "expires_at": expires}),
    );
    let rekey = LoggedRekey::start(
        &format!("redis://127.0.0.1:{}", redis.port),
        &format!("[upstream_auth]\ncommand = [\"{}\"]", script.display()),
    );
    let load = Load::start(&rekey);
    for u in ["app", "app2"] {
        acl(&mut admin, &[u, ">pw2"]);
    }
    rotate_and_check(&rekey, &mut admin, &load, ("app2", "pw1", "pw2"), || {
        write_cred(
            &dir,
            serde_json::json!({"user": "app2", "password": "pw2", "expires_at": expires}),
        );
        rekey.reload();
    });
    for u in ["app", "app2"] {
        acl(&mut admin, &[u, ">pw3"]);
    }
    rotate_and_check(&rekey, &mut admin, &load, ("app", "pw2", "pw3"), || {
        write_cred(
            &dir,
            serde_json::json!({"user": "app", "password": "pw3", "expires_at": expires + 60}),
        );
        rekey.signal_hup();
    });
    load.finish();
    let m = rekey.metrics();
    assert_eq!(
        metric(&m, "rekey_upstream_credential_expiry_timestamp_seconds"),
        (expires + 60) as f64
    );
    assert_no_leak(&rekey, &["pw1", "pw2", "pw3"]);
}

impl LoggedRekey {
    fn signal_hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

#[test]
fn a_source_that_fails_is_reported_while_the_credential_is_still_valid() {
    let (redis, _admin) = redis_with_users();
    let dir = scratch_dir("helper-fails");
    let script = helper(&dir);
    let expires = unix_now() + 3600;
    write_cred(
        &dir,
        serde_json::json!({"user": "app", "password": "pw1", "expires_at": expires}),
    );
    let rekey = LoggedRekey::start(
        &format!("redis://127.0.0.1:{}", redis.port),
        &format!(
            "[upstream_auth]\ncommand = [\"{}\", \"--token\", \"arg-s3cret\"]",
            script.display()
        ),
    );
    let mut con = rekey.client();
    std::fs::write(dir.join("fail"), "").unwrap();
    for round in 1..=2u64 {
        rekey.reload();
        wait_until("the failure is reported", || {
            rekey.status()["upstream"]["auth"]["failures_in_a_row"].as_u64() >= Some(round)
        });
        let status = rekey.status();
        let auth = &status["upstream"]["auth"];
        assert_eq!(auth["renewal"], "failing", "{status}");
        assert_eq!(auth["expires_at_unix"].as_f64(), Some(expires as f64));
        let why = auth["last_error"]["error"].as_str().unwrap();
        assert!(why.contains("helper.sh failed"), "{why}");
        let m = rekey.metrics();
        assert!(
            metric(
                &m,
                "rekey_upstream_auth_renewals_total{result=\"source_error\"}"
            ) >= round as f64
        );
        assert_eq!(metric(&m, "rekey_upstream_credential_renewal_failing"), 1.0);
        assert_eq!(
            metric(&m, "rekey_upstream_credential_expiry_timestamp_seconds"),
            expires as f64
        );
        // The old credential keeps serving.
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg(round)
            .query(&mut con)
            .unwrap();
    }
    std::fs::remove_file(dir.join("fail")).unwrap();
    rekey.reload();
    wait_until("the source recovers", || {
        rekey.status()["upstream"]["auth"]["renewal"] == "ok"
    });
    assert_no_leak(&rekey, &["pw1", "arg-s3cret", "permission denied"]);
}

#[test]
fn a_source_that_fails_at_start_stops_rekey_naming_it() {
    let redis = RedisServer::start();
    for (table, named) in [
        (
            "password_file = \"/nonexistent/pw\"",
            "password_file /nonexistent/pw",
        ),
        ("command = [\"/bin/false\"]", "command /bin/false"),
    ] {
        let dir = scratch_dir("bad-source");
        let config = dir.join("rekey.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{}\"\nupstream = \"redis://127.0.0.1:{}\"\n[upstream_auth]\n{table}\n",
                free_port(),
                redis.port
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rekey"))
            .args(["-c", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(err.contains(&format!("upstream_auth {named}")), "{err}");
    }
}

#[test]
fn migrate_logs_in_with_the_upstream_auth_source() {
    let (redis, mut admin) = redis_with_users();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "off"])
        .query(&mut admin)
        .unwrap();
    let mut app = redis::Client::open(format!("redis://app:pw1@127.0.0.1:{}/", redis.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("AppA_s1")
        .arg("v")
        .query(&mut app)
        .unwrap();
    let dir = scratch_dir("migrate-auth");
    std::fs::write(dir.join("password"), "pw1\n").unwrap();
    let config = dir.join("rekey.toml");
    std::fs::write(
        &config,
        format!(
            "upstream = \"redis://127.0.0.1:{}\"\n[[rules]]\nname = \"s\"\nmatch = '^AppA_'\nreplace = 'shared_'\n[upstream_auth]\nuser = \"app\"\npassword_file = \"{}\"\n",
            redis.port,
            dir.join("password").display()
        ),
    )
    .unwrap();
    for round in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_rekey"))
            .args(["-c", config.to_str().unwrap(), "migrate", "-q"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "round {round}: {stderr}");
        assert!(!stderr.contains("pw1"), "{stderr}");
    }
    let v: Option<String> = redis::cmd("GET").arg("shared_s1").query(&mut app).unwrap();
    assert_eq!(v.as_deref(), Some("v"));
}

#[test]
fn a_refused_renewal_keeps_the_old_login_and_is_retried_until_redis_takes_it() {
    let (redis, mut admin) = redis_with_users();
    let dir = scratch_dir("refused");
    let password = dir.join("password");
    let write = |p: &str| {
        std::fs::write(dir.join("tmp"), p).unwrap();
        std::fs::rename(dir.join("tmp"), &password).unwrap();
    };
    write("pw1");
    let rekey = LoggedRekey::start(
        &format!("redis://127.0.0.1:{}", redis.port),
        &format!(
            "[upstream_auth]\nuser = \"app\"\npassword_file = \"{}\"",
            password.display()
        ),
    );
    let mut shared = rekey.client();
    let mut pinned = rekey.client();
    let _: () = redis::cmd("WATCH").arg("w").query(&mut pinned).unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut shared)
        .unwrap();
    for (old, new) in [("pw1", "pw2"), ("pw2", "pw3")] {
        let live = client_list(&mut admin).len() as u64;
        let (renewed, refused_before) = (rekey.renewed(), refused(&rekey));
        write(new); // Redis does not know `new` yet.
        wait_until("the refusal is reported", || {
            refused(&rekey) >= refused_before + live
                && metric(
                    &rekey.metrics(),
                    "rekey_upstream_auth_renewals_total{result=\"refused\"}",
                ) >= (refused_before + live) as f64
        });
        let status = rekey.status();
        let why = status["upstream"]["auth"]["connections"]["last_refusal"]["error"]
            .as_str()
            .unwrap();
        assert!(why.starts_with("WRONGPASS"), "{why}");
        // Still logged in as before: everything is served.
        let v: String = redis::cmd("GET").arg("k").query(&mut shared).unwrap();
        assert_eq!(v, "v");
        let _: () = redis::cmd("GET").arg("w").query(&mut pinned).unwrap();
        // Redis learns the new password: the retries succeed on the same connections.
        let ids: Vec<u64> = client_list(&mut admin).keys().copied().collect();
        acl(&mut admin, &["app", &format!(">{new}")]);
        wait_until("the retries succeed", || rekey.renewed() >= renewed + live);
        acl(&mut admin, &["app", &format!("<{old}")]);
        let after = client_list(&mut admin);
        assert!(ids.iter().all(|id| after.contains_key(id)), "{after:?}");
        let v: String = redis::cmd("GET").arg("k").query(&mut shared).unwrap();
        assert_eq!(v, "v");
    }
    let (ok,): (String,) = redis::pipe()
        .atomic()
        .set("w", 1)
        .query(&mut pinned)
        .unwrap();
    assert_eq!(ok, "OK");
    assert_no_leak(&rekey, &["pw1", "pw2", "pw3"]);
}

fn refused(rekey: &LoggedRekey) -> u64 {
    rekey.status()["upstream"]["auth"]["connections"]["refused"]
        .as_u64()
        .unwrap()
}

#[test]
fn an_identity_with_its_own_upstream_login_keeps_it_beside_upstream_auth() {
    let (redis, mut admin) = redis_with_users();
    let dir = scratch_dir("own-login");
    std::fs::write(dir.join("password"), "pw1\n").unwrap();
    let rekey = LoggedRekey::start(
        &format!("redis://127.0.0.1:{}", redis.port),
        &format!(
            "[[users]]\nname = \"alice\"\npassword = \"a\"\nupstream_user = \"app2\"\nupstream_password = \"pw1\"\n\
             [[users]]\nname = \"bob\"\npassword = \"b\"\n\
             [upstream_auth]\nuser = \"app\"\npassword_file = \"{}\"",
            dir.join("password").display()
        ),
    );
    let login = |user: &str, pass: &str| {
        let mut c = redis::Client::open(format!("redis://{user}:{pass}@127.0.0.1:{}/", rekey.port))
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = redis::cmd("SET").arg(user).arg(1).query(&mut c).unwrap();
        c
    };
    let (_alice, _bob) = (login("alice", "a"), login("bob", "b"));
    let users: Vec<String> = client_list(&mut admin)
        .values()
        .map(|c| c.user.clone())
        .collect();
    assert!(
        users.iter().any(|u| u == "app2"),
        "alice's own login: {users:?}"
    );
    assert!(
        users.iter().any(|u| u == "app"),
        "[upstream_auth] for the rest: {users:?}"
    );
}

#[test]
fn a_changed_upstream_auth_table_is_applied_on_reload_with_new_pools() {
    let (redis, mut admin) = redis_with_users();
    let dir = scratch_dir("table-change");
    std::fs::write(dir.join("password"), "pw1\n").unwrap();
    let script = helper(&dir);
    write_cred(&dir, serde_json::json!({"user": "app2", "password": "pw1"}));
    let file_table = format!(
        "[upstream_auth]\nuser = \"app\"\npassword_file = \"{}\"",
        dir.join("password").display()
    );
    let command_table = format!("[upstream_auth]\ncommand = [\"{}\"]", script.display());
    let upstream = format!("redis://127.0.0.1:{}", redis.port);
    let rekey = LoggedRekey::start(&upstream, &file_table);
    let config = rekey.log.with_file_name("rekey.toml");
    let write_config = |table: &str| {
        let text = std::fs::read_to_string(&config).unwrap();
        let head = text.split("[upstream_auth]").next().unwrap().to_string();
        std::fs::write(config.with_extension("tmp"), format!("{head}{table}\n")).unwrap();
        std::fs::rename(config.with_extension("tmp"), &config).unwrap();
    };
    let mut con = rekey.client();
    let users = |admin: &mut redis::Connection| -> Vec<String> {
        client_list(admin)
            .values()
            .map(|c| c.user.clone())
            .collect()
    };
    for _ in 0..2 {
        // To the helper command: new pools log in as its user.
        write_config(&command_table);
        rekey.reload();
        let status = rekey.status();
        assert!(
            status["upstream"]["auth"]["source"]
                .as_str()
                .unwrap()
                .starts_with("command "),
            "{status}"
        );
        assert!(status["reload"]["needs_restart"]
            .as_array()
            .unwrap()
            .is_empty());
        let _: () = redis::cmd("SET").arg("k").arg(1).query(&mut con).unwrap();
        wait_until("a pool logged in as app2", || {
            users(&mut admin).iter().any(|u| u == "app2")
        });
        // A source that cannot start refuses the reload; the helper keeps serving.
        write_config("[upstream_auth]\npassword_file = \"/nonexistent/pw\"");
        let (code, body) = http(rekey.admin_port, "POST", "/reload");
        assert_eq!(code, 422, "{body}");
        assert!(
            body.contains("upstream_auth password_file /nonexistent/pw"),
            "{body}"
        );
        let _: () = redis::cmd("SET").arg("k").arg(2).query(&mut con).unwrap();
        // Back to the file.
        write_config(&file_table);
        rekey.reload();
        let _: () = redis::cmd("SET").arg("k").arg(3).query(&mut con).unwrap();
        let status = rekey.status();
        assert_eq!(status["upstream"]["auth"]["user"], "app", "{status}");
    }
    assert_no_leak(&rekey, &["pw1"]);
}

#[test]
fn every_cluster_node_connection_is_renewed() {
    use crate::common::cluster::RedisCluster;
    let cluster = RedisCluster::start();
    let mut admins: Vec<redis::Connection> = cluster
        .nodes
        .iter()
        .map(|n| {
            let mut c = n.direct();
            let _: () = redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg("test-admin")
                .query(&mut c)
                .unwrap();
            acl(&mut c, &["app", "on", ">pw1", "~*", "&*", "+@all"]);
            c
        })
        .collect();
    let dir = scratch_dir("cluster-auth");
    let password = dir.join("password");
    let write = |p: &str| {
        std::fs::write(dir.join("tmp"), p).unwrap();
        std::fs::rename(dir.join("tmp"), &password).unwrap();
    };
    write("pw1");
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let rekey = LoggedRekey::start(
        &format!("redis-cluster://{}", seeds.join(",")),
        &format!(
            "[upstream_auth]\nuser = \"app\"\npassword_file = \"{}\"",
            password.display()
        ),
    );
    let mut con = rekey.client();
    let touch_every_node = |con: &mut redis::Connection, round: u32| {
        for k in 0..30 {
            let _: () = redis::cmd("SET")
                .arg(format!("k{k}"))
                .arg(round)
                .query(con)
                .unwrap();
        }
    };
    touch_every_node(&mut con, 0);
    for (round, (old, new)) in [("pw1", "pw2"), ("pw2", "pw3")].into_iter().enumerate() {
        let app_conns: u64 = admins
            .iter_mut()
            .map(|a| client_list(a).values().filter(|c| c.user == "app").count() as u64)
            .sum();
        assert!(app_conns >= 3, "a connection to each node: {app_conns}");
        let renewed = rekey.renewed();
        for a in admins.iter_mut() {
            acl(a, &["app", &format!(">{new}")]);
        }
        write(new);
        wait_until("every node's connections renewed", || {
            rekey.renewed() >= renewed + app_conns
        });
        for a in admins.iter_mut() {
            acl(a, &["app", &format!("<{old}")]);
        }
        touch_every_node(&mut con, round as u32 + 1);
        touch_every_node(&mut rekey.client(), round as u32 + 1);
    }
    assert_no_leak(&rekey, &["pw1", "pw2", "pw3"]);
}

#[test]
fn a_credential_is_renewed_before_it_expires_and_a_failed_renewal_is_reported_before_expiry() {
    let (redis, mut admin) = redis_with_users();
    for u in ["app", "app2"] {
        acl(&mut admin, &[u, ">pw2", ">pw3"]);
    }
    let dir = scratch_dir("expiry");
    let script = helper(&dir);
    // Six seconds: rekey renews a tenth of the lifetime ahead, without being asked.
    write_cred(
        &dir,
        serde_json::json!({"user": "app", "password": "pw1", "expires_at": unix_now() + 6}),
    );
    let rekey = LoggedRekey::start(
        &format!("redis://127.0.0.1:{}", redis.port),
        &format!("[upstream_auth]\ncommand = [\"{}\"]", script.display()),
    );
    let mut con = rekey.client();
    let _: () = redis::cmd("SET").arg("k").arg(1).query(&mut con).unwrap();
    let live = client_list(&mut admin).len() as u64;
    write_cred(
        &dir,
        // Twenty seconds: renewed two seconds ahead, time enough to report a failure first.
        serde_json::json!({"user": "app", "password": "pw2", "expires_at": unix_now() + 20}),
    );
    wait_until("renewed by the timer", || rekey.renewed() >= live);
    let _: () = redis::cmd("SET").arg("k").arg(2).query(&mut con).unwrap();
    // The next renewal fails: it is reported while the credential is still valid.
    std::fs::write(dir.join("fail"), "").unwrap();
    wait_until("the failed renewal is reported", || {
        rekey.status()["upstream"]["auth"]["failures_in_a_row"].as_u64() >= Some(1)
    });
    let status = rekey.status();
    let auth = &status["upstream"]["auth"];
    let failed_at = auth["last_error"]["time_unix"].as_f64().unwrap();
    let expires = auth["expires_at_unix"].as_f64().unwrap();
    assert!(
        failed_at < expires,
        "reported at {failed_at}, expiry {expires}: {auth}"
    );
    let m = rekey.metrics();
    assert_eq!(
        metric(&m, "rekey_upstream_credential_expiry_timestamp_seconds"),
        expires
    );
    assert!(
        metric(
            &m,
            "rekey_upstream_auth_renewals_total{result=\"source_error\"}"
        ) >= 1.0
    );
    // The source recovers: renewed again, served throughout.
    std::fs::remove_file(dir.join("fail")).unwrap();
    write_cred(
        &dir,
        serde_json::json!({"user": "app2", "password": "pw3", "expires_at": unix_now() + 3600}),
    );
    wait_until("renewed after the failures", || {
        rekey.status()["upstream"]["auth"]["user"] == "app2"
    });
    let _: () = redis::cmd("SET").arg("k").arg(3).query(&mut con).unwrap();
    assert_no_leak(&rekey, &["pw1", "pw2", "pw3"]);
}
