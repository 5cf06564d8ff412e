//! The live clients of this rekey process, across worker threads: what `CLIENT LIST`,
//! `CLIENT INFO` and `CLIENT KILL` describe and act on.
//!
//! Through a proxy, Redis's own client list shows the proxy's upstream connections, which
//! tell an operator nothing about the apps behind it, and killing one of them would cut every
//! client that shares it. So each session registers itself here: the facts that change
//! rarely (name, user, db, protocol, library) are published by the session when they change,
//! the last command, flags and time of activity as plain atomics once per turn of its loop,
//! and a kill is a notification the session's loop waits on. A session leaves the registry
//! when it ends (its [`Registered`] guard is dropped).

use crate::commands;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;

/// Flag bits a session publishes with its activity.
pub mod flag {
    /// Inside `MULTI` (`x`).
    pub const MULTI: u8 = 1;
    /// Waiting in a blocking command (`b`).
    pub const BLOCKED: u8 = 2;
    /// In subscribe (or tracking) mode: its connection streams (`P`).
    pub const PUBSUB: u8 = 4;
}

/// What a session publishes when it changes (rarely: AUTH, HELLO, SELECT, CLIENT …).
#[derive(Debug, Clone, Default)]
pub struct Described {
    pub name: Option<Bytes>,
    /// The AUTH user name, if any (shown as `default` otherwise).
    pub user: Option<String>,
    /// Who the client is for visibility: its app, else its proxy user when `[[users]]` are
    /// configured. `None` sees every client.
    pub identity: Option<String>,
    pub db: u32,
    pub resp: u8,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    pub no_evict: bool,
    pub no_touch: bool,
    /// The subcommand of the last `CLIENT` command (`list`), for `cmd=client|list`.
    pub client_sub: Option<String>,
    /// Redis's id of the pinned connection the client holds, while it holds one: where a
    /// `CLIENT TRACKING … REDIRECT <this client's id>` must point upstream.
    pub redis_id: Option<u64>,
}

/// One live client, shared between its session and whoever lists or kills it.
#[derive(Debug)]
pub struct ClientHandle {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub fd: i64,
    pub app: Option<String>,
    created: Instant,
    described: Mutex<Described>,
    last_cmd: AtomicU16,
    flags: AtomicU8,
    /// Milliseconds from `created` to the client's last request.
    active_ms: AtomicU64,
    kill: Notify,
    /// Set by the first kill: the client is gone for every later list or kill, even before
    /// its session has noticed.
    killed: AtomicBool,
}

impl ClientHandle {
    fn described(&self) -> MutexGuard<'_, Described> {
        // A panic while holding this lock leaves plain data behind: still usable.
        self.described.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the published description.
    pub fn update(&self, change: impl FnOnce(&mut Described)) {
        change(&mut self.described());
    }

    /// Records the last command (its table id), the flags, and when the request arrived.
    pub fn touch(&self, cmd: u16, flags: u8, at: Instant) {
        let ms = at.saturating_duration_since(self.created).as_millis() as u64;
        self.last_cmd.store(cmd, Ordering::Relaxed);
        self.flags.store(flags, Ordering::Relaxed);
        self.active_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once someone killed this client (`CLIENT KILL`). Owning its handle, the
    /// future can live across the session's loop: it registers with the kill signal once.
    pub async fn killed(self: Arc<Self>) {
        self.kill.notified().await
    }

    fn identity(&self) -> Option<String> {
        self.described().identity.clone()
    }

    fn user(&self) -> String {
        self.described()
            .user
            .clone()
            .unwrap_or_else(|| "default".into())
    }

    fn kind(&self) -> Kind {
        match self.flags.load(Ordering::Relaxed) & flag::PUBSUB {
            0 => Kind::Normal,
            _ => Kind::Pubsub,
        }
    }

    /// The client's line of `CLIENT LIST` / `CLIENT INFO`, as Redis 7 formats it (with
    /// rekey's `app=` after `name=`), newline included.
    pub fn line(&self, now: Instant) -> String {
        let d = self.described().clone();
        let text = |v: &Option<Bytes>| {
            v.as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default()
        };
        let age = now.saturating_duration_since(self.created).as_secs();
        let active = self.active_ms.load(Ordering::Relaxed) / 1000;
        let idle = age.saturating_sub(active);
        format!(
            "id={} addr={} laddr={} fd={} name={} app={} age={} idle={} flags={} db={} sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            text(&d.name),
            self.app.as_deref().unwrap_or(""),
            age,
            idle,
            flags_text(self.flags.load(Ordering::Relaxed), &d),
            d.db,
            self.cmd_name(&d),
            d.user.as_deref().unwrap_or("default"),
            d.resp,
            text(&d.lib_name),
            text(&d.lib_ver),
        )
    }

    /// `cmd=`: the last command's name, `container|sub` for CLIENT, `NULL` before any or for
    /// a command Redis does not know (as Redis shows them).
    fn cmd_name(&self, d: &Described) -> String {
        let id = self.last_cmd.load(Ordering::Relaxed);
        let name = commands::full_name(id).unwrap_or("NULL");
        match (&d.client_sub, name) {
            (Some(sub), "client") => format!("client|{sub}"),
            _ => name.to_string(),
        }
    }
}

/// Redis's flag letters, in Redis's order; `N` when none.
fn flags_text(bits: u8, d: &Described) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (flag::PUBSUB, 'P'),
        (flag::MULTI, 'x'),
        (flag::BLOCKED, 'b'),
    ] {
        if bits & bit != 0 {
            s.push(c);
        }
    }
    if d.no_evict {
        s.push('e');
    }
    if d.no_touch {
        s.push('T');
    }
    if s.is_empty() {
        s.push('N');
    }
    s
}

