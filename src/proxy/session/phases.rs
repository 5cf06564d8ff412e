//! The life of one request through the general path, in named phases, top to bottom:
//!
//! 1. **admit**: the connection may send it (authenticated, its pinned connection alive),
//!    what went before on another connection is answered first, the config in force is
//!    picked up;
//! 2. **access check**: whether the client's identity may run it, by its ACL, on the names
//!    it sent (`access`);
//! 3. **rewrite** the keys and channels by the rules, remembering how to map the reply back;
//! 4. **route and send**: the subscribe stream, queued in a transaction, a cluster node, the
//!    client's shared connection (batched, see `forward`), a pinned connection (`pinned`), a
//!    side connection, or answered by rekey: the connection-scoped commands are functions of
//!    the connection state (`cmd`), applied by `local`.
//!
//! And back (`back`): collect → order → map back → write. Plain runs of data commands skip
//! all of this through the lane (`lane`), which [`Session::lane_open`] lets run only when the
//! general path would do exactly what it does.

use crate::commands::{Class, CommandSpec, Extra, Local};
use crate::protocol::encode;
use crate::protocol::Request;
use crate::proxy::session::cluster_route::opens_cluster_multi;
use crate::proxy::session::outbox::BATCH_BYTES;
use crate::proxy::session::pinned::queued_in_multi;
use crate::proxy::session::scope;
use crate::proxy::session::Session;
use crate::rules::rewrite;
use bytes::Bytes;

impl Session {
    /// Routes one request, and shows it to the clients in `MONITOR` mode when there are any.
    pub(super) async fn dispatch(&mut self, req: Request) {
        if !self.proxy.registry.monitors.active() {
            return self.route_request(req).await;
        }
        let seen = req.clone();
        let authed = self.conn.authed;
        self.current.upstream_form = None;
        self.route_request(req).await;
        self.feed_monitors(&seen, authed);
    }

    /// One request through the general path, phase by phase: the single place every
    /// request that is not a plain lane run passes.
    pub(super) async fn route_request(&mut self, req: Request) {
        let spec = self.lookups.lookup(&req);
        self.current.cmd = spec.id;
        if !self.admit(spec).await {
            return;
        }
        if let Err(refusal) = self.check_access(spec, &req).await {
            return self.reply(refusal);
        }
        let Some(req) = self.rewrite(spec, req).await else {
            return;
        };
        self.route(spec, req).await
    }

    /// Phase 1, admit: the client may send this now (authenticated, or the command is one
    /// that authenticates; its pinned connection still there), what is in flight on another
    /// connection is answered first when it must be, and the session follows a swapped
    /// upstream and a reloaded config. False when the request was answered here.
    async fn admit(&mut self, spec: &'static CommandSpec) -> bool {
        let logs_in = matches!(
            spec.class,
            Class::Local(Local::Auth | Local::Hello | Local::Quit | Local::Reset)
        );
        if !self.conn.authed && !logs_in {
            self.reply(encode::error("NOAUTH Authentication required."));
            return false;
        }
        if self.lease.pin.as_ref().is_some_and(|p| p.is_closed()) {
            self.pinned_conn_lost();
            return false;
        }
        // A reply rekey makes waits for frames still owed on the subscribed connection (PING
        // and ECHO are Redis's to answer, in order on the client's connection).
        let local = match spec.class {
            Class::Local(Local::Ping | Local::Echo) => false,
            Class::Local(_) | Class::Refuse(_) => true,
            _ => false,
        };
        if self.sender.barrier || (local && self.lease.subs.waiting()) {
            self.settle().await;
        }
        if self.upstream_moved() {
            self.switch_pool();
        }
        self.refresh_config();
        true
    }

    /// Phase 2, access: whether this client's identity may run the command on these keys
    /// and channels, by its ACL, on the names it sent (before any rule); see `access`.
    async fn check_access(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
    ) -> Result<(), Bytes> {
        match self.access_refusal(spec, req).await {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Phase 3, rewrite: the rules applied to the request's keys and channels (a flush from
    /// a client whose keys are rewritten is refused or scoped here). `None` when nothing is
    /// left to route: the request was answered, or went straight into the batch.
    async fn rewrite(&mut self, spec: &'static CommandSpec, req: Request) -> Option<Request> {
        // The config is borrowed, not cloned: no reference-count traffic per command.
        let config = self.view.in_force();
        if config.rules.is_empty() {
            return Some(req);
        }
        if spec.extra == Extra::Flush && config.rules.rewrites_for(self.identity()) {
            let config = config.clone();
            self.flush(&config, &req).await;
            return None;
        }
        self.apply_rules(spec, req)
    }

    /// Rewrites the request's keys and channels; remembers how to map its reply back. A
    /// plainly forwarded request that changes is encoded straight into the batch (`None`);
    /// any other comes back for [`Session::route`].
    pub(super) fn apply_rules(
        &mut self,
        spec: &'static CommandSpec,
        req: Request,
    ) -> Option<Request> {
        let direct = spec.class == Class::Forward
            && !self.lease.in_multi
            && !self.lease.pipe_mode(self.conn.proto)
            && self.proxy.cluster.is_none();
        let config = self.view.snapshot.as_ref().unwrap_or(&self.view.cfg);
        let mut scope = scope(config, &self.client, &self.conn, &mut self.memory);
        // Encoded into `scratch` only when it can go straight into the batch.
        let (outcome, ctx) = rewrite::rewrite_into(
            &mut scope,
            spec,
            &req,
            direct.then_some(&mut self.sender.outbox.scratch),
            BATCH_BYTES,
        );
        self.current.ctx = ctx;
        if self.proxy.registry.monitors.active() {
            self.current.upstream_form = match &outcome {
                rewrite::Outcome::Unchanged => None,
                rewrite::Outcome::Rebuilt(new) => Some(new.raw().clone()),
                rewrite::Outcome::Encoded => {
                    Some(Bytes::copy_from_slice(&self.sender.outbox.scratch))
                }
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

    /// Phase 4, route and send: on the subscribe stream, queued in a transaction, to a
    /// cluster node, forwarded on the client's connection, answered by rekey (connection-scoped
    /// commands, `local`), on a pinned connection, or refused.
    pub(super) async fn route(&mut self, spec: &'static CommandSpec, req: Request) {
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
        self.current.ctx = None;
    }
}

/// Commands rekey answers itself even in subscribe mode.
pub(super) fn always_local(class: Class, req: &Request) -> bool {
    match class {
        Class::Local(Local::Quit | Local::Reset | Local::Auth) | Class::Refuse(_) => true,
        Class::Local(Local::Client) => {
            req.arg_is(1, "KILL") || req.arg_is(1, "REPLY") || req.arg_is(1, "SETINFO")
        }
        _ => false,
    }
}
