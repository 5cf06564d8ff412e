//! Small differences from Redis, each checked by sending the same bytes to a direct
//! redis-server and to rekey in front of it: edge inputs of the protocol, CLIENT LIST/INFO/KILL
//! on rekey's own clients, READONLY against a plain Redis, refused commands inside MULTI.

use crate::common::{free_port, RawClient, RedisServer, Rekey};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends `input` on a fresh connection, closes the writing side, and returns every byte
/// that comes back until the server closes.
fn exchange(port: u16, input: &[u8]) -> Vec<u8> {
    let mut s = connect(port);
    s.write_all(input).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The same bytes to Redis and to rekey give the same bytes back.
fn same(redis: &RedisServer, rekey: &Rekey, input: &str) {
    let direct = exchange(redis.port, input.as_bytes());
    let proxied = exchange(rekey.port, input.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&proxied),
        String::from_utf8_lossy(&direct),
        "input {input:?}"
    );
}

fn raw(port: u16) -> RawClient {
    RawClient::from_stream(connect(port))
}

/// Reads one RESP2 reply and returns it whole (bytes as received).
fn read_reply(c: &mut RawClient) -> String {
    let mut out = Vec::new();
    read_frame(c, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn read_frame(c: &mut RawClient, out: &mut Vec<u8>) {
    let kind = {
        let mut b = [0u8];
        c.s.read_exact(&mut b).unwrap();
        b[0]
    };
    out.push(kind);
    let head = read_line_rest(c, out);
    match kind {
        b'$' | b'=' => {
            let n: i64 = head.parse().unwrap();
            if n >= 0 {
                out.extend(c.read_exact_n(n as usize + 2));
            }
        }
        b'*' | b'%' => {
            let n: i64 = head.parse().unwrap();
            let n = if kind == b'%' { n * 2 } else { n };
            for _ in 0..n.max(0) {
                read_frame(c, out);
            }
        }
        _ => {}
    }
}

fn read_line_rest(c: &mut RawClient, out: &mut Vec<u8>) -> String {
    let start = out.len();
    let mut b = [0u8];
    while !out[start..].ends_with(b"\r\n") {
        assert_eq!(c.s.read(&mut b).unwrap(), 1, "closed mid-reply");
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out[start..out.len() - 2]).into_owned()
}

/// Sends a command and reads its reply.
fn call(c: &mut RawClient, args: &[&str]) -> String {
    c.cmd(args);
    read_reply(c)
}

/// The text of a bulk reply (`$n\r\ntext\r\n`).
fn bulk_text(reply: &str) -> String {
    reply
        .split_once("\r\n")
        .map(|(_, rest)| rest.trim_end_matches("\r\n").to_string())
        .unwrap_or_default()
}

/// `field=value` pairs of one CLIENT LIST line.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field(line: &str, name: &str) -> String {
    fields(line)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

fn client_id(c: &mut RawClient) -> String {
    call(c, &["CLIENT", "ID"])
        .trim_start_matches(':')
        .trim()
        .to_string()
}

/// True once the server closed `c` (it reads end of stream).
fn closed(c: &mut RawClient) -> bool {
    c.read_to_close().is_empty()
}

#[test]
fn protocol_edge_inputs_are_read_as_redis_reads_them() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    for input in [
        "*-10\r\n*1\r\n$4\r\nPING\r\n",
        "*-10\r\nPING\r\n",
        "*0\r\nPING\r\n",
        "*-1\r\nPING\r\n",
        "*-9223372036854775808\r\nPING\r\n",
        "*-9223372036854775809\r\nPING\r\n",
        "\r\n   \r\n\n\t \r\nPING\r\n",
        "*1\r\n$-1\r\nPING\r\n",
        "*1\r\n$+4\r\nPING\r\n",
        "*-0\r\nPING\r\n",
        "*+1\r\nPING\r\n",
        "*\r\nPING\r\n",
        "*1\r\n$0\r\n\r\nPING\r\n",
        "*1\r\nPING\r\n",
        "PING \"a\r\n",
        "*2\r\n$4\r\nECHO\r\n$-3\r\n",
        "*2147483648\r\n",
    ] {
        same(&redis, &rekey, input);
    }
    // The lane (runs of plain commands) meets an empty request in the middle of a run.
    same(
        &redis,
        &rekey,
        "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*-10\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*0\r\n*1\r\n$4\r\nPING\r\n",
    );
}

#[test]
fn client_errors_are_worded_as_redis_words_them() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    for input in [
        "CLIENT KILL\r\n",
        "CLIENT KILL 1.2.3.4:5\r\n",
        "CLIENT KILL ID 0\r\n",
        "CLIENT KILL ID x\r\n",
        "CLIENT KILL ID -1\r\n",
        "CLIENT KILL ID 999999\r\n",
        "CLIENT KILL foo bar\r\n",
        "CLIENT KILL SKIPME maybe\r\n",
        "CLIENT KILL USER nobody\r\n",
        "CLIENT KILL TYPE foo\r\n",
        "CLIENT KILL TYPE master\r\n",
        "CLIENT KILL addr\r\n",
        "CLIENT KILL ID 5 ADDR\r\n",
        "CLIENT KILL ADDR 1.2.3.4:5 SKIPME no\r\n",
        "CLIENT LIST TYPE foo\r\n",
        "CLIENT LIST TYPE replica\r\n",
        "CLIENT LIST ID x\r\n",
        "CLIENT LIST ID\r\n",
        "CLIENT LIST foo\r\n",
        "CLIENT LIST TYPE normal extra\r\n",
        "CLIENT LIST ID 999999 -3\r\n",
        "CLIENT NO-EVICT maybe\r\n",
        "CLIENT NO-EVICT\r\n",
        "CLIENT NO-EVICT on\r\n",
        "CLIENT NO-EVICT OFF\r\n",
        "CLIENT INFO x\r\n",
        "READONLY\r\n",
        "READWRITE\r\n",
        "READONLY x\r\n",
    ] {
        same(&redis, &rekey, input);
    }
}

