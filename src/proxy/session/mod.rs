//! One client connection, from accept to close.
//!
//! A single task owns the socket and all of the client's state, so nothing here is shared or
//! locked. Each turn of the loop: parse every complete request in the read buffer and route it;
//! move answered replies, in request order, into the write queue; write what the socket takes;
//! then wait for whichever comes first: more bytes from the client, a reply from upstream, room
//! to write, or shutdown. Reading pauses (backpressure) while `max_pipeline` requests are
//! unanswered or `max_output_bytes` wait to be written.
//!
//! Its parts, each a type of its own: `io` (the socket and its buffers), `sender` (where
//! requests go, with `outbox`, the batches), [`replies`] (request order), `conn` (what Redis
//! keeps per connection), `lease` (the pinned connection), `view` (the config in force, the
//! identity's ACL), `share` (its place in its identity's fair share). A
//! request's way: the gate and the lane (`lane`), else the general path's phases (`phases`:
//! admit, access check (`access`), rewrite, route and send), sending (`forward`), the way back (`back`);
//! the commands rekey answers itself are functions in `cmd`, applied by `local`; pub/sub and
//! tracking (`streams`), transactions and blocking commands (`pinned`), scoped flushes
//! (`flush`), cluster routing (`cluster_route`), and what other clients see of this one
//! (`visibility`). It must not know how keys are rewritten (that is [`crate::rules`]) or what
//! a command's arguments mean (that is [`crate::commands`]).

mod access;
mod back;
mod cluster_route;
mod cmd;
mod conn;
mod flush;
mod forward;
mod io;
mod lane;
mod lease;
mod local;
mod outbox;
mod phases;
mod pinned;
pub mod replies;
mod sender;
mod share;
mod streams;
mod view;
mod visibility;

use crate::commands;
use crate::config::Config;
use crate::protocol::encode;
use crate::protocol::RequestParser;
use crate::proxy::clients::Registered;
use crate::proxy::session::replies::ReplyQueue;
use crate::proxy::Proxy;
use crate::rules::memory::PrefixMemory;
use crate::rules::rewrite::{ReplyCtx, Scope};
use crate::stats;
use crate::transport::Transport;
use crate::upstream::{mailbox, Inbox};
use crate::wire::reserve_read_from;
use bytes::Bytes;
use conn::ConnState;
pub use conn::ReplyMode;
use io::ClientIo;
use lease::{AtExec, Lease};
use sender::Sender;
use share::Tenancy;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use view::ConfigView;

/// What the session is doing with the request being dispatched.
pub(super) struct Current {
    /// Its command id (metrics).
    pub(super) cmd: u16,
    /// When it arrived (latency).
    pub(super) start: Instant,
    /// How to map its reply back, taken by [`Session::forward`].
    pub(super) ctx: Option<Box<ReplyCtx>>,
    /// It is one Redis queues (MULTI is open).
    pub(super) queueing: bool,
    /// While someone monitors: what it became upstream, when a rule rewrote it.
    pub(super) upstream_form: Option<Bytes>,
}

impl Current {
    fn new() -> Current {
        Current {
            cmd: 0,
            start: Instant::now(),
            ctx: None,
            queueing: false,
            upstream_form: None,
        }
    }
}

/// A client as a worker accepted it.
pub struct Accepted {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub fd: i64,
    /// The app its listener names, if any.
    pub app: Option<String>,
    /// The worker thread that serves it (its shared pools are that worker's).
    pub worker: usize,
}

/// Everything rekey knows about one client.
pub struct Session {
    proxy: Arc<Proxy>,
    /// This client's entry in the registry of live clients (its id, address, app; CLIENT
    /// LIST/KILL).
    client: Registered,
    /// The socket and its buffers (see [`io`]).
    io: ClientIo,
    /// Where requests go (see [`sender`]).
    sender: Sender,
    /// Replies in request order (see [`replies`]), and the mailbox they arrive in.
    replies: ReplyQueue,
    inbox: Inbox,
    lookups: commands::LookupCache,
    /// What Redis keeps per connection, emulated per client (see [`conn`]).
    conn: ConnState,
    /// The pinned connection and the state that lives on it (see [`lease`]).
    lease: Lease,
    /// The config in force (see [`view`]).
    view: ConfigView,
    /// The request being dispatched.
    current: Current,
    /// The upstream prefixes this client's keys were rewritten to (reply mapping).
    memory: PrefixMemory,
    /// The EXEC that carries `at_exec` changes, by sequence number: applied when its reply
    /// says the transaction ran (an array, not `-EXECABORT` or a nil for a failed WATCH).
    exec_effects: Option<(u64, AtExec)>,
    /// MULTI was answered but not yet sent: the node is chosen by the first queued command.
    cluster_multi: bool,
    closing: bool,
    /// Its place in its identity's share: counted client, pinned connection, budget.
    tenancy: Tenancy,
}

