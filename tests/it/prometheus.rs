//! The shipped Prometheus artifacts, checked by the real tools (Debian package `prometheus`):
//! - `grafana/alerts/rekey-alerts.yml` passes `promtool check rules`, and its unit tests
//!   (`grafana/alerts/rekey-alerts.test.yml`, a firing and a quiet case for every alert) pass
//!   `promtool test rules`;
//! - a real `prometheus` scraping a real rekey under a small load (every kind of traffic the
//!   dashboard shows: commands, errors, rule hits, MULTI, reloads good and bad, a Redis
//!   restart, a refused client, a protocol error) loads those rules, and every panel query of
//!   `grafana/dashboards/rekey.json` returns data through its HTTP API.
//!
//! Missing `promtool`/`prometheus` fails (run `tests/setup.sh`); nothing is skipped.

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ALERTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/alerts");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/dashboards/rekey.json");

/// Dashboard targets allowed to be empty or all zero under the test's load, with the reason.
/// Empty: every panel gets data.
const NO_DATA_EXCEPTIONS: &[(&str, &str)] = &[];

/// `name` from the Debian package `prometheus`, or a failure that says how to get it.
fn require_tool(name: &str) {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{name}` is not installed: run tests/setup.sh (it installs the Debian package `prometheus`)"
    );
}

fn run_promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(ALERTS_DIR)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `- alert: NAME` entries of the rules file.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    require_tool("promtool");
    run_promtool(&["check", "rules", "rekey-alerts.yml"]);
    run_promtool(&["test", "rules", "rekey-alerts.test.yml"]);

    // Every alert is tested both ways: an `alertname` case expecting no alert, and one
    // expecting it to fire.
    let rules = std::fs::read_to_string(Path::new(ALERTS_DIR).join("rekey-alerts.yml")).unwrap();
    let tests =
        std::fs::read_to_string(Path::new(ALERTS_DIR).join("rekey-alerts.test.yml")).unwrap();
    let names = alert_names(&rules);
    assert!(names.len() >= 5, "alerts found: {names:?}");
    let cases: Vec<(String, bool)> = {
        let lines: Vec<&str> = tests.lines().map(str::trim).collect();
        lines
            .windows(2)
            .filter_map(|w| {
                let name = w[0].strip_prefix("alertname:")?.trim().to_string();
                let quiet = w[1] == "exp_alerts: []";
                assert!(
                    quiet || w[1] == "exp_alerts:",
                    "`exp_alerts` must follow `alertname: {name}`"
                );
                Some((name, !quiet))
            })
            .collect()
    };
    for name in &names {
        for fires in [true, false] {
            assert!(
                cases.contains(&(name.clone(), fires)),
                "rekey-alerts.test.yml has no case where {name} {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}

/// A `prometheus` server, killed (and its storage removed) when dropped, on panic too.
struct Prometheus {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Prometheus {
    fn start(scrape_port: u16) -> Prometheus {
        require_tool("prometheus");
        let dir = scratch_dir("prometheus");
        let port = free_port();
        let rules = Path::new(ALERTS_DIR).join("rekey-alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: rekey\n    static_configs:\n      - targets: ['127.0.0.1:{scrape_port}']\n",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { port, dir, child };
        p.wait_until("ready", Duration::from_secs(60), || {
            matches!(http_get(p.port, "/-/ready"), Some((200, _)))
        });
        p
    }

    /// Polls `ok` every 200 ms for at most `limit`; panics with Prometheus's log otherwise.
    fn wait_until(&self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("prometheus: not {what} within {limit:?}\n{}", self.log());
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `GET /api/v1/<path>`: the parsed JSON answer.
    fn api(&self, path: &str) -> serde_json::Value {
        let (code, body) = http_get(self.port, &format!("/api/v1/{path}"))
            .unwrap_or_else(|| panic!("prometheus did not answer /api/v1/{path}"));
        serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("/api/v1/{path} answered {code} with non-JSON ({e}): {body}")
        })
    }

    /// An instant query at the current time.
    fn query(&self, expr: &str) -> serde_json::Value {
        self.api(&format!("query?query={}", url_encode(expr)))
    }

    /// Waits until rekey has been scraped `n` more times (at most 30 s).
    fn wait_scrapes(&self, n: u32) {
        let scrapes = "count_over_time(up{job=\"rekey\"}[10m])";
        let before = self.scalar(scrapes).unwrap_or(0.0);
        self.wait_until("scraping rekey", Duration::from_secs(30), || {
            self.scalar(scrapes).unwrap_or(0.0) >= before + f64::from(n)
        });
    }

    /// The value of a query that returns one sample, if it does.
    fn scalar(&self, expr: &str) -> Option<f64> {
        let v = self.query(expr);
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain HTTP/1.0 GET on loopback (no chunked encoding to undo): (status, body), or `None`
/// when nothing listens.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `expr` of every target of every panel, rows' nested panels included:
/// (panel title, expr).
fn dashboard_queries() -> Vec<(String, String)> {
    fn walk(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("(untitled)").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            if let Some(nested) = p["panels"].as_array() {
                walk(nested, out);
            }
        }
    }
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut out = Vec::new();
    walk(
        dash["panels"].as_array().expect("dashboard panels"),
        &mut out,
    );
    out
}

/// Grafana's variables as a dashboard viewer would have them here: a 5m rate window (the
/// whole test fits in it), this Prometheus's job and rekey's instance.
fn substitute(expr: &str, instance: &str) -> String {
    let vars = [
        ("__rate_interval", "5m"),
        ("__interval_ms", "15000"),
        ("__interval", "15s"),
        ("__range_s", "300"),
        ("__range_ms", "300000"),
        ("__range", "5m"),
        ("instance", instance),
        ("job", "rekey"),
    ];
    let mut out = expr.to_string();
    for (name, value) in vars {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("[[{name}]]"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(
        !out.contains('$'),
        "dashboard query uses a Grafana variable this test does not know: {expr}"
    );
    out
}

/// The config under test: rules, a client limit, and app `appz` (on a listener of its own)
/// with an ACL and a request budget.
fn rules() -> String {
    static APP_PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    let port = APP_PORT.get_or_init(crate::common::free_port);
    format!(
        r#"
[limits]
max_clients = 6

[[rules]]
name    = "sessions"
match   = '^(\{{?)(AppA|AppB)_'
replace = '${{1}}shared_'

[[apps]]
name = "appz"
listen = "127.0.0.1:{port}"
acl = "+@all -@dangerous ~AppZ_*"
max_requests_per_sec = 100
"#
    )
}

/// The port of app `appz`'s listener.
fn appz_port(rules: &str) -> u16 {
    let line = rules.lines().find(|l| l.starts_with("listen = ")).unwrap();
    line.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('"')
        .parse()
        .unwrap()
}

/// [`rules`] with an `[upstream_auth]` helper command that logs in with `UPSTREAM_PASSWORD`,
/// with an expiry an hour ahead that moves on each run: every reload renews the credential
/// on the live connections (the credential panels and the expiry alert get data).
fn settings() -> String {
    let dir = scratch_dir("prom-helper");
    let helper = dir.join("helper.sh");
    let script = r#"#!/bin/sh
n=$(cat DIR/runs 2>/dev/null || echo 0); n=$((n + 1)); echo $n > DIR/runs
echo '{"password": "PW", "expires_at": '$(( $(date +%s) + 3600 + n ))'}'
"#;
    let script = script
        .replace("DIR", &dir.display().to_string())
        .replace("PW", UPSTREAM_PASSWORD);
    std::fs::write(&helper, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}\n[upstream_auth]\ncommand = [\"{}\"]\n",
        rules(),
        helper.display()
    )
}

const UPSTREAM_PASSWORD: &str = "prom-up-pw";

fn cmd(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con)
}

fn metrics(rekey: &Rekey) -> String {
    let (code, body) = rekey.admin("GET", "/metrics");
    assert_eq!(code, 200, "/metrics: {body}");
    body
}

/// Polls rekey's `/metrics` until `series` is above 0 (at most 20 s).
fn wait_metric(rekey: &Rekey, series: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&metrics(rekey), series) <= 0.0 {
        assert!(
            Instant::now() < deadline,
            "{series} stayed 0:\n{}",
            metrics(rekey)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Commands of every kind: reads and writes of rewritten and unmatched keys, replies that
/// carry keys back, and commands answered with errors.
fn traffic(con: &mut redis::Connection) {
    for i in 0..100 {
        let k = format!("AppA_session:{i}");
        cmd(con, &["SET", &k, "v"]).unwrap();
        cmd(con, &["GET", &k]).unwrap();
        cmd(con, &["SET", &format!("plain:{i}"), "v"]).unwrap();
        cmd(con, &["GET", &format!("plain:{i}")]).unwrap();
    }
    cmd(con, &["KEYS", "AppA_session:1*"]).unwrap();
    cmd(con, &["SCAN", "0", "MATCH", "AppA_*", "COUNT", "1000"]).unwrap();
    for _ in 0..20 {
        assert!(cmd(con, &["INCR", "AppA_session:1"]).is_err());
        assert!(cmd(con, &["HGET", "plain:1", "f"]).is_err());
        assert!(cmd(con, &["NOSUCHCOMMAND"]).is_err());
    }
}

/// A few hundred commands of every kind the dashboard shows, spread over several scrapes.
/// Returns the clients it holds open (as many as `max_clients` allows), to keep connected
/// while the queries run.
fn load(
    redis: &mut RedisServer,
    rekey: &Rekey,
    prom: &Prometheus,
    settings: &str,
) -> Vec<RawClient> {
    let mut con = rekey.client();
    // rekey exports a command's `rekey_commands_total` series from its first use on, already
    // counting that use: Prometheus sees the first burst of a command as the series' start,
    // not as an increase. The same traffic again after a scrape is what `rate()` shows.
    traffic(&mut con);
    prom.wait_scrapes(2);
    traffic(&mut con);

    // A transaction: a pinned upstream connection.
    redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("AppB_counter")
        .cmd("GET")
        .arg("AppB_counter")
        .query::<(i64, i64)>(&mut con)
        .unwrap();
    wait_metric(rekey, "rekey_upstream_connections{kind=\"pinned\"}");

    // App appz: a command its ACL refuses, and more requests than its budget (paused, all
    // answered).
    let stream = std::net::TcpStream::connect(("127.0.0.1", appz_port(&rules()))).unwrap();
    let mut appz = RawClient::from_stream(stream);
    assert!(appz.call(&["FLUSHALL"]).is_error());
    let mut pings = Vec::new();
    for _ in 0..300 {
        pings.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    }
    appz.send(&pings);
    for _ in 0..300 {
        assert!(!appz.read_reply().is_error());
    }
    wait_metric(
        rekey,
        "rekey_acl_denied_total{app=\"appz\",reason=\"command\"}",
    );
    wait_metric(rekey, "rekey_app_throttled_seconds_total{app=\"appz\"}");

    // A protocol error: rekey answers it and closes the connection.
    let mut raw = rekey.raw();
    raw.send(b"*1\r\n$abc\r\n");
    let _ = raw.read_to_close();
    wait_metric(rekey, "rekey_protocol_errors_total");

    // Reloads: a good one, a bad one (the file stays broken only for it), a good one again.
    let (code, body) = rekey.admin("POST", "/reload");
    assert_eq!(code, 200, "reload: {body}");
    rekey.write_config(&redis.url(), &format!("{settings}\n[limits\nbroken"));
    let (code, body) = rekey.admin("POST", "/reload");
    assert_eq!(code, 422, "a broken config must be refused: {body}");
    rekey.write_config(&redis.url(), settings);
    let (code, body) = rekey.admin("POST", "/reload");
    assert_eq!(code, 200, "reload: {body}");
    // Each reload renews the upstream credential on the live connections (in the
    // background): the renewals panel needs one counted before Prometheus scrapes on.
    wait_metric(rekey, "rekey_upstream_auth_renewals_total{result=\"ok\"}");

    // Redis goes away and comes back: upstream errors, then a reconnect.
    redis.kill();
    let _ = cmd(&mut con, &["GET", "AppA_session:1"]);
    wait_metric(rekey, "rekey_upstream_errors_total");
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cmd(&mut con, &["SET", "AppA_after", "v"]).is_err() {
        assert!(
            Instant::now() < deadline,
            "rekey did not reconnect to the restarted Redis"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_metric(rekey, "rekey_upstream_reconnects_total");
    for i in 0..50 {
        cmd(&mut con, &["GET", &format!("AppA_session:{i}")]).unwrap();
    }
    drop(con);

    // More clients than `max_clients`: the extra ones are refused.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&metrics(rekey), "rekey_client_rejected_total") <= 0.0 {
        assert!(Instant::now() < deadline, "no client was refused");
        let mut c = rekey.raw();
        c.cmd(&["PING"]);
        if let Some(reply) = c.read_reply_within(Duration::from_secs(5)) {
            if !reply.is_error() {
                held.push(c);
            }
        }
    }
    held
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    require_tool("prometheus");
    let mut redis = RedisServer::start_with(&["--requirepass", UPSTREAM_PASSWORD]);
    let settings = settings();
    let rekey = Rekey::start(&redis, &settings);
    let prom = Prometheus::start(rekey.admin_port);
    let instance = format!("127.0.0.1:{}", rekey.admin_port);

    // Scraping works before the load starts (so every counter has a sample from before it).
    prom.wait_until("scraping rekey", Duration::from_secs(30), || {
        prom.scalar("sum(up{job=\"rekey\"})") == Some(1.0)
    });

    // Clients stay connected while the queries run, so the clients panel has some.
    let held = load(&mut redis, &rekey, &prom, &settings);

    // A few scrapes of the state after the load.
    prom.wait_scrapes(3);

    // The alert rules loaded into this real Prometheus and evaluate cleanly.
    let rules_file = std::fs::read_to_string(Path::new(ALERTS_DIR).join("rekey-alerts.yml"))
        .expect("read rules");
    let expected = alert_names(&rules_file);
    prom.wait_until(
        "evaluating every alert rule",
        Duration::from_secs(30),
        || {
            let v = prom.api("rules?type=alert");
            let rules: Vec<&serde_json::Value> = v["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            for r in &rules {
                if r["health"] == "err" {
                    panic!(
                        "alert rule {} fails in Prometheus: {}",
                        r["name"], r["lastError"]
                    );
                }
            }
            rules.len() == expected.len() && rules.iter().all(|r| r["health"] == "ok")
        },
    );

    let queries = dashboard_queries();
    assert!(!queries.is_empty(), "the dashboard has no queries");
    let mut failures = Vec::new();
    for (title, expr) in &queries {
        let q = substitute(expr, &instance);
        let v = prom.query(&q);
        if v["status"] != "success" {
            failures.push(format!(
                "[{title}] {expr}: {} {}",
                v["errorType"], v["error"]
            ));
            continue;
        }
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        // Data means a sample a panel draws as something: not only NaN (a quantile of no
        // requests) and not only 0 (a counter that never moved under this load).
        let values: Vec<f64> = result
            .iter()
            .filter_map(|r| r["value"][1].as_str()?.parse().ok())
            .collect();
        let has_data = values.iter().any(|x| x.is_finite() && *x != 0.0);
        if !has_data && !NO_DATA_EXCEPTIONS.iter().any(|(e, _)| e == expr) {
            failures.push(format!(
                "[{title}] {expr}: {}",
                if result.is_empty() {
                    "empty result".to_string()
                } else {
                    format!("only zero/NaN values {values:?}")
                }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries got no data from Prometheus:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
    drop(held);
}
