//! CLIENT subcommands rekey answers for the client itself: its name, library, id, its line
//! and the lines of the clients it may see (rekey's own clients, not the upstream
//! connections they share), killing them, and its reply mode. `CLIENT TRACKING`,
//! `TRACKINGINFO` and `CACHING` live on the pinned connection (the session's `streams`);
//! what is not rekey's goes to Redis ([`Reply::Forward`]).

use super::{bulk, int, null, syntax_error, text, valid_name, verbatim, wrong_args, Env, Reply};
use crate::protocol::encode;
use crate::protocol::scan::parse_int;
use crate::protocol::Request;
use crate::proxy::clients::{KillFilter, Kind};
use crate::proxy::session::conn::{ConnState, ReplyMode};
use bytes::Bytes;
use std::time::Instant;

/// `CLIENT <sub> …` for the subcommands rekey answers (`sub` upper case).
pub(in crate::proxy::session) fn client(req: &Request, conn: &mut ConnState, env: &Env) -> Reply {
    let Some(sub) = req.arg(1).map(|s| s.to_ascii_uppercase()) else {
        return wrong_args("client");
    };
    match sub.as_slice() {
        b"SETNAME" if req.len() == 3 => set_name(req, conn),
        b"GETNAME" if req.len() == 2 => Reply::Frame(match &conn.name {
            Some(n) => bulk(n),
            None => null(conn.proto),
        }),
        b"SETINFO" if req.len() == 4 => set_info(req, conn),
        b"ID" if req.len() == 2 && !env.pinned => Reply::Frame(int(env.me.id as i64)),
        b"INFO" if req.len() == 2 => {
            Reply::Frame(verbatim(conn.proto, &env.me.line(Instant::now())))
        }
        b"INFO" => wrong_args("client|info"),
        b"LIST" => list(req, conn, env),
        b"REPLY" if req.len() == 3 => reply_mode(req, conn),
        b"KILL" => kill(req, env),
        b"NO-EVICT" | b"NO-TOUCH" => flag(&text(&sub).to_ascii_lowercase(), req, env),
        _ => Reply::Forward,
    }
}

/// `CLIENT SETNAME name`: the client's name (a pinned connection takes it too).
fn set_name(req: &Request, conn: &mut ConnState) -> Reply {
    let n = req.arg_bytes(2).unwrap_or_default();
    if !valid_name(&n) {
        return Reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        );
    }
    conn.name = (!n.is_empty()).then_some(n);
    Reply::Mirror(encode::simple("OK"))
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`.
fn set_info(req: &Request, conn: &mut ConnState) -> Reply {
    let value = req.arg_bytes(3);
    if req.arg_is(2, "LIB-NAME") {
        conn.lib_name = value;
    } else if req.arg_is(2, "LIB-VER") {
        conn.lib_ver = value;
    } else {
        let opt = text(req.arg(2).unwrap_or_default());
        return Reply::error(&format!("ERR Unrecognized option '{opt}'"));
    }
    Reply::ok()
}

/// `CLIENT REPLY ON|OFF|SKIP`: OFF and SKIP get no reply themselves (SKIP: nor does the
/// next command).
fn reply_mode(req: &Request, conn: &mut ConnState) -> Reply {
    match req.arg(2) {
        Some(word) if conn.set_reply_mode(word) => match conn.reply_mode {
            ReplyMode::On => Reply::ok(),
            _ => Reply::Nothing,
        },
        _ => syntax_error(),
    }
}

/// `CLIENT LIST [TYPE type | ID id …]`: the clients this one may see.
fn list(req: &Request, conn: &ConnState, env: &Env) -> Reply {
    let registry = &env.proxy.registry;
    let viewer = env.viewer.as_deref();
    let clients = if req.len() == 4 && req.arg_is(2, "TYPE") {
        let name = req.arg(3).unwrap_or_default();
        let Some(kind) = Kind::parse(name) else {
            return Reply::error(&format!("ERR Unknown client type '{}'", text(name)));
        };
        registry.list(viewer, Some(kind))
    } else if req.len() > 3 && req.arg_is(2, "ID") {
        let Some(ids) = req
            .args()
            .skip(3)
            .map(parse_int)
            .collect::<Option<Vec<_>>>()
        else {
            return Reply::error("ERR Invalid client ID");
        };
        ids.into_iter()
            .filter_map(|id| u64::try_from(id).ok())
            .filter_map(|id| registry.get(viewer, id))
            .collect()
    } else if req.len() == 2 {
        registry.list(viewer, None)
    } else {
        return syntax_error();
    };
    let now = Instant::now();
    let out: String = clients.iter().map(|c| c.line(now)).collect();
    Reply::Frame(verbatim(conn.proto, &out))
}

/// `CLIENT KILL addr:port` (old form: `+OK` or an error) or `CLIENT KILL <filter> <value>
/// …` (the number killed), over the clients this one may see. A client that kills itself
/// is closed after the reply, as Redis does.
fn kill(req: &Request, env: &Env) -> Reply {
    let filter = match req.len() {
        0..=2 => return wrong_args("client|kill"),
        3 => KillFilter {
            addr: Some(text(req.arg(2).unwrap_or_default())),
            ..KillFilter::default()
        },
        _ => match kill_filter(req, env) {
            Ok(f) => f,
            Err(e) => return Reply::Frame(e),
        },
    };
    let registry = &env.proxy.registry;
    let (killed, me) = registry.kill(env.viewer.as_deref(), &filter, env.me.id);
    let frame = match (req.len(), killed) {
        (3, 0) => encode::error("ERR No such client"),
        (3, _) => encode::simple("OK"),
        _ => int(killed as i64),
    };
    match me {
        true => Reply::ThenClose(frame),
        false => Reply::Frame(frame),
    }
}