impl Session {
    pub fn new(proxy: Arc<Proxy>, stream: Transport, accepted: Accepted) -> Session {
        let Accepted {
            peer,
            local,
            fd,
            app,
            worker,
        } = accepted;
        let view = ConfigView::new(&proxy.config);
        let db = view.cfg.upstream.db();
        let authed = !view.cfg.auth.required();
        let (rd, wr) = stream.into_split();
        let parser = RequestParser {
            max_bulk: view.limits.max_bulk_bytes,
            max_array: view.limits.max_array_len,
        };
        let (sink, inbox) = mailbox::mailbox();
        let id = proxy
            .next_client_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client = proxy.registry.register(crate::proxy::clients::NewClient {
            id,
            addr: peer,
            laddr: local,
            fd,
            app,
        });
        let mut session = Session {
            sender: Sender::new(&proxy, sink, db, worker),
            proxy,
            client,
            io: ClientIo::new(rd, wr, parser),
            replies: ReplyQueue::default(),
            inbox,
            lookups: commands::LookupCache::default(),
            conn: ConnState::new(db, authed),
            lease: Lease::default(),
            view,
            current: Current::new(),
            memory: PrefixMemory::default(),
            exec_effects: None,
            cluster_multi: false,
            closing: false,
            tenancy: Tenancy::default(),
        };
        if !session.refresh_label() {
            session.reply(encode::error(share::MAX_CLIENTS));
            session.closing = true;
        }
        session
    }

