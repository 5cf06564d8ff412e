//! One live upstream connection's loop (the [`Driver`]): writes batched requests and reads
//! replies, matching each reply to the oldest request still waiting (Redis answers in order).
//! A reply is handed on as the original bytes; replies to consecutive requests of one client
//! leave as one delivery.
//!
//! Frames that answer no request go to the connection's current stream sink (pub/sub messages
//! and RESP3 pushes on a pinned connection) or are dropped (a push on a shared connection).
//!
//! With `[upstream_auth]`, the driver also renews the connection's login when the credential
//! changes: it queues `AUTH` itself, in pipeline order, and reads the reply
//! ([`Renewal`] says when it may).
//!
//! It knows jobs and deliveries (`contract`) and how to probe a silent upstream (`dial`), and
//! nothing of the pools that own it: the reply to a lease's `RESET` fires the
//! [`GiveBack`](crate::upstream::contract::GiveBack) the pinned pool put in the job.

use crate::protocol::encode;
use crate::protocol::reply::{self, FrameScanner};
use crate::transport::{ReadHalf, Transport, WriteHalf};
use crate::upstream::contract::{Delivery, Job, ReplyTo, Seqs, Sink};
use crate::upstream::credentials::renew::Renewal;
use crate::upstream::dial::{probe, ConnError};
use crate::upstream::silence::Silence;
use crate::upstream::url::UpstreamUrl;
use crate::wire::{reserve_read, WriteQueue};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
    /// Re-login when the upstream credential changes (see [`Driver::with_renewal`]).
    renewal: Option<Renewal>,
}

/// Consecutive replies for one client, not yet split off the read buffer.
#[derive(Default)]
struct Run {
    sink: Option<Sink>,
    /// The first request's sequence number, or for a scattered batch, its index in `seqs`.
    first_seq: u64,
    /// The sequence numbers of a scattered batch.
    seqs: Option<Seqs>,
    count: u32,
    errors: u32,
    len: usize,
}

impl Run {
    /// True when the reply to request `seq` follows this run's last.
    fn extends(&self, sink: &Sink, seq: u64) -> bool {
        self.sink.as_ref().is_some_and(|s| s.same_channel(sink))
            && seq == self.first_seq + self.count as u64
            && self.seqs.is_none()
    }

    /// True when the reply to the request at index `at` of a scattered batch's `seqs` follows
    /// this run's last.
    fn extends_scattered(&self, seqs: &Seqs, at: u64) -> bool {
        self.seqs.as_ref().is_some_and(|s| Arc::ptr_eq(s, seqs))
            && at == self.first_seq + self.count as u64
    }

