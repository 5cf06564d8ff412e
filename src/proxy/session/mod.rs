//! One client connection, from accept to close.
//!
//! A single task owns the socket and all of the client's state, so nothing here is shared or
//! locked. Each turn of the loop: parse every complete request in the read buffer and route it;
//! move answered replies, in request order, into the write queue; write what the socket takes;
//! then wait for whichever comes first: more bytes from the client, a reply from upstream, room
//! to write, or shutdown. Reading pauses (backpressure) while `max_pipeline` requests are
//! unanswered or `max_output_bytes` wait to be written.
//!
//! Its parts: `conn` (what Redis keeps per connection), `lease` (the pinned connection),
//! `outbox` (batching); its impl files: `lane`, `local`, `streams`, `flush`, `cluster_route`;
//! [`replies`] restores request order. It must not know how keys are rewritten (that is
//! [`crate::rules`]) or what a command's arguments mean (that is [`crate::commands`]).

mod cluster_route;
mod conn;
mod flush;
mod lane;
mod lease;
mod local;
mod outbox;
pub mod replies;
mod streams;

use crate::commands::{self, Class, CommandSpec, Extra, Local, Pin};
use crate::config::{Config, Limits};
use crate::protocol::encode::{self, Proto};
use crate::protocol::reply;
use crate::protocol::{Request, RequestParser};
use crate::proxy::session::cluster_route::opens_cluster_multi;
use crate::proxy::session::replies::{Ready, ReplyQueue, SlotInfo};
use crate::proxy::Proxy;
use crate::rules::memory::PrefixMemory;
use crate::rules::rewrite::{self, ReplyCtx, Scope};
use crate::stats;
use crate::transport::{ReadHalf, Transport, WriteHalf};
use crate::upstream::conn::each_reply;
use crate::upstream::{Delivery, Job, ReplyTo, SharedPool, Sink, Upstream};
use crate::wire::{reserve_read_from, ReadSize, WriteQueue};
use arc_swap::{ArcSwap, Cache};
use bytes::{Bytes, BytesMut};
use conn::ConnState;
pub use conn::ReplyMode;
use lease::{AtExec, Ending, Lease};
use outbox::{Batch, Outbox, Target, BATCH_BYTES};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything rekey knows about one client.
pub struct Session {
    pub(super) id: u64,
    pub(super) peer: SocketAddr,
    pub(super) app: Option<String>,
    pub(super) proxy: Arc<Proxy>,
    rd: ReadHalf,
    wr: WriteHalf,
    pub(super) rbuf: BytesMut,
    /// How much the next read of the client may take.
    read_size: ReadSize,
    need_input: bool,
    out: WriteQueue,
    pub(super) replies: ReplyQueue,
    pub(super) sink: Sink,
    inbox: mpsc::UnboundedReceiver<Delivery>,
    pub(super) parser: RequestParser,
    pub(super) lookups: commands::LookupCache,
    limits: Limits,
    /// What Redis keeps per connection, emulated per client (see [`conn`]).
    conn: ConnState,
    pub(super) shared: Arc<SharedPool>,
    pub(super) slot: usize,
    /// The upstream `shared` belongs to, and the proxy's live one (a reload with a new
    /// upstream, or a Sentinel failover, swaps it): when the two differ, the session moves.
    upstream: Arc<Upstream>,
    upstream_live: Cache<Arc<ArcSwap<Upstream>>, Arc<Upstream>>,
    /// The pinned connection and the state that lives on it (see [`lease`]).
    lease: Lease,
    /// Requests went to one upstream connection and the next go to another (a pin was
    /// returned, the pool changed): before sending more, wait for what is in flight.
    pub(super) barrier: bool,
    /// The request being routed is one Redis queues (MULTI is open).
    queueing: bool,
    /// The EXEC that carries `at_exec` changes, by sequence number: applied when its reply
    /// says the transaction ran (an array, not `-EXECABORT` or a nil for a failed WATCH).
    exec_effects: Option<(u64, AtExec)>,
    pub(super) closing: bool,
    // Rewriting state.
    pub(super) memory: PrefixMemory,
    /// The reply context of the request being dispatched, taken by [`Session::forward`].
    pub(super) pending_ctx: Option<Box<ReplyCtx>>,
    /// The config a transaction started with: rules do not change between MULTI and EXEC.
    pub(super) snapshot: Option<Arc<Config>>,
    /// The request being dispatched: its command id and when it arrived (metrics).
    pub(super) current_cmd: u16,
    pub(super) current_start: Instant,
    /// The config in force, refreshed when the proxy's config generation moves.
    pub(super) cfg: Arc<Config>,
    /// The command counters of this client's `app` label (its identity, as the config names
    /// it), kept up to date by [`Session::refresh_label`].
    app_stats: Arc<stats::AppCommands>,
    /// The proxy's config as it is now (one pointer compare to check).
    cfg_live: Cache<Arc<ArcSwap<Config>>, Arc<Config>>,
    /// Requests routed but not yet sent (see [`Session::forward`]).
    outbox: Outbox,
    // Cluster mode (see `cluster_route`).
    /// Shared pools of the cluster nodes this client has used, by node id.
    pub(super) node_pools: Vec<(u64, Arc<SharedPool>)>,
    /// The upstream the next pinned connection comes from (a cluster node), if not the default.
    pub(super) pin_hint: Option<Arc<crate::upstream::Upstream>>,
    /// MULTI was answered but not yet sent: the node is chosen by the first queued command.
    pub(super) cluster_multi: bool,
    /// This client's entry in the registry of live clients (CLIENT LIST/KILL).
    pub(super) client: crate::proxy::clients::Registered,
    /// While someone monitors: what the request being dispatched became upstream, when a
    /// rule rewrote it (its RESP bytes).
    upstream_form: Option<Bytes>,
}

