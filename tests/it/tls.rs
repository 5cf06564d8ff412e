//! TLS on both sides (issue #16): `rediss://` upstreams (a real `redis-server` with its TLS
//! port only), `tls_listen` for clients, mutual TLS, clear handshake errors, certificate
//! rotation without dropping connections, a Redis Cluster and a Sentinel over TLS. Certificates are
//! generated here with `rcgen`.

use crate::common::cluster::CLUSTER_NODE_ARGS;
use crate::common::{self, free_port, metric, parse_resp, scratch_dir, Rekey, Resp};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "tls-pw-51c2";

// ---------------------------------------------------------------------------------------------
// Certificates

/// A test CA and certificates it signs, as PEM files in a scratch directory.
struct Pki {
    dir: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = scratch_dir("pki");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} CA"));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = p.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        Pki {
            dir,
            ca_cert,
            ca_key,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Issues `<file>.crt` / `<file>.key` for `names` (DNS names or IP addresses), good for
    /// servers and clients. Returns (cert path, key path).
    fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = rcgen::CertificateParams::new(names).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, file.to_string());
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// Like [`Pki::issue`], but valid only in 2020: expired long ago.
    fn issue_expired(&self, file: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, file.to_string());
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 12, 31);
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// The usual server certificate: `localhost` and `127.0.0.1`.
    fn server(&self) -> (PathBuf, PathBuf) {
        self.issue("server", &["localhost", "127.0.0.1"])
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

// ---------------------------------------------------------------------------------------------
// A TLS client

fn client_config(ca: &Path, cert: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match cert {
        Some((c, k)) => {
            let chain = CertificateDer::pem_file_iter(c)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(k).unwrap())
                .unwrap()
        }
        None => b.with_no_client_auth(),
    })
}

