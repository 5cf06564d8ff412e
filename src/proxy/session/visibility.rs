//! What others see of this client: its entry in the registry of live clients (what `CLIENT
//! LIST`/`INFO` show, published when it changes; the last command and flags once per turn of
//! the loop), and its commands in the `MONITOR` feed of those watching. Also this client's
//! own `MONITOR` mode.

use crate::commands::{Class, Local};
use crate::protocol::encode;
use crate::protocol::{Request, RequestParser};
use crate::proxy::clients::flag;
use crate::proxy::monitor::{self, LineHead};
use crate::proxy::session::Session;
use bytes::{Bytes, BytesMut};
use std::time::SystemTime;

impl Session {
    /// The identity that decides which clients this one sees in CLIENT LIST/KILL: its app,
    /// else its proxy user when `[[users]]` are configured; none sees every client.
    pub(super) fn viewer(&self) -> Option<String> {
        let users = !self.view.cfg.auth.users.is_empty();
        self.client
            .app
            .clone()
            .or_else(|| self.conn.user.clone().filter(|_| users))
    }

    /// Publishes this client's connection state to the registry (after a local command).
    pub(super) fn publish(&self) {
        let identity = self.viewer();
        self.client.update(|d| {
            d.name = self.conn.name.clone();
            d.user = self.conn.user.clone();
            d.identity = identity;
            d.db = self.conn.db;
            d.resp = self.conn.proto.number() as u8;
            d.lib_name = self.conn.lib_name.clone();
            d.lib_ver = self.conn.lib_ver.clone();
        });
    }

    /// Publishes Redis's id of the pinned connection the client holds (or that it holds
    /// none), for `CLIENT TRACKING … REDIRECT` from other clients.
    pub(super) fn publish_pin(&mut self) {
        self.sync_pin_slot();
        let id = self.lease.pin.as_ref().and_then(|p| p.redis_id);
        self.client.update(|d| d.redis_id = id);
    }

    /// Publishes the last command, flags and time of activity (a few relaxed stores; once per
    /// turn of the session's loop).
    pub(super) fn publish_activity(&self) {
        let mut flags = 0;
        if self.lease.in_multi || self.cluster_multi {
            flags |= flag::MULTI;
        }
        if self.lease.blocking > 0 {
            flags |= flag::BLOCKED;
        }
        if self.lease.subs.active() {
            flags |= flag::PUBSUB;
        }
        self.client
            .touch(self.current.cmd, flags, self.current.start);
    }

    /// `MONITOR`: from now on the client receives a line for each command rekey's clients
    /// send (only its own identity's when it has one, as `CLIENT LIST` shows them).
    pub(super) fn monitor(&mut self) {
        self.conn.monitoring = true;
        let viewer = self.viewer();
        let sink = self.sender.sink.clone();
        self.proxy
            .registry
            .monitors
            .watch(self.client.id, viewer, sink);
        self.reply(encode::simple("OK"));
    }

    /// Shows a command this client sent to the clients in `MONITOR` mode, as Redis would: not
    /// the admin commands Redis leaves out, one Redis does not know, or one refused for want
    /// of AUTH (`was_authed`: the client's state when it arrived). A rewritten command is
    /// followed by its upstream form.
    pub(super) fn feed_monitors(&mut self, req: &Request, was_authed: bool) {
        let spec = crate::commands::lookup(req);
        let logs_in = matches!(spec.class, Class::Local(Local::Auth | Local::Hello));
        if spec.id == 0 || monitor::hides(req) || !(was_authed || logs_in) {
            return;
        }
        let mut head = LineHead {
            at: SystemTime::now(),
            db: self.conn.db,
            addr: &self.client.addr,
            upstream: false,
        };
        let mut lines = monitor::line(&head, req.args());
        let upstream = self.current.upstream_form.take().and_then(|raw| {
            let mut buf = BytesMut::from(&raw[..]);
            RequestParser::default().parse(&mut buf).ok().flatten()
        });
        if let Some(sent) = upstream {
            head.upstream = true;
            lines.extend_from_slice(&monitor::line(&head, sent.args()));
        }
        let viewer = self.viewer();
        let lines = Bytes::from(lines);
        self.proxy.registry.monitors.feed(viewer.as_deref(), &lines);
    }

    /// Leaves `MONITOR` mode (RESET, or the client left).
    pub(super) fn stop_monitoring(&mut self) {
        if std::mem::take(&mut self.conn.monitoring) {
            self.proxy.registry.monitors.unwatch(self.client.id);
        }
    }
}
