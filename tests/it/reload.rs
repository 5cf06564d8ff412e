//! Live change and observability: reload on file change, SIGHUP and POST /reload, under load;
//! bad configs refused while the old rules serve; transaction snapshots; metrics and the
//! Grafana dashboard's queries against a live /metrics.

use crate::common::{metric, RedisServer, Rekey};
use redis::{cmd, Commands};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rule(to: &str) -> String {
    format!("[[rules]]\nname = \"sessions\"\nmatch = '^AppA_'\nreplace = '{to}'\n")
}

fn generation(rekey: &Rekey) -> u64 {
    let (_, body) = rekey.admin("GET", "/status");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["config"]["generation"].as_u64().unwrap()
}

/// Polls `f` every 10 ms for up to 5 s (a hang guard, not a timing assertion); returns the
/// time it took.
fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what} did not happen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn reload_under_load_loses_nothing_and_applies_quickly() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, &rule("v1_"));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (url, stop, done) = (rekey.url(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    // A rewritten key, written and read in one transaction (one rules
                    // snapshot), and a key no rule touches, written then read.
                    let key = format!("AppA_w{w}_{i}");
                    let (_, v): ((), u64) = redis::pipe()
                        .atomic()
                        .set(&key, i)
                        .get(&key)
                        .query(&mut con)
                        .expect("no request fails during reload");
                    assert_eq!(v, i, "each client reads back its own write");
                    let plain = format!("plain_w{w}");
                    let _: () = con.set(&plain, i).expect("no request fails during reload");
                    let v: u64 = con.get(&plain).expect("no request fails during reload");
                    assert_eq!(v, i);
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    eventually("load", || done.load(Ordering::Relaxed) > 500);
    rekey.write_config(&redis.url(), &rule("v2_"));
    let mut direct = redis.direct();
    let mut probe = rekey.client();
    let took = eventually("the new rule", || {
        let _: () = probe.set("AppA_probe", 1).unwrap();
        direct.exists::<_, bool>("v2_probe").unwrap()
    });
    eprintln!("new rule visible {took:?} after the file write");
    let before = done.load(Ordering::Relaxed);
    eventually("more load after reload", || {
        done.load(Ordering::Relaxed) > before + 500
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a worker saw a failed request");
    }
    let (_, metrics) = rekey.admin("GET", "/metrics");
    assert!(metric(&metrics, "rekey_config_reloads_total{result=\"ok\"}") >= 1.0);
    assert_eq!(
        metric(
            &metrics,
            "rekey_commands_total{command=\"set\",result=\"error\",app=\"-\"}"
        ),
        0.0
    );
}

#[test]
fn bad_config_is_refused_and_old_rules_keep_serving() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, &rule("v1_"));
    let gen = generation(&rekey);
    rekey.write_config(
        &redis.url(),
        "[[rules]]\nname = \"broken\"\nmatch = '(AppA'\nreplace = 'x'\n",
    );
    eventually("the refused reload on /status", || {
        let (_, body) = rekey.admin("GET", "/status");
        body.contains("\"last_result\": \"error\"") && body.contains("broken")
    });
    let (code, body) = rekey.admin("POST", "/reload");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("broken"), "{body}");
    assert_eq!(generation(&rekey), gen);
    let mut con = rekey.client();
    let _: () = con.set("AppA_still", 1).unwrap();
    let old_rule: bool = redis.direct().exists("v1_still").unwrap();
    assert!(old_rule, "the old rules keep serving");
    let (_, metrics) = rekey.admin("GET", "/metrics");
    assert!(
        metric(&metrics, "rekey_config_reloads_total{result=\"error\"}") >= 2.0,
        "{metrics}"
    );
}

#[test]
fn sighup_and_post_reload() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, &rule("v1_"));
    let g0 = generation(&rekey);
    rekey.signal("HUP");
    eventually("SIGHUP reload", || generation(&rekey) > g0);
    let g1 = generation(&rekey);
    let (code, body) = rekey.admin("POST", "/reload");
    assert_eq!(code, 200, "{body}");
    assert!(generation(&rekey) > g1);
    let (code, _) = rekey.admin("GET", "/reload");
    assert_eq!(code, 405);
    let (code, body) = rekey.admin("GET", "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    // A changed listen address cannot apply live: reported, not ignored.
    let text = std::fs::read_to_string(&rekey.config_path).unwrap();
    std::fs::write(
        &rekey.config_path,
        text.replace(&format!("127.0.0.1:{}", rekey.port), "127.0.0.1:1"),
    )
    .unwrap();
    let (code, _) = rekey.admin("POST", "/reload");
    assert_eq!(code, 200);
    let (_, status) = rekey.admin("GET", "/status");
    assert!(
        status.contains("needs_restart") && status.contains("listen"),
        "{status}"
    );
    let mut con = rekey.client();
    let pong: String = cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

/// One Redis can be swapped by a reload; a move to a cluster (or Sentinel) cannot, and is
/// reported as needing a restart while the old upstream keeps serving.
#[test]
fn a_move_to_a_cluster_needs_a_restart() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut con = rekey.client();
    let _: () = cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let text = std::fs::read_to_string(&rekey.config_path).unwrap();
    std::fs::write(
        &rekey.config_path,
        text.replace(&redis.url(), "redis-cluster://127.0.0.1:1,127.0.0.1:2"),
    )
    .unwrap();
    let (code, _) = rekey.admin("POST", "/reload");
    assert_eq!(code, 200);
    let (_, status) = rekey.admin("GET", "/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let needs = status["reload"]["needs_restart"].to_string();
    assert!(needs.contains("redis-cluster://127.0.0.1:1"), "{status}");
    assert_eq!(status["upstream"]["url"], status["upstream"]["configured"]);
    let v: String = cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, "v", "the old upstream keeps serving");
}