impl Session {
    pub fn new(
        proxy: Arc<Proxy>,
        stream: Transport,
        peer: SocketAddr,
        local: SocketAddr,
        fd: i64,
        app: Option<String>,
    ) -> Session {
        let config = proxy.config.load();
        let limits = config.limits.clone();
        let db = config.upstream.db();
        let authed = !config.auth.required();
        let (rd, wr) = stream.into_split();
        let (sink, inbox) = mpsc::unbounded_channel();
        let upstream = proxy.upstream.load_full();
        let shared = upstream.shared(Proto::Resp2, db);
        let slot = shared.pick();
        let id = proxy
            .next_client_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client = proxy.registry.register(crate::proxy::clients::NewClient {
            id,
            addr: peer,
            laddr: local,
            fd,
            app: app.clone(),
        });
        let mut session = Session {
            id,
            peer,
            app,
            rd,
            wr,
            rbuf: BytesMut::new(),
            read_size: ReadSize::default(),
            need_input: true,
            out: WriteQueue::new(),
            replies: ReplyQueue::default(),
            sink,
            inbox,
            parser: RequestParser {
                max_bulk: limits.max_bulk_bytes,
                max_array: limits.max_array_len,
            },
            lookups: commands::LookupCache::default(),
            limits,
            conn: ConnState::new(db, authed),
            shared,
            slot,
            upstream_live: Cache::new(Arc::clone(&proxy.upstream)),
            upstream,
            lease: Lease::default(),
            barrier: false,
            queueing: false,
            exec_effects: None,
            closing: false,
            memory: PrefixMemory::default(),
            pending_ctx: None,
            snapshot: None,
            current_cmd: 0,
            current_start: Instant::now(),
            app_stats: stats::AppCommands::of(crate::rules::NO_LABEL),
            cfg: proxy.config.load_full(),
            cfg_live: Cache::new(Arc::clone(&proxy.config)),
            outbox: Outbox::default(),
            node_pools: Vec::new(),
            pin_hint: None,
            cluster_multi: false,
            client,
            upstream_form: None,
            proxy,
        };
        session.refresh_label();
        session
    }