/// Client types of `CLIENT LIST TYPE` and `CLIENT KILL TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Pubsub,
    /// `master`, `replica`/`slave`: no client of rekey is one.
    Replication,
}

impl Kind {
    /// Redis's type names, any case; `None` for others.
    pub fn parse(name: &[u8]) -> Option<Kind> {
        match name.to_ascii_lowercase().as_slice() {
            b"normal" => Some(Kind::Normal),
            b"pubsub" => Some(Kind::Pubsub),
            b"master" | b"replica" | b"slave" => Some(Kind::Replication),
            _ => None,
        }
    }
}

/// The filters of `CLIENT KILL`, ANDed.
#[derive(Debug, Clone, Default)]
pub struct KillFilter {
    pub id: Option<u64>,
    pub addr: Option<String>,
    pub laddr: Option<String>,
    pub user: Option<String>,
    pub kind: Option<Kind>,
    /// Spare the client that asks (Redis's default for the filter form).
    pub skipme: bool,
}

impl KillFilter {
    fn matches(&self, c: &ClientHandle, me: u64) -> bool {
        self.id.is_none_or(|id| c.id == id)
            && self.addr.as_ref().is_none_or(|a| *a == c.addr.to_string())
            && self
                .laddr
                .as_ref()
                .is_none_or(|a| *a == c.laddr.to_string())
            && self.user.as_ref().is_none_or(|u| *u == c.user())
            && self.kind.is_none_or(|k| k == c.kind())
            && !(self.skipme && c.id == me)
    }
}

type Map = BTreeMap<u64, Arc<ClientHandle>>;

/// Every live client of this process, by id (the order `CLIENT LIST` shows).
#[derive(Debug, Default)]
pub struct Registry {
    map: Arc<Mutex<Map>>,
    /// The clients watching the others' commands (`MONITOR`).
    pub monitors: crate::proxy::monitor::Monitors,
}

/// A session's place in the registry; leaving it (on drop) takes the client off the list.
#[derive(Debug)]
pub struct Registered {
    pub handle: Arc<ClientHandle>,
    map: Arc<Mutex<Map>>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.map).remove(&self.handle.id);
    }
}

impl std::ops::Deref for Registered {
    type Target = ClientHandle;

    fn deref(&self) -> &ClientHandle {
        &self.handle
    }
}

fn lock(map: &Mutex<Map>) -> MutexGuard<'_, Map> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// What identifies a new client: its id and both ends of its socket.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub fd: i64,
    pub app: Option<String>,
}

impl Registry {
    /// Adds a client; it stays listed while the returned guard lives.
    pub fn register(&self, c: NewClient) -> Registered {
        let handle = Arc::new(ClientHandle {
            id: c.id,
            addr: c.addr,
            laddr: c.laddr,
            fd: c.fd,
            described: Mutex::new(Described {
                identity: c.app.clone(),
                resp: 2,
                ..Described::default()
            }),
            app: c.app,
            created: Instant::now(),
            last_cmd: AtomicU16::new(0),
            flags: AtomicU8::new(0),
            active_ms: AtomicU64::new(0),
            kill: Notify::new(),
            killed: AtomicBool::new(false),
        });
        lock(&self.map).insert(c.id, handle.clone());
        Registered {
            handle,
            map: self.map.clone(),
        }
    }

    /// The live clients not killed yet.
    fn snapshot(&self) -> Vec<Arc<ClientHandle>> {
        lock(&self.map)
            .values()
            .filter(|c| !c.killed.load(Ordering::Acquire))
            .cloned()
            .collect()
    }

    /// The clients `viewer` may see, in id order, of `kind` if given.
    pub fn list(&self, viewer: Option<&str>, kind: Option<Kind>) -> Vec<Arc<ClientHandle>> {
        self.snapshot()
            .into_iter()
            .filter(|c| visible(viewer, c) && kind.is_none_or(|k| k == c.kind()))
            .collect()
    }

    /// The client `id`, if `viewer` may see it.
    pub fn get(&self, viewer: Option<&str>, id: u64) -> Option<Arc<ClientHandle>> {
        let c = lock(&self.map).get(&id).cloned()?;
        (visible(viewer, &c) && !c.killed.load(Ordering::Acquire)).then_some(c)
    }