#[test]
fn a_transaction_keeps_the_rules_it_started_with() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, &rule("v1_"));
    let mut con = rekey.client();
    let _: () = cmd("MULTI").query(&mut con).unwrap();
    let _: String = cmd("SET").arg("AppA_t1").arg(1).query(&mut con).unwrap();
    let g = generation(&rekey);
    let (code, _) = {
        rekey.write_config(&redis.url(), &rule("v2_"));
        rekey.admin("POST", "/reload")
    };
    assert_eq!(code, 200);
    assert!(generation(&rekey) > g);
    let _: String = cmd("SET").arg("AppA_t2").arg(2).query(&mut con).unwrap();
    let _: Vec<String> = cmd("EXEC").query(&mut con).unwrap();
    let mut direct = redis.direct();
    let mut keys: Vec<String> = direct.keys("*").unwrap();
    keys.sort();
    assert_eq!(keys, vec!["v1_t1", "v1_t2"]);
    // After EXEC the new rules apply.
    let _: () = con.set("AppA_t3", 3).unwrap();
    assert!(direct.exists::<_, bool>("v2_t3").unwrap());
}

#[test]
fn a_changed_upstream_gets_new_pools() {
    let first = RedisServer::start();
    let second = RedisServer::start();
    let rekey = Rekey::start(&first, "");
    let mut con = rekey.client();
    let _: () = con.set("where", "first").unwrap();
    rekey.write_config(&second.url(), "");
    let (code, body) = rekey.admin("POST", "/reload");
    assert_eq!(code, 200, "{body}");
    let _: () = con.set("where", "second").unwrap();
    let v1: String = first.direct().get("where").unwrap();
    let v2: String = second.direct().get("where").unwrap();
    assert_eq!((v1.as_str(), v2.as_str()), ("first", "second"));
}

#[test]
fn metrics_move_and_cover_the_dashboard() {
    let redis = RedisServer::start();
    // An app with a request budget: the access-control row's series.
    let app = crate::common::free_port();
    let rekey = Rekey::start(
        &redis,
        &format!(
            "{}[[apps]]\nname = \"appz\"\nlisten = \"127.0.0.1:{app}\"\n\
             acl = \"+@all -flushall\"\nmax_requests_per_sec = 1000\n",
            rule("v1_")
        ),
    );
    let mut con = rekey.client();
    for i in 0..50 {
        let _: () = con.set(format!("AppA_{i}"), i).unwrap();
        let _: () = con.set(format!("plain_{i}"), i).unwrap();
    }
    let _ = cmd("NOSUCHCOMMAND").query::<()>(&mut con);
    let _: Option<(String, String)> = cmd("BLPOP")
        .arg("AppA_q")
        .arg("0.01")
        .query(&mut con)
        .unwrap();
    let _ = rekey.admin("POST", "/reload");
    let mut bad = rekey.raw();
    bad.send(b"*1\r\n$x\r\n");
    let _ = bad.read_to_close();
    let (_, text) = rekey.admin("GET", "/metrics");
    assert!(
        metric(
            &text,
            "rekey_commands_total{command=\"set\",result=\"ok\",app=\"-\"}"
        ) >= 100.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "rekey_commands_total{command=\"other\",result=\"error\",app=\"-\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        metric(
            &text,
            "rekey_keys_rewritten_total{rule=\"sessions\",direction=\"forward\",app=\"-\"}"
        ) >= 50.0,
        "{text}"
    );
    assert!(
        metric(&text, "rekey_keys_unmatched_total") >= 50.0,
        "{text}"
    );
    assert!(metric(&text, "rekey_client_connections") >= 1.0, "{text}");
    assert!(
        metric(&text, "rekey_protocol_errors_total") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "rekey_upstream_connections{kind=\"pooled\"}") >= 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "rekey_request_duration_seconds_count") >= 100.0,
        "{text}"
    );
    // Every metric a dashboard query names is exported.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/grafana/dashboards/rekey.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut missing = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                if !text.lines().any(|l| l.starts_with(&name)) {
                    missing.push(name);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "dashboard queries metrics that /metrics does not export: {missing:?}"
    );
}

/// `rekey_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("rekey_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}