    /// Serves the client until it leaves, misbehaves, or shutdown drains it.
    pub async fn run(mut self: Box<Self>, shutdown: CancellationToken) {
        let mut stopping = shutdown.is_cancelled();
        if stopping {
            self.closing = true;
        }
        let idle = self.limits.idle_timeout;
        let idle_sleep = tokio::time::sleep(idle.unwrap_or(std::time::Duration::from_secs(3600)));
        // Made once, not per turn: each registers with its signal when first polled.
        let cancelled = shutdown.cancelled();
        let killed = Arc::clone(&self.client.handle).killed();
        tokio::pin!(idle_sleep, cancelled, killed);
        loop {
            self.drain_ready();
            if !self.need_input && self.can_read() {
                self.take_input().await;
                self.drain_ready();
            }
            self.publish_activity();
            if !self.out.is_empty() {
                let before = self.out.len();
                if self.out.try_write(&self.wr).is_err() {
                    break;
                }
                stats::stats()
                    .bytes_out
                    .increment((before - self.out.len()) as u64);
            }
            if self.closing && self.replies.is_empty() && self.out.is_empty() {
                break;
            }
            if !self.need_input && self.can_read() {
                // Requests wait in the read buffer and the pipeline has room again: replies
                // rekey made itself filled it, and no delivery will come to wake the loop for
                // them. Let the worker's other clients run, then go on parsing.
                tokio::task::yield_now().await;
                continue;
            }
            let read_ok = self.can_read();
            let mut room = 0;
            if read_ok {
                self.shrink_idle_buffers();
                reserve_read_from(&mut self.rbuf, self.read_size.want());
                room = self.rbuf.capacity() - self.rbuf.len();
            }
            tokio::select! {
                biased;
                Some(d) = self.inbox.recv() => {
                    self.on_delivery(d);
                    for _ in 0..4096 {
                        match self.inbox.try_recv() {
                            Ok(d) => self.on_delivery(d),
                            Err(_) => break,
                        }
                    }
                }
                r = self.rd.read_buf(&mut self.rbuf), if read_ok => {
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
                            self.read_size.after_read(room, n);
                            self.need_input = false;
                            self.current_start = Instant::now();
                        }
                    }
                    if let Some(t) = idle {
                        idle_sleep.as_mut().reset(tokio::time::Instant::now() + t);
                    }
                }
                r = self.wr.writable(), if !self.out.is_empty() => {
                    if r.is_err() {
                        break;
                    }
                }
                _ = &mut cancelled, if !stopping => {
                    stopping = true;
                    self.closing = true;
                }
                _ = &mut killed => break,
                _ = &mut idle_sleep, if idle.is_some() && !self.lease.subs.active() && self.replies.is_empty() => break,
            }
        }
        self.stop_monitoring();
        self.end_pin_on_close();
    }

    /// Gives back the memory of a burst once the client is idle again.
    fn shrink_idle_buffers(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 64 * 1024 {
            self.rbuf = BytesMut::new();
        }
        self.outbox.shrink_idle();
    }

    /// Moves answered replies, in request order, to the write queue, counting each. Runs of
    /// replies to the same command, and to requests read together, are counted at once.
    fn drain_ready(&mut self) {
        if !self.replies.front_ready() {
            return;
        }
        let now = Instant::now();
        let mut tally = self.tally();
        while let Some(Ready { mut frame, info }) = self.replies.pop_ready() {
            if let Some(info) = info {
                tally.add(now, info.cmd, reply::is_error(&frame), info.started, 1);
                if info.silent {
                    continue;
                }
                if let Some(ctx) = info.ctx {
                    let config = self.config();
                    let scope = self.scope(&config);
                    frame = rewrite::map_reply(&scope, &ctx, frame);
                } else if reply::is_error(&frame) && !self.cfg.rules.is_empty() {
                    let config = self.config();
                    let scope = self.scope(&config);
                    frame = rewrite::map_error(&scope, &[], frame);
                }
            }
            self.out.push(&frame);
        }
        tally.flush(now);
    }

    /// What a new slot for the current request records, for a reply made outside `forward`.
    pub(super) fn slot_info_for_local(&mut self) -> SlotInfo {
        self.slot_info(false)
    }

    /// A transaction keeps the config it started with.
    pub(super) fn begin_snapshot(&mut self) {
        self.snapshot = Some(self.proxy.config.load_full());
    }

    pub(super) fn end_snapshot(&mut self) {
        self.snapshot = None;
    }

    /// What a new slot for the current request records.
    fn slot_info(&mut self, blocking: bool) -> SlotInfo {
        SlotInfo {
            blocking,
            silent: self.conn.take_silent(),
            ctx: self.pending_ctx.take(),
            cmd: self.current_cmd,
            started: self.current_start,
            resend: None,
            redirects: 0,
        }
    }

    /// The config this command runs under: the transaction's snapshot, or the current one.
    pub(super) fn config(&mut self) -> Arc<Config> {
        self.refresh_config();
        self.snapshot.as_ref().unwrap_or(&self.cfg).clone()
    }

    /// Picks up a reloaded config (one atomic load when nothing changed).
    pub(super) fn refresh_config(&mut self) {
        let live = self.cfg_live.load();
        if !Arc::ptr_eq(live, &self.cfg) {
            self.cfg = Arc::clone(live);
            self.refresh_label();
        }
    }

    /// Follows the client's identity (its listener's app, its AUTH user) into the metrics'
    /// `app` label: after AUTH, RESET, and a reload that may name new apps or users.
    pub(super) fn refresh_label(&mut self) {
        let rules = &self.cfg.rules;
        let label = rules
            .labels()
            .get(rules.label_of(self.identity()))
            .map_or(crate::rules::NO_LABEL, String::as_str);
        if self.app_stats.label() != label {
            self.app_stats = stats::AppCommands::of(label);
        }
    }

    /// A tally of replies for this client's counters.
    fn tally(&self) -> Tally {
        Tally::new(self.app_stats.clone(), self.cfg.metrics.command_latency)
    }

    /// Upstream prefixes this client's keys were rewritten to.
    pub(super) fn memory_prefixes(&self) -> Vec<Vec<u8>> {
        self.memory.upstream_prefixes()
    }

    /// The client's identity for rules: its listener's app, else its AUTH user name.
    pub(super) fn identity(&self) -> Option<&str> {
        self.app.as_deref().or(self.conn.user.as_deref())
    }

    pub(super) fn scope<'a>(&'a mut self, config: &'a Config) -> Scope<'a> {
        self.memory.sync_generation(config.generation);
        Scope {
            rules: &config.rules,
            app: self.app.as_deref().or(self.conn.user.as_deref()),
            memory: &mut self.memory,
        }
    }

    pub(super) fn can_read(&self) -> bool {
        !self.closing
            && self.replies.len() < self.limits.max_pipeline
            && self.out.len() < self.limits.max_output_bytes
    }

    /// Routes what the client sent. The lane takes what it can in place; whatever is left (a
    /// request it does not take, or part of one) goes the general way, whose state (every
    /// step a request may wait in) is on the heap only while it runs: kept inline, it would
    /// make every client's task several KiB larger, idle or not.
    async fn take_input(&mut self) {
        self.forward_lane();
        if self.rbuf.is_empty() {
            self.need_input = true;
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
            match self.parser.parse(&mut self.rbuf) {
                Ok(Some(req)) => {
                    if !req.is_empty() {
                        self.dispatch(req).await;
                    }
                }
                Ok(None) => {
                    self.need_input = true;
                    return;
                }
                Err(e) => {
                    tracing::debug!(client = self.id, peer = %self.peer, error = %e, "protocol error");
                    stats::stats().protocol_errors.increment(1);
                    self.conn.reply_mode = ReplyMode::On;
                    self.current_cmd = 0;
                    self.reply(encode::error(&format!("ERR Protocol error: {e}")));
                    self.closing = true;
                    return;
                }
            }
        }
    }

    /// Routes one request, and shows it to the clients in `MONITOR` mode when there are any.
    async fn dispatch(&mut self, req: Request) {
        if !self.proxy.registry.monitors.active() {
            return self.route_request(req).await;
        }
        let seen = req.clone();
        let authed = self.conn.authed;
        self.upstream_form = None;
        self.route_request(req).await;
        self.feed_monitors(&seen, authed);
    }

    /// Routes one request: the single place every request passes before it is forwarded.
    async fn route_request(&mut self, req: Request) {
        let spec = self.lookups.lookup(&req);
        self.current_cmd = spec.id;
        if !self.conn.authed
            && !matches!(
                spec.class,
                Class::Local(Local::Auth | Local::Hello | Local::Quit | Local::Reset)
            )
        {
            return self.reply(encode::error("NOAUTH Authentication required."));
        }
        if self.lease.pin.as_ref().is_some_and(|p| p.is_closed()) {
            return self.pinned_conn_lost();
        }
        // A reply rekey makes waits for frames still owed on the subscribed connection (PING
        // and ECHO are Redis's to answer, in order on the client's connection).
        let local = match spec.class {
            Class::Local(Local::Ping | Local::Echo) => false,
            Class::Local(_) | Class::Refuse(_) => true,
            _ => false,
        };
        if self.barrier || (local && self.lease.subs.waiting()) {
            self.settle().await;
        }
        if self.upstream_moved() {
            self.switch_pool();
        }
        // The config is borrowed, not cloned: no reference-count traffic per command.
        self.refresh_config();
        let config = self.snapshot.as_ref().unwrap_or(&self.cfg);
        if config.rules.is_empty() {
            return self.route(spec, req).await;
        }
        if spec.extra == Extra::Flush && config.rules.rewrites_for(self.identity()) {
            let config = config.clone();
            return self.flush(&config, &req).await;
        }
        if let Some(req) = self.apply_rules(spec, req) {
            self.route(spec, req).await
        }
    }

    /// Rewrites the request's keys and channels; remembers how to map its reply back. A
    /// plainly forwarded request that changes is encoded straight into the batch (`None`);
    /// any other comes back for [`Session::route`].
    fn apply_rules(&mut self, spec: &'static CommandSpec, req: Request) -> Option<Request> {
        let direct = spec.class == Class::Forward
            && !self.lease.in_multi
            && !self.lease.pipe_mode(self.conn.proto)
            && self.proxy.cluster.is_none();
        let config = self.snapshot.as_ref().unwrap_or(&self.cfg);
        self.memory.sync_generation(config.generation);
        let mut scope = Scope {
            rules: &config.rules,
            app: self.app.as_deref().or(self.conn.user.as_deref()),
            memory: &mut self.memory,
        };
        // Encoded into `scratch` only when it can go straight into the batch.

        let (outcome, ctx) = rewrite::rewrite_into(
            &mut scope,
            spec,
            &req,
            direct.then_some(&mut self.outbox.scratch),
            BATCH_BYTES,
        );
        self.pending_ctx = ctx;
        if self.proxy.registry.monitors.active() {
            self.upstream_form = match &outcome {
                rewrite::Outcome::Unchanged => None,
                rewrite::Outcome::Rebuilt(new) => Some(new.raw().clone()),
                rewrite::Outcome::Encoded => Some(Bytes::copy_from_slice(&self.outbox.scratch)),
            };
        }
        match outcome {
            rewrite::Outcome::Unchanged => Some(req),
            rewrite::Outcome::Rebuilt(new) => Some(new),
            rewrite::Outcome::Encoded => {
                self.forward_scratch();
                None
            }
        }
    }

    async fn route(&mut self, spec: &'static CommandSpec, req: Request) {
        // RESP2 in subscribe mode: the pinned connection is a transparent pipe.
        if self.lease.pipe_mode(self.conn.proto) && !always_local(spec.class, &req) {
            return self.forward_stream(req);
        }
        if !matches!(
            spec.class,
            Class::Forward | Class::Local(Local::Ping | Local::Echo)
        ) {
            self.flush_batch();
        }
        if spec.class == Class::Local(Local::Unsubscribe) && self.lease.subs.active() {
            return self.forward_stream(req);
        }
        if self.cluster_multi && self.lease.pin.is_none() && opens_cluster_multi(spec.class) {
            self.start_cluster_multi(spec, &req).await;
        }
        if self.lease.in_multi && queued_in_multi(spec.class) {
            return self.queue_in_multi(spec, req).await;
        }
        match spec.class {
            Class::Forward if self.proxy.cluster.is_some() => self.cluster_forward(spec, req),
            Class::Forward => self.forward(req.into_raw(), false),
            Class::Local(local) => self.local(local, req).await,
            Class::Pin(pin) => self.pinned(pin, req).await,
            Class::Refuse(msg) => self.refuse(msg, req),
        }
        self.pending_ctx = None;
    }

    async fn pinned(&mut self, pin: Pin, req: Request) {
        if let Some(name) = transaction_arity_error(pin, &req).filter(|_| !self.lease.in_multi) {
            if self.lease.subs.waiting() {
                self.settle().await;
            }
            return self.reply(encode::error(&format!(
                "ERR wrong number of arguments for '{name}' command"
            )));
        }
        if self.proxy.cluster.is_some() && self.lease.pin.is_none() {
            if pin == Pin::Multi && !self.lease.in_multi {
                return self.defer_cluster_multi();
            }
            if matches!(pin, Pin::Exec | Pin::Discard) && self.cluster_multi {
                return self.end_empty_cluster_multi(pin);
            }
            self.hint_pin_node(commands::lookup(&req), &req);
        }
        match pin {
            Pin::Multi => {
                if self.ensure_pinned().await {
                    if !self.lease.in_multi {
                        self.snapshot = Some(self.proxy.config.load_full());
                    }
                    self.lease.in_multi = true;
                    self.forward(req.raw().clone(), false);
                }
            }
            Pin::Exec | Pin::Discard => {
                if self.lease.pin.is_none() {
                    let name = if pin == Pin::Exec { "EXEC" } else { "DISCARD" };
                    return self.reply(encode::error(&format!("ERR {name} without MULTI")));
                }
                let queued = std::mem::take(&mut self.lease.queued);
                let at_exec = std::mem::take(&mut self.lease.at_exec);
                let effects = pin == Pin::Exec && self.lease.in_multi && !at_exec.is_empty();
                if pin == Pin::Exec && (effects || !self.cfg.rules.is_empty()) {
                    // A context also keeps the reply out of plain runs: it passes `fill`.
                    self.pending_ctx = Some(Box::new(ReplyCtx {
                        queued: (!self.cfg.rules.is_empty()).then_some(queued),
                        ..ReplyCtx::default()
                    }));
                }
                if effects {
                    // What follows waits for the reply (see `fill`).
                    self.exec_effects = Some((self.replies.next_seq(), at_exec));
                    self.barrier = true;
                }
                self.forward(req.raw().clone(), false);
                if self.lease.in_multi {
                    self.lease.in_multi = false;
                    self.lease.watching = false;
                    self.snapshot = None;
                }
                self.release_if_idle();
            }
            Pin::Watch => {
                if self.lease.in_multi || self.ensure_pinned().await {
                    if !self.lease.in_multi {
                        self.lease.watching = true;
                    }
                    self.forward(req.raw().clone(), false);
                }
            }
            Pin::Unwatch => {
                if self.lease.pin.is_none() {
                    return self.reply(encode::simple("OK"));
                }
                self.forward(req.raw().clone(), false);
                if !self.lease.in_multi {
                    self.lease.watching = false;
                    self.release_if_idle();
                }
            }
            Pin::Blocking => self.forward_blocking(req).await,
            Pin::BlockingWithArg => {
                if req.args().skip(1).any(|a| a.eq_ignore_ascii_case(b"BLOCK")) {
                    self.forward_blocking(req).await
                } else {
                    self.forward(req.raw().clone(), false)
                }
            }
            Pin::Subscribe => self.subscribe(req).await,
        }
    }

    /// A blocking command runs on a pinned connection, so it blocks nobody else.
    async fn forward_blocking(&mut self, req: Request) {
        if self.lease.in_multi {
            return self.forward(req.raw().clone(), false); // does not block inside MULTI
        }
        if self.ensure_pinned().await {
            self.lease.blocking += 1;
            self.forward(req.raw().clone(), true);
        }
    }

    /// Borrows a pinned connection if the client has none; false (with an error reply) if
    /// none can be had.
    pub(super) async fn ensure_pinned(&mut self) -> bool {
        self.flush_batch();
        if self.lease.pin.is_some() {
            return true;
        }
        // What went on the shared connection runs before anything on the pinned one.
        self.settle().await;
        let upstream = match self.pin_hint.take() {
            Some(node) => node,
            None => self.proxy.upstream.load_full(),
        };
        match upstream.pin(self.conn.proto, self.conn.db).await {
            Ok(conn) => {
                // Frames that answer no request (pushes, messages) come to this client.
                conn.send(Job::Send {
                    payload: Bytes::new(),
                    reply: ReplyTo::Stream(self.sink.clone()),
                });
                if let Some(name) = &self.conn.name {
                    conn.send_quiet(&Request::from_args([&b"CLIENT"[..], b"SETNAME", name]));
                }
                self.lease.pin = Some(conn);
                self.publish_pin();
                true
            }
            Err(msg) => {
                self.reply(encode::error(&msg));
                false
            }
        }
    }

    /// Gives the pinned connection back once no state needs it.
    pub(super) fn release_if_idle(&mut self) {
        self.flush_batch();
        if self.lease.needs_pin() {
            return;
        }
        if let Some(conn) = self.lease.pin.take() {
            conn.release();
            self.barrier = true;
            self.publish_pin();
        }
    }

    /// As Redis does: the connection state a transaction's queued commands change takes
    /// effect when EXEC runs them.
    fn apply_at_exec(&mut self, at_exec: AtExec) {
        if let Some(name) = at_exec.name {
            self.conn.name = name;
        }
        if let Some(db) = at_exec.db {
            self.conn.db = db;
            self.switch_pool();
        }
    }

    /// Waits until every request already sent upstream is answered. Redis runs one
    /// connection's requests in order, but not those of two connections: a request about to
    /// go on another connection (a pin taken or returned) must not overtake them.
    pub(super) async fn settle(&mut self) {
        self.flush_batch();
        while self.replies.has_unanswered() || self.lease.subs.waiting() {
            match self.inbox.recv().await {
                Some(d) => self.on_delivery(d),
                None => break,
            }
        }
        self.barrier = false;
    }

    /// A command Redis queues inside MULTI: forwarded on the pinned connection (credential
    /// guards still apply), its reply context kept for EXEC's array (its own reply is
    /// `+QUEUED`) by [`Session::open_request`].
    async fn queue_in_multi(&mut self, spec: &'static CommandSpec, req: Request) {
        self.queueing = true;
        match spec.class {
            Class::Local(Local::Auth | Local::Hello) => self.reply(encode::error(
                "ERR rekey: AUTH and HELLO are not supported inside MULTI",
            )),
            Class::Local(cmd @ (Local::Config | Local::Acl)) => self.local(cmd, req).await,
            Class::Local(Local::Client) => {
                let req = self.client_queued(req);
                self.forward(req.into_raw(), false)
            }
            Class::Local(Local::Select) => {
                let db = req.arg(1).and_then(crate::protocol::scan::parse_int);
                if let Some(db) = db.filter(|&n| n >= 0 && req.len() == 2) {
                    self.lease.at_exec.db = Some(db as u32);
                }
                self.forward(req.into_raw(), false)
            }
            _ => self.forward(req.into_raw(), false),
        }
        self.queueing = false;
    }

    /// Ends a lease however the client left: a connection blocked on the client's behalf is
    /// closed (Redis unblocks it); any other is `RESET` and reused.
    pub(super) fn end_pin_on_close(&mut self) {
        self.flush_batch();
        match self.lease.end() {
            Ending::Nothing => return self.snapshot = None,
            Ending::Release(conn) => conn.release(),
            Ending::Close(conn) => conn.close(),
        }
        self.snapshot = None;
        self.publish_pin();
    }

    fn pinned_conn_lost(&mut self) {
        self.flush_batch();
        // The connection is gone: dropped, neither reused nor closed again.
        drop(self.lease.end());
        self.snapshot = None;
        self.publish_pin();
        self.reply(encode::error(
            "ERR rekey: the upstream connection holding this client's state was lost",
        ));
        self.closing = true;
    }

    /// Sends a request whose reply comes back 1:1, on the pinned connection if any.
    /// Consecutive requests for the same connection are batched into one job (one channel
    /// send, one wakeup), sent by [`Session::flush_batch`].
    pub(super) fn forward(&mut self, payload: Bytes, blocking: bool) {
        self.forward_on(payload, blocking, 0)
    }

    /// [`Session::forward`] to cluster node `node` (its id; 0 is the client's own pool).
    pub(super) fn forward_on(&mut self, payload: Bytes, blocking: bool, node: u64) {
        let resend = (node != 0 && self.lease.pin.is_none()).then(|| payload.clone()); // a cluster may redirect it
        let big = payload.len() >= BATCH_BYTES;
        self.open_request(blocking, node, big, resend);
        if big {
            self.outbox.set_big(payload); // large: sent as is, never copied
            self.flush_batch();
            return;
        }
        self.outbox.buf.extend_from_slice(&payload);
        self.close_request();
    }

    /// [`Session::forward`] of the request encoded in `scratch` (a rewritten one, smaller
    /// than a batch).
    fn forward_scratch(&mut self) {
        self.open_request(false, 0, false, None);
        let Outbox { buf, scratch, .. } = &mut self.outbox;
        buf.extend_from_slice(scratch);
        self.close_request();
    }

    /// Opens the reply slot of a request about to be appended to the batch, first sending the
    /// batch if the request cannot join it (another connection, or `big`: it goes alone).
    fn open_request(&mut self, blocking: bool, node: u64, big: bool, resend: Option<Bytes>) {
        let mut info = self.slot_info(blocking);
        info.resend = resend;
        if std::mem::take(&mut self.queueing) {
            self.lease.queued.push(info.ctx.take()); // its reply is +QUEUED; EXEC's carries it
        }
        let target = match &self.lease.pin {
            Some(c) => Target::Pinned(c.id),
            None => Target::Shared(node),
        };
        let seq = self.replies.expect(info);
        self.join_batch(target, seq, 1, big);
    }

    /// Adds the `count` requests from `seq` on for `target` to the batch, first sending the
    /// batch if they cannot join it (another connection, or `big`: the request goes alone).
    fn join_batch(&mut self, target: Target, seq: u64, count: u32, big: bool) {
        if let Some((batch, payload)) = self.outbox.join(target, seq, count, big) {
            self.send_batch(batch, payload);
        }
    }

    /// [`Session::open_request`] for the lane: `n` plain requests of `current_cmd` for the
    /// client's shared connection (the lane runs only when nothing else is possible).
    pub(super) fn open_plain_requests(&mut self, n: u32) {
        if n == 0 {
            return;
        }
        let seq = self
            .replies
            .expect_plain(self.current_cmd, self.current_start, n);
        self.join_batch(Target::Shared(0), seq, n, false);
    }

    /// Sends the batch once it is large enough.
    fn close_request(&mut self) {
        if self.outbox.full() {
            self.flush_batch();
        }
    }

    /// Sends the batched requests, if any, as one job.
    pub(super) fn flush_batch(&mut self) {
        if let Some((batch, payload)) = self.outbox.take() {
            self.send_batch(batch, payload);
        }
    }

    fn send_batch(&mut self, b: Batch, payload: Bytes) {
        let job = Job::Send {
            payload,
            reply: ReplyTo::Client {
                sink: self.sink.clone(),
                seq: b.first_seq,
                count: b.count,
            },
        };
        match b.target {
            Target::Pinned(_) => match &self.lease.pin {
                Some(conn) => conn.send(job),
                None => self.shared.send(self.slot, job),
            },
            Target::Shared(0) => self.shared.send(self.slot, job),
            Target::Shared(node) => self.node_pool_by_id(node).send(self.slot, job),
        }
    }

    /// Sends a request on the pinned connection in subscribe mode: every frame that comes
    /// back is relayed in arrival order.
    pub(super) fn forward_stream(&mut self, req: Request) {
        self.flush_batch();
        match &self.lease.pin {
            Some(conn) => conn.send(Job::Send {
                payload: req.raw().clone(),
                reply: ReplyTo::Stream(self.sink.clone()),
            }),
            None => return self.reply(encode::error("ERR rekey: no subscribe connection")),
        }
        self.lease.subs.sent(&req);
        if !self.lease.subs.active() {
            // The last subscription gone. Frames still owed on the stream cannot be told
            // apart from replies to what follows: that waits for them (and the connection
            // goes back, if nothing else holds it).
            self.barrier = true;
            self.release_if_idle();
        }
    }

    /// Queues a reply made by rekey, in order.
    pub(super) fn reply(&mut self, frame: Bytes) {
        let info = self.slot_info(false);
        self.replies.local(frame, info);
    }

    fn on_delivery(&mut self, d: Delivery) {
        match d {
            Delivery::Reply { seq, frame } => self.fill(seq, frame),
            Delivery::Replies {
                first_seq,
                count,
                errors,
                frames,
            } => {
                if errors == 0 && self.relay_run(first_seq, count, &frames) {
                    return;
                }
                each_reply(first_seq, count, &frames, |seq, frame| {
                    self.fill(seq, frame)
                });
            }
            Delivery::Push { frame } => self.on_push(frame),
            Delivery::Event { frame } => self.replies.push(frame),
            Delivery::Lost => {
                if self.lease.pin.is_some() && self.lease.needs_pin() {
                    self.pinned_conn_lost();
                }
            }
        }
    }

    /// Writes a run of replies to the oldest requests as one piece when none of them needs
    /// work of its own (the common case: no key names to map back, no redirects to follow).
    fn relay_run(&mut self, first_seq: u64, count: u32, frames: &Bytes) -> bool {
        if self.proxy.cluster.is_some() {
            return false;
        }
        let now = Instant::now();
        let mut tally = self.tally();
        let taken = self.replies.take_plain_run(first_seq, count, |info, n| {
            tally.add(now, info.cmd, false, info.started, n as u64)
        });
        if taken {
            tally.flush(now);
            self.out.push(frames);
        }
        taken
    }

    fn fill(&mut self, seq: u64, frame: Bytes) {
        if self.exec_effects.as_ref().is_some_and(|(s, _)| *s == seq) {
            if let Some((_, at_exec)) = self.exec_effects.take() {
                if frame.first() == Some(&b'*') && !frame.starts_with(b"*-1") {
                    self.apply_at_exec(at_exec);
                }
            }
        }
        if self.proxy.cluster.is_some() && self.follow_redirect(seq, &frame) {
            return;
        }
        if let Some(filled) = self.replies.fill(seq, frame) {
            if filled.blocking {
                self.lease.blocking -= 1;
                self.release_if_idle();
            }
            if self.lease.release_when_answered && !self.replies.has_unanswered() {
                self.lease.release_when_answered = false;
                self.release_if_idle();
            }
        }
    }

    /// Whether the proxy's upstream was swapped since this session took its pool.
    pub(super) fn upstream_moved(&mut self) -> bool {
        !Arc::ptr_eq(self.upstream_live.load(), &self.upstream)
    }

    /// Switches the shared pool after a change of protocol or db, or of the upstream.
    pub(super) fn switch_pool(&mut self) {
        self.flush_batch();
        // A pinned client's requests keep going on its pinned connection, in order.
        self.barrier |= self.lease.pin.is_none();
        self.upstream = Arc::clone(self.upstream_live.load());
        self.shared = self.upstream.shared(self.conn.proto, self.conn.db);
        self.slot = self.shared.pick();
    }
}

