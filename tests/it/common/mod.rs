//! Test harness: a real `redis-server` and a real `rekey` process, each on a free loopback
//! port, killed when the test ends (on panic too).
#![allow(dead_code)]

pub mod cluster;
pub mod sentinel;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Ports handed out come from here, and a cluster node's bus port (port + 10000) from the
/// range above it, which is never handed out: both below the kernel's ephemeral range (32768
/// and up), so no outgoing connection takes one between the check and the server's bind.
/// Each port is handed out once per process; the start depends on the process id, so two test
/// runs on one machine start far apart.
const PORTS: std::ops::Range<u16> = 12_000..22_000;
/// What cluster nodes add to their port for the cluster bus.
const BUS_OFFSET: u16 = 10_000;
static NEXT_PORT: std::sync::OnceLock<std::sync::atomic::AtomicU16> = std::sync::OnceLock::new();

/// A free loopback port: never handed out before in this process, and bindable now, as is
/// its cluster bus port.
pub fn free_port() -> u16 {
    let span = PORTS.end - PORTS.start;
    let next = NEXT_PORT.get_or_init(|| {
        let start = (std::process::id() as u64 * 7919 % span as u64) as u16;
        std::sync::atomic::AtomicU16::new(start)
    });
    for _ in 0..span {
        let port = PORTS.start + next.fetch_add(1, Ordering::Relaxed) % span;
        let bindable = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if bindable(port) && bindable(port + BUS_OFFSET) {
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}");
}

/// A test CA and a server certificate it signs for `localhost` and `127.0.0.1` (`ca.crt`,
/// `server.crt`, `server.key`), made once per process.
pub fn test_pki() -> &'static PathBuf {
    static PKI: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let dir = scratch_dir("pki");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "rekey test CA");
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut server = rcgen::CertificateParams::new(names).unwrap();
        server
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        dir
    })
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

/// How the upstream Redis authenticates clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No password (Redis's default).
    None,
    /// `requirepass` (the `default` user has a password): `redis://:pw@host:port`.
    Password,
    /// An ACL user `app` (`on >pw ~* &* +@all`) with the `default` user disabled:
    /// `redis://app:pw@host:port`.
    AclUser,
}

/// The password of the [`Auth::Password`] and [`Auth::AclUser`] upstreams.
pub const UPSTREAM_PASSWORD: &str = "up-pw-7f3a";
/// The ACL user of the [`Auth::AclUser`] upstream.
pub const UPSTREAM_USER: &str = "app";

/// One upstream configuration the proxy must work against: how Redis authenticates, the db
/// rekey's clients start in (the `/db` of rekey's upstream URL), and whether rekey reaches it
/// over TLS (`rediss://`, as managed Redis requires; the test's own direct connections use
/// the server's plain port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub auth: Auth,
    pub db: u8,
    pub tls: bool,
}

impl Variant {
    pub const PLAIN: Variant = Variant {
        auth: Auth::None,
        db: 0,
        tls: false,
    };
    pub const PASSWORD: Variant = Variant {
        auth: Auth::Password,
        db: 0,
        tls: false,
    };
    pub const ACL_USER: Variant = Variant {
        auth: Auth::AclUser,
        db: 0,
        tls: false,
    };
    pub const DB3: Variant = Variant {
        auth: Auth::None,
        db: 3,
        tls: false,
    };
    /// An ACL user and db 3 together (the usual managed-Redis setup with a non-zero db).
    pub const ACL_USER_DB3: Variant = Variant {
        auth: Auth::AclUser,
        db: 3,
        tls: false,
    };

    /// Managed Redis as ElastiCache and Redis Cloud run it: TLS, and an ACL user.
    pub const TLS_ACL_USER: Variant = Variant {
        auth: Auth::AclUser,
        db: 0,
        tls: true,
    };

    /// Every variant the suites run against.
    pub fn all() -> [Variant; 6] {
        [
            Self::PLAIN,
            Self::PASSWORD,
            Self::ACL_USER,
            Self::DB3,
            Self::ACL_USER_DB3,
            Self::TLS_ACL_USER,
        ]
    }

    /// A short name, for test names and failure messages.
    pub fn name(self) -> String {
        let auth = match self.auth {
            Auth::None => "no-auth",
            Auth::Password => "requirepass",
            Auth::AclUser => "acl-user",
        };
        let tls = if self.tls { "tls-" } else { "" };
        if self.db == 0 {
            format!("{tls}{auth}")
        } else {
            format!("{tls}{auth}-db{}", self.db)
        }
    }