#[test]
fn client_list_and_info_describe_rekeys_own_clients() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut a = raw(rekey.port);
    assert_eq!(call(&mut a, &["CLIENT", "SETNAME", "alpha"]), "+OK\r\n");
    assert_eq!(call(&mut a, &["SELECT", "3"]), "+OK\r\n");
    let a_id = client_id(&mut a);
    let mut b = raw(rekey.port);
    let b_id = client_id(&mut b);

    let list = bulk_text(&call(&mut b, &["CLIENT", "LIST"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    let a_line = lines.iter().find(|l| field(l, "id") == a_id).expect("a");
    assert_eq!(field(a_line, "name"), "alpha");
    assert_eq!(field(a_line, "db"), "3");
    assert_eq!(field(a_line, "cmd"), "client|id");
    assert_eq!(field(a_line, "addr"), a.s.local_addr().unwrap().to_string());
    assert_eq!(field(a_line, "laddr"), format!("127.0.0.1:{}", rekey.port));
    let b_line = lines.iter().find(|l| field(l, "id") == b_id).expect("b");
    assert_eq!(field(b_line, "cmd"), "client|list");

    // The fields, in Redis's order (rekey adds app=, and lib-name/lib-ver of Redis 7.2).
    let mut direct = raw(redis.port);
    let redis_line = bulk_text(&call(&mut direct, &["CLIENT", "LIST"]));
    let names = |line: &str, extra: &[&str]| -> Vec<String> {
        fields(line)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !extra.contains(&k.as_str()))
            .collect()
    };
    let extra = ["app", "lib-name", "lib-ver"];
    assert_eq!(
        names(b_line, &extra),
        names(redis_line.lines().next().unwrap(), &extra)
    );

    // CLIENT INFO is this client's line of CLIENT LIST.
    let info = bulk_text(&call(&mut b, &["CLIENT", "INFO"]));
    assert_eq!(field(&info, "id"), b_id);
    assert_eq!(field(&info, "cmd"), "client|info");
    assert_eq!(names(&info, &[]), names(b_line, &[]));

    // Filters: ID (in the order given, unknown ids skipped), TYPE.
    let by_id = bulk_text(&call(
        &mut b,
        &["CLIENT", "LIST", "ID", &b_id, "999999", &a_id],
    ));
    let ids: Vec<String> = by_id.lines().map(|l| field(l, "id")).collect();
    assert_eq!(ids, [b_id.clone(), a_id.clone()]);
    let mut sub = raw(rekey.port);
    let sub_id = client_id(&mut sub);
    sub.cmd(&["SUBSCRIBE", "ch"]);
    read_reply(&mut sub);
    let pubsub = bulk_text(&call(&mut b, &["CLIENT", "LIST", "TYPE", "pubsub"]));
    let ids: Vec<String> = pubsub.lines().map(|l| field(l, "id")).collect();
    assert_eq!(ids, [sub_id.as_str()]);
    assert!(field(pubsub.lines().next().unwrap(), "flags").contains('P'));
    let normal = bulk_text(&call(&mut b, &["CLIENT", "LIST", "TYPE", "NORMAL"]));
    assert_eq!(normal.lines().count(), 2, "{normal}");
    assert!(!normal.contains(&format!("id={sub_id} ")));

    // NO-EVICT / NO-TOUCH show as flags, and MULTI as x.
    assert_eq!(call(&mut a, &["CLIENT", "NO-EVICT", "on"]), "+OK\r\n");
    assert_eq!(call(&mut a, &["CLIENT", "NO-TOUCH", "ON"]), "+OK\r\n");
    assert_eq!(call(&mut a, &["MULTI"]), "+OK\r\n");
    let a_line = bulk_text(&call(&mut b, &["CLIENT", "LIST", "ID", &a_id]));
    assert_eq!(field(&a_line, "flags"), "xeT");
    assert_eq!(field(&a_line, "cmd"), "multi");
    assert_eq!(call(&mut a, &["DISCARD"]), "+OK\r\n");
}

#[test]
fn client_kill_kills_rekeys_clients_by_each_filter() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let mut op = raw(rekey.port);
    let op_id = client_id(&mut op);

    // ID
    let mut v = raw(rekey.port);
    let v_id = client_id(&mut v);
    assert_eq!(call(&mut op, &["CLIENT", "KILL", "ID", &v_id]), ":1\r\n");
    assert!(closed(&mut v));
    assert_eq!(call(&mut op, &["CLIENT", "KILL", "ID", &v_id]), ":0\r\n");

    // The old form, by address: +OK, or Redis's error once it is gone.
    let mut v = raw(rekey.port);
    client_id(&mut v);
    let addr = v.s.local_addr().unwrap().to_string();
    assert_eq!(call(&mut op, &["CLIENT", "KILL", &addr]), "+OK\r\n");
    assert!(closed(&mut v));
    assert_eq!(
        call(&mut op, &["CLIENT", "KILL", &addr]),
        "-ERR No such client\r\n"
    );

    // ADDR, with the wrong LADDR (ANDed: nobody), then the right one.
    let mut v = raw(rekey.port);
    client_id(&mut v);
    let addr = v.s.local_addr().unwrap().to_string();
    let laddr = format!("127.0.0.1:{}", rekey.port);
    assert_eq!(
        call(
            &mut op,
            &["CLIENT", "KILL", "ADDR", &addr, "LADDR", "127.0.0.1:1"]
        ),
        ":0\r\n"
    );
    assert_eq!(
        call(&mut op, &["CLIENT", "KILL", "ADDR", &addr, "LADDR", &laddr]),
        ":1\r\n"
    );
    assert!(closed(&mut v));

    // USER + LADDR: everybody but the caller (SKIPME yes is the default).
    let mut v1 = raw(rekey.port);
    let mut v2 = raw(rekey.port);
    client_id(&mut v1);
    client_id(&mut v2);
    assert_eq!(
        call(
            &mut op,
            &["CLIENT", "KILL", "USER", "default", "LADDR", &laddr]
        ),
        ":2\r\n"
    );
    assert!(closed(&mut v1));
    assert!(closed(&mut v2));
    assert_eq!(call(&mut op, &["PING"]), "+PONG\r\n");

    // A subscriber, by TYPE: its pinned connection goes back to the pool.
    let mut sub = raw(rekey.port);
    sub.cmd(&["SUBSCRIBE", "ch"]);
    read_reply(&mut sub);
    assert_eq!(
        call(&mut op, &["CLIENT", "KILL", "TYPE", "pubsub"]),
        ":1\r\n"
    );
    assert!(closed(&mut sub));

    // SKIPME no: the caller is killed too, after its reply.
    let mut v = raw(rekey.port);
    client_id(&mut v);
    assert_eq!(
        call(&mut op, &["CLIENT", "KILL", "ID", &op_id, "SKIPME", "no"]),
        ":1\r\n"
    );
    assert!(closed(&mut op));
    assert_eq!(call(&mut v, &["PING"]), "+PONG\r\n");
}