    /// Serves the client until it leaves, misbehaves, or shutdown drains it.
    pub async fn run(mut self: Box<Self>, shutdown: CancellationToken) {
        let mut stopping = shutdown.is_cancelled();
        if stopping {
            self.closing = true;
        }
        let idle = self.view.limits.idle_timeout;
        let idle_sleep = tokio::time::sleep(idle.unwrap_or(std::time::Duration::from_secs(3600)));
        // Made once, not per turn: each registers with its signal when first polled.
        let cancelled = shutdown.cancelled();
        let killed = Arc::clone(&self.client.handle).killed();
        tokio::pin!(idle_sleep, cancelled, killed);
        let pause = tokio::time::sleep(self.pause_left());
        tokio::pin!(pause);
        loop {
            self.drain_ready();
            if !self.io.need_input && self.can_read() && !self.paused() {
                let before = self.replies.next_seq();
                self.take_input().await;
                self.spend_budget(self.replies.next_seq() - before);
                self.drain_ready();
            }
            self.publish_activity();
            if !self.io.out.is_empty() {
                let before = self.io.out.len();
                if self.io.out.try_write(&self.io.wr).is_err() {
                    break;
                }
                stats::stats()
                    .bytes_out
                    .increment((before - self.io.out.len()) as u64);
            }
            if self.closing && self.replies.is_empty() && self.io.out.is_empty() {
                break;
            }
            let paused = self.paused();
            if !self.io.need_input && self.can_read() && !paused {
                // Requests wait in the read buffer and the pipeline has room again: replies
                // rekey made itself filled it, and no delivery will come to wake the loop for
                // them. Let the worker's other clients run, then go on parsing.
                tokio::task::yield_now().await;
                continue;
            }
            let read_ok = self.can_read() && !paused;
            if paused {
                pause
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.pause_left());
            }
            let mut room = 0;
            if read_ok {
                self.shrink_idle_buffers();
                reserve_read_from(&mut self.io.rbuf, self.io.read_size.want());
                room = self.io.rbuf.capacity() - self.io.rbuf.len();
            }
            tokio::select! {
                biased;
                Some(d) = self.inbox.recv() => {
                    self.on_delivery(d);
                    for _ in 0..4096 {
                        match self.inbox.try_recv() {
                            Some(d) => self.on_delivery(d),
                            None => break,
                        }
                    }
                }
                r = self.io.rd.read_buf(&mut self.io.rbuf), if read_ok => {
                    match r {
                        Ok(0) | Err(_) => {
                            self.closing = true;
                            if self.lease.blocking > 0 {
                                // As Redis does: a client that leaves while blocked is gone at
                                // once, and so is the connection blocked on its behalf.
                                break;
                            }
                        }
                        Ok(n) => {
                            stats::stats().bytes_in.increment(n as u64);
                            self.io.read_size.after_read(room, n);
                            self.io.need_input = false;
                            self.current.start = Instant::now();
                        }
                    }
                    if let Some(t) = idle {
                        idle_sleep.as_mut().reset(tokio::time::Instant::now() + t);
                    }
                }
                r = self.io.wr.writable(), if !self.io.out.is_empty() => {
                    if r.is_err() {
                        break;
                    }
                }
                _ = &mut cancelled, if !stopping => {
                    stopping = true;
                    self.closing = true;
                }
                _ = &mut killed => break,
                _ = &mut pause, if paused => {}
                _ = &mut idle_sleep, if idle.is_some() && !self.lease.subs.active() && self.replies.is_empty() => break,
            }
        }
        self.stop_monitoring();
        self.end_pin_on_close();
    }

    /// Gives back the memory of a burst once the client is idle again.
    fn shrink_idle_buffers(&mut self) {
        self.forget_answered_batches();
        self.io.shrink_idle();
        self.sender.outbox.shrink_idle();
    }

    /// The config this command runs under: the transaction's snapshot, or the current one.
    pub(super) fn config(&mut self) -> Arc<Config> {
        self.refresh_config();
        self.view.in_force().clone()
    }

    /// Picks up a reloaded config (one atomic load when nothing changed).
    pub(super) fn refresh_config(&mut self) {
        if self.view.refresh() {
            self.refresh_label();
        }
    }

    /// Follows the client's identity (its listener's app, its AUTH user) into the metrics'
    /// `app` label, its ACL and its share: after AUTH, RESET, and a reload that may name new
    /// apps or users. False when the identity is at its `max_clients`.
    pub(super) fn refresh_label(&mut self) -> bool {
        self.view.relabel(identity(&self.client, &self.conn));
        self.follow_own_upstream();
        self.follow_share()
    }

    /// Upstream prefixes this client's keys were rewritten to.
    pub(super) fn memory_prefixes(&self) -> Vec<Vec<u8>> {
        self.memory.upstream_prefixes()
    }

    /// The client's identity for rules: its listener's app, else its AUTH user name.
    pub(super) fn identity(&self) -> Option<&str> {
        identity(&self.client, &self.conn)
    }

    /// The rewrite scope of this client under `config`.
    pub(super) fn scope<'a>(&'a mut self, config: &'a Config) -> Scope<'a> {
        scope(config, &self.client, &self.conn, &mut self.memory)
    }

    pub(super) fn can_read(&self) -> bool {
        !self.closing
            && self.replies.len() < self.view.limits.max_pipeline
            && self.io.out.len() < self.view.limits.max_output_bytes
    }

    /// Routes what the client sent. The lane takes what it can in place; whatever is left (a
    /// request it does not take, or part of one) goes the general way, whose state (every
    /// step a request may wait in) is on the heap only while it runs: kept inline, it would
    /// make every client's task several KiB larger, idle or not.
    async fn take_input(&mut self) {
        self.forward_lane();
        if self.io.rbuf.is_empty() {
            self.io.need_input = true;
            self.flush_batch();
        } else {
            Box::pin(self.process_input()).await;
        }
    }

    /// Parses and routes complete requests while the pipeline has room.
    async fn process_input(&mut self) {
        self.parse_and_route().await;
        self.flush_batch();
    }

    async fn parse_and_route(&mut self) {
        while self.can_read() {
            // Runs of plainly forwarded requests take the short path; the rest come here.
            self.forward_lane();
            if !self.can_read() {
                return;
            }
            match self.io.parser.parse(&mut self.io.rbuf) {
                Ok(Some(req)) => {
                    if !req.is_empty() {
                        self.dispatch(req).await;
                    }
                }
                Ok(None) => {
                    self.io.need_input = true;
                    return;
                }
                Err(e) => {
                    tracing::debug!(client = self.client.id, peer = %self.client.addr, error = %e, "protocol error");
                    stats::stats().protocol_errors.increment(1);
                    self.conn.reply_mode = ReplyMode::On;
                    self.current.cmd = 0;
                    self.reply(encode::error(&format!("ERR Protocol error: {e}")));
                    self.closing = true;
                    return;
                }
            }
        }
    }

    /// Whether the proxy's upstream was swapped since this session took its pool.
    pub(super) fn upstream_moved(&mut self) -> bool {
        self.sender.upstream_moved()
    }

    /// Switches the shared pool after a change of protocol or db, or of the upstream.
    pub(super) fn switch_pool(&mut self) {
        let (proto, db) = (self.conn.proto, self.conn.db);
        self.sender.switch(proto, db, self.lease.pin.as_ref());
    }
}

/// A client's identity for rules and metrics: its listener's app, else its AUTH user name.
fn identity<'a>(client: &'a Registered, conn: &'a ConnState) -> Option<&'a str> {
    client.app.as_deref().or(conn.user.as_deref())
}

/// The rewrite scope of a client under `config`: the rules, its identity and its prefix
/// memory (borrowed field by field, so that the session's other parts stay usable).
fn scope<'a>(
    config: &'a Config,
    client: &'a Registered,
    conn: &'a ConnState,
    memory: &'a mut PrefixMemory,
) -> Scope<'a> {
    memory.sync_generation(config.generation);
    Scope {
        rules: &config.rules,
        app: identity(client, conn),
        memory,
    }
}