/// A RESP client over TLS (blocking rustls).
struct TlsClient {
    s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    fn connect(port: u16, cfg: &Arc<rustls::ClientConfig>) -> std::io::Result<TlsClient> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn =
            rustls::ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(TlsClient { s, buf: Vec::new() })
    }

    /// The certificate the server presented.
    fn peer_cert(&self) -> Vec<u8> {
        self.s.conn.peer_certificates().unwrap()[0].to_vec()
    }

    fn cmd(&mut self, args: &[&str]) {
        self.s.write_all(&common::encode(args)).unwrap();
        self.s.flush().unwrap();
    }

    fn try_reply(&mut self) -> Result<Resp, String> {
        loop {
            if let Some((v, used)) = parse_resp(&self.buf) {
                self.buf.drain(..used);
                return Ok(v);
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn reply(&mut self) -> Resp {
        self.try_reply().unwrap()
    }

    fn call(&mut self, args: &[&str]) -> Resp {
        self.cmd(args);
        self.reply()
    }
}

// ---------------------------------------------------------------------------------------------
// A Redis with its TLS port only

struct TlsRedis {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// What a direct client needs: CA and, for `--tls-auth-clients yes`, a certificate.
    client: Arc<rustls::ClientConfig>,
    password: Option<String>,
}

impl TlsRedis {
    fn start(pki: &Pki, extra: &[&str]) -> TlsRedis {
        Self::start_on(free_redis_port(), pki, extra)
    }

    fn start_on(port: u16, pki: &Pki, extra: &[&str]) -> TlsRedis {
        Self::start_named(port, pki, &["localhost", "127.0.0.1"], extra)
    }

    /// With a certificate for `names` only.
    fn start_named(port: u16, pki: &Pki, names: &[&str], extra: &[&str]) -> TlsRedis {
        let (cert, key) = pki.issue(&format!("server-{port}"), names);
        let (ccert, ckey) = pki.issue("direct-client", &["direct-client"]);
        let dir = scratch_dir("tls-redis");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", dir.to_str().unwrap()])
            .args(["--tls-cert-file", &p(&cert), "--tls-key-file", &p(&key)])
            .args(["--tls-ca-cert-file", &p(&pki.ca())])
            .args(["--tls-auth-clients", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .map(|i| extra[i + 1].to_string());
        let r = TlsRedis {
            port,
            child: Some(child),
            dir,
            client: client_config(&pki.ca(), Some((&ccert, &ckey))),
            password,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = TlsClient::connect(port, &r.client) {
                c.cmd(&["PING"]);
                if c.try_reply().is_ok() {
                    return r;
                }
            }
            assert!(Instant::now() < deadline, "TLS redis-server did not start");
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// A direct TLS connection, logged in.
    fn direct(&self) -> TlsClient {
        let mut c = TlsClient::connect(self.port, &self.client).unwrap();
        if let Some(pw) = &self.password {
            assert_eq!(c.call(&["AUTH", pw]), Resp::Simple("OK".into()));
        }
        c
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port that leaves room for a cluster bus port (+10000).
fn free_redis_port() -> u16 {
    std::iter::repeat_with(free_port)
        .find(|&p| p < 55_000)
        .unwrap()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics(rekey: &Rekey) -> String {
    rekey.admin("GET", "/metrics").1
}

fn failures(rekey: &Rekey, side: &str, reason: &str) -> f64 {
    metric(
        &metrics(rekey),
        &format!("rekey_tls_handshake_failures_total{{side=\"{side}\",reason=\"{reason}\"}}"),
    )
}

fn ok() -> Resp {
    Resp::Simple("OK".into())
}

fn b(s: &str) -> Resp {
    common::bulk(s)
}

const RULES: &str = r#"
[[rules]]
name = "aspnet"
match = '^(AppA|AppB)_'
replace = 'shared_'
"#;

/// A client of either kind.
trait Conn {
    fn call(&mut self, args: &[&str]) -> Resp;
    fn reply(&mut self) -> Resp;
}

impl Conn for TlsClient {
    fn call(&mut self, args: &[&str]) -> Resp {
        TlsClient::call(self, args)
    }
    fn reply(&mut self) -> Resp {
        TlsClient::reply(self)
    }
}

impl Conn for common::RawClient {
    fn call(&mut self, args: &[&str]) -> Resp {
        common::RawClient::call(self, args)
    }
    fn reply(&mut self) -> Resp {
        self.read_reply()
    }
}

/// GET/SET with a rule, MULTI/EXEC and SUBSCRIBE (pinned) on `client`, twice, so pinned
/// connections are reused; checks what reached Redis with `direct`.
fn exercise(client: &mut dyn Conn, direct: &mut TlsClient, publish: &mut dyn FnMut()) {
    for round in 0..2 {
        let v = format!("v{round}");
        assert_eq!(client.call(&["SET", "AppA_s1", &v]), ok());
        assert_eq!(client.call(&["GET", "AppB_s1"]), b(&v));
        assert_eq!(direct.call(&["GET", "shared_s1"]), b(&v));
        assert_eq!(client.call(&["MULTI"]), ok());
        assert_eq!(
            client.call(&["INCR", "AppA_n"]),
            Resp::Simple("QUEUED".into())
        );
        assert_eq!(
            client.call(&["GET", "AppA_s1"]),
            Resp::Simple("QUEUED".into())
        );
        let exec = client.call(&["EXEC"]);
        assert_eq!(exec.items().unwrap()[1], b(&v), "{exec:?}");
        assert_eq!(
            direct.call(&["GET", "shared_n"]),
            b(&(round + 1).to_string())
        );
        // Subscribe, get a message, leave: the pinned connection goes back to the pool.
        let sub = client.call(&["SUBSCRIBE", "news"]);
        assert_eq!(sub.texts()[0].as_deref(), Some("subscribe"), "{sub:?}");
        publish();
        let unsub_or_msg = client.call(&["UNSUBSCRIBE", "news"]);
        // The message arrived before UNSUBSCRIBE's confirmation.
        assert_eq!(
            unsub_or_msg.texts()[0].as_deref(),
            Some("message"),
            "{unsub_or_msg:?}"
        );
        assert_eq!(unsub_or_msg.texts()[2].as_deref(), Some("hello"));
        let unsub = client.reply();
        assert_eq!(
            unsub.texts()[0].as_deref(),
            Some("unsubscribe"),
            "{unsub:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

/// `rediss://` with a password: rules apply, pooled and pinned flows work (twice: pooled
/// connections reused), the handshake is counted, `/status` says TLS.
#[test]
fn tls_upstream_with_password_runs_rules_and_pinned_flows() {
    let pki = Pki::new("up");
    let redis = TlsRedis::start(&pki, &["--requirepass", PASSWORD]);
    let upstream = format!("rediss://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let rekey = Rekey::start_url(
        &upstream,
        &format!("[tls.upstream]\nca_file = \"{}\"\n{RULES}", p(&pki.ca())),
    );
    let mut direct = redis.direct();
    let mut client = rekey.raw();
    let mut publisher = rekey.raw();
    let mut publish = || {
        let n = publisher.call(&["PUBLISH", "news", "hello"]);
        assert_eq!(n, Resp::Int(1));
    };
    exercise(&mut client, &mut direct, &mut publish);
    // A second client gets the same pooled and pinned connections.
    let mut second = rekey.raw();
    assert_eq!(second.call(&["GET", "AppA_s1"]), b("v1"));
    let m = metrics(&rekey);
    assert!(
        metric(&m, "rekey_tls_handshakes_total{side=\"upstream\"}") >= 2.0,
        "{m}"
    );
    let (_, status) = rekey.admin("GET", "/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["upstream"]["tls"], true);
    assert!(status["upstream"]["url"]
        .as_str()
        .unwrap()
        .starts_with("rediss://"));
    assert!(!status.to_string().contains(PASSWORD));
}

/// rekey with TLS on both sides in front of `redis`: TLS clients on the returned port,
/// presenting `cert`/`key`; `extra` follows in `[tls.server]` (more settings, then tables).
fn rekey_tls_both_sides(
    pki: &Pki,
    redis: &TlsRedis,
    (cert, key): (&Path, &Path),
    extra: &str,
) -> (Rekey, u16) {
    let tls_port = free_port();
    let rekey = Rekey::start_url(
        &format!("rediss://127.0.0.1:{}", redis.port),
        &format!(
            "tls_listen = \"127.0.0.1:{tls_port}\"\n\
             [tls.upstream]\nca_file = \"{ca}\"\n\
             [tls.server]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}",
            p(cert),
            p(key),
            ca = p(&pki.ca())
        ),
    );
    wait_port(tls_port);
    (rekey, tls_port)
}

/// Clients on `tls_listen` (beside the plain listener) in front of a TLS upstream: the raw
/// rustls client and `redis-cli --tls`.
#[test]
fn tls_clients_and_tls_upstream_at_once() {
    let pki = Pki::new("both");
    let redis = TlsRedis::start(&pki, &[]);
    let (cert, key) = pki.server();
    let (rekey, tls_port) = rekey_tls_both_sides(&pki, &redis, (&cert, &key), RULES);
    let cfg = client_config(&pki.ca(), None);
    let mut direct = redis.direct();
    let mut client = TlsClient::connect(tls_port, &cfg).unwrap();
    let mut publisher = TlsClient::connect(tls_port, &cfg).unwrap();
    let mut publish = || assert_eq!(publisher.call(&["PUBLISH", "news", "hello"]), Resp::Int(1));
    exercise(&mut client, &mut direct, &mut publish);
    // A big value crosses both TLS sides whole.
    let big = "x".repeat(3 * 1024 * 1024 + 7);
    assert_eq!(client.call(&["SET", "AppA_big", &big]), ok());
    assert_eq!(client.call(&["GET", "AppB_big"]), b(&big));
    // The plain listener still serves.
    assert_eq!(rekey.raw().call(&["GET", "AppA_s1"]), b("v1"));
    // redis-cli over TLS.
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert", &p(&pki.ca()), "-h", "127.0.0.1"])
        .args(["-p", &tls_port.to_string(), "GET", "AppB_s1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1");
    let m = metrics(&rekey);
    assert!(
        metric(&m, "rekey_tls_handshakes_total{side=\"client\"}") >= 3.0,
        "{m}"
    );
}

/// Mutual TLS on both sides: rekey presents its certificate to a Redis that requires one;
/// clients must present one to rekey, and one without is refused.
#[test]
fn mutual_tls_both_sides() {
    let pki = Pki::new("mtls");
    let redis = TlsRedis::start(&pki, &["--tls-auth-clients", "yes"]);
    let (cert, key) = pki.server();
    let (up_cert, up_key) = pki.issue("rekey-upstream", &["rekey"]);
    let (cl_cert, cl_key) = pki.issue("app-client", &["app"]);
    let tls_port = free_port();
    let server = format!(
        "[tls.server]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
        p(&cert),
        p(&key),
        p(&pki.ca())
    );
    let rekey = Rekey::start_url(
        &format!("rediss://127.0.0.1:{}", redis.port),
        &format!(
            "tls_listen = \"127.0.0.1:{tls_port}\"\n\
             [tls.upstream]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n{server}",
            p(&pki.ca()),
            p(&up_cert),
            p(&up_key)
        ),
    );
    wait_port(tls_port);
    let with_cert = client_config(&pki.ca(), Some((&cl_cert, &cl_key)));
    let mut c = TlsClient::connect(tls_port, &with_cert).unwrap();
    assert_eq!(c.call(&["SET", "k", "v"]), ok());
    assert_eq!(redis.direct().call(&["GET", "k"]), b("v"));
    // No client certificate: the handshake fails (TLS 1.3 reports it on the first read).
    let without = client_config(&pki.ca(), None);
    let refused = match TlsClient::connect(tls_port, &without) {
        Err(_) => true,
        Ok(mut c) => {
            let _ = c.s.write_all(b"*1\r\n$4\r\nPING\r\n");
            let _ = c.s.flush();
            c.try_reply().is_err()
        }
    };
    assert!(refused, "a client without a certificate must be refused");
    let deadline = Instant::now() + Duration::from_secs(5);
    while failures(&rekey, "client", "no_client_cert") < 1.0 {
        assert!(Instant::now() < deadline, "{}", metrics(&rekey));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first client is unaffected.
    assert_eq!(c.call(&["GET", "k"]), b("v"));
}

/// An upstream whose certificate rekey cannot trust, or whose name does not match: clients
/// get an `-ERR` that says why, the failure is counted by reason and shown on `/status`.
#[test]
fn bad_upstream_certificate_is_a_clear_error() {
    let pki = Pki::new("real");
    let other = Pki::new("other");
    let redis = TlsRedis::start(&pki, &[]);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let cases = [
        (
            format!("ca_file = \"{}\"", p(&other.ca())),
            "unknown_ca",
            "unknown CA",
        ),
        (
            format!(
                "ca_file = \"{}\"\nserver_name = \"wrong.example\"",
                p(&pki.ca())
            ),
            "name_mismatch",
            "not valid for the name",
        ),
    ];
    for (settings, reason, text) in cases {
        let rekey = Rekey::start_url(&url, &format!("[tls.upstream]\n{settings}\n"));
        let mut c = rekey.raw();
        let reply = c.call(&["GET", "k"]);
        let Resp::Error(e) = &reply else {
            panic!("expected an error, got {reply:?}")
        };
        assert!(e.contains(text) && e.contains(reason), "{e}");
        assert!(
            failures(&rekey, "upstream", reason) >= 1.0,
            "{}",
            metrics(&rekey)
        );
        let (_, status) = rekey.admin("GET", "/status");
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let last = status["upstream"]["last_error"]["error"]
            .as_str()
            .unwrap_or_default();
        assert!(last.contains(reason), "{status:#}");
    }
    // A config naming a CA file that does not exist is refused whole.
    let dir = scratch_dir("tls-check");
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        format!("upstream = \"{url}\"\n[tls.upstream]\nca_file = \"/nonexistent/ca.pem\"\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(["-c", cfg.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ca_file") && text.contains("/nonexistent/ca.pem"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// An upstream whose certificate expired: the error names the reason (`expired`), the metric
/// counts it, and rekey keeps serving its other clients their errors without crashing.
#[test]
fn expired_upstream_certificate_is_named() {
    let pki = Pki::new("expiry");
    let port = free_redis_port();
    let (cert, key) = pki.issue_expired(&format!("expired-{port}"));
    let dir = scratch_dir("tls-expired");
    let mut child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--dir", dir.to_str().unwrap()])
        .args(["--tls-cert-file", &p(&cert), "--tls-key-file", &p(&key)])
        .args([
            "--tls-ca-cert-file",
            &p(&pki.ca()),
            "--tls-auth-clients",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    wait_port(port);
    let rekey = Rekey::start_url(
        &format!("rediss://127.0.0.1:{port}"),
        &format!("[tls.upstream]\nca_file = \"{}\"\n", p(&pki.ca())),
    );
    for _ in 0..2 {
        let reply = rekey.raw().call(&["GET", "k"]);
        let Resp::Error(e) = &reply else {
            panic!("expected an error, got {reply:?}")
        };
        assert!(e.contains("expired"), "{e}");
    }
    assert!(
        failures(&rekey, "upstream", "expired") >= 1.0,
        "{}",
        metrics(&rekey)
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// A plaintext client on the TLS port, a TLS client on the plain port, a handshake left
/// half-finished: each affects only its own connection, and is counted.
#[test]
fn bad_handshakes_affect_only_their_connection() {
    let pki = Pki::new("hs");
    let redis = TlsRedis::start(&pki, &[]);
    let (cert, key) = pki.server();
    let (rekey, tls_port) =
        rekey_tls_both_sides(&pki, &redis, (&cert, &key), "handshake_timeout_ms = 300\n");
    let cfg = client_config(&pki.ca(), None);
    let mut good = TlsClient::connect(tls_port, &cfg).unwrap();
    assert_eq!(good.call(&["SET", "k", "1"]), ok());
    // Half-finished: connect and say nothing. A flood of them, too.
    let stalled: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(("127.0.0.1", tls_port)).unwrap())
        .collect();
    // Plaintext on the TLS port: closed (after a TLS alert at most).
    let mut plain = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.windows(4).any(|w| w == b"PONG"), "{got:?}");
    // TLS on the plain port: the handshake fails for that client only.
    assert!(TlsClient::connect(rekey.port, &cfg)
        .map(|mut c| c.try_reply().is_err())
        .unwrap_or(true));
    // Everyone else is fine, during and after.
    assert_eq!(good.call(&["INCR", "k"]), Resp::Int(2));
    assert_eq!(rekey.raw().call(&["INCR", "k"]), Resp::Int(3));
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink); // closed by the handshake timeout
    }
    // The timeout closes the socket first and is counted just after: wait for the count.
    let deadline = Instant::now() + Duration::from_secs(10);
    while failures(&rekey, "client", "timeout") < 50.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        failures(&rekey, "client", "timeout") >= 50.0,
        "{}",
        metrics(&rekey)
    );
    assert!(
        failures(&rekey, "client", "protocol") >= 1.0,
        "{}",
        metrics(&rekey)
    );
    let mut fresh = TlsClient::connect(tls_port, &cfg).unwrap();
    assert_eq!(fresh.call(&["INCR", "k"]), Resp::Int(4));
    assert_eq!(good.call(&["INCR", "k"]), Resp::Int(5));
    let m = metrics(&rekey);
    assert_eq!(metric(&m, "rekey_client_connections"), 2.0, "{m}");
}

/// New certificate files and a reload (SIGHUP, then POST /reload): open connections keep
/// working with no failed request, new ones see the new certificate; a broken certificate is
/// refused and the previous one keeps serving.
#[test]
fn certificate_rotation_keeps_connections() {
    let pki = Pki::new("rot");
    let redis = TlsRedis::start(&pki, &[]);
    let (first_cert, first_key) = pki.issue("first", &["localhost", "127.0.0.1"]);
    let live_cert = pki.dir.join("live.crt");
    let live_key = pki.dir.join("live.key");
    std::fs::copy(&first_cert, &live_cert).unwrap();
    std::fs::copy(&first_key, &live_key).unwrap();
    let (rekey, tls_port) = rekey_tls_both_sides(&pki, &redis, (&live_cert, &live_key), "");
    let cfg = client_config(&pki.ca(), None);
    let der = |path: &Path| CertificateDer::from_pem_file(path).unwrap().to_vec();
    assert_eq!(
        TlsClient::connect(tls_port, &cfg).unwrap().peer_cert(),
        der(&first_cert)
    );
    // A bounded load: long-lived connections and new ones, every reply checked.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (stop, done, cfg) = (stop.clone(), done.clone(), cfg.clone());
            std::thread::spawn(move || {
                let mut c = TlsClient::connect(tls_port, &cfg).unwrap();
                let mut n = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    assert_eq!(c.call(&["INCR", &format!("w{w}")]), Resp::Int(n));
                    if n % 25 == 0 {
                        let mut fresh = TlsClient::connect(tls_port, &cfg).unwrap();
                        assert_eq!(fresh.call(&["GET", &format!("w{w}")]), b(&n.to_string()));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let wait_progress = |from: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while done.load(Ordering::Relaxed) < from + 100 {
            assert!(Instant::now() < deadline, "load stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let replace = |cert: &Path, key: &Path| {
        for (from, to) in [(cert, &live_cert), (key, &live_key)] {
            let tmp = to.with_extension("tmp");
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, to).unwrap();
        }
    };
    let sees = |want: &[u8]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TlsClient::connect(tls_port, &cfg).unwrap().peer_cert() != want {
            assert!(
                Instant::now() < deadline,
                "new connections never saw the new certificate"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_progress(0);
    // Rotation 1: SIGHUP.
    let (second_cert, second_key) = pki.issue("second", &["localhost", "127.0.0.1"]);
    replace(&second_cert, &second_key);
    rekey.signal("HUP");
    sees(&der(&second_cert));
    wait_progress(done.load(Ordering::Relaxed));
    // A broken certificate: refused, the second keeps serving.
    std::fs::write(&live_cert, "not a certificate").unwrap();
    let (code, body) = rekey.admin("POST", "/reload");
    assert_ne!(code, 200, "{body}");
    assert!(body.contains("cert_file"), "{body}");
    assert_eq!(
        TlsClient::connect(tls_port, &cfg).unwrap().peer_cert(),
        der(&second_cert)
    );
    // Rotation 2: POST /reload.
    let (third_cert, third_key) = pki.issue("third", &["localhost", "127.0.0.1"]);
    replace(&third_cert, &third_key);
    let (code, body) = rekey.admin("POST", "/reload");
    assert_eq!(code, 200, "{body}");
    sees(&der(&third_cert));
    wait_progress(done.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("no request failed");
    }
}

/// A Redis Cluster of three primaries, TLS only (`tls-cluster yes`: the bus and the
/// announced ports are TLS), whose certificates name `localhost` only: rekey, seeded with
/// `rediss-cluster://localhost:…`, verifies the nodes it learns by IP address against the
/// seed's host name.
#[test]
fn cluster_over_tls() {
    let pki = Pki::new("cluster");
    let nodes: Vec<TlsRedis> = (0..3)
        .map(|_| {
            TlsRedis::start_named(
                free_redis_port(),
                &pki,
                &["localhost"],
                &[
                    CLUSTER_NODE_ARGS,
                    &["--tls-cluster", "yes", "--tls-replication", "yes"],
                ]
                .concat(),
            )
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert", &p(&pki.ca()), "--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "cluster create: {out:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().all(|n| {
        let info = n
            .direct()
            .call(&["CLUSTER", "INFO"])
            .text()
            .unwrap_or_default();
        info.contains("cluster_state:ok")
    }) {
        assert!(Instant::now() < deadline, "cluster never became ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rekey = Rekey::start_url(
        &format!("rediss-cluster://localhost:{}", nodes[0].port),
        &format!("[tls.upstream]\nca_file = \"{}\"\n{RULES}", p(&pki.ca())),
    );
    let mut c = rekey.raw();
    for round in 0..2 {
        for i in 0..60 {
            let v = format!("{round}-{i}");
            assert_eq!(c.call(&["SET", &format!("AppA_k{i}"), &v]), ok());
        }
        for i in 0..60 {
            assert_eq!(
                c.call(&["GET", &format!("AppB_k{i}")]),
                b(&format!("{round}-{i}"))
            );
        }
        // A transaction on one slot (pinned to that slot's node).
        assert_eq!(c.call(&["MULTI"]), ok());
        assert_eq!(
            c.call(&["SET", "{AppA_u}_a", "1"]),
            Resp::Simple("QUEUED".into())
        );
        assert_eq!(
            c.call(&["INCR", "{AppA_u}_b"]),
            Resp::Simple("QUEUED".into())
        );
        let exec = c.call(&["EXEC"]);
        assert_eq!(exec.items().unwrap().len(), 2, "{exec:?}");
    }
    // The keys are spread over the nodes, rewritten.
    let mut holding = 0;
    let mut total = 0;
    for n in &nodes {
        let Resp::Int(k) = n.direct().call(&["DBSIZE"]) else {
            panic!()
        };
        holding += (k > 0) as usize;
        total += k;
    }
    assert!(
        holding >= 2 && total == 62,
        "{holding} nodes hold {total} keys"
    );
    let m = metrics(&rekey);
    assert!(!m.contains("rekey_tls_handshake_failures_total"), "{m}");
}

/// `rediss-sentinel://`: TLS to the sentinel and to the primary it names (by IP address,
/// verified against the sentinel's host name; every certificate names `localhost` only).
#[test]
fn sentinel_over_tls() {
    sentinel_with_tls(true);
}

/// `rediss-sentinel://` with `sentinels = false`: the sentinel speaks plain (it reaches the
/// primary over TLS itself, `tls-replication yes`), the data connections are TLS.
#[test]
fn sentinel_plain_data_nodes_tls() {
    sentinel_with_tls(false);
}

fn sentinel_with_tls(sentinels_tls: bool) {
    let pki = Pki::new("sentinel");
    let primary = TlsRedis::start_named(free_redis_port(), &pki, &["localhost"], &[]);
    let (cert, key) = pki.issue("sentinel", &["localhost"]);
    let port = free_port();
    let dir = scratch_dir("tls-sentinel");
    let conf = dir.join("sentinel.conf");
    let listen = if sentinels_tls {
        format!("port 0\ntls-port {port}\n")
    } else {
        format!("port {port}\n")
    };
    std::fs::write(
        &conf,
        format!(
            "{listen}bind 127.0.0.1\ndir {}\n\
             tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\n\
             tls-replication yes\n\
             sentinel monitor mymaster 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds mymaster 1000\n",
            dir.display(),
            p(&cert),
            p(&key),
            p(&pki.ca()),
            primary.port
        ),
    )
    .unwrap();
    let mut sentinel = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cfg = client_config(&pki.ca(), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ask = ["SENTINEL", "get-master-addr-by-name", "mymaster"];
        let named = if sentinels_tls {
            TlsClient::connect(port, &cfg)
                .ok()
                .and_then(|mut c| c.call(&ask).items().map(|i| i.len() == 2))
        } else {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .and_then(|s| {
                    common::RawClient::from_stream(s)
                        .call(&ask)
                        .items()
                        .map(|i| i.len() == 2)
                })
        };
        if named == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "sentinel did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sentinels = if sentinels_tls {
        ""
    } else {
        "sentinels = false\n"
    };
    let rekey = Rekey::start_url(
        &format!("rediss-sentinel://localhost:{port}/mymaster"),
        &format!(
            "[tls.upstream]\nca_file = \"{}\"\n{sentinels}{RULES}",
            p(&pki.ca())
        ),
    );
    let mut c = rekey.raw();
    assert_eq!(c.call(&["SET", "AppA_x", "1"]), ok());
    assert_eq!(c.call(&["GET", "AppB_x"]), b("1"));
    assert_eq!(primary.direct().call(&["GET", "shared_x"]), b("1"));
    let (_, status) = rekey.admin("GET", "/status");
    assert!(
        status.contains(&format!("rediss://127.0.0.1:{}", primary.port)),
        "{status}"
    );
    let _ = sentinel.kill();
    let _ = sentinel.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// TLS on both sides with no relay in between: rekey reads and writes TLS records on the
/// session's own task, so readiness has to account for what rustls holds. A request sent in
/// the same flight as the client's handshake `Finished` (read by the handshake, never
/// announced by the socket again) is answered; thousands of pipelined requests whose replies
/// span many TLS records (several socket reads and writes, records split across them) are
/// answered in order; and a value of several MB crosses both TLS sides each way, in the same
/// pipeline as small ones. Every reply is checked.
#[test]
fn tls_pipelines_and_large_values_through_both_sides() {
    let pki = Pki::new("pipe");
    let redis = TlsRedis::start(&pki, &[]);
    let (cert, key) = pki.server();
    let (_rekey, tls_port) = rekey_tls_both_sides(&pki, &redis, (&cert, &key), RULES);
    let cfg = client_config(&pki.ca(), None);

    // A request queued before the handshake ends leaves with the client's Finished.
    let tcp = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    conn.writer().write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut early = TlsClient {
        s: rustls::StreamOwned::new(conn, tcp),
        buf: Vec::new(),
    };
    assert_eq!(early.reply(), Resp::Simple("PONG".into()));

    let mut client = TlsClient::connect(tls_port, &cfg).unwrap();
    let value = |i: usize| format!("{i}:{}", "v".repeat(700 + i % 300));
    // 3,000 SETs in one write, then 3,000 GETs (about 3 MB of replies) in one write.
    const N: usize = 3000;
    let sets: Vec<u8> = (0..N)
        .flat_map(|i| common::encode(&["SET", &format!("AppA_p{i}"), &value(i)]))
        .collect();
    client.s.write_all(&sets).unwrap();
    client.s.flush().unwrap();
    for i in 0..N {
        assert_eq!(client.reply(), ok(), "SET #{i}");
    }
    let gets: Vec<u8> = (0..N)
        .flat_map(|i| common::encode(&["GET", &format!("AppB_p{i}")]))
        .collect();
    client.s.write_all(&gets).unwrap();
    client.s.flush().unwrap();
    for i in 0..N {
        assert_eq!(client.reply(), b(&value(i)), "GET #{i}");
    }

    // Several MB each way, between small requests, in one pipeline.
    let big: String = (0..(6 * 1024 * 1024 + 13))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let pipeline = [
        common::encode(&["GET", "AppA_p1"]),
        common::encode(&["SET", "AppA_big", &big]),
        common::encode(&["GET", "AppA_p2"]),
        common::encode(&["GET", "AppB_big"]),
        common::encode(&["STRLEN", "AppA_big"]),
        common::encode(&["GET", "AppB_big"]),
        common::encode(&["PING"]),
    ]
    .concat();
    client.s.write_all(&pipeline).unwrap();
    client.s.flush().unwrap();
    assert_eq!(client.reply(), b(&value(1)));
    assert_eq!(client.reply(), ok());
    assert_eq!(client.reply(), b(&value(2)));
    assert_eq!(client.reply(), b(&big));
    assert_eq!(client.reply(), Resp::Int(big.len() as i64));
    assert_eq!(client.reply(), b(&big));
    assert_eq!(client.reply(), Resp::Simple("PONG".into()));
    // What reached Redis is what was sent.
    let mut direct = redis.direct();
    assert_eq!(direct.call(&["GET", "shared_big"]), b(&big));
    assert_eq!(direct.call(&["GET", "shared_p2999"]), b(&value(2999)));
}
