//! The connection-scoped commands rekey answers itself, as functions of the client's
//! connection state and the proxy: `fn(&Request, &mut ConnState, &Env) -> Reply`, one small
//! file per family (in the spirit of mini-redis's `cmd/`), each testable without a session
//! or a socket. A function changes the state Redis would change for the connection (its
//! protocol, db, name, login, reply mode) and says what the client gets; the session applies
//! what follows from the change (a new protocol or db moves it to another shared pool) in
//! `local`.
//!
//! - [`acl`]: ACL WHOAMI/CAT/DRYRUN/GETUSER/LIST/USERS/LOG for rekey's own identities.
//! - [`auth`]: AUTH, HELLO.
//! - [`connection`]: SELECT, READONLY/READWRITE, UNSUBSCRIBE outside subscribe mode.
//! - [`client`]: CLIENT SETNAME/GETNAME/SETINFO/ID/INFO/LIST/KILL/REPLY/NO-EVICT/NO-TOUCH.

pub(super) mod acl;
pub(super) mod auth;
pub(super) mod client;
pub(super) mod connection;

use crate::protocol::encode::{self, Encoder, Proto};
use crate::proxy::clients::ClientHandle;
use crate::proxy::Proxy;
use bytes::Bytes;

/// What a command may read of its surroundings besides the connection state.
pub(super) struct Env<'a> {
    pub(super) proxy: &'a Proxy,
    /// The client's own entry in the registry (its id, `CLIENT INFO` line, flags).
    pub(super) me: &'a ClientHandle,
    /// Whose clients this one sees and may kill (`None`: all).
    pub(super) viewer: Option<String>,
    /// The client holds a pinned connection (Redis keeps state for it there).
    pub(super) pinned: bool,
    /// The metrics' `app` label of the client's identity.
    pub(super) label: &'a str,
}

/// What the client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// This frame.
    Frame(Bytes),
    /// This frame; the request also goes, quietly, to the pinned connection if there is one
    /// (its state follows the client's: `CLIENT SETNAME`).
    Mirror(Bytes),
    /// Nothing (`CLIENT REPLY OFF`/`SKIP`).
    Nothing,
    /// Redis answers it: the session forwards the request as it is.
    Forward,
    /// This frame, then the connection closes (`CLIENT KILL` of itself).
    ThenClose(Bytes),
}

impl Reply {
    fn error(msg: &str) -> Reply {
        Reply::Frame(encode::error(msg))
    }

    fn ok() -> Reply {
        Reply::Frame(encode::simple("OK"))
    }

    /// True for an error reply (the command changed nothing).
    pub(super) fn is_error(&self) -> bool {
        matches!(self, Reply::Frame(f) | Reply::ThenClose(f) if f.first() == Some(&b'-'))
    }
}

fn wrong_args(name: &str) -> Reply {
    Reply::error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A name Redis accepts for a client (no spaces, newlines or special characters).
fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

pub(super) fn bulk(data: &[u8]) -> Bytes {
    let mut e = Encoder::new(Proto::Resp2);
    e.bulk(data);
    e.finish()
}

fn int(n: i64) -> Bytes {
    let mut e = Encoder::new(Proto::Resp2);
    e.int(n);
    e.finish()
}

fn null(proto: Proto) -> Bytes {
    let mut e = Encoder::new(proto);
    e.null();
    e.finish()
}

/// A text reply: verbatim in RESP3, bulk in RESP2 (CLIENT LIST/INFO).
fn verbatim(proto: Proto, text: &str) -> Bytes {
    let mut e = Encoder::new(proto);
    e.verbatim(text.as_bytes());
    e.finish()
}

#[cfg(test)]
pub(super) mod testing {
    //! A proxy and a client entry for the commands' unit tests (no socket, no Redis).
    use super::Env;
    use crate::config::Config;
    use crate::proxy::clients::{NewClient, Registered, Registry};
    use crate::proxy::{Proxy, UpstreamInfo};
    use crate::upstream::Upstream;
    use arc_swap::ArcSwap;
    use std::sync::Arc;

    /// A proxy with the config `toml` (its upstream is never contacted).
    pub(crate) fn proxy(toml: &str) -> Arc<Proxy> {
        let config = Config::parse(toml).expect("a valid test config");
        let url = config.upstream.template().clone();
        let upstream = Upstream::new(config.upstream_settings(url));
        Arc::new(Proxy {
            config: Arc::new(ArcSwap::from_pointee(config)),
            upstream: Arc::new(ArcSwap::new(upstream)),
            cluster: None,
            next_client_id: Default::default(),
            clients: Default::default(),
            registry: Registry::default(),
            upstream_info: UpstreamInfo::default(),
            metrics: None,
            acl_log: Default::default(),
            tenants: Default::default(),
            own_upstreams: Default::default(),
        })
    }

    /// Registers client `id` (of `app`, if any) with `proxy`.
    pub(crate) fn client(proxy: &Proxy, id: u64, app: Option<&str>) -> Registered {
        proxy.registry.register(NewClient {
            id,
            addr: "127.0.0.1:50000".parse().unwrap(),
            laddr: "127.0.0.1:6380".parse().unwrap(),
            fd: 9,
            app: app.map(str::to_string),
        })
    }

    /// The environment of `me`, unpinned, seeing every client.
    pub(crate) fn env<'a>(proxy: &'a Proxy, me: &'a Registered) -> Env<'a> {
        Env {
            proxy,
            me,
            viewer: None,
            pinned: false,
            label: "-",
        }
    }
}
