//! One upstream connection: connect (TCP, or TLS for `rediss://`), handshake (AUTH, HELLO, SELECT), then a single task that
//! writes batched requests and reads replies, matching each reply to the oldest request still
//! waiting (Redis answers in order). A reply is handed on as the original bytes.
//!
//! Frames that answer no request go to the connection's current stream sink (pub/sub messages
//! and RESP3 pushes on a pinned connection) or are dropped (a push on a shared connection).

use crate::protocol::encode::{self, Proto};
use crate::protocol::reply::{self, FrameScanner};
use crate::protocol::Request;
use crate::stats::stats;
use crate::transport::{ReadHalf, Transport, WriteHalf};
use crate::upstream::pool::PinnedPool;
use crate::upstream::silence::Silence;
use crate::upstream::PinnedConn;
use crate::upstream::UpstreamUrl;
use crate::wire::{reserve_read, WriteQueue};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Where a client session receives its replies.
pub type Sink = mpsc::UnboundedSender<Delivery>;

/// What a client session receives from upstream connections.
#[derive(Debug)]
pub enum Delivery {
    /// The reply to request `seq` (possibly an `-ERR` made by rekey if the upstream failed).
    Reply { seq: u64, frame: Bytes },
    /// A frame rekey itself sends the client out of band, after every reply so far (the
    /// lines of a `MONITOR` feed); upstream connections never send one.
    Event { frame: Bytes },
    /// The replies to requests `first_seq .. first_seq + count`, as consecutive frames;
    /// `errors` of them are error replies (a run with none can be relayed whole).
    Replies {
        first_seq: u64,
        count: u32,
        errors: u32,
        frames: Bytes,
    },
    /// A frame that answers no request: pub/sub traffic or a RESP3 push.
    Push { frame: Bytes },
    /// The pinned connection carrying this client's stream state is gone.
    Lost,
}

/// Splits a `Delivery::Replies` run into its frames: `(seq, frame)` for each, in order.
pub fn each_reply(first_seq: u64, count: u32, frames: &Bytes, mut f: impl FnMut(u64, Bytes)) {
    let mut offset = 0;
    for i in 0..count as u64 {
        let rest = &frames[offset..];
        let n = reply::frame_len(rest).ok().flatten().unwrap_or(rest.len());
        f(first_seq + i, frames.slice(offset..offset + n));
        offset += n;
    }
}

/// Where the reply to a job goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// To a client: `count` replies, to its requests `seq`, `seq + 1`, ….
    Client { sink: Sink, seq: u64, count: u32 },
    /// No 1:1 reply: from now on every frame on this connection goes to `sink` (subscribe mode).
    Stream(Sink),
    /// Read and dropped (handshake and setup commands rekey sends itself).
    Discard,
    /// The reply to the `RESET` that ends a pinned lease: the connection goes back to the pool.
    Release {
        conn: PinnedConn,
        pool: Weak<PinnedPool>,
    },
}

