//! AUTH and HELLO: a client logs in to rekey (its `requirepass` or `[[users]]`), never to the
//! upstream, whose credentials are rekey's own; HELLO also chooses the client's protocol and
//! may name it. Without any proxy credentials configured every AUTH succeeds, so apps set up
//! with the Redis password keep working unchanged.

use super::{valid_name, wrong_args, Env, Reply};
use crate::acl::log::Refusal;
use crate::protocol::encode::{self, Encoder, Proto};
use crate::protocol::scan::parse_int;
use crate::protocol::Request;
use crate::proxy::session::conn::ConnState;
use crate::stats;
use bytes::Bytes;
use std::time::Instant;

/// `AUTH [user] password`.
pub(in crate::proxy::session) fn auth(req: &Request, conn: &mut ConnState, env: &Env) -> Reply {
    let (user, pass) = match req.len() {
        2 => (None, req.arg(1).unwrap_or_default()),
        3 => (req.arg(1), req.arg(2).unwrap_or_default()),
        _ => return wrong_args("auth"),
    };
    match log_in(conn, env, "AUTH", user, pass) {
        Ok(()) => Reply::ok(),
        Err(e) => Reply::Frame(e),
    }
}

/// Checks credentials against the proxy's own; on success the connection is logged in as
/// `user` (the `default` user when `None`).
/// A refusal goes to `ACL LOG` (reason `auth`, object the command: `AUTH` or `HELLO`).
fn log_in(
    conn: &mut ConnState,
    env: &Env,
    command: &str,
    user: Option<&[u8]>,
    pass: &[u8],
) -> Result<(), Bytes> {
    let config = env.proxy.config.load();
    if config.auth.required() && !config.auth.check(user, pass) {
        env.proxy.acl_log.add(Refusal {
            reason: "auth",
            context: "toplevel",
            object: command.to_string(),
            username: String::from_utf8_lossy(user.unwrap_or(b"default")).into_owned(),
            identity: env.viewer.clone(),
            client_info: env.me.line(Instant::now()),
        });
        stats::acl_denied(env.label, "auth");
        return Err(encode::error(
            "WRONGPASS invalid username-password pair or user is disabled.",
        ));
    }
    conn.authed = true;
    conn.user = user.map(|u| String::from_utf8_lossy(u).into_owned());
    Ok(())
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: Redis's checks in Redis's order (a
/// login it carries takes effect even when a later option is refused, as in Redis).
pub(in crate::proxy::session) fn hello(req: &Request, conn: &mut ConnState, env: &Env) -> Reply {
    let proto = match req.arg(1).map(parse_int) {
        None => conn.proto,
        Some(Some(2)) => Proto::Resp2,
        Some(Some(3)) => Proto::Resp3,
        Some(Some(_)) => return Reply::error("NOPROTO unsupported protocol version"),
        Some(None) => {
            return Reply::error("ERR Protocol version is not an integer or out of range")
        }
    };
    let name = match hello_options(req, conn, env) {
        Ok(name) => name,
        Err(e) => return Reply::Frame(e),
    };
    if !conn.authed {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if let Some(n) = name {
        if !valid_name(&n) {
            return Reply::error(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            );
        }
        conn.name = (!n.is_empty()).then_some(n);
    }
    conn.proto = proto;
    Reply::Frame(hello_reply(conn, env))
}

/// HELLO's `AUTH` (applied at once) and `SETNAME` (returned) options.
fn hello_options(req: &Request, conn: &mut ConnState, env: &Env) -> Result<Option<Bytes>, Bytes> {
    let mut name = None;
    let mut i = 2;
    while i < req.len() {
        if req.arg_is(i, "AUTH") && i + 2 < req.len() {
            log_in(
                conn,
                env,
                "HELLO",
                req.arg(i + 1),
                req.arg(i + 2).unwrap_or_default(),
            )?;
            i += 3;
        } else if req.arg_is(i, "SETNAME") && i + 1 < req.len() {
            name = req.arg_bytes(i + 1);
            i += 2;
        } else {
            let opt = String::from_utf8_lossy(req.arg(i).unwrap_or_default()).into_owned();
            return Err(encode::error(&format!(
                "ERR Syntax error in HELLO option '{opt}'"
            )));
        }
    }
    Ok(name)
}

/// HELLO's map, as rekey presents itself: the upstream's version, standalone, master.
fn hello_reply(conn: &ConnState, env: &Env) -> Bytes {
    let info = &env.proxy.upstream_info;
    let mut e = Encoder::new(conn.proto);
    e.map(7);
    e.bulk(b"server").bulk(b"redis");
    e.bulk(b"version").bulk(info.version.as_bytes());
    e.bulk(b"proto").int(conn.proto.number());
    e.bulk(b"id").int(env.me.id as i64);
    e.bulk(b"mode").bulk(b"standalone");
    e.bulk(b"role").bulk(b"master");
    e.bulk(b"modules").array(0);
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    fn req(args: &[&str]) -> Request {
        Request::from_args(args)
    }

    #[test]
    fn auth_checks_the_proxys_own_users() {
        let proxy =
            testing::proxy("requirepass = \"pw\"\n[[users]]\nname = \"app\"\npassword = \"apw\"\n");
        let me = testing::client(&proxy, 1, None);
        let env = testing::env(&proxy, &me);
        let mut conn = ConnState::new(0, false);
        let bad = auth(&req(&["AUTH", "nope"]), &mut conn, &env);
        assert!(bad.is_error() && !conn.authed);
        assert_eq!(
            auth(&req(&["AUTH", "app", "apw"]), &mut conn, &env),
            Reply::ok()
        );
        assert_eq!((conn.authed, conn.user.as_deref()), (true, Some("app")));
        assert!(auth(&req(&["AUTH"]), &mut conn, &env).is_error());
    }

    #[test]
    fn hello_switches_protocol_only_for_a_logged_in_client() {
        let proxy = testing::proxy("requirepass = \"pw\"\n");
        let me = testing::client(&proxy, 7, None);
        let env = testing::env(&proxy, &me);
        let mut conn = ConnState::new(0, false);
        let refused = hello(&req(&["HELLO", "3"]), &mut conn, &env);
        assert!(refused.is_error() && conn.proto == Proto::Resp2);
        let Reply::Frame(map) = hello(
            &req(&["HELLO", "3", "AUTH", "default", "pw", "SETNAME", "n"]),
            &mut conn,
            &env,
        ) else {
            panic!("HELLO answers a map");
        };
        assert!(map.starts_with(b"%7\r\n"), "{map:?}");
        assert_eq!(
            (conn.proto, conn.name.as_deref()),
            (Proto::Resp3, Some(&b"n"[..]))
        );
        assert!(hello(&req(&["HELLO", "4"]), &mut conn, &env).is_error());
        assert!(hello(&req(&["HELLO", "2", "BOGUS"]), &mut conn, &env).is_error());
    }
}