    /// `redis-server` command-line directives for this variant's authentication.
    pub fn server_args(self) -> Vec<String> {
        let args: &[&str] = match self.auth {
            Auth::None => &[],
            Auth::Password => &["--requirepass", UPSTREAM_PASSWORD],
            // A multi-word directive on the command line: `--user` then its words as separate
            // arguments, up to the next `--`.
            Auth::AclUser => {
                let pass = format!(">{UPSTREAM_PASSWORD}");
                return [
                    "--user",
                    UPSTREAM_USER,
                    "on",
                    &pass,
                    "~*",
                    "&*",
                    "+@all",
                    "--user",
                    "default",
                    "off",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
            }
        };
        args.iter().map(|s| s.to_string()).collect()
    }

    /// The `user:pass@` part of a URL (empty without auth).
    pub fn userinfo(self) -> String {
        match self.auth {
            Auth::None => String::new(),
            Auth::Password => format!(":{UPSTREAM_PASSWORD}@"),
            Auth::AclUser => format!("{UPSTREAM_USER}:{UPSTREAM_PASSWORD}@"),
        }
    }

    /// The plain URL of a Redis of this variant on `port`: credentials and db included.
    pub fn url(self, port: u16) -> String {
        self.url_scheme("redis", port)
    }

    fn url_scheme(self, scheme: &str, port: u16) -> String {
        let db = if self.db == 0 {
            String::new()
        } else {
            format!("/{}", self.db)
        };
        format!("{scheme}://{}127.0.0.1:{port}{db}", self.userinfo())
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The protocol a client speaks to rekey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    pub fn all() -> [Protocol; 2] {
        [Protocol::Resp2, Protocol::Resp3]
    }
}

pub struct RedisServer {
    pub port: u16,
    /// The TLS port, for a TLS variant (rekey's way in; `port` stays plain for the tests).
    pub tls_port: Option<u16>,
    pub variant: Variant,
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A Redis configured as `variant` (password, ACL user); [`RedisServer::url`] and
    /// [`RedisServer::direct`] then carry the credentials and the variant's db, so
    /// [`Rekey::start`] in front of it uses them too.
    pub fn start_variant(variant: Variant) -> RedisServer {
        Self::start_variant_with(variant, &[])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_variant_with(Variant::PLAIN, extra)
    }

    pub fn start_variant_with(variant: Variant, extra: &[&str]) -> RedisServer {
        // A cluster node also listens on port + 10000 (the cluster bus).
        let port = std::iter::repeat_with(free_port)
            .find(|&p| p < 55_000)
            .expect("a free port");
        let tls_port = variant.tls.then(free_port);
        let tls_args = tls_port.map(|p| {
            let pki = test_pki();
            [
                "--tls-port".to_string(),
                p.to_string(),
                "--tls-cert-file".to_string(),
                pki.join("server.crt").display().to_string(),
                "--tls-key-file".to_string(),
                pki.join("server.key").display().to_string(),
                "--tls-ca-cert-file".to_string(),
                pki.join("ca.crt").display().to_string(),
                "--tls-auth-clients".to_string(),
                "no".to_string(),
            ]
        });
        let mut s = RedisServer {
            port,
            tls_port,
            variant,
            dir: scratch_dir("redis"),
            child: None,
            extra: variant
                .server_args()
                .into_iter()
                .chain(tls_args.into_iter().flatten())
                .chain(extra.iter().map(|s| s.to_string()))
                .collect(),
        };
        s.restart();
        s
    }

    /// Starts (again) on the same port, with the same variant (its users and password are
    /// command-line directives, so a restarted server has them from the start).
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
            // The variant's credentials log in (the ACL variant has no `default` user); a
            // password given only through `start_with` answers NOAUTH, which is up too.
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
        self.direct_db_result(self.variant.db)
    }

    fn direct_db_result(&self, db: u8) -> redis::RedisResult<redis::Connection> {
        let url = Variant { db, ..self.variant }.url(self.port);
        let con = redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(con)
    }

    /// A connection straight to Redis, bypassing rekey: logged in as the variant requires, in
    /// the variant's db.
    pub fn direct(&self) -> redis::Connection {
        self.direct_result().unwrap()
    }

    /// Like [`RedisServer::direct`], in db `db`.
    pub fn direct_db(&self, db: u8) -> redis::Connection {
        self.direct_db_result(db).unwrap()
    }

    /// The upstream URL for rekey: `redis://[user:pass@]127.0.0.1:port[/db]` as the variant
    /// requires (`redis://127.0.0.1:port` for the plain one; `rediss://…` to the TLS port for
    /// a TLS variant).
    pub fn url(&self) -> String {
        match self.tls_port {
            Some(tls) => self.variant.url_scheme("rediss", tls),
            None => self.variant.url(self.port),
        }
    }

    /// The config rekey needs besides the URL: for a TLS variant, the test CA.
    pub fn rekey_settings(&self) -> String {
        match self.tls_port {
            Some(_) => format!(
                "\n[tls.upstream]\nca_file = \"{}\"\n",
                test_pki().join("ca.crt").display()
            ),
            None => String::new(),
        }
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
    /// Starts rekey in front of `redis` with `extra` TOML appended to a minimal config. The
    /// upstream URL is `redis.url()`: it carries the server variant's credentials and db.
    pub fn start(redis: &RedisServer, extra: &str) -> Rekey {
        Self::start_url(&redis.url(), &format!("{extra}{}", redis.rekey_settings()))
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
            .env(
                "RUST_LOG",
                std::env::var("REKEY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
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
        connect(&self.url())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A `redis` crate client speaking `protocol` (RESP3 through `?protocol=resp3`, so the
    /// crate sends `HELLO 3`).
    pub fn client_protocol(&self, protocol: Protocol) -> redis::Connection {
        let url = match protocol {
            Protocol::Resp2 => self.url(),
            Protocol::Resp3 => format!("{}?protocol=resp3", self.url()),
        };
        let con = redis::Client::open(url)
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        con
    }

    /// A raw TCP connection, for exact bytes.
    pub fn raw(&self) -> RawClient {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        RawClient { s, buf: Vec::new() }
    }

    /// A raw client that has switched to `protocol` (`HELLO 3` answered, for RESP3).
    pub fn raw_protocol(&self, protocol: Protocol) -> RawClient {
        let mut c = self.raw();
        if protocol == Protocol::Resp3 {
            let hello = c.call(&["HELLO", "3"]);
            assert!(matches!(hello, Resp::Map(_)), "HELLO 3 answered {hello:?}");
        }
        c
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

/// A redis-rs connection to `url` (5 s to connect, 10 s to read a reply).
pub fn connect(url: &str) -> redis::Connection {
    let c = redis::Client::open(url).unwrap();
    let con = c
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con
}

/// A client speaking raw RESP bytes.
pub struct RawClient {
    pub s: TcpStream,
    /// Bytes read past the last parsed reply.
    buf: Vec<u8>,
}

impl RawClient {
    /// A raw client on an already connected stream.
    pub fn from_stream(s: TcpStream) -> RawClient {
        RawClient { s, buf: Vec::new() }
    }
}

/// One RESP2/RESP3 reply, as read by [`RawClient::read_reply`].
#[derive(Clone, Debug, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` and RESP3 `_`.
    Nil,
    Array(Vec<Resp>),
    /// RESP3 `%`, in wire order.
    Map(Vec<(Resp, Resp)>),
    /// RESP3 `~`.
    Set(Vec<Resp>),
    /// RESP3 `>` (out-of-band: pub/sub messages, invalidations).
    Push(Vec<Resp>),
    /// RESP3 `,` `(` `#` `=` kept as their text.
    Other(char, String),
}

impl Resp {
    /// The text of a simple string or bulk string.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The items of an array, set or push.
    pub fn items(&self) -> Option<&[Resp]> {
        match self {
            Resp::Array(v) | Resp::Set(v) | Resp::Push(v) => Some(v),
            _ => None,
        }
    }

    /// The texts of an array/set/push of strings (`None` for nil and non-text items).
    pub fn texts(&self) -> Vec<Option<String>> {
        self.items()
            .unwrap_or_else(|| panic!("not an aggregate: {self:?}"))
            .iter()
            .map(Resp::text)
            .collect()
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Resp::Error(_))
    }
}

/// A bulk string reply, for comparisons.
/// A command as the RESP array a client sends.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

pub fn bulk(s: &str) -> Resp {
    Resp::Bulk(s.as_bytes().to_vec())
}

impl RawClient {
    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Sends a command as a RESP array.
    pub fn cmd(&mut self, args: &[&str]) {
        self.send(&encode(args));
    }

    /// Sends a command and reads its reply (the next reply on the wire: no pushes expected
    /// in between).
    pub fn call(&mut self, args: &[&str]) -> Resp {
        self.cmd(args);
        self.read_reply()
    }

    /// Reads more bytes into the buffer; panics on close or timeout.
    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        match self.s.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed with {:?} unparsed",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            Err(e) => panic!(
                "read failed ({e}) with {:?} unparsed",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads one whole reply (RESP2 or RESP3), waiting up to the socket's read timeout.
    pub fn read_reply(&mut self) -> Resp {
        loop {
            if let Some((value, used)) = parse_resp(&self.buf) {
                self.buf.drain(..used);
                return value;
            }
            self.fill();
        }
    }

    /// Like [`RawClient::read_reply`], waiting at most `limit`: `None` if nothing whole
    /// arrived by then.
    pub fn read_reply_within(&mut self, limit: Duration) -> Option<Resp> {
        let old = self.s.read_timeout().unwrap();
        let deadline = Instant::now() + limit;
        let got = loop {
            if let Some((value, used)) = parse_resp(&self.buf) {
                self.buf.drain(..used);
                break Some(value);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("connection closed"),
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break None
                }
                Err(e) => panic!("read failed: {e}"),
            }
        };
        self.s.set_read_timeout(old).unwrap();
        got
    }

    /// Reads until `n` bytes arrived or the peer closed.
    pub fn read_exact_n(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        let mut got = self.buf.len().min(n);
        buf[..got].copy_from_slice(&self.buf[..got]);
        self.buf.drain(..got);
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
        let mut out = std::mem::take(&mut self.buf);
        let _ = self.s.read_to_end(&mut out);
        out
    }
}

/// Parses one RESP2/RESP3 value at the start of `b`: the value and the bytes it used, or `None`
/// when `b` does not hold a whole value yet. Panics on bytes that are not RESP.
pub fn parse_resp(b: &[u8]) -> Option<(Resp, usize)> {
    let end = b.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&b[1..end]).expect("RESP header is UTF-8");
    let after = end + 2;
    let count = |line: &str| -> i64 {
        line.parse()
            .unwrap_or_else(|_| panic!("bad length {line:?}"))
    };
    let aggregate = |n: i64, per: usize| -> Option<(Vec<Resp>, usize)> {
        let mut items = Vec::new();
        let mut at = after;
        for _ in 0..(n.max(0) as usize * per) {
            let (v, used) = parse_resp(&b[at..])?;
            items.push(v);
            at += used;
        }
        Some((items, at))
    };
    Some(match b[0] {
        b'+' => (Resp::Simple(line.to_string()), after),
        b'-' => (Resp::Error(line.to_string()), after),
        b':' => (Resp::Int(count(line)), after),
        b'_' => (Resp::Nil, after),
        b'$' | b'=' | b'!' => {
            let n = count(line);
            if n < 0 {
                return Some((Resp::Nil, after));
            }
            let n = n as usize;
            if b.len() < after + n + 2 {
                return None;
            }
            let data = b[after..after + n].to_vec();
            let v = match b[0] {
                b'$' => Resp::Bulk(data),
                b'!' => Resp::Error(String::from_utf8_lossy(&data).into_owned()),
                _ => Resp::Other('=', String::from_utf8_lossy(&data).into_owned()),
            };
            (v, after + n + 2)
        }
        b'*' | b'~' | b'>' => {
            let n = count(line);
            if n < 0 {
                return Some((Resp::Nil, after));
            }
            let (items, at) = aggregate(n, 1)?;
            let v = match b[0] {
                b'*' => Resp::Array(items),
                b'~' => Resp::Set(items),
                _ => Resp::Push(items),
            };
            (v, at)
        }
        b'%' => {
            let (items, at) = aggregate(count(line), 2)?;
            let mut it = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            (Resp::Map(pairs), at)
        }
        b'|' => {
            // An attribute: skip it, the value follows.
            let (_, at) = aggregate(count(line), 2)?;
            let (v, used) = parse_resp(&b[at..])?;
            (v, at + used)
        }
        c @ (b',' | b'(' | b'#') => (Resp::Other(c as char, line.to_string()), after),
        other => panic!(
            "not RESP: {:?}",
            String::from_utf8_lossy(&b[..b.len().min(64)]).replace(other as char, "?")
        ),
    })
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
