//! Metrics an operator can slice: `rekey_commands_total` and `rekey_keys_rewritten_total` by
//! `app` (the `[[apps]]` listener or the `[[users]]` AUTH user, `-` for none), and the opt-in
//! per-command latency histogram.

use crate::common::{free_port, metric, RedisServer, Rekey};
use redis::Commands;

const RULE: &str = "[[rules]]\nname = \"s\"\nmatch = '^AppA_'\nreplace = 'shared_'\n";

fn client(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn commands_and_rule_hits_carry_the_clients_app() {
    let redis = RedisServer::start();
    let app_port = free_port();
    let rekey = Rekey::start(
        &redis,
        &format!(
            "requirepass = \"pw0\"\n[[users]]\nname = \"billing\"\npassword = \"pw\"\n\
             [[apps]]\nname = \"appA\"\nlisten = \"127.0.0.1:{app_port}\"\n{RULE}"
        ),
    );
    // Two SETs and a rewritten key from the appA listener.
    let mut a = client(app_port);
    let _: () = redis::cmd("AUTH").arg("pw0").query(&mut a).unwrap();
    let _: () = a.set("AppA_1", "v").unwrap();
    let _: () = a.set("other", "v").unwrap();
    // One SET from the AUTH user, then a SET and a GET from a client with no identity.
    let mut b = rekey.client();
    let _: () = redis::cmd("AUTH")
        .arg("billing")
        .arg("pw")
        .query(&mut b)
        .unwrap();
    let _: () = b.set("AppA_2", "v").unwrap();
    let mut c = rekey.client();
    let _: () = redis::cmd("AUTH").arg("pw0").query(&mut c).unwrap();
    let _: () = c.set("AppA_3", "v").unwrap();
    let _: Option<String> = c.get("AppA_3").unwrap();

    let (_, text) = rekey.admin("GET", "/metrics");
    let series = |cmd: &str, app: &str| {
        metric(
            &text,
            &format!("rekey_commands_total{{command=\"{cmd}\",result=\"ok\",app=\"{app}\"}}"),
        )
    };
    assert_eq!(series("set", "appA"), 2.0, "{text}");
    assert_eq!(series("set", "billing"), 1.0, "{text}");
    assert_eq!(series("set", "-"), 1.0, "{text}");
    assert_eq!(series("get", "-"), 1.0, "{text}");
    let hits = |app: &str| {
        metric(
            &text,
            &format!(
                "rekey_keys_rewritten_total{{rule=\"s\",direction=\"forward\",app=\"{app}\"}}"
            ),
        )
    };
    assert_eq!(hits("appA"), 1.0, "{text}");
    assert_eq!(hits("billing"), 1.0, "{text}");
    assert_eq!(hits("-"), 2.0, "{text}");
    assert!(
        !text.contains("rekey_command_duration_seconds"),
        "per-command latency is opt-in"
    );
}

#[test]
fn per_command_latency_histograms_are_opt_in() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "[metrics]\ncommand_latency = true\n");
    let mut c = rekey.client();
    for i in 0..10 {
        let _: () = c.set(format!("k{i}"), i).unwrap();
    }
    let _: Option<String> = c.get("k1").unwrap();
    let (_, text) = rekey.admin("GET", "/metrics");
    assert_eq!(
        metric(
            &text,
            "rekey_command_duration_seconds_count{command=\"set\"}"
        ),
        10.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "rekey_command_duration_seconds_bucket{command=\"get\",le=\"+Inf\"}"
        ),
        1.0,
        "{text}"
    );
}

/// True when `/metrics` holds the series `rekey_commands_total{…}` of `command`, `result`
/// and `app`, at zero.
fn at_zero(text: &str, command: &str, result: &str, app: &str) -> bool {
    let series = format!(
        "rekey_commands_total{{command=\"{command}\",result=\"{result}\",app=\"{app}\"}} 0"
    );
    text.lines().any(|l| l == series)
}

#[test]
fn command_counters_start_at_zero_for_every_command_and_app_reloads_add() {
    let redis = RedisServer::start();
    let app_port = free_port();
    let apps = format!("[[apps]]\nname = \"appA\"\nlisten = \"127.0.0.1:{app_port}\"\n");
    let rekey = Rekey::start(&redis, &apps);
    let (_, text) = rekey.admin("GET", "/metrics");
    for app in ["-", "appA"] {
        for command in ["get", "set", "hgetall", "evalsha", "ping", "blpop"] {
            for result in ["ok", "error"] {
                assert!(
                    at_zero(&text, command, result, app),
                    "{command} {result} {app}"
                );
            }
        }
    }
    // A reload that names a new identity registers its counters before its first command.
    let users = "[[users]]\nname = \"billing\"\npassword = \"pw\"\n";
    rekey.write_config(&redis.url(), &format!("{apps}{users}"));
    let (code, _) = rekey.admin("POST", "/reload");
    assert_eq!(code, 200);
    let (_, text) = rekey.admin("GET", "/metrics");
    assert!(
        at_zero(&text, "get", "ok", "billing"),
        "billing after reload"
    );
    assert!(!at_zero(&text, "get", "ok", "nobody"));
}