/// The filters of `CLIENT KILL`'s new form, with Redis's errors.
fn kill_filter(req: &Request, env: &Env) -> Result<KillFilter, Bytes> {
    let mut f = KillFilter {
        skipme: true,
        ..KillFilter::default()
    };
    for i in (2..req.len()).step_by(2) {
        let Some(value) = req.arg(i + 1) else {
            return Err(encode::error("ERR syntax error"));
        };
        let option = req.arg(i).unwrap_or_default().to_ascii_lowercase();
        match option.as_slice() {
            b"id" => match parse_int(value) {
                Some(id) if id > 0 => f.id = Some(id as u64),
                _ => return Err(encode::error("ERR client-id should be greater than 0")),
            },
            b"type" => match Kind::parse(value) {
                Some(kind) => f.kind = Some(kind),
                None => {
                    let msg = format!("ERR Unknown client type '{}'", text(value));
                    return Err(encode::error(&msg));
                }
            },
            b"addr" => f.addr = Some(text(value)),
            b"laddr" => f.laddr = Some(text(value)),
            b"user" => {
                let user = text(value);
                if !user_exists(&user, env) {
                    return Err(encode::error(&format!("ERR No such user '{user}'")));
                }
                f.user = Some(user);
            }
            b"skipme" if value.eq_ignore_ascii_case(b"yes") => f.skipme = true,
            b"skipme" if value.eq_ignore_ascii_case(b"no") => f.skipme = false,
            _ => return Err(encode::error("ERR syntax error")),
        }
    }
    Ok(f)
}

/// A user CLIENT KILL USER may name: `default`, a `[[users]]` name, or a live client's.
fn user_exists(user: &str, env: &Env) -> bool {
    user == "default"
        || env
            .proxy
            .config
            .load()
            .auth
            .users
            .iter()
            .any(|u| u.name == user)
        || env.proxy.registry.has_user(user)
}

/// `CLIENT NO-EVICT|NO-TOUCH ON|OFF`: shown in CLIENT LIST's flags; no effect on the
/// shared upstream connections.
fn flag(sub: &str, req: &Request, env: &Env) -> Reply {
    if req.len() != 3 {
        return wrong_args(&format!("client|{sub}"));
    }
    let on = match req.arg(2) {
        Some(v) if v.eq_ignore_ascii_case(b"ON") => true,
        Some(v) if v.eq_ignore_ascii_case(b"OFF") => false,
        _ => return syntax_error(),
    };
    let evict = sub == "no-evict";
    env.me.update(|d| match evict {
        true => d.no_evict = on,
        false => d.no_touch = on,
    });
    Reply::ok()
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    fn req(args: &[&str]) -> Request {
        Request::from_args(args)
    }

    #[test]
    fn name_and_library_are_the_clients_own() {
        let proxy = testing::proxy("");
        let me = testing::client(&proxy, 5, None);
        let env = testing::env(&proxy, &me);
        let mut conn = ConnState::new(0, true);
        assert!(client(&req(&["CLIENT", "SETNAME", "a b"]), &mut conn, &env).is_error());
        let set = client(&req(&["CLIENT", "SETNAME", "web"]), &mut conn, &env);
        assert_eq!(set, Reply::Mirror(encode::simple("OK")));
        let got = client(&req(&["CLIENT", "GETNAME"]), &mut conn, &env);
        assert_eq!(got, Reply::Frame(bulk(b"web")));
        assert_eq!(
            client(&req(&["CLIENT", "ID"]), &mut conn, &env),
            Reply::Frame(int(5))
        );
        assert!(client(&req(&["CLIENT", "SETINFO", "LIB-X", "v"]), &mut conn, &env).is_error());
        assert_eq!(
            client(&req(&["CLIENT", "PAUSE", "10"]), &mut conn, &env),
            Reply::Forward
        );
    }

    #[test]
    fn an_app_sees_and_kills_only_its_own_clients() {
        let proxy = testing::proxy("");
        let me = testing::client(&proxy, 1, Some("appA"));
        let _peer = testing::client(&proxy, 2, Some("appA"));
        let _other = testing::client(&proxy, 3, Some("appB"));
        let mut env = testing::env(&proxy, &me);
        env.viewer = Some("appA".into());
        let mut conn = ConnState::new(0, true);
        let Reply::Frame(list) = client(&req(&["CLIENT", "LIST"]), &mut conn, &env) else {
            panic!("a list");
        };
        let list = String::from_utf8_lossy(&list);
        assert!(list.contains("id=1 ") && list.contains("id=2 ") && !list.contains("id=3 "));
        let killed = client(&req(&["CLIENT", "KILL", "ID", "3"]), &mut conn, &env);
        assert_eq!(killed, Reply::Frame(int(0)));
        let me_too = client(
            &req(&["CLIENT", "KILL", "ID", "1", "SKIPME", "no"]),
            &mut conn,
            &env,
        );
        assert_eq!(me_too, Reply::ThenClose(int(1)));
    }

    #[test]
    fn reply_off_and_skip_answer_nothing() {
        let proxy = testing::proxy("");
        let me = testing::client(&proxy, 1, None);
        let env = testing::env(&proxy, &me);
        let mut conn = ConnState::new(0, true);
        assert_eq!(
            client(&req(&["CLIENT", "REPLY", "OFF"]), &mut conn, &env),
            Reply::Nothing
        );
        assert_eq!(
            client(&req(&["CLIENT", "REPLY", "ON"]), &mut conn, &env),
            Reply::ok()
        );
    }
}