    fn start(&mut self, sink: Sink, seq: u64, seqs: Option<Seqs>) {
        self.sink = Some(sink);
        self.first_seq = seq;
        self.seqs = seqs;
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
            renewal: None,
        }
    }

    /// Renews this connection's login in its own pipeline whenever the upstream credential
    /// changes (`[upstream_auth]`); `None`: a fixed login.
    pub fn with_renewal(mut self, renewal: Option<Renewal>) -> Driver {
        self.renewal = renewal;
        self
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
                    self.deliver_all()?;
                    self.progressed(!self.pending.is_empty());
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
                _ = renewal_wanted(&mut self.renewal), if self.renewal.is_some() => {
                    self.queue_renewal();
                }
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

    /// Something happened on the connection (replies arrived, or a request was queued on an
    /// idle one): the watchdog's clock restarts, and the silence published for sessions says
    /// whether requests are `waiting` now.
    fn progressed(&mut self, waiting: bool) {
        if self.reply_timeout.is_some() || self.silence.is_some() {
            self.last_progress = Instant::now();
        }
        if let Some(silence) = &self.silence {
            match waiting {
                true => silence.progress(self.last_progress.into_std()),
                false => silence.idle(),
            }
        }
    }

    /// Queues a job's bytes; false for `Close`.
    fn accept(&mut self, job: Job) -> bool {
        match job {
            Job::Close => false,
            Job::Send { payload, reply } => {
                if self.pending.is_empty() {
                    self.progressed(true);
                }
                self.fresh = true;
                self.out.push(&payload);
                match reply {
                    ReplyTo::Stream(sink) => self.stream_sink = Some(sink),
                    other => self.pending.push_back(other),
                }
                if !self.shared {
                    if let Some(r) = &mut self.renewal {
                        r.note_sent(&payload);
                    }
                }
                // An `AUTH` held back (inside MULTI) goes right behind what ended it.
                self.queue_renewal();
                true
            }
        }
    }

    /// Queues the renewal `AUTH` when one is owed and the connection can take it now.
    fn queue_renewal(&mut self) {
        let Some(auth) = self.renewal.as_mut().and_then(Renewal::take) else {
            return;
        };
        tracing::debug!(
            shared = self.shared,
            "renewing the upstream login on a live connection"
        );
        if self.pending.is_empty() {
            self.progressed(true);
        }
        self.out.push(&auth);
        self.pending.push_back(ReplyTo::Renewal);
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
                        false => Some((sink.clone(), *seq, None)),
                    };
                    *seq += 1;
                    *count -= 1;
                    if *count == 0 {
                        self.pending.pop_front();
                    }
                    Some(target)
                }
                Some(ReplyTo::Scattered { sink, seqs, next }) if !reply::is_push(frame) => {
                    let at = *next as u64;
                    let target = match run.extends_scattered(seqs, at) {
                        true => None,
                        false => Some((sink.clone(), at, Some(seqs.clone()))),
                    };
                    *next += 1;
                    if *next as usize == seqs.len() {
                        self.pending.pop_front();
                    }
                    Some(target)
                }
                _ => None,
            };
            match next_client {
                Some(new_run) => {
                    if let Some((sink, seq, seqs)) = new_run {
                        self.flush_run(&mut run);
                        run.start(sink, seq, seqs);
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
            let d = match (run.seqs.take(), run.count) {
                (Some(seqs), count) => Delivery::Scattered {
                    seqs,
                    first: run.first_seq as u32,
                    count,
                    frames,
                },
                (None, 1) => Delivery::Reply {
                    seq: run.first_seq,
                    frame: frames,
                },
                (None, count) => Delivery::Replies {
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
        if matches!(front, ReplyTo::Release(_)) && frame.as_ref() != b"+RESET\r\n" {
            if let Some(sink) = &self.stream_sink {
                let _ = sink.send(Delivery::Push { frame });
            }
            return Ok(());
        }
        match self.pending.pop_front().expect("checked above") {
            ReplyTo::Client { .. } | ReplyTo::Scattered { .. } => {
                unreachable!("client replies are delivered by deliver_all")
            }
            ReplyTo::Discard | ReplyTo::Stream(_) => {}
            ReplyTo::Renewal => {
                if let Some(r) = &mut self.renewal {
                    r.answered(&frame);
                }
            }
            ReplyTo::Release(give_back) => {
                self.stream_sink = None;
                if let Some(r) = &mut self.renewal {
                    r.reset();
                }
                give_back.fire();
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
        ReplyTo::Scattered { sink, seqs, next } => {
            for &seq in &seqs[next as usize..] {
                let _ = sink.send(Delivery::Reply {
                    seq,
                    frame: err.clone(),
                });
            }
        }
        ReplyTo::Stream(sink) => {
            let _ = sink.send(Delivery::Lost);
        }
        ReplyTo::Discard | ReplyTo::Renewal | ReplyTo::Release(_) => {}
    }
}

/// Resolves when the connection's renewal wants attention (see [`Renewal::wanted`]).
async fn renewal_wanted(renewal: &mut Option<Renewal>) {
    match renewal {
        Some(r) => r.wanted().await,
        None => std::future::pending().await,
    }
}