    /// Where `CLIENT TRACKING … REDIRECT <id>` from `viewer` points upstream when `id` is one
    /// of rekey's clients: `Some(Some(redis id))` while that client holds a pinned connection,
    /// `Some(None)` when it holds none (nothing could receive the invalidations), `None` when
    /// `id` is no client `viewer` may see (it may be an upstream id already).
    pub fn redirect_target(&self, viewer: Option<&str>, id: u64) -> Option<Option<u64>> {
        self.get(viewer, id).map(|c| c.described().redis_id)
    }

    /// True when some live client is logged in as `user`.
    pub fn has_user(&self, user: &str) -> bool {
        self.snapshot().iter().any(|c| c.user() == user)
    }

    /// Kills every client `viewer` may see that matches `filter`: each is told to close, but
    /// `me` (the asking client) is only reported, so that it can close after its reply.
    /// Returns how many matched, and whether `me` was one.
    pub fn kill(&self, viewer: Option<&str>, filter: &KillFilter, me: u64) -> (usize, bool) {
        let mut killed = 0;
        let mut me_too = false;
        for c in self.snapshot() {
            if !visible(viewer, &c) || !filter.matches(&c, me) {
                continue;
            }
            if c.id == me {
                me_too = true;
            } else if c.killed.swap(true, Ordering::AcqRel) {
                continue; // killed by someone else meanwhile
            } else {
                c.kill.notify_one();
            }
            killed += 1;
        }
        (killed, me_too)
    }
}

/// A client with an identity sees only clients of the same identity; one without sees all.
fn visible(viewer: Option<&str>, c: &ClientHandle) -> bool {
    viewer.is_none_or(|v| c.identity().as_deref() == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(r: &Registry, id: u64, app: Option<&str>) -> Registered {
        r.register(NewClient {
            id,
            addr: format!("127.0.0.1:{}", 1000 + id).parse().unwrap(),
            laddr: "127.0.0.1:6380".parse().unwrap(),
            fd: 7,
            app: app.map(String::from),
        })
    }

    #[test]
    fn clients_leave_the_list_when_their_guard_drops() {
        let r = Registry::default();
        let a = client(&r, 1, None);
        let b = client(&r, 2, None);
        assert_eq!(r.list(None, None).len(), 2);
        drop(a);
        let ids: Vec<u64> = r.list(None, None).iter().map(|c| c.id).collect();
        assert_eq!(ids, [2]);
        drop(b);
        assert!(r.list(None, None).is_empty());
    }

    #[test]
    fn identities_see_and_kill_only_their_own() {
        let r = Registry::default();
        let _a = client(&r, 1, Some("appA"));
        let _b = client(&r, 2, Some("appB"));
        let _c = client(&r, 3, None);
        assert_eq!(r.list(Some("appA"), None).len(), 1);
        assert_eq!(r.list(None, None).len(), 3);
        assert!(r.get(Some("appA"), 2).is_none());
        let all = KillFilter::default();
        assert_eq!(r.kill(Some("appB"), &all, 2), (1, true));
        let by_id = KillFilter {
            id: Some(2),
            ..KillFilter::default()
        };
        assert_eq!(r.kill(Some("appA"), &by_id, 1), (0, false));
        assert_eq!(r.kill(None, &by_id, 3), (1, false));
        assert_eq!(r.kill(None, &by_id, 3), (0, false), "killed once");
        assert!(r.get(None, 2).is_none());
    }

    #[test]
    fn filters_are_anded_and_skipme_spares_the_caller() {
        let r = Registry::default();
        let _a = client(&r, 1, None);
        let _b = client(&r, 2, None);
        let f = KillFilter {
            laddr: Some("127.0.0.1:6380".into()),
            user: Some("default".into()),
            skipme: true,
            ..KillFilter::default()
        };
        assert_eq!(r.kill(None, &f, 1), (1, false));
        let f = KillFilter {
            addr: Some("127.0.0.1:1001".into()),
            kind: Some(Kind::Pubsub),
            ..KillFilter::default()
        };
        assert_eq!(r.kill(None, &f, 2), (0, false));
    }

    #[test]
    fn a_line_has_redis_fields_in_redis_order() {
        let r = Registry::default();
        let a = client(&r, 5, Some("appA"));
        a.touch(0, flag::MULTI, Instant::now());
        let line = a.line(Instant::now());
        let names: Vec<&str> = line
            .split_whitespace()
            .map(|f| f.split('=').next().unwrap())
            .collect();
        assert_eq!(&names[..6], ["id", "addr", "laddr", "fd", "name", "app"]);
        assert!(line.contains(" flags=x "), "{line}");
        assert!(line.contains(" cmd=NULL "), "{line}");
        assert!(line.ends_with("lib-ver=\n"));
    }
}