/// Run-length counting of written replies: per (command, result) and per arrival time.
struct Tally {
    /// The counters of the client's `app` label.
    counters: Arc<stats::AppCommands>,
    /// `metrics.command_latency`: also record each command's latency.
    per_command: bool,
    command: Option<(u16, bool, u64)>,
    latency: Option<(Instant, u64)>,
}

impl Tally {
    fn new(counters: Arc<stats::AppCommands>, per_command: bool) -> Tally {
        Tally {
            counters,
            per_command,
            command: None,
            latency: None,
        }
    }

    /// Counts `n` replies to command `cmd` whose requests arrived at `started`.
    fn add(&mut self, now: Instant, cmd: u16, error: bool, started: Instant, n: u64) {
        if self.per_command {
            let took = now.saturating_duration_since(started).as_secs_f64();
            stats::stats()
                .command_latency(cmd)
                .record_many(took, n as usize);
        }
        match &mut self.command {
            Some((c, e, count)) if *c == cmd && *e == error => *count += n,
            _ => {
                self.flush_command();
                self.command = Some((cmd, error, n));
            }
        }
        match &mut self.latency {
            Some((s, count)) if *s == started => *count += n,
            _ => {
                self.flush_latency(now);
                self.latency = Some((started, n));
            }
        }
    }

