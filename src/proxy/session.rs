//! One client connection, from accept to close.
//!
//! A single task owns the socket and all of the client's state, so nothing here is shared or
//! locked. Each turn of the loop: parse every complete request in the read buffer and route it;
//! move answered replies, in request order, into the write queue; write what the socket takes;
//! then wait for whichever comes first: more bytes from the client, a reply from upstream, room
//! to write, or shutdown. Reading pauses (backpressure) while `max_pipeline` requests are
//! unanswered or `max_output_bytes` wait to be written.

use crate::commands::{self, Class, CommandSpec, Extra, Local, Pin};
use crate::config::{Config, Limits};
use crate::protocol::encode::{self, Proto};
use crate::protocol::reply;
use crate::protocol::{Request, RequestParser};
use crate::proxy::cluster_route::opens_cluster_multi;
use crate::proxy::replies::{Ready, ReplyQueue, SlotInfo};
use crate::proxy::streams::Subscriptions;
use crate::proxy::Proxy;
use crate::rules::memory::PrefixMemory;
use crate::rules::rewrite::{self, ReplyCtx, Scope};
use crate::stats;
use crate::transport::{ReadHalf, Transport, WriteHalf};
use crate::upstream::conn::each_reply;
use crate::upstream::{Delivery, Job, PinnedConn, ReplyTo, SharedPool, Sink};
use crate::wire::{reserve_read_from, WriteQueue};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `CLIENT REPLY` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyMode {
    On,
    Off,
    /// Skip the reply to the next command only.
    Skip,
}

/// Everything rekey knows about one client.
pub struct Session {
    pub(super) id: u64,
    pub(super) peer: SocketAddr,
    pub(super) app: Option<String>,
    pub(super) proxy: Arc<Proxy>,
    rd: ReadHalf,
    wr: WriteHalf,
    pub(super) rbuf: BytesMut,
    need_input: bool,
    out: WriteQueue,
    pub(super) replies: ReplyQueue,
    pub(super) sink: Sink,
    inbox: mpsc::UnboundedReceiver<Delivery>,
    pub(super) parser: RequestParser,
    pub(super) lookups: commands::LookupCache,
    limits: Limits,
    // Connection-scoped state, emulated per client.
    pub(super) proto: Proto,
    pub(super) db: u32,
    pub(super) name: Option<Bytes>,
    pub(super) lib_name: Option<Bytes>,
    pub(super) lib_ver: Option<Bytes>,
    pub(super) authed: bool,
    pub(super) user: Option<String>,
    pub(super) reply_mode: ReplyMode,
    pub(super) shared: Arc<SharedPool>,
    pub(super) slot: usize,
    /// The upstream generation `shared` belongs to; a reload with a new upstream bumps it.
    pub(super) upstream_gen: u64,
    // Pinned-connection state.
    pub(super) pin: Option<PinnedConn>,
    pub(super) in_multi: bool,
    pub(super) watching: bool,
    /// Subscriptions (see `streams`): set when a SUBSCRIBE-family command is sent, cleared
    /// when Redis confirms none are left.
    pub(super) subs: Subscriptions,
    /// `CLIENT TRACKING ON` is in force on the pinned connection.
    pub(super) tracking: bool,
    pub(super) blocking: usize,
    /// Requests went to one upstream connection and the next go to another (a pin was
    /// returned, the pool changed): before sending more, wait for what is in flight.
    pub(super) barrier: bool,
    /// In MULTI: the reply contexts of the queued commands, for mapping EXEC's array back.
    pub(super) queued: Vec<Option<Box<ReplyCtx>>>,
    /// The request being routed is one Redis queues (MULTI is open).
    queueing: bool,
    /// What queued `SELECT` / `CLIENT SETNAME` change for the client once EXEC runs them.
    pub(super) at_exec: AtExec,
    /// The EXEC that carries `at_exec` changes, by sequence number: applied when its reply
    /// says the transaction ran (an array, not `-EXECABORT` or a nil for a failed WATCH).
    exec_effects: Option<(u64, AtExec)>,
    /// Give the pinned connection back once every request sent on it is answered.
    pub(super) release_when_answered: bool,
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
    cfg_gen: u64,
    /// Requests routed but not yet sent (see [`Session::forward`]).
    batch: Option<Batch>,
    pub(super) batch_buf: BytesMut,
    batch_big: Option<Bytes>,
    /// A rewritten request on its way into `batch_buf`.
    scratch: BytesMut,
    // Cluster mode (see `cluster_route`).
    /// Shared pools of the cluster nodes this client has used, by node id.
    pub(super) node_pools: Vec<(u64, Arc<SharedPool>)>,
    /// The upstream the next pinned connection comes from (a cluster node), if not the default.
    pub(super) pin_hint: Option<Arc<crate::upstream::Upstream>>,
    /// MULTI was answered but not yet sent: the node is chosen by the first queued command.
    pub(super) cluster_multi: bool,
    /// This client's entry in the registry of live clients (CLIENT LIST/KILL).
    pub(super) client: crate::proxy::clients::Registered,
}

