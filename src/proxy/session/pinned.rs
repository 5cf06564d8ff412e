//! Transactions, blocking commands and the pinned connection's life: a client whose state
//! must live on one upstream connection borrows one ([`Session::ensure_pinned`]), and gives it
//! back once nothing needs it ([`Session::release_if_idle`]). MULTI…EXEC keeps the config it
//! started with, and the connection state a queued `SELECT` or `CLIENT SETNAME` changes takes
//! effect when EXEC's reply says the transaction ran.

use crate::commands::{self, Class, CommandSpec, Local, Pin};
use crate::protocol::encode;
use crate::protocol::Request;
use crate::proxy::session::lease::{AtExec, Ending};
use crate::proxy::session::Session;
use crate::rules::rewrite::ReplyCtx;
use crate::upstream::{Job, ReplyTo};
use bytes::Bytes;

impl Session {
    pub(super) async fn pinned(&mut self, pin: Pin, req: Request) {
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
                        self.view.snapshot = Some(self.proxy.config.load_full());
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
                if pin == Pin::Exec && (effects || !self.view.cfg.rules.is_empty()) {
                    // A context also keeps the reply out of plain runs: it passes `fill`.
                    self.current.ctx = Some(Box::new(ReplyCtx {
                        queued: (!self.view.cfg.rules.is_empty()).then_some(queued),
                        ..ReplyCtx::default()
                    }));
                }
                if effects {
                    // What follows waits for the reply (see `fill`).
                    self.exec_effects = Some((self.replies.next_seq(), at_exec));
                    self.sender.barrier = true;
                }
                self.forward(req.raw().clone(), false);
                if self.lease.in_multi {
                    self.lease.in_multi = false;
                    self.lease.watching = false;
                    self.view.snapshot = None;
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
    pub(super) async fn forward_blocking(&mut self, req: Request) {
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
        if let Err(msg) = self.take_pin_slot() {
            self.reply(encode::error(&msg));
            return false;
        }
        let upstream = match self.sender.pin_hint.take() {
            Some(node) => node,
            None => self.sender.live_upstream(),
        };
        match upstream.pin(self.conn.proto, self.conn.db).await {
            Ok(conn) => {
                // Frames that answer no request (pushes, messages) come to this client.
                conn.send(Job::Send {
                    payload: Bytes::new(),
                    reply: ReplyTo::Stream(self.sender.sink.clone()),
                });
                if let Some(name) = &self.conn.name {
                    conn.send_quiet(&Request::from_args([&b"CLIENT"[..], b"SETNAME", name]));
                }
                self.lease.pin = Some(conn);
                self.publish_pin();
                true
            }
            Err(msg) => {
                self.sync_pin_slot();
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
            self.sender.barrier = true;
            self.publish_pin();
        }
    }

    /// As Redis does: the connection state a transaction's queued commands change takes
    /// effect when EXEC runs them.
    pub(super) fn apply_at_exec(&mut self, at_exec: AtExec) {
        if let Some(name) = at_exec.name {
            self.conn.name = name;
        }
        if let Some(db) = at_exec.db {
            self.conn.db = db;
            self.switch_pool();
        }
    }

    /// A command Redis queues inside MULTI: forwarded on the pinned connection (credential
    /// guards still apply), its reply context kept for EXEC's array (its own reply is
    /// `+QUEUED`) by [`Session::open_request`].
    pub(super) async fn queue_in_multi(&mut self, spec: &'static CommandSpec, req: Request) {
        self.current.queueing = true;
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
        self.current.queueing = false;
    }

    /// Ends a lease however the client left: a connection blocked on the client's behalf is
    /// closed (Redis unblocks it); any other is `RESET` and reused.
    pub(super) fn end_pin_on_close(&mut self) {
        self.flush_batch();
        match self.lease.end() {
            Ending::Nothing => return self.view.snapshot = None,
            Ending::Release(conn) => conn.release(),
            Ending::Close(conn) => conn.close(),
        }
        self.view.snapshot = None;
        self.publish_pin();
    }

    pub(super) fn pinned_conn_lost(&mut self) {
        self.flush_batch();
        // The connection is gone: dropped, neither reused nor closed again.
        drop(self.lease.end());
        self.view.snapshot = None;
        self.publish_pin();
        self.reply(encode::error(
            "ERR rekey: the upstream connection holding this client's state was lost",
        ));
        self.closing = true;
    }

    /// A transaction keeps the config it started with.
    pub(super) fn begin_snapshot(&mut self) {
        self.view.snapshot = Some(self.proxy.config.load_full());
    }

    pub(super) fn end_snapshot(&mut self) {
        self.view.snapshot = None;
    }
}

/// The command's name when a transaction command has the wrong number of arguments: Redis
/// answers that alone (no transaction starts or ends), so rekey does too, taking no pin.
pub(super) fn transaction_arity_error(pin: Pin, req: &Request) -> Option<&'static str> {
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
pub(super) fn queued_in_multi(class: Class) -> bool {
    !matches!(
        class,
        Class::Pin(Pin::Multi | Pin::Exec | Pin::Discard | Pin::Watch)
            | Class::Local(Local::Quit | Local::Reset)
    )
}
