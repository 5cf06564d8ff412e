//! Dialing Redis: open a connection (TCP, or TLS for `rediss://`) and bring it to "ready"
//! (AUTH, HELLO, SELECT: [`ready_commands`], the one list a fresh connection and a `RESET` one
//! both go through), plus the one-off exchanges on a connection rekey owns alone (a probe, a
//! query, a roundtrip) and why any of it failed ([`ConnError`], [`LastError`]).
//!
//! Its own file so that the driver (which probes a silent upstream), both pools and the
//! programs above (`server`, `migrate`) dial the same way. It knows nothing of jobs, replies
//! to clients or pools: it returns a connected [`Transport`] or an error.

use crate::protocol::encode::Proto;
use crate::protocol::reply::{self, FrameScanner};
use crate::protocol::Request;
use crate::stats::stats;
use crate::transport::Transport;
use crate::upstream::url::UpstreamUrl;
use crate::wire::{reserve_read, WriteQueue};
use bytes::{Bytes, BytesMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;

/// The last failure to connect or keep a connection (for `/status`): when, and why.
#[derive(Debug, Clone, Default)]
pub struct LastError(Arc<Mutex<Option<(SystemTime, String)>>>);

impl LastError {
    pub fn set(&self, why: &str) {
        *self.0.lock().expect("last error poisoned") = Some((SystemTime::now(), why.to_string()));
    }

    pub fn get(&self) -> Option<(SystemTime, String)> {
        self.0.lock().expect("last error poisoned").clone()
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connect to {addr}: timed out")]
    ConnectTimeout { addr: String },
    #[error("{addr}: {source}")]
    Tls {
        addr: String,
        source: crate::tls::HandshakeError,
    },
    #[error("handshake with {addr}: {reply}")]
    Handshake { addr: String, reply: String },
    #[error("{addr} answered an error: {reply}")]
    ErrorReply { addr: String, reply: String },
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by upstream")]
    Eof,
    #[error(transparent)]
    Frame(#[from] reply::FrameError),
    #[error("no reply within {0} ms")]
    ReplyTimeout(u64),
    #[error("upstream sent a reply nobody asked for")]
    Unsolicited,
}

impl ConnError {
    /// Redis's own answer when it refused the handshake only because it is busy with a
    /// script or loading its dataset: what any command sent now would get, so clients get
    /// it as Redis says it (`-BUSY …`, `-LOADING …`), not as a connection failure.
    pub fn redis_busy_reply(&self) -> Option<&str> {
        match self {
            ConnError::Handshake { reply, .. }
                if reply.starts_with("BUSY ") || reply.starts_with("LOADING ") =>
            {
                Some(reply)
            }
            _ => None,
        }
    }
}

/// Opens a connection (TCP, then TLS for `rediss://`), with no Redis handshake. A failed
/// TLS handshake is counted in `rekey_tls_handshake_failures_total{side="upstream"}`.
pub async fn open(url: &UpstreamUrl, timeout: Duration) -> Result<Transport, ConnError> {
    let addr = url.addr();
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ConnError::Connect { addr, source }),
        Err(_) => return Err(ConnError::ConnectTimeout { addr }),
    };
    stream.set_nodelay(true)?;
    let Some(tls) = &url.tls else {
        return Ok(Transport::Tcp(stream));
    };
    match tls.connect(stream, &url.host, timeout).await {
        Ok(t) => {
            stats().tls_handshake_ok("upstream");
            Ok(t)
        }
        Err(source) => {
            stats().tls_handshake_failure("upstream", source.reason);
            Err(ConnError::Tls { addr, source })
        }
    }
}

/// Opens a connection and runs the handshake for `proto` and `db`.
pub async fn connect(
    url: &UpstreamUrl,
    proto: Proto,
    db: u32,
    timeout: Duration,
) -> Result<Transport, ConnError> {
    let addr = url.addr();
    let stream = open(url, timeout).await?;
    let setup = ready_commands(url, proto, db);
    if setup.is_empty() {
        return Ok(stream);
    }
    match tokio::time::timeout(timeout, handshake(&stream, &setup)).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(ConnError::Handshake { reply, .. })) => Err(ConnError::Handshake { addr, reply }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnError::ConnectTimeout { addr }),
    }
}