/// Connection state changed by commands queued in MULTI, applied at EXEC.
#[derive(Debug, Default)]
pub(super) struct AtExec {
    pub(super) db: Option<u32>,
    /// `Some(None)`: the name is cleared.
    pub(super) name: Option<Option<Bytes>>,
}

impl AtExec {
    fn is_empty(&self) -> bool {
        self.db.is_none() && self.name.is_none()
    }
}

/// Consecutive requests for one upstream connection, sent as one job.
struct Batch {
    target: Target,
    first_seq: u64,
    count: u32,
}

/// Where a batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The shared pool: the client's own (0), or a cluster node's (its id).
    Shared(u64),
    /// The client's pinned connection (its id).
    Pinned(u64),
}

/// Batched request bytes are sent once they reach this size; a larger request goes alone.
pub(super) const BATCH_BYTES: usize = 16 * 1024;

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
        let db = config.upstream.db;
        let authed = !config.auth.required();
        let (rd, wr) = stream.into_split();
        let (sink, inbox) = mpsc::unbounded_channel();
        let upstream_gen = proxy
            .upstream_gen
            .load(std::sync::atomic::Ordering::Acquire);
        let shared = proxy.upstream.load().shared(Proto::Resp2, db);
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
            proto: Proto::Resp2,
            db,
            name: None,
            lib_name: None,
            lib_ver: None,
            authed,
            user: None,
            reply_mode: ReplyMode::On,
            shared,
            slot,
            upstream_gen,
            pin: None,
            in_multi: false,
            watching: false,
            subs: Subscriptions::default(),
            tracking: false,
            blocking: 0,
            barrier: false,
            queued: Vec::new(),
            queueing: false,
            at_exec: AtExec::default(),
            exec_effects: None,
            release_when_answered: false,
            closing: false,
            memory: PrefixMemory::default(),
            pending_ctx: None,
            snapshot: None,
            current_cmd: 0,
            current_start: Instant::now(),
            app_stats: stats::AppCommands::of(crate::rules::NO_LABEL),
            cfg: proxy.config.load_full(),
            cfg_gen: proxy.config_gen.load(std::sync::atomic::Ordering::Acquire),
            batch: None,
            batch_buf: BytesMut::new(),
            batch_big: None,
            scratch: BytesMut::new(),
            node_pools: Vec::new(),
            pin_hint: None,
            cluster_multi: false,
            client,
            proxy,
        };
        session.refresh_label();
        session
    }

    /// Serves the client until it leaves, misbehaves, or shutdown drains it.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut stopping = shutdown.is_cancelled();
        if stopping {
            self.closing = true;
        }
        let idle = self.limits.idle_timeout;
        let idle_sleep = tokio::time::sleep(idle.unwrap_or(std::time::Duration::from_secs(3600)));
        tokio::pin!(idle_sleep);
        loop {
            self.drain_ready();
            if !self.need_input && self.can_read() {
                self.process_input().await;
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
            let read_ok = self.can_read();
            if read_ok {
                self.shrink_idle_buffers();
                reserve_read_from(&mut self.rbuf, 4096);
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
                            if self.blocking > 0 {
                                // As Redis does: a client that leaves while blocked is gone at
                                // once, and so is the connection blocked on its behalf.
                                break;
                            }
                        }
                        Ok(n) => {
                            stats::stats().bytes_in.increment(n as u64);
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
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    self.closing = true;
                }
                _ = self.client.killed() => break,
                _ = &mut idle_sleep, if idle.is_some() && !self.subs.active() && self.replies.is_empty() => break,
            }
        }
        self.end_pin_on_close();
    }

    /// Gives back the memory of a burst once the client is idle again.
    fn shrink_idle_buffers(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 64 * 1024 {
            self.rbuf = BytesMut::new();
        }
        if self.batch_buf.is_empty() && self.batch_buf.capacity() > 4 * BATCH_BYTES {
            self.batch_buf = BytesMut::new();
        }
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
            silent: self.take_silent(),
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
        let current = self
            .proxy
            .config_gen
            .load(std::sync::atomic::Ordering::Acquire);
        if current != self.cfg_gen {
            self.cfg = self.proxy.config.load_full();
            self.cfg_gen = current;
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
        self.app.as_deref().or(self.user.as_deref())
    }

    pub(super) fn scope<'a>(&'a mut self, config: &'a Config) -> Scope<'a> {
        self.memory.sync_generation(config.generation);
        Scope {
            rules: &config.rules,
            app: self.app.as_deref().or(self.user.as_deref()),
            memory: &mut self.memory,
        }
    }

    pub(super) fn can_read(&self) -> bool {
        !self.closing
            && self.replies.len() < self.limits.max_pipeline
            && self.out.len() < self.limits.max_output_bytes
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
                    self.reply_mode = ReplyMode::On;
                    self.current_cmd = 0;
                    self.reply(encode::error(&format!("ERR Protocol error: {e}")));
                    self.closing = true;
                    return;
                }
            }
        }
    }

    /// Routes one request: the single place every request passes before it is forwarded.
    async fn dispatch(&mut self, req: Request) {
        let spec = self.lookups.lookup(&req);
        self.current_cmd = spec.id;
        if !self.authed
            && !matches!(
                spec.class,
                Class::Local(Local::Auth | Local::Hello | Local::Quit | Local::Reset)
            )
        {
            return self.reply(encode::error("NOAUTH Authentication required."));
        }
        if self.pin.as_ref().is_some_and(|p| p.is_closed()) {
            return self.pinned_conn_lost();
        }
        // A reply rekey makes waits for frames still owed on the subscribed connection.
        let local = match spec.class {
            Class::Local(Local::Ping | Local::Echo) => self.pin.is_none(),
            Class::Local(_) | Class::Refuse(_) => true,
            _ => false,
        };
        if self.barrier || (local && self.subs.waiting()) {
            self.settle().await;
        }
        if self.upstream_gen
            != self
                .proxy
                .upstream_gen
                .load(std::sync::atomic::Ordering::Acquire)
        {
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
            && !self.in_multi
            && !self.pipe_mode()
            && self.proxy.cluster.is_none();
        let config = self.snapshot.as_ref().unwrap_or(&self.cfg);
        self.memory.sync_generation(config.generation);
        let mut scope = Scope {
            rules: &config.rules,
            app: self.app.as_deref().or(self.user.as_deref()),
            memory: &mut self.memory,
        };
        // Encoded into `scratch` only when it can go straight into the batch.

        let (outcome, ctx) = rewrite::rewrite_into(
            &mut scope,
            spec,
            &req,
            direct.then_some(&mut self.scratch),
            BATCH_BYTES,
        );
        self.pending_ctx = ctx;
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
        if self.pipe_mode() && !always_local(spec.class, &req) {
            return self.forward_stream(req);
        }
        if spec.class != Class::Forward {
            self.flush_batch();
        }
        if spec.class == Class::Local(Local::Unsubscribe) && self.subs.active() {
            return self.forward_stream(req);
        }
        if self.cluster_multi && self.pin.is_none() && opens_cluster_multi(spec.class) {
            self.start_cluster_multi(spec, &req).await;
        }
        if self.in_multi && queued_in_multi(spec.class) {
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
        if let Some(name) = transaction_arity_error(pin, &req).filter(|_| !self.in_multi) {
            if self.subs.waiting() {
                self.settle().await;
            }
            return self.reply(encode::error(&format!(
                "ERR wrong number of arguments for '{name}' command"
            )));
        }
        if self.proxy.cluster.is_some() && self.pin.is_none() {
            if pin == Pin::Multi && !self.in_multi {
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
                    if !self.in_multi {
                        self.snapshot = Some(self.proxy.config.load_full());
                    }
                    self.in_multi = true;
                    self.forward(req.raw().clone(), false);
                }
            }
            Pin::Exec | Pin::Discard => {
                if self.pin.is_none() {
                    let name = if pin == Pin::Exec { "EXEC" } else { "DISCARD" };
                    return self.reply(encode::error(&format!("ERR {name} without MULTI")));
                }
                let queued = std::mem::take(&mut self.queued);
                let at_exec = std::mem::take(&mut self.at_exec);
                let effects = pin == Pin::Exec && self.in_multi && !at_exec.is_empty();
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
                if self.in_multi {
                    self.in_multi = false;
                    self.watching = false;
                    self.snapshot = None;
                }
                self.release_if_idle();
            }
            Pin::Watch => {
                if self.in_multi || self.ensure_pinned().await {
                    if !self.in_multi {
                        self.watching = true;
                    }
                    self.forward(req.raw().clone(), false);
                }
            }
            Pin::Unwatch => {
                if self.pin.is_none() {
                    return self.reply(encode::simple("OK"));
                }
                self.forward(req.raw().clone(), false);
                if !self.in_multi {
                    self.watching = false;
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
        if self.in_multi {
            return self.forward(req.raw().clone(), false); // does not block inside MULTI
        }
        if self.ensure_pinned().await {
            self.blocking += 1;
            self.forward(req.raw().clone(), true);
        }
    }

    /// Borrows a pinned connection if the client has none; false (with an error reply) if
    /// none can be had.
    pub(super) async fn ensure_pinned(&mut self) -> bool {
        self.flush_batch();
        if self.pin.is_some() {
            return true;
        }
        // What went on the shared connection runs before anything on the pinned one.
        self.settle().await;
        let upstream = match self.pin_hint.take() {
            Some(node) => node,
            None => self.proxy.upstream.load_full(),
        };
        match upstream.pin(self.proto, self.db).await {
            Ok(conn) => {
                // Frames that answer no request (pushes, messages) come to this client.
                conn.send(Job::Send {
                    payload: Bytes::new(),
                    reply: ReplyTo::Stream(self.sink.clone()),
                });
                if let Some(name) = &self.name {
                    conn.send_quiet(&Request::from_args([&b"CLIENT"[..], b"SETNAME", name]));
                }
                self.pin = Some(conn);
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
        if self.needs_pin() {
            return;
        }
        if let Some(conn) = self.pin.take() {
            conn.release();
            self.barrier = true;
        }
    }

    /// As Redis does: the connection state a transaction's queued commands change takes
    /// effect when EXEC runs them.
    fn apply_at_exec(&mut self, at_exec: AtExec) {
        if let Some(name) = at_exec.name {
            self.name = name;
        }
        if let Some(db) = at_exec.db {
            self.db = db;
            self.switch_pool();
        }
    }

    /// True while some connection state lives on the pinned connection.
    fn needs_pin(&self) -> bool {
        self.in_multi || self.watching || self.subs.active() || self.tracking || self.blocking > 0
    }

    /// RESP2 with subscriptions: Redis answers only (un)subscribe, PING, QUIT and RESET, in
    /// frames that look like messages, so the pinned connection is relayed as a stream.
    pub(super) fn pipe_mode(&self) -> bool {
        self.subs.active() && self.proto == Proto::Resp2
    }

    /// Waits until every request already sent upstream is answered. Redis runs one
    /// connection's requests in order, but not those of two connections: a request about to
    /// go on another connection (a pin taken or returned) must not overtake them.
    pub(super) async fn settle(&mut self) {
        self.flush_batch();
        while self.replies.has_unanswered() || self.subs.waiting() {
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
                let db = req.arg(1).and_then(crate::protocol::request::parse_int);
                if let Some(db) = db.filter(|&n| n >= 0 && req.len() == 2) {
                    self.at_exec.db = Some(db as u32);
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
        if let Some(conn) = self.pin.take() {
            if self.blocking > 0 {
                conn.close();
            } else {
                conn.release();
            }
        }
        self.in_multi = false;
        self.watching = false;
        self.subs = Subscriptions::default();
        self.tracking = false;
        self.blocking = 0;
        self.snapshot = None;
        self.queued.clear();
        self.at_exec = AtExec::default();
    }

    fn pinned_conn_lost(&mut self) {
        self.flush_batch();
        self.pin = None;
        self.in_multi = false;
        self.watching = false;
        self.subs = Subscriptions::default();
        self.tracking = false;
        self.blocking = 0;
        self.queued.clear();
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
        let resend = (node != 0 && self.pin.is_none()).then(|| payload.clone()); // a cluster may redirect it
        let big = payload.len() >= BATCH_BYTES;
        self.open_request(blocking, node, big, resend);
        if big {
            self.batch_big = Some(payload); // large: sent as is, never copied
            self.flush_batch();
            return;
        }
        self.batch_buf.extend_from_slice(&payload);
        self.close_request();
    }

    /// [`Session::forward`] of the request encoded in `scratch` (a rewritten one, smaller
    /// than a batch).
    fn forward_scratch(&mut self) {
        self.open_request(false, 0, false, None);
        self.batch_buf.extend_from_slice(&self.scratch);
        self.close_request();
    }

    /// Opens the reply slot of a request about to be appended to the batch, first sending the
    /// batch if the request cannot join it (another connection, or `big`: it goes alone).
    fn open_request(&mut self, blocking: bool, node: u64, big: bool, resend: Option<Bytes>) {
        let mut info = self.slot_info(blocking);
        info.resend = resend;
        if std::mem::take(&mut self.queueing) {
            self.queued.push(info.ctx.take()); // its reply is +QUEUED; EXEC's carries it
        }
        let target = match &self.pin {
            Some(c) => Target::Pinned(c.id),
            None => Target::Shared(node),
        };
        let seq = self.replies.expect(info);
        self.join_batch(target, seq, big);
    }

    /// Adds request `seq` for `target` to the batch, first sending the batch if the request
    /// cannot join it (another connection, or `big`: it goes alone).
    fn join_batch(&mut self, target: Target, seq: u64, big: bool) {
        match &mut self.batch {
            Some(b) if !big && b.target == target && b.first_seq + b.count as u64 == seq => {
                b.count += 1
            }
            _ => {
                self.flush_batch();
                self.batch = Some(Batch {
                    target,
                    first_seq: seq,
                    count: 1,
                });
            }
        }
    }

    /// [`Session::open_request`] for the lane: a plain request of `current_cmd` for the
    /// client's shared connection (the lane runs only when nothing else is possible).
    pub(super) fn open_plain_request(&mut self) {
        let seq = self
            .replies
            .expect_plain(self.current_cmd, self.current_start);
        self.join_batch(Target::Shared(0), seq, false);
    }

    /// Sends the batch once it is large enough.
    fn close_request(&mut self) {
        if self.batch_buf.len() >= BATCH_BYTES {
            self.flush_batch();
        }
    }

    /// Sends the batched requests, if any, as one job.
    pub(super) fn flush_batch(&mut self) {
        let Some(b) = self.batch.take() else { return };
        let payload = match self.batch_big.take() {
            Some(big) => big,
            None => self.batch_buf.split().freeze(),
        };
        let job = Job::Send {
            payload,
            reply: ReplyTo::Client {
                sink: self.sink.clone(),
                seq: b.first_seq,
                count: b.count,
            },
        };
        match b.target {
            Target::Pinned(_) => match &self.pin {
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
        match &self.pin {
            Some(conn) => conn.send(Job::Send {
                payload: req.raw().clone(),
                reply: ReplyTo::Stream(self.sink.clone()),
            }),
            None => return self.reply(encode::error("ERR rekey: no subscribe connection")),
        }
        self.subs.sent(&req);
        if !self.subs.active() {
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

    fn take_silent(&mut self) -> bool {
        match self.reply_mode {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.reply_mode = ReplyMode::On;
                true
            }
        }
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
            Delivery::Lost => {
                if self.pin.is_some() && self.needs_pin() {
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
                self.blocking -= 1;
                self.release_if_idle();
            }
            if self.release_when_answered && !self.replies.has_unanswered() {
                self.release_when_answered = false;
                self.release_if_idle();
            }
        }
    }

    /// Switches the shared pool after a change of protocol or db.
    pub(super) fn switch_pool(&mut self) {
        self.flush_batch();
        // A pinned client's requests keep going on its pinned connection, in order.
        self.barrier |= self.pin.is_none();
        self.upstream_gen = self
            .proxy
            .upstream_gen
            .load(std::sync::atomic::Ordering::Acquire);
        self.shared = self.proxy.upstream.load().shared(self.proto, self.db);
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
