//! Connection-scoped commands, answered or emulated per client so that a shared upstream
//! connection's state never changes: AUTH, HELLO, SELECT, PING, ECHO, CLIENT …, READONLY,
//! QUIT, RESET, UNSUBSCRIBE outside subscribe mode, and the credential guard on CONFIG/ACL. Replies match what Redis sends.

use crate::commands::{Local, ReplyKeys};
use crate::protocol::encode::{self, Encoder, Proto};
use crate::protocol::request::parse_int;
use crate::protocol::Request;
use crate::proxy::rewrite::ReplyCtx;
use crate::proxy::secrets::{self, Verdict};
use crate::proxy::session::{ReplyMode, Session};
use bytes::Bytes;

fn wrong_args(name: &str) -> Bytes {
    encode::error(&format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

impl Session {
    pub(super) async fn local(&mut self, cmd: Local, req: Request) {
        match cmd {
            Local::Auth => self.auth(&req),
            Local::Hello => self.hello(&req),
            Local::Select => self.select(&req),
            Local::Ping | Local::Echo if self.pin.is_some() => {
                self.forward(req.raw().clone(), false)
            }
            Local::Ping => self.ping(&req),
            Local::Echo => match req.arg(1) {
                Some(msg) if req.len() == 2 => self.reply(bulk(msg)),
                _ => self.reply(wrong_args("echo")),
            },
            Local::Client => self.client(req).await,
            Local::ReadOnly => self.reply(encode::simple("OK")),
            Local::Quit => {
                self.reply_mode = ReplyMode::On;
                self.reply(encode::simple("OK"));
                self.closing = true;
            }
            Local::Reset => self.reset(),
            Local::Unsubscribe => self.unsubscribe_idle(&req),
            Local::Config => self.guarded(secrets::config(&req), &req),
            Local::Acl => self.guarded(secrets::acl(&req), &req),
        }
    }

    /// CONFIG and ACL, as [`secrets`] rules them.
    fn guarded(&mut self, verdict: Verdict, req: &Request) {
        match verdict {
            Verdict::Forward => self.forward(req.raw().clone(), false),
            Verdict::ForwardMasked => {
                self.pending_ctx = Some(Box::new(ReplyCtx {
                    kind: Some(ReplyKeys::Secrets),
                    ..ReplyCtx::default()
                }));
                self.forward(req.raw().clone(), false);
            }
            Verdict::WhoAmI => {
                let user = self.user.clone().unwrap_or_else(|| "default".into());
                self.reply(bulk(user.as_bytes()));
            }
            Verdict::Refuse(msg) => self.reply(encode::error(msg)),
        }
    }

    fn ping(&mut self, req: &Request) {
        match req.len() {
            1 => self.reply(encode::simple("PONG")),
            2 => self.reply(bulk(req.arg(1).unwrap_or_default())),
            _ => self.reply(wrong_args("ping")),
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
        self.authed = true;
        self.user = user.map(|u| String::from_utf8_lossy(u).into_owned());
        Ok(())
    }

    fn hello(&mut self, req: &Request) {
        let mut proto = self.proto;
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
        if !self.authed {
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
            self.name = (!n.is_empty()).then_some(n);
        }
        if proto != self.proto {
            self.proto = proto;
            self.switch_pool();
            if let Some(conn) = &self.pin {
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
        let mut e = Encoder::new(self.proto);
        e.map(7);
        e.bulk(b"server").bulk(b"redis");
        e.bulk(b"version").bulk(info.version.as_bytes());
        e.bulk(b"proto").int(self.proto.number());
        e.bulk(b"id").int(self.id as i64);
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
        self.db = n as u32;
        self.switch_pool();
        match self.pin.is_some() {
            true => self.forward(req.raw().clone(), false),
            false => self.reply(encode::simple("OK")),
        }
    }

    async fn client(&mut self, req: Request) {
        let Some(sub) = req.arg(1).map(|s| s.to_ascii_uppercase()) else {
            return self.reply(wrong_args("client"));
        };
        match sub.as_slice() {
            b"SETNAME" if req.len() == 3 => {
                let n = req.arg_bytes(2).unwrap_or_default();
                if !valid_name(&n) {
                    return self.reply(encode::error(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    ));
                }
                if let Some(conn) = &self.pin {
                    conn.send_quiet(&req);
                }
                self.name = (!n.is_empty()).then_some(n);
                self.reply(encode::simple("OK"));
            }
            b"GETNAME" if req.len() == 2 => {
                let frame = match &self.name {
                    Some(n) => bulk(n),
                    None => null(self.proto),
                };
                self.reply(frame);
            }
            b"SETINFO" if req.len() == 4 => {
                let value = req.arg_bytes(3);
                if req.arg_is(2, "LIB-NAME") {
                    self.lib_name = value;
                } else if req.arg_is(2, "LIB-VER") {
                    self.lib_ver = value;
                } else {
                    let opt = String::from_utf8_lossy(req.arg(2).unwrap_or_default()).into_owned();
                    return self.reply(encode::error(&format!("ERR Unrecognized option '{opt}'")));
                }
                self.reply(encode::simple("OK"));
            }
            b"ID" if req.len() == 2 && self.pin.is_none() => self.reply(int(self.id as i64)),
            b"INFO" if req.len() == 2 => {
                let mut e = Encoder::new(self.proto);
                e.verbatim(self.client_info().as_bytes());
                self.reply(e.finish());
            }
            b"REPLY" if req.len() == 3 => self.client_reply(&req),
            b"KILL" => self.reply(encode::error(
                "ERR CLIENT KILL is not supported through rekey: clients share upstream connections; kill the client at rekey's side or use Redis directly",
            )),
            b"NO-EVICT" | b"NO-TOUCH" if req.len() == 3 => self.reply(encode::simple("OK")),
            b"TRACKING" if req.len() >= 3 => self.client_tracking(req).await,
            b"CACHING" if self.pin.is_none() => self.reply(encode::error(
                "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
            )),
            _ => self.forward(req.raw().clone(), false),
        }
    }

    fn client_reply(&mut self, req: &Request) {
        if req.arg_is(2, "ON") {
            self.reply_mode = ReplyMode::On;
            self.reply(encode::simple("OK"));
        } else if req.arg_is(2, "OFF") {
            self.reply_mode = ReplyMode::Off;
        } else if req.arg_is(2, "SKIP") {
            // SKIP itself gets no reply, nor does the next command.
            if self.reply_mode == ReplyMode::On {
                self.reply_mode = ReplyMode::Skip;
            }
        } else {
            self.reply(encode::error("ERR syntax error"));
        }
    }

    /// `CLIENT INFO` as Redis formats it, for this client's emulated state.
    fn client_info(&self) -> String {
        let name = self
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let lib = |v: &Option<Bytes>| {
            v.as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default()
        };
        let flags = if self.pin.is_some() && self.in_multi {
            "x"
        } else {
            "N"
        };
        format!(
            "id={} addr={} laddr={} fd=0 name={} app={} age=0 idle=0 flags={} db={} sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|info user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            self.local,
            name,
            self.app.as_deref().unwrap_or(""),
            flags,
            self.db,
            self.user.as_deref().unwrap_or("default"),
            self.proto.number(),
            lib(&self.lib_name),
            lib(&self.lib_ver),
        )
    }

    /// `RESET`: back to a fresh connection's state, as Redis does.
    fn reset(&mut self) {
        self.end_pin_on_close();
        let config = self.proxy.config.load();
        self.proto = Proto::Resp2;
        self.db = config.upstream.db;
        self.name = None;
        self.reply_mode = ReplyMode::On;
        self.authed = !config.auth.required();
        self.user = None;
        self.switch_pool();
        self.reply(encode::simple("RESET"));
    }

    /// UNSUBSCRIBE and friends outside subscribe mode: one confirmation per channel (or one
    /// with a null channel), each with a count of 0.
    fn unsubscribe_idle(&mut self, req: &Request) {
        let kind = req.arg(0).unwrap_or_default().to_ascii_lowercase();
        let mut e = Encoder::new(self.proto);
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