    fn flush_command(&mut self) {
        if let Some((cmd, error, n)) = self.command.take() {
            let counters = self.counters.command(cmd);
            match error {
                true => counters.error.increment(n),
                false => counters.ok.increment(n),
            }
        }
    }

    fn flush_latency(&mut self, now: Instant) {
        if let Some((started, n)) = self.latency.take() {
            stats::stats()
                .latency
                .record(now.saturating_duration_since(started), n);
        }
    }

    fn flush(&mut self, now: Instant) {
        self.flush_command();
        self.flush_latency(now);
    }
}

/// The command's name when a transaction command has the wrong number of arguments: Redis
/// answers that alone (no transaction starts or ends), so rekey does too, taking no pin.
fn transaction_arity_error(pin: Pin, req: &Request) -> Option<&'static str> {
    let (name, ok) = match pin {
        Pin::Multi => ("multi", req.len() == 1),
        Pin::Exec => ("exec", req.len() == 1),
        Pin::Discard => ("discard", req.len() == 1),
        Pin::Unwatch => ("unwatch", req.len() == 1),
        Pin::Watch => ("watch", req.len() >= 2),
        _ => return None,
    };
    (!ok).then_some(name)
}

/// True for the commands Redis queues between MULTI and EXEC (all but the transaction's own
/// and the connection-ending ones).
fn queued_in_multi(class: Class) -> bool {
    !matches!(
        class,
        Class::Pin(Pin::Multi | Pin::Exec | Pin::Discard | Pin::Watch)
            | Class::Local(Local::Quit | Local::Reset)
    )
}

/// Commands rekey answers itself even in subscribe mode.
fn always_local(class: Class, req: &Request) -> bool {
    match class {
        Class::Local(Local::Quit | Local::Reset | Local::Auth) | Class::Refuse(_) => true,
        Class::Local(Local::Client) => {
            req.arg_is(1, "KILL") || req.arg_is(1, "REPLY") || req.arg_is(1, "SETINFO")
        }
        _ => false,
    }
}