/// A request for an upstream connection.
#[derive(Debug)]
pub enum Job {
    Send {
        payload: Bytes,
        reply: ReplyTo,
    },
    /// Close the connection now (a client left while a blocking command was in flight).
    Close,
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

/// The commands that bring a connection to "ready": authenticated as the upstream URL says,
/// speaking `proto`, in `db`. A fresh connection and one that was just `RESET` (which logs a
/// connection out, back to RESP2 and db 0) both go through exactly this list, so the two
/// paths cannot drift apart.
pub fn ready_commands(url: &UpstreamUrl, proto: Proto, db: u32) -> Vec<Request> {
    let mut out = Vec::new();
    if let Some(pass) = &url.pass {
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

/// The state of one live connection's loop.
pub struct Driver {
    rd: ReadHalf,
    wr: WriteHalf,
    pending: VecDeque<ReplyTo>,
    stream_sink: Option<Sink>,
    rbuf: BytesMut,
    scanner: FrameScanner,
    out: WriteQueue,
    shared: bool,
    /// Drop the connection when requests wait this long with no reply at all.
    reply_timeout: Option<Duration>,
    /// The last time a reply arrived, or a request was queued on an idle connection.
    last_progress: Instant,
    /// Requests were queued since the last write: a shared connection lets the other tasks
    /// of this poll run once before writing, so their requests join the same write.
    fresh: bool,
    /// How to ask the upstream whether it is alive when this connection has been silent for
    /// the reply timeout (see [`Driver::with_probe`]).
    probe: Option<(UpstreamUrl, Duration)>,
    /// Published for sessions (shared connections only, see [`Driver::with_silence`]).
    silence: Option<Arc<Silence>>,
}

/// Consecutive replies for one client, not yet split off the read buffer.
#[derive(Default)]
struct Run {
    sink: Option<Sink>,
    first_seq: u64,
    count: u32,
    errors: u32,
    len: usize,
}

impl Run {
    fn extends(&self, sink: &Sink, seq: u64) -> bool {
        self.sink.as_ref().is_some_and(|s| s.same_channel(sink))
            && seq == self.first_seq + self.count as u64
    }

    fn start(&mut self, sink: Sink, seq: u64) {
        self.sink = Some(sink);
        self.first_seq = seq;
    }
}

/// High-water mark of queued request bytes before the driver stops taking jobs.
const OUT_HIGH: usize = 4 * 1024 * 1024;

impl Driver {
    /// `shared`: a pooled connection, where an unmatched non-push frame means desync.
    /// `reply_timeout`: how long requests may wait with no reply before the connection is
    /// given up (pinned connections pass `None`: a blocking command may wait forever).
    pub fn new(stream: Transport, shared: bool, reply_timeout: Option<Duration>) -> Driver {
        let (rd, wr) = stream.into_split();
        Driver {
            rd,
            wr,
            pending: VecDeque::new(),
            stream_sink: None,
            rbuf: BytesMut::with_capacity(64 * 1024),
            scanner: FrameScanner::default(),
            out: WriteQueue::new(),
            shared,
            reply_timeout,
            last_progress: Instant::now(),
            fresh: false,
            probe: None,
            silence: None,
        }
    }

    /// Publishes how long requests on this connection have waited with no reply.
    pub fn with_silence(mut self, silence: Arc<Silence>) -> Driver {
        silence.idle();
        self.silence = Some(silence);
        self
    }

    /// With a probe, a connection silent for the reply timeout is given up only when the
    /// upstream does not answer a `PING` on a fresh connection within another reply timeout
    /// (`connect_timeout` to connect). A busy script (`-BUSY`), a slow command or a
    /// `-NOAUTH` all mean alive: the connection keeps waiting. Without one, silence alone
    /// ends it.
    pub fn with_probe(mut self, url: UpstreamUrl, connect_timeout: Duration) -> Driver {
        self.probe = Some((url, connect_timeout));
        self
    }

    /// Runs until the connection fails (`Err`), the job channel closes or a `Close` job
    /// arrives (`Ok`). Requests still waiting are failed by [`Driver::fail_pending`].
    pub async fn run(&mut self, jobs: &mut mpsc::UnboundedReceiver<Job>) -> Result<(), ConnError> {
        let mut draining = false;
        // Lazily re-armed: it fires at most once per timeout period while requests wait.
        let limit = self.reply_timeout.unwrap_or(Duration::from_secs(3600));
        let watchdog = tokio::time::sleep(limit);
        tokio::pin!(watchdog);
        loop {
            if draining && self.pending.is_empty() && self.out.is_empty() {
                return Ok(());
            }
            if !self.out.is_empty() {
                if self.fresh && self.shared {
                    // Clients whose requests arrived in the same readiness poll queue theirs
                    // in this turn: one larger write makes Redis cheaper per request (fewer
                    // reads and wake-ups) and costs one poll, not a timer.
                    tokio::task::yield_now().await;
                    if !self.take_queued(jobs) {
                        return Ok(());
                    }
                }
                self.fresh = false;
                self.out.try_write(&self.wr)?;
            }
            let take_jobs = self.out.len() < OUT_HIGH;
            let waiting = self.reply_timeout.is_some() && !self.pending.is_empty();
            reserve_read(&mut self.rbuf);
            tokio::select! {
                biased;
                r = self.rd.read_buf(&mut self.rbuf) => {
                    if r? == 0 {
                        return Err(ConnError::Eof);
                    }
                    if self.reply_timeout.is_some() {
                        self.last_progress = Instant::now();
                    }
                    self.deliver_all()?;
                    if let Some(silence) = &self.silence {
                        match self.pending.is_empty() {
                            true => silence.idle(),
                            false => silence.progress(std::time::Instant::now()),
                        }
                    }
                }
                job = jobs.recv(), if take_jobs && !draining => {
                    let Some(job) = job else {
                        // Every sender is gone (the pool was replaced): finish what is in flight.
                        draining = true;
                        if self.pending.is_empty() && self.out.is_empty() {
                            return Ok(());
                        }
                        continue;
                    };
                    if !self.accept(job) || !self.take_queued(jobs) {
                        return Ok(());
                    }
                }
                w = self.wr.writable(), if !self.out.is_empty() => { w?; }
                _ = &mut watchdog, if waiting => {
                    let due = self.last_progress + limit;
                    if Instant::now() >= due {
                        tracing::debug!(silent_ms = self.last_progress.elapsed().as_millis() as u64, "probing the upstream");
                        if !self.upstream_answers(limit).await {
                            return Err(ConnError::ReplyTimeout(limit.as_millis() as u64));
                        }
                        tracing::debug!("upstream slow but alive: still waiting for replies");
                        self.last_progress = Instant::now();
                    }
                    watchdog.as_mut().reset(self.last_progress + limit);
                }
            }
        }
    }

    /// True when the upstream answers a probe (any reply to `PING` on a fresh connection,
    /// within `wait`); false without a probe.
    async fn upstream_answers(&self, wait: Duration) -> bool {
        let Some((url, connect_timeout)) = &self.probe else {
            return false;
        };
        let alive = probe(url, *connect_timeout, wait).await;
        if !alive {
            tracing::warn!(upstream = %url, "upstream silent and not answering a probe");
        }
        alive
    }

    /// Queues one job before the loop runs (the one a connection was opened for).
    pub fn queue(&mut self, job: Job) {
        self.accept(job);
    }

    /// Queues the jobs already waiting in the channel, up to the high-water mark; false when
    /// one of them is `Close`.
    fn take_queued(&mut self, jobs: &mut mpsc::UnboundedReceiver<Job>) -> bool {
        while self.out.len() < OUT_HIGH {
            let Ok(job) = jobs.try_recv() else { break };
            if !self.accept(job) {
                return false;
            }
        }
        true
    }

    /// Queues a job's bytes; false for `Close`.
    fn accept(&mut self, job: Job) -> bool {
        match job {
            Job::Close => false,
            Job::Send { payload, reply } => {
                if self.pending.is_empty() {
                    if self.reply_timeout.is_some() {
                        self.last_progress = Instant::now();
                    }
                    if let Some(silence) = &self.silence {
                        silence.progress(std::time::Instant::now());
                    }
                }
                self.fresh = true;
                self.out.push(&payload);
                match reply {
                    ReplyTo::Stream(sink) => self.stream_sink = Some(sink),
                    other => self.pending.push_back(other),
                }
                true
            }
        }
    }

    /// Hands every complete reply frame in the read buffer to whoever waits for it. Replies
    /// to consecutive requests of one client leave as one delivery, split off the read buffer
    /// once.
    fn deliver_all(&mut self) -> Result<(), ConnError> {
        let mut run = Run::default();
        while let Some(n) = self.scanner.scan(&self.rbuf[run.len..])? {
            let frame = &self.rbuf[run.len..run.len + n];
            let error = reply::is_error(frame);
            // The client's sink is cloned only when a new run starts.
            let next_client = match self.pending.front_mut() {
                Some(ReplyTo::Client { sink, seq, count }) if !reply::is_push(frame) => {
                    let target = match run.extends(sink, *seq) {
                        true => None,
                        false => Some((sink.clone(), *seq)),
                    };
                    *seq += 1;
                    *count -= 1;
                    if *count == 0 {
                        self.pending.pop_front();
                    }
                    Some(target)
                }
                _ => None,
            };
            match next_client {
                Some(new_run) => {
                    if let Some((sink, seq)) = new_run {
                        self.flush_run(&mut run);
                        run.start(sink, seq);
                    }
                    run.count += 1;
                    run.errors += error as u32;
                    run.len += n;
                }
                None => {
                    self.flush_run(&mut run);
                    let frame = self.rbuf.split_to(n).freeze();
                    self.deliver(frame)?;
                }
            }
        }
        self.flush_run(&mut run);
        Ok(())
    }

    fn flush_run(&mut self, run: &mut Run) {
        if let Some(sink) = run.sink.take() {
            let frames = self.rbuf.split_to(run.len).freeze();
            let d = match run.count {
                1 => Delivery::Reply {
                    seq: run.first_seq,
                    frame: frames,
                },
                count => Delivery::Replies {
                    first_seq: run.first_seq,
                    count,
                    errors: run.errors,
                    frames,
                },
            };
            let _ = sink.send(d);
        }
        *run = Run::default();
    }

    fn deliver(&mut self, frame: Bytes) -> Result<(), ConnError> {
        if reply::is_push(&frame) {
            if let Some(sink) = &self.stream_sink {
                let _ = sink.send(Delivery::Push { frame });
            }
            return Ok(());
        }
        let Some(front) = self.pending.front() else {
            return match &self.stream_sink {
                Some(sink) if !self.shared => {
                    let _ = sink.send(Delivery::Push { frame });
                    Ok(())
                }
                _ => Err(ConnError::Unsolicited),
            };
        };
        // In subscribe mode (RESP2) messages can arrive ahead of RESET's reply.
        if matches!(front, ReplyTo::Release { .. }) && frame.as_ref() != b"+RESET\r\n" {
            if let Some(sink) = &self.stream_sink {
                let _ = sink.send(Delivery::Push { frame });
            }
            return Ok(());
        }
        match self.pending.pop_front().expect("checked above") {
            ReplyTo::Client { .. } => unreachable!("client replies are delivered by deliver_all"),
            ReplyTo::Discard | ReplyTo::Stream(_) => {}
            ReplyTo::Release { conn, pool } => {
                self.stream_sink = None;
                if let Some(pool) = pool.upgrade() {
                    pool.give_back(conn);
                }
            }
        }
        Ok(())
    }

    /// Answers every request still waiting with `-ERR <why>` and tells a stream client its
    /// state is gone. Nothing is retried: the request may or may not have run.
    pub fn fail_pending(&mut self, why: &str) {
        let err = encode::error(&format!("ERR rekey: upstream {why}"));
        if let Some(silence) = &self.silence {
            silence.idle();
        }
        for reply in self.pending.drain(..) {
            fail_reply(reply, &err);
        }
        if let Some(sink) = self.stream_sink.take() {
            let _ = sink.send(Delivery::Lost);
        }
    }
}

/// Answers one job that cannot be sent.
pub fn fail_job(job: Job, err: &Bytes) {
    if let Job::Send { reply, .. } = job {
        fail_reply(reply, err);
    }
}

fn fail_reply(reply: ReplyTo, err: &Bytes) {
    match reply {
        ReplyTo::Client { sink, seq, count } => {
            for i in 0..count as u64 {
                let _ = sink.send(Delivery::Reply {
                    seq: seq + i,
                    frame: err.clone(),
                });
            }
        }
        ReplyTo::Stream(sink) => {
            let _ = sink.send(Delivery::Lost);
        }
        ReplyTo::Discard | ReplyTo::Release { .. } => {}
    }
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
