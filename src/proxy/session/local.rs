//! Connection-scoped commands, answered or emulated per client so that a shared upstream
//! connection's state never changes: AUTH, HELLO, SELECT, CLIENT …, READONLY, QUIT, RESET,
//! UNSUBSCRIBE outside subscribe mode, and the credential guard on CONFIG/ACL. Replies match
//! what Redis sends. PING and ECHO pass here only to pick their connection: Redis answers them.
//! `CLIENT LIST`/`INFO`/`KILL` act on rekey's own clients ([`crate::proxy::clients`]), never
//! on the upstream connections they share.

use crate::commands::secrets::{self, Verdict};
use crate::commands::{Class, Local, ReplyKeys};
use crate::protocol::encode::{self, Encoder, Proto};
use crate::protocol::scan::parse_int;
use crate::protocol::Request;
use crate::protocol::RequestParser;
use crate::proxy::clients::{flag, KillFilter, Kind};
use crate::proxy::monitor::{self, LineHead};
use crate::proxy::session::{ReplyMode, Session};
use crate::rules::rewrite::ReplyCtx;
use bytes::{Bytes, BytesMut};
use std::time::{Instant, SystemTime};

fn wrong_args(name: &str) -> Bytes {
    encode::error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn syntax_error() -> Bytes {
    encode::error("ERR syntax error")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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
            Local::Auth => self.auth(&req),
            Local::Hello => self.hello(&req),
            Local::Select => self.select(&req),
            Local::Ping | Local::Echo => self.ping(req).await,
            Local::Client => self.client(req).await,
            Local::ReadOnly => self.readonly(&req),
            Local::Quit => {
                self.conn.reply_mode = ReplyMode::On;
                self.reply(encode::simple("OK"));
                self.closing = true;
            }
            Local::Reset => self.reset(),
            Local::Unsubscribe => self.unsubscribe_idle(&req),
            Local::Config => self.guarded(secrets::config(&req), &req),
            Local::Acl => self.guarded(secrets::acl(&req), &req),
            Local::SideChannel => self.side_channel(req).await,
            Local::Monitor => self.monitor(),
        }
    }

    /// READONLY/READWRITE: a cluster upstream's replicas are rekey's business, so they are
    /// answered here; a plain Redis gives its own error (cluster support disabled).
    fn readonly(&mut self, req: &Request) {
        if self.proxy.cluster.is_none() {
            return self.forward(req.raw().clone(), false);
        }
        match req.len() {
            1 => self.reply(encode::simple("OK")),
            _ => {
                let name = text(req.arg(0).unwrap_or_default()).to_ascii_lowercase();
                self.reply(wrong_args(&name))
            }
        }
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
    /// command is such a rejection, with no other effect; its reply is dropped.
    fn abort_transaction(&self) {
        if let Some(conn) = self.lease.pin.as_ref().filter(|_| self.lease.in_multi) {
            conn.send_quiet(&Request::from_args([""]));
        }
    }

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
    pub(super) fn publish_pin(&self) {
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

    /// SCRIPT KILL, FUNCTION KILL, FUNCTION STATS: on a connection of their own, so that they
    /// reach a Redis busy with a script even when the client's shared connection is the one
    /// waiting behind it (Redis reads nothing more from the connection running a script).
    async fn side_channel(&mut self, req: Request) {
        let upstream = self.proxy.upstream.load_full();
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
            Verdict::WhoAmI => {
                let user = self.conn.user.clone().unwrap_or_else(|| "default".into());
                self.reply(bulk(user.as_bytes()));
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

    fn auth(&mut self, req: &Request) {
        let (user, pass) = match req.len() {
            2 => (None, req.arg(1).unwrap_or_default()),
            3 => (req.arg(1), req.arg(2).unwrap_or_default()),
            _ => return self.reply(wrong_args("auth")),
        };
        match self.try_auth(user, pass) {
            Ok(()) => self.reply(encode::simple("OK")),
            Err(e) => self.reply(e),
        }
    }

    /// Checks credentials against the proxy's own (`requirepass`, `[[users]]`). Without any,
    /// every AUTH succeeds: apps configured with the Redis password keep working unchanged.
    fn try_auth(&mut self, user: Option<&[u8]>, pass: &[u8]) -> Result<(), Bytes> {
        let config = self.proxy.config.load();
        if config.auth.required() && !config.auth.check(user, pass) {
            return Err(encode::error(
                "WRONGPASS invalid username-password pair or user is disabled.",
            ));
        }
        self.conn.authed = true;
        self.conn.user = user.map(|u| String::from_utf8_lossy(u).into_owned());
        self.refresh_label();
        Ok(())
    }

    fn hello(&mut self, req: &Request) {
        let mut proto = self.conn.proto;
        if let Some(v) = req.arg(1) {
            proto = match parse_int(v) {
                Some(2) => Proto::Resp2,
                Some(3) => Proto::Resp3,
                Some(_) => {
                    return self.reply(encode::error("NOPROTO unsupported protocol version"))
                }
                None => {
                    return self.reply(encode::error(
                        "ERR Protocol version is not an integer or out of range",
                    ))
                }
            };
        }
        let mut name = None;
        let mut i = 2;
        while i < req.len() {
            if req.arg_is(i, "AUTH") && i + 2 < req.len() {
                if let Err(e) = self.try_auth(req.arg(i + 1), req.arg(i + 2).unwrap_or_default()) {
                    return self.reply(e);
                }
                i += 3;
            } else if req.arg_is(i, "SETNAME") && i + 1 < req.len() {
                name = req.arg_bytes(i + 1);
                i += 2;
            } else {
                let opt = String::from_utf8_lossy(req.arg(i).unwrap_or_default()).into_owned();
                return self.reply(encode::error(&format!(
                    "ERR Syntax error in HELLO option '{opt}'"
                )));
            }
        }
        if !self.conn.authed {
            return self.reply(encode::error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            ));
        }
        if let Some(n) = name {
            if !valid_name(&n) {
                return self.reply(encode::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            self.conn.name = (!n.is_empty()).then_some(n);
        }
        if proto != self.conn.proto {
            self.conn.proto = proto;
            self.switch_pool();
            if let Some(conn) = &self.lease.pin {
                conn.send_quiet(&Request::from_args([
                    "HELLO".to_string(),
                    proto.number().to_string(),
                ]));
            }
        }
        let reply = self.hello_reply();
        self.reply(reply);
    }

    fn hello_reply(&self) -> Bytes {
        let info = &self.proxy.upstream_info;
        let mut e = Encoder::new(self.conn.proto);
        e.map(7);
        e.bulk(b"server").bulk(b"redis");
        e.bulk(b"version").bulk(info.version.as_bytes());
        e.bulk(b"proto").int(self.conn.proto.number());
        e.bulk(b"id").int(self.client.id as i64);
        e.bulk(b"mode").bulk(b"standalone");
        e.bulk(b"role").bulk(b"master");
        e.bulk(b"modules").array(0);
        e.finish()
    }

    fn select(&mut self, req: &Request) {
        if req.len() != 2 {
            return self.reply(wrong_args("select"));
        }
        let Some(n) = req.arg(1).and_then(parse_int) else {
            return self.reply(encode::error("ERR value is not an integer or out of range"));
        };
        if n < 0 || n >= self.proxy.upstream_info.databases as i64 {
            return self.reply(encode::error("ERR DB index is out of range"));
        }
        self.conn.db = n as u32;
        self.switch_pool();
        match self.lease.pin.is_some() {
            true => self.forward(req.raw().clone(), false),
            false => self.reply(encode::simple("OK")),
        }
    }

    async fn client(&mut self, req: Request) {
        let Some(sub) = req.arg(1).map(|s| s.to_ascii_uppercase()) else {
            return self.reply(wrong_args("client"));
        };
        let lower = text(&sub).to_ascii_lowercase();
        self.client.update(|d| d.client_sub = Some(lower.clone()));
        self.publish();
        self.publish_activity();
        match sub.as_slice() {
            b"SETNAME" if req.len() == 3 => {
                let n = req.arg_bytes(2).unwrap_or_default();
                if !valid_name(&n) {
                    return self.reply(encode::error(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    ));
                }
                if let Some(conn) = &self.lease.pin {
                    conn.send_quiet(&req);
                }
                self.conn.name = (!n.is_empty()).then_some(n);
                self.reply(encode::simple("OK"));
            }
            b"GETNAME" if req.len() == 2 => {
                let frame = match &self.conn.name {
                    Some(n) => bulk(n),
                    None => null(self.conn.proto),
                };
                self.reply(frame);
            }
            b"SETINFO" if req.len() == 4 => {
                let value = req.arg_bytes(3);
                if req.arg_is(2, "LIB-NAME") {
                    self.conn.lib_name = value;
                } else if req.arg_is(2, "LIB-VER") {
                    self.conn.lib_ver = value;
                } else {
                    let opt = String::from_utf8_lossy(req.arg(2).unwrap_or_default()).into_owned();
                    return self.reply(encode::error(&format!("ERR Unrecognized option '{opt}'")));
                }
                self.reply(encode::simple("OK"));
            }
            b"ID" if req.len() == 2 && self.lease.pin.is_none() => self.reply(int(self.client.id as i64)),
            b"INFO" if req.len() == 2 => {
                let line = self.client.line(Instant::now());
                self.reply_text(&line);
            }
            b"INFO" => self.reply(wrong_args("client|info")),
            b"LIST" => self.client_list(&req),
            b"REPLY" if req.len() == 3 => self.client_reply(&req),
            b"KILL" => self.client_kill(&req),
            b"NO-EVICT" | b"NO-TOUCH" => self.client_flag(&lower, &req),
            b"TRACKING" if req.len() >= 3 => self.client_tracking(req).await,
            b"TRACKINGINFO" => {
                self.current.ctx = Some(crate::proxy::session::streams::tracking_info_ctx());
                self.forward(req.raw().clone(), false)
            }
            b"CACHING" if self.lease.pin.is_none() => self.reply(encode::error(
                "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
            )),
            _ => self.forward(req.raw().clone(), false),
        }
    }

    fn client_reply(&mut self, req: &Request) {
        // OFF and SKIP get no reply themselves (SKIP: nor does the next command).
        match req.arg(2) {
            Some(word) if self.conn.set_reply_mode(word) => {
                if self.conn.reply_mode == ReplyMode::On {
                    self.reply(encode::simple("OK"));
                }
            }
            _ => self.reply(encode::error("ERR syntax error")),
        }
    }

    /// A text reply: verbatim in RESP3, bulk in RESP2 (CLIENT LIST/INFO).
    fn reply_text(&mut self, text: &str) {
        let mut e = Encoder::new(self.conn.proto);
        e.verbatim(text.as_bytes());
        self.reply(e.finish());
    }

    /// `CLIENT LIST [TYPE type | ID id …]`: the clients this one may see.
    fn client_list(&mut self, req: &Request) {
        let registry = &self.proxy.registry;
        let viewer = self.viewer();
        let viewer = viewer.as_deref();
        let clients = if req.len() == 4 && req.arg_is(2, "TYPE") {
            let name = req.arg(3).unwrap_or_default();
            let Some(kind) = Kind::parse(name) else {
                let msg = format!("ERR Unknown client type '{}'", text(name));
                return self.reply(encode::error(&msg));
            };
            registry.list(viewer, Some(kind))
        } else if req.len() > 3 && req.arg_is(2, "ID") {
            let Some(ids) = req
                .args()
                .skip(3)
                .map(parse_int)
                .collect::<Option<Vec<_>>>()
            else {
                return self.reply(encode::error("ERR Invalid client ID"));
            };
            ids.into_iter()
                .filter_map(|id| u64::try_from(id).ok())
                .filter_map(|id| registry.get(viewer, id))
                .collect()
        } else if req.len() == 2 {
            registry.list(viewer, None)
        } else {
            return self.reply(syntax_error());
        };
        let now = Instant::now();
        let out: String = clients.iter().map(|c| c.line(now)).collect();
        self.reply_text(&out);
    }

    /// `CLIENT KILL addr:port` (old form: `+OK` or an error) or `CLIENT KILL <filter> <value>
    /// …` (the number killed), over the clients this one may see. A client that kills itself
    /// is closed after the reply, as Redis does.
    fn client_kill(&mut self, req: &Request) {
        let filter = match req.len() {
            0..=2 => return self.reply(wrong_args("client|kill")),
            3 => KillFilter {
                addr: Some(text(req.arg(2).unwrap_or_default())),
                ..KillFilter::default()
            },
            _ => match self.kill_filter(req) {
                Ok(f) => f,
                Err(e) => return self.reply(e),
            },
        };
        let viewer = self.viewer();
        let (killed, me) = self
            .proxy
            .registry
            .kill(viewer.as_deref(), &filter, self.client.id);
        let reply = match (req.len(), killed) {
            (3, 0) => encode::error("ERR No such client"),
            (3, _) => encode::simple("OK"),
            _ => int(killed as i64),
        };
        self.reply(reply);
        if me {
            self.closing = true;
        }
    }

    /// The filters of `CLIENT KILL`'s new form, with Redis's errors.
    fn kill_filter(&self, req: &Request) -> Result<KillFilter, Bytes> {
        let mut f = KillFilter {
            skipme: true,
            ..KillFilter::default()
        };
        for i in (2..req.len()).step_by(2) {
            let Some(value) = req.arg(i + 1) else {
                return Err(syntax_error());
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
                    if !self.user_exists(&user) {
                        return Err(encode::error(&format!("ERR No such user '{user}'")));
                    }
                    f.user = Some(user);
                }
                b"skipme" if value.eq_ignore_ascii_case(b"yes") => f.skipme = true,
                b"skipme" if value.eq_ignore_ascii_case(b"no") => f.skipme = false,
                _ => return Err(syntax_error()),
            }
        }
        Ok(f)
    }

    /// A user CLIENT KILL USER may name: `default`, a `[[users]]` name, or a live client's.
    fn user_exists(&self, user: &str) -> bool {
        user == "default"
            || self.view.cfg.auth.users.iter().any(|u| u.name == user)
            || self.proxy.registry.has_user(user)
    }

    /// `CLIENT NO-EVICT|NO-TOUCH ON|OFF`: shown in CLIENT LIST's flags; no effect on the
    /// shared upstream connections.
    fn client_flag(&mut self, sub: &str, req: &Request) {
        if req.len() != 3 {
            return self.reply(wrong_args(&format!("client|{sub}")));
        }
        let on = match req.arg(2) {
            Some(v) if v.eq_ignore_ascii_case(b"ON") => true,
            Some(v) if v.eq_ignore_ascii_case(b"OFF") => false,
            _ => return self.reply(syntax_error()),
        };
        let evict = sub == "no-evict";
        self.client.update(|d| match evict {
            true => d.no_evict = on,
            false => d.no_touch = on,
        });
        self.reply(encode::simple("OK"));
    }

    /// `MONITOR`: from now on the client receives a line for each command rekey's clients
    /// send (only its own identity's when it has one, as `CLIENT LIST` shows them).
    fn monitor(&mut self) {
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

    /// UNSUBSCRIBE and friends outside subscribe mode: one confirmation per channel (or one
    /// with a null channel), each with a count of 0.
    fn unsubscribe_idle(&mut self, req: &Request) {
        let kind = req.arg(0).unwrap_or_default().to_ascii_lowercase();
        let mut e = Encoder::new(self.conn.proto);
        if req.len() == 1 {
            e.push(3).bulk(&kind).null().int(0);
        }
        for ch in req.args().skip(1) {
            e.push(3).bulk(&kind).bulk(ch).int(0);
        }
        self.reply(e.finish());
    }
}

fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

fn bulk(data: &[u8]) -> Bytes {
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