#[test]
fn an_app_sees_and_kills_only_its_own_clients() {
    let redis = RedisServer::start();
    let (pa, pb) = (free_port(), free_port());
    let rekey = Rekey::start(
        &redis,
        &format!(
            "[[apps]]\nname = \"appA\"\nlisten = \"127.0.0.1:{pa}\"\n\n[[apps]]\nname = \"appB\"\nlisten = \"127.0.0.1:{pb}\"\n"
        ),
    );
    let mut a1 = raw(pa);
    let mut a2 = raw(pa);
    let mut b1 = raw(pb);
    let mut anon = raw(rekey.port);
    let a2_id = client_id(&mut a2);
    let b1_id = client_id(&mut b1);
    client_id(&mut anon);

    let seen = bulk_text(&call(&mut a1, &["CLIENT", "LIST"]));
    assert_eq!(seen.lines().count(), 2, "{seen}");
    assert!(seen.lines().all(|l| field(l, "app") == "appA"), "{seen}");
    assert_eq!(
        bulk_text(&call(&mut a1, &["CLIENT", "LIST", "ID", &b1_id])),
        ""
    );
    assert_eq!(call(&mut a1, &["CLIENT", "KILL", "ID", &b1_id]), ":0\r\n");
    assert_eq!(call(&mut b1, &["PING"]), "+PONG\r\n");
    // Everything an app may kill is its own.
    assert_eq!(
        call(&mut a1, &["CLIENT", "KILL", "SKIPME", "yes"]),
        ":1\r\n"
    );
    assert!(closed(&mut a2));
    assert_eq!(call(&mut b1, &["PING"]), "+PONG\r\n");
    // A client with no identity sees every client.
    let all = bulk_text(&call(&mut anon, &["CLIENT", "LIST"]));
    assert_eq!(all.lines().count(), 3, "{all}");
    assert!(!all.contains(&format!("id={a2_id} ")));
}

