//! The session's side of the commands rekey answers or emulates per client, so that a shared
//! upstream connection's state never changes: each is a function of the connection state and
//! the proxy ([`super::cmd`]); here the session applies what follows (a new protocol or db
//! moves it to another shared pool, a pinned connection follows the client's name, the metrics
//! label follows its login) and the commands that act on the session itself: QUIT, RESET,
//! MONITOR, the side channel of SCRIPT/FUNCTION KILL, PING/ECHO's choice of connection, and
//! the credential guard on CONFIG/ACL.

use crate::commands::secrets::{self, Verdict};
use crate::commands::{Local, ReplyKeys};
use crate::protocol::encode;
use crate::protocol::Request;
use crate::proxy::session::cmd::{self, Env, Reply};
use crate::proxy::session::{ReplyMode, Session};
use crate::rules::rewrite::ReplyCtx;

/// What a command function may read besides the connection state, borrowed field by field so
/// that the connection state can be lent mutably beside it.
macro_rules! env_of {
    ($s:ident) => {
        Env {
            viewer: $s.viewer(),
            pinned: $s.lease.pin.is_some(),
            proxy: &$s.proxy,
            me: &$s.client,
            label: $s.view.app_stats.label(),
        }
    };
}

impl Session {
    pub(super) async fn local(&mut self, cmd: Local, req: Request) {
        let publishes = matches!(
            cmd,
            Local::Auth | Local::Hello | Local::Select | Local::Client | Local::Reset
        );
        self.local_command(cmd, req).await;
        if publishes {
            self.publish();
        }
    }

    async fn local_command(&mut self, cmd: Local, req: Request) {
        match cmd {
            Local::Auth => {
                let env = env_of!(self);
                let reply = cmd::auth::auth(&req, &mut self.conn, &env);
                let reply = self.admitted(reply);
                self.answer(reply, req)
            }
            Local::Hello => self.hello(req),
            Local::Select => self.select(req),
            Local::Ping | Local::Echo => self.ping(req).await,
            Local::Client => self.client_command(req).await,
            Local::ReadOnly => {
                let reply = cmd::connection::readonly(&req, &env_of!(self));
                self.answer(reply, req)
            }
            Local::Quit => {
                self.conn.reply_mode = ReplyMode::On;
                self.reply(encode::simple("OK"));
                self.closing = true;
            }
            Local::Reset => self.reset(),
            Local::Unsubscribe => {
                let reply = cmd::connection::unsubscribe_idle(&req, &self.conn);
                self.answer(reply, req)
            }
            Local::Config => self.guarded(secrets::config(&req), &req),
            Local::Acl => {
                let reply = cmd::acl::acl(&req, &self.conn, &env_of!(self));
                self.answer(reply, req)
            }
            Local::SideChannel => self.side_channel(req).await,
            Local::Monitor => self.monitor(),
        }
    }

    /// Gives the client what a command function answered.
    fn answer(&mut self, reply: Reply, req: Request) {
        match reply {
            Reply::Frame(frame) => self.reply(frame),
            Reply::Mirror(frame) => {
                if let Some(conn) = &self.lease.pin {
                    conn.send_quiet(&req);
                }
                self.reply(frame)
            }
            Reply::Nothing => {}
            Reply::Forward => self.forward(req.into_raw(), false),
            Reply::ThenClose(frame) => {
                self.reply(frame);
                self.closing = true;
            }
        }
    }

    /// HELLO: a new protocol moves the client to that protocol's shared pool (and switches
    /// its pinned connection too).
    fn hello(&mut self, req: Request) {
        let before = self.conn.proto;
        let env = env_of!(self);
        let reply = cmd::auth::hello(&req, &mut self.conn, &env);
        let reply = self.admitted(reply);
        let proto = self.conn.proto;
        if proto != before {
            self.switch_pool();
            if let Some(conn) = &self.lease.pin {
                conn.send_quiet(&Request::from_args([
                    "HELLO".to_string(),
                    proto.number().to_string(),
                ]));
            }
        }
        self.answer(reply, req)
    }

    /// SELECT: the client moves to its new db's shared pool.
    fn select(&mut self, req: Request) {
        let env = env_of!(self);
        let reply = cmd::connection::select(&req, &mut self.conn, &env);
        if !reply.is_error() {
            self.switch_pool();
        }
        self.answer(reply, req)
    }

