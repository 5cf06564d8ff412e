//! SELECT, READONLY/READWRITE and UNSUBSCRIBE outside subscribe mode: the connection state
//! Redis keeps that rekey keeps per client instead, so a shared upstream connection's never
//! changes.

use super::{text, wrong_args, Env, Reply};
use crate::protocol::encode::Encoder;
use crate::protocol::scan::parse_int;
use crate::protocol::Request;
use crate::proxy::session::conn::ConnState;

/// `SELECT db`: the client's db, validated as Redis does against the upstream's `databases`.
/// A pinned client's connection selects it too (Redis answers).
pub(in crate::proxy::session) fn select(req: &Request, conn: &mut ConnState, env: &Env) -> Reply {
    if req.len() != 2 {
        return wrong_args("select");
    }
    let Some(n) = req.arg(1).and_then(parse_int) else {
        return Reply::error("ERR value is not an integer or out of range");
    };
    if n < 0 || n >= env.proxy.upstream_info.databases as i64 {
        return Reply::error("ERR DB index is out of range");
    }
    conn.db = n as u32;
    match env.pinned {
        true => Reply::Forward,
        false => Reply::ok(),
    }
}

/// READONLY/READWRITE: a cluster upstream's replicas are rekey's business, so they are
/// answered here; a plain Redis gives its own error (cluster support disabled).
pub(in crate::proxy::session) fn readonly(req: &Request, env: &Env) -> Reply {
    if env.proxy.cluster.is_none() {
        return Reply::Forward;
    }
    match req.len() {
        1 => Reply::ok(),
        _ => wrong_args(&text(req.arg(0).unwrap_or_default()).to_ascii_lowercase()),
    }
}

/// UNSUBSCRIBE and friends outside subscribe mode: one confirmation per channel (or one
/// with a null channel), each with a count of 0.
pub(in crate::proxy::session) fn unsubscribe_idle(req: &Request, conn: &ConnState) -> Reply {
    let kind = req.arg(0).unwrap_or_default().to_ascii_lowercase();
    let mut e = Encoder::new(conn.proto);
    if req.len() == 1 {
        e.push(3).bulk(&kind).null().int(0);
    }
    for ch in req.args().skip(1) {
        e.push(3).bulk(&kind).bulk(ch).int(0);
    }
    Reply::Frame(e.finish())
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    #[test]
    fn select_validates_and_changes_the_clients_db() {
        let proxy = testing::proxy("");
        let me = testing::client(&proxy, 1, None);
        let mut env = testing::env(&proxy, &me);
        let mut conn = ConnState::new(0, true);
        let r = |args: &[&str]| Request::from_args(args);
        assert!(select(&r(&["SELECT", "16"]), &mut conn, &env).is_error());
        assert!(select(&r(&["SELECT", "x"]), &mut conn, &env).is_error());
        assert_eq!(select(&r(&["SELECT", "3"]), &mut conn, &env), Reply::ok());
        assert_eq!(conn.db, 3);
        env.pinned = true;
        assert_eq!(
            select(&r(&["SELECT", "2"]), &mut conn, &env),
            Reply::Forward
        );
        assert_eq!(conn.db, 2);
    }

    #[test]
    fn unsubscribe_outside_subscribe_mode_confirms_each_channel() {
        let conn = ConnState::new(0, true);
        let Reply::Frame(f) = unsubscribe_idle(&Request::from_args(["UNSUBSCRIBE", "a"]), &conn)
        else {
            panic!("a frame");
        };
        assert_eq!(&f[..], b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n");
    }
}