#[test]
fn refused_commands_inside_multi_are_what_redis_makes_of_them() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    for input in [
        "MULTI\r\nMONITOR\r\nEXEC\r\nPING\r\n",
        "MULTI\r\nSHUTDOWN\r\nEXEC\r\nPING\r\n",
        "MULTI\r\nSYNC\r\nPSYNC ? -1\r\nEXEC\r\n",
        "MULTI\r\nSAVE\r\nSWAPDB 0 1\r\nSWAPDB 0 1\r\nCONFIG SET maxmemory-policy noeviction\r\nEXEC\r\n",
        "MULTI\r\nSET k v\r\nDEBUG OBJECT nokey\r\nEXEC\r\nGET k\r\n",
        "SAVE\r\nSWAPDB 0 1\r\nSWAPDB 0 1\r\nDEBUG SLEEP 0\r\nCONFIG SET maxmemory-policy noeviction\r\n",
    ] {
        same(&redis, &rekey, input);
    }
    // Outside a transaction, MONITOR is rekey's own feed (tests/it/fidelity.rs): the client
    // is answered as by Redis and sees its own PING, as Redis shows it.
    let out = exchange(rekey.port, b"MONITOR\r\nPING\r\n");
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("+OK\r\n+PONG\r\n"), "{out}");
    // A credential change refused inside MULTI fails the transaction, as a command Redis
    // rejects while queueing does.
    let out = exchange(
        rekey.port,
        b"MULTI\r\nSET guarded 1\r\nCONFIG SET requirepass x\r\nEXEC\r\nEXISTS guarded\r\n",
    );
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("+OK\r\n+QUEUED\r\n-ERR rekey: CONFIG SET of upstream credentials"),
        "{out}"
    );
    assert!(
        out.ends_with("-EXECABORT Transaction discarded because of previous errors.\r\n:0\r\n"),
        "{out}"
    );
}

#[test]
fn hello_shows_the_upstream_version() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(&redis, "");
    let version = |port: u16| {
        let mut c = raw(port);
        let reply = call(&mut c, &["HELLO", "3"]);
        let after = reply
            .split("version\r\n")
            .nth(1)
            .expect("version")
            .to_string();
        after.split("\r\n").nth(1).unwrap().to_string()
    };
    assert_eq!(version(rekey.port), version(redis.port));
}
