//! Test harness: a real `redis-server` and a real `rekey` process, each on a free loopback
//! port, killed when the test ends (on panic too).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory unique to this test process and call.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("rekey-test-{}-{tag}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start listening on {port}");
}

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        // A cluster node also listens on port + 10000 (the cluster bus).
        let port = std::iter::repeat_with(free_port)
            .find(|&p| p < 55_000)
            .expect("a free port");
        let mut s = RedisServer {
            port,
            dir: scratch_dir("redis"),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.restart();
        s
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = self.direct_result() {
                match redis::cmd("PING").query::<String>(&mut c) {
                    Ok(_) => return,
                    Err(e) if e.to_string().contains("NOAUTH") => return, // up, with a password
                    Err(_) => {}
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING");
    }

    /// Sends a signal (`STOP`, `CONT`, `KILL`…) to the server process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server with SIGKILL (no shutdown save) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn direct_result(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?.get_connection()
    }

    /// A connection straight to Redis, bypassing rekey.
    pub fn direct(&self) -> redis::Connection {
        self.direct_result().unwrap()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Rekey {
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    child: Child,
}

impl Rekey {
    /// Starts rekey in front of `redis` with `extra` TOML appended to a minimal config.
    pub fn start(redis: &RedisServer, extra: &str) -> Rekey {
        Self::start_url(&redis.url(), extra)
    }

    /// Starts rekey in front of the upstream `upstream` (a `redis://` URL, credentials allowed).
    pub fn start_url(upstream: &str, extra: &str) -> Rekey {
        let port = free_port();
        let admin_port = free_port();
        let dir = scratch_dir("rekey");
        let config_path = dir.join("rekey.toml");
        std::fs::write(
            &config_path,
            Self::config_text(port, admin_port, upstream, extra),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rekey"))
            .args(["-c", config_path.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_for_port(port, "rekey");
        wait_for_port(admin_port, "rekey admin");
        Rekey {
            port,
            admin_port,
            config_path,
            child,
        }
    }

    fn config_text(port: u16, admin_port: u16, upstream: &str, extra: &str) -> String {
        format!("listen = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:{admin_port}\"\nupstream = \"{upstream}\"\n{extra}\n")
    }

    /// Rewrites the config file (same listeners and admin) the way an editor would: a new
    /// file renamed over the old one.
    pub fn write_config(&self, upstream: &str, extra: &str) {
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(
            &tmp,
            Self::config_text(self.port, self.admin_port, upstream, extra),
        )
        .unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    /// An admin HTTP request: (status code, body).
    pub fn admin(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin_port, method, path)
    }

    /// Sends a signal to the rekey process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn client(&self) -> redis::Connection {
        let c = redis::Client::open(self.url()).unwrap();
        let con = c
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        con
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A raw TCP connection, for exact bytes.
    pub fn raw(&self) -> RawClient {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        RawClient { s }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself (after a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Rekey {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.config_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A minimal HTTP/1.1 request on loopback: (status code, body).
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    http_with(port, method, path, "")
}

/// An HTTP request with extra header lines (each ending in `\r\n`).
pub fn http_with(port: u16, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The value of one Prometheus sample line (`name{labels} value`), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A client speaking raw RESP bytes.
pub struct RawClient {
    pub s: TcpStream,
}

impl RawClient {
    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Sends a command as a RESP array.
    pub fn cmd(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.send(out.as_bytes());
    }

    /// Reads until `n` bytes arrived or the peer closed.
    pub fn read_exact_n(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.s.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) => panic!("read failed after {got} bytes: {e}"),
            }
        }
        buf.truncate(got);
        buf
    }

    /// Reads exactly the bytes of `expected` and compares.
    pub fn expect(&mut self, expected: &str) {
        let got = self.read_exact_n(expected.len());
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }

    /// Reads until the peer closes.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = self.s.read_to_end(&mut out);
        out
    }
}

/// Resident memory of a process, in KiB (from `/proc`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}