    /// CLIENT: tracking lives on the pinned connection (`streams`); the rest is answered by
    /// [`cmd::client`].
    async fn client_command(&mut self, req: Request) {
        if let Some(sub) = req.arg(1) {
            let lower = String::from_utf8_lossy(sub).to_ascii_lowercase();
            self.client.update(|d| d.client_sub = Some(lower));
        }
        self.publish();
        self.publish_activity();
        if req.arg_is(1, "TRACKING") && req.len() >= 3 {
            return self.client_tracking(req).await;
        }
        if req.arg_is(1, "TRACKINGINFO") {
            self.current.ctx = Some(crate::proxy::session::streams::tracking_info_ctx());
            return self.forward(req.raw().clone(), false);
        }
        if req.arg_is(1, "CACHING") && self.lease.pin.is_none() {
            return self.reply(encode::error(
                "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
            ));
        }
        let env = env_of!(self);
        let reply = cmd::client::client(&req, &mut self.conn, &env);
        self.answer(reply, req)
    }

    /// A command refused because it would disturb other clients' shared connections. Inside
    /// a transaction the client holds its own connection, so it goes to Redis, which queues it
    /// or rejects it exactly as it would.
    pub(super) fn refuse(&mut self, msg: &'static str, req: Request) {
        if self.lease.in_multi && self.lease.pin.is_some() {
            return self.forward(req.into_raw(), false);
        }
        self.reply(encode::error(msg));
    }

    /// After refusing a command that Redis would have queued: a transaction in progress must
    /// fail at EXEC (`-EXECABORT`), as when Redis rejects a command while queueing. An unknown
    /// command is such a rejection, with no other effect; its reply is dropped. What was routed
    /// before (`MULTI` itself, in the same pipeline) leaves first: this goes straight to the
    /// pinned connection.
    pub(super) fn abort_transaction(&mut self) {
        self.flush_batch();
        if let Some(conn) = self.lease.pin.as_ref().filter(|_| self.lease.in_multi) {
            conn.send_quiet(&Request::from_args([""]));
        }
    }

    /// SCRIPT KILL, FUNCTION KILL, FUNCTION STATS: on a connection of their own, so that they
    /// reach a Redis busy with a script even when the client's shared connection is the one
    /// waiting behind it (Redis reads nothing more from the connection running a script).
    async fn side_channel(&mut self, req: Request) {
        let upstream = self.sender.live_upstream();
        let frame = match upstream.side_query(&req, self.conn.proto).await {
            Ok(frame) => frame,
            Err(e) => encode::error(&format!("ERR rekey: upstream unavailable ({e})")),
        };
        self.reply(frame);
    }

    /// CONFIG and ACL, as [`secrets`] rules them.
    fn guarded(&mut self, verdict: Verdict, req: &Request) {
        match verdict {
            Verdict::Forward => self.forward(req.raw().clone(), false),
            Verdict::ForwardMasked => {
                self.current.ctx = Some(Box::new(ReplyCtx {
                    kind: Some(ReplyKeys::Secrets),
                    ..ReplyCtx::default()
                }));
                self.forward(req.raw().clone(), false);
            }
            Verdict::Refuse(msg) => {
                self.reply(encode::error(msg));
                self.abort_transaction();
            }
        }
    }

    /// PING and ECHO: answered by Redis, in pipeline order, so the client hears what Redis
    /// says (`+PONG`, `-BUSY`, `-LOADING`, or rekey's error when Redis cannot be reached).
    /// A client with nothing else in flight whose shared connection is stalled behind another
    /// client's busy script asks on a connection of its own, as it would reach Redis alone.
    async fn ping(&mut self, req: Request) {
        let alone = self.lease.pin.is_none()
            && self.proxy.cluster.is_none()
            && !self.replies.has_unanswered();
        if alone && self.sender.shared.stalled(self.sender.slot) {
            return self.side_channel(req).await;
        }
        match self.proxy.cluster.is_some() {
            true => self.cluster_forward(crate::commands::lookup(&req), req),
            false => self.forward(req.into_raw(), false),
        }
    }

    /// After a login: the client's new identity may be at its `max_clients`, and then the
    /// client gets Redis's error for that instead, and is closed.
    fn admitted(&mut self, reply: Reply) -> Reply {
        if self.refresh_label() {
            return reply;
        }
        Reply::ThenClose(encode::error(super::share::MAX_CLIENTS))
    }

    /// `RESET`: back to a fresh connection's state, as Redis does.
    fn reset(&mut self) {
        self.stop_monitoring();
        self.end_pin_on_close();
        let config = self.proxy.config.load();
        self.conn
            .reset(config.upstream.db(), !config.auth.required());
        self.refresh_label();
        self.client.update(|d| {
            d.no_evict = false;
            d.no_touch = false;
        });
        self.switch_pool();
        self.reply(encode::simple("RESET"));
    }
}