/// The commands that bring a connection to "ready": authenticated as the upstream URL says
/// (with the live `[upstream_auth]` credential when there is one),
/// speaking `proto`, in `db`. A fresh connection and one that was just `RESET` (which logs a
/// connection out, back to RESP2 and db 0) both go through exactly this list, so the two
/// paths cannot drift apart.
pub fn ready_commands(url: &UpstreamUrl, proto: Proto, db: u32) -> Vec<Request> {
    let mut out = Vec::new();
    if let Some(creds) = &url.auth {
        out.push(creds.current().auth_request());
    } else if let Some(pass) = &url.pass {
        match &url.user {
            Some(user) => out.push(Request::from_args(["AUTH", user, pass])),
            None => out.push(Request::from_args(["AUTH", pass])),
        }
    }
    if proto == Proto::Resp3 {
        out.push(Request::from_args(["HELLO", "3"]));
    }
    if db != 0 {
        out.push(Request::from_args(["SELECT".to_string(), db.to_string()]));
    }
    out
}

async fn handshake(stream: &Transport, setup: &[Request]) -> Result<(), ConnError> {
    let mut out = WriteQueue::new();
    for r in setup {
        out.push(r.raw());
    }
    write_all(stream, &mut out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = FrameScanner::default();
    let mut got = 0;
    while got < setup.len() {
        match scanner.scan(&buf)? {
            Some(n) => {
                let frame = buf.split_to(n);
                if reply::is_error(&frame) {
                    let text = String::from_utf8_lossy(&frame[1..]).trim_end().to_string();
                    return Err(ConnError::Handshake {
                        addr: String::new(),
                        reply: text,
                    });
                }
                got += 1;
            }
            None => {
                read_more(stream, &mut buf).await?;
            }
        }
    }
    Ok(())
}

/// True when `url` accepts a connection within `connect_timeout` and answers `PING` (with
/// anything: `+PONG`, `-BUSY`, `-NOAUTH`…) within `wait`. No handshake: a busy Redis refuses
/// most commands, but it still answers.
pub async fn probe(url: &UpstreamUrl, connect_timeout: Duration, wait: Duration) -> bool {
    let stream = match open(url, connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(upstream = %url, error = %e, "probe failed");
            return false;
        }
    };
    let ping = Request::from_args(["PING"]);
    let mut buf = BytesMut::new();
    match tokio::time::timeout(wait, roundtrip(&stream, &ping, &mut buf)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::debug!(upstream = %url, error = %e, "probe failed");
            false
        }
        Err(_) => {
            tracing::debug!(upstream = %url, "probe not answered in time");
            false
        }
    }
}

/// Sends one request on a fresh connection and returns the reply frame (start-up facts such
/// as the server version).
pub async fn query_once(
    url: &UpstreamUrl,
    req: &Request,
    timeout: Duration,
) -> Result<Bytes, ConnError> {
    let stream = connect(url, Proto::Resp2, 0, timeout).await?;
    let mut buf = BytesMut::new();
    match tokio::time::timeout(timeout, roundtrip(&stream, req, &mut buf)).await {
        Ok(r) => r,
        Err(_) => Err(ConnError::ConnectTimeout { addr: url.addr() }),
    }
}

/// Sends one request on a connection rekey owns alone and reads its reply.
pub async fn roundtrip(
    stream: &Transport,
    req: &Request,
    buf: &mut BytesMut,
) -> Result<Bytes, ConnError> {
    let mut out = WriteQueue::new();
    out.push(req.raw());
    write_all(stream, &mut out).await?;
    let mut scanner = FrameScanner::default();
    loop {
        if let Some(n) = scanner.scan(buf)? {
            return Ok(buf.split_to(n).freeze());
        }
        read_more(stream, buf).await?;
    }
}

/// Writes all of `out` on a connection rekey owns alone (setup, one-off queries).
pub async fn write_all(stream: &Transport, out: &mut WriteQueue) -> Result<(), ConnError> {
    while !out.is_empty() {
        stream.writable().await?;
        out.try_write(stream)?;
    }
    Ok(())
}

/// Waits for and appends the next bytes the peer sends; `Eof` when it closed.
pub async fn read_more(stream: &Transport, buf: &mut BytesMut) -> Result<(), ConnError> {
    stream.readable().await?;
    reserve_read(buf);
    match stream.try_read_buf(buf) {
        Ok(0) => Err(ConnError::Eof),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e.into()),
    }
}
