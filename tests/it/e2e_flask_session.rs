//! End to end with real session middleware: two Flask apps using Flask-Session (from PyPI)
//! with different key prefixes, both through rekey. A login on the first is seen, with the same
//! cookie, by the second. `tests/setup.sh` (the README's test command) installs flask, flask-session and redis.

use crate::common::{free_port, RedisServer, Rekey, Variant};
use redis::Commands;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_app(http_port: u16, rekey_port: u16, prefix: &str) -> App {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/flask_app.py");
    let child = Command::new(python())
        .args([
            script,
            &http_port.to_string(),
            &rekey_port.to_string(),
            prefix,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let app = App(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", http_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "flask app on {http_port} did not start (run tests/setup.sh: it installs flask, flask-session and redis)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    app
}

/// The Python with Flask: `target/pyenv` when `tests/setup.sh` made one, else `python3`.
fn python() -> String {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python");
    match std::path::Path::new(venv).exists() {
        true => venv.to_string(),
        false => "python3".to_string(),
    }
}

/// A minimal HTTP/1.0 GET; returns (headers, body).
fn get(port: u16, path: &str, cookie: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{cookie}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

fn session_cookie(headers: &str) -> String {
    headers
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("the login response sets the session cookie")
        .to_string()
}

#[test]
fn two_flask_apps_share_a_login_through_rekey() {
    two_flask_apps_share_a_login(Variant::PLAIN);
}

/// The same with a password on Redis (`requirepass`): only rekey knows it, the apps do not.
#[test]
fn two_flask_apps_share_a_login_through_rekey_to_a_password_protected_redis() {
    two_flask_apps_share_a_login(Variant::PASSWORD);
}

fn two_flask_apps_share_a_login(variant: Variant) {
    let redis = RedisServer::start_variant(variant);
    let preset = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/presets/flask-session.toml"
    ))
    .unwrap();
    let rekey = Rekey::start(&redis, &preset);
    let (port_a, port_b) = (free_port(), free_port());
    let _a = start_app(port_a, rekey.port, "appA_session:");
    let _b = start_app(port_b, rekey.port, "appB_session:");

    let (headers, body) = get(port_a, "/login?user=alice", None);
    assert_eq!(body, "logged in as alice");
    let cookie = session_cookie(&headers);
    let (_, who) = get(port_b, "/whoami", Some(&cookie));
    assert_eq!(
        who, "alice",
        "app B sees app A's login with the same cookie"
    );
    let (_, who) = get(port_b, "/whoami", None);
    assert_eq!(who, "anonymous");

    // Upstream holds one session, under the shared prefix only.
    let mut direct = redis.direct();
    let keys: Vec<String> = direct.keys("*").unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("shared_session:"), "{keys:?}");

    // Logging out on B ends the session for A too.
    let _ = get(port_b, "/logout", Some(&cookie));
    let (_, who) = get(port_a, "/whoami", Some(&cookie));
    assert_eq!(who, "anonymous");
}
