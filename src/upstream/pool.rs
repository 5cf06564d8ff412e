//! Shared and pinned upstream connections.
//!
//! Shared: for each (protocol, db) a client uses, `connections` long-lived connections, each
//! owned by a task that reconnects with backoff. Clients keep one connection's job channel for
//! their session, so their pipelined requests stay in order on one FIFO. While a connection is
//! down, every job sent to it is answered at once with `-ERR` (no hang, no retry).
//!
//! Pinned: a dedicated connection lent to one client at a time, returned after `RESET` (which
//! ends MULTI, WATCH, subscriptions and tracking) so the next borrower starts clean. The total
//! is bounded by `max_pinned`.

use crate::protocol::encode::{self, Proto};
use crate::protocol::Request;
use crate::stats::stats;
use crate::upstream::conn::{self, fail_job, ConnError, Driver, Job, ReplyTo};
use crate::upstream::silence::{Silence, STALLED_AFTER};
use crate::upstream::UpstreamUrl;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Notify};

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

/// How to reach and size the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub url: UpstreamUrl,
    pub connections: usize,
    pub max_pinned: usize,
    pub connect_timeout: Duration,
    /// Pooled connections silent this long with requests waiting are dropped.
    pub reply_timeout: Option<Duration>,
    /// Worker threads: `connections` are split between their pools.
    pub workers: usize,
}

/// Every connection rekey has to one upstream Redis.
pub struct Upstream {
    settings: UpstreamSettings,
    /// Keyed by (worker thread, protocol, db): each worker has its own pools.
    shared: Mutex<HashMap<(usize, Proto, u32), Arc<SharedPool>>>,
    pinned: Arc<PinnedPool>,
    last_error: LastError,
}

impl Upstream {
    pub fn new(settings: UpstreamSettings) -> Arc<Upstream> {
        let last_error = LastError::default();
        let pinned = Arc::new(PinnedPool {
            url: settings.url.clone(),
            connect_timeout: settings.connect_timeout,
            max: settings.max_pinned,
            total: Arc::new(AtomicUsize::new(0)),
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            returned: Arc::new(Notify::new()),
            last_error: last_error.clone(),
        });
        Arc::new(Upstream {
            settings,
            shared: Mutex::new(HashMap::new()),
            pinned,
            last_error,
        })
    }

    /// The last connection failure (TLS handshake errors included), when there was one.
    pub fn last_error(&self) -> Option<(SystemTime, String)> {
        self.last_error.get()
    }

    pub fn url(&self) -> &UpstreamUrl {
        &self.settings.url
    }

    /// The calling worker's shared pool for `(proto, db)`, started on first use (its
    /// connections run on that worker). Called when a client connects or changes protocol or
    /// db, not per command.
    pub fn shared(&self, proto: Proto, db: u32) -> Arc<SharedPool> {
        let worker = crate::upstream::worker::current();
        let mut map = self.shared.lock().expect("pool map poisoned");
        map.entry((worker, proto, db))
            .or_insert_with(|| SharedPool::start(&self.settings, proto, db, &self.last_error))
            .clone()
    }

    /// Borrows a dedicated connection set to `proto` and `db`.
    pub async fn pin(&self, proto: Proto, db: u32) -> Result<PinnedConn, String> {
        self.pinned.acquire(proto, db).await
    }

    /// Number of pinned connections open (lent or idle).
    pub fn pinned_total(&self) -> usize {
        self.pinned.total.load(Ordering::Relaxed)
    }

    /// True when every shared connection started so far is connected.
    pub fn healthy(&self) -> bool {
        let map = self.shared.lock().expect("pool map poisoned");
        map.values().all(|p| p.healthy())
    }

    /// Each shared pool started so far: protocol, db, connections up / total.
    pub fn pool_states(&self) -> Vec<serde_json::Value> {
        let map = self.shared.lock().expect("pool map poisoned");
        let mut out: Vec<_> = map
            .iter()
            .map(|((worker, proto, db), p)| {
                let up = p.up.iter().filter(|f| f.load(Ordering::Relaxed)).count();
                serde_json::json!({"worker": worker, "protocol": proto.number(), "db": db, "connections_up": up, "connections": p.up.len()})
            })
            .collect();
        out.sort_by_key(|v| {
            (
                v["worker"].as_i64(),
                v["protocol"].as_i64(),
                v["db"].as_i64(),
            )
        });
        out
    }

    /// True when the upstream answers: every started shared connection is up, or (with none
    /// started or some down) a fresh connection succeeds.
    pub async fn reachable(&self) -> bool {
        let all_up = {
            let map = self.shared.lock().expect("pool map poisoned");
            !map.is_empty() && map.values().all(|p| p.healthy())
        };
        all_up || self.probe().await.is_ok()
    }

    /// Sends `req` on a connection of its own and returns the reply: for the commands Redis
    /// answers while a script is busy (`SCRIPT KILL`), which on a shared connection would
    /// wait behind the script. Only AUTH and HELLO are sent first (a busy Redis refuses
    /// SELECT; these commands do not depend on the db).
    pub async fn side_query(&self, req: &Request, proto: Proto) -> Result<Bytes, ConnError> {
        let timeout = self.settings.connect_timeout;
        let stream = conn::connect(&self.settings.url, proto, 0, timeout).await?;
        let mut buf = BytesMut::new();
        match tokio::time::timeout(timeout, conn::roundtrip(&stream, req, &mut buf)).await {
            Ok(r) => r,
            Err(_) => Err(ConnError::ConnectTimeout {
                addr: self.settings.url.addr(),
            }),
        }
    }

    /// Checks that the upstream answers (a fresh connection and handshake).
    pub async fn probe(&self) -> Result<(), ConnError> {
        conn::connect(
            &self.settings.url,
            Proto::Resp2,
            0,
            self.settings.connect_timeout,
        )
        .await
        .map(|_| ())
    }
}

/// `connections` multiplexed connections for one (protocol, db).
pub struct SharedPool {
    slots: Vec<mpsc::UnboundedSender<Job>>,
    up: Vec<Arc<AtomicBool>>,
    silence: Vec<Arc<Silence>>,
    next: AtomicUsize,
}

impl SharedPool {
    fn start(
        settings: &UpstreamSettings,
        proto: Proto,
        db: u32,
        last_error: &LastError,
    ) -> Arc<SharedPool> {
        let n = settings
            .connections
            .div_ceil(settings.workers.max(1))
            .max(1);
        let mut slots = Vec::with_capacity(n);
        let mut up = Vec::with_capacity(n);
        let mut silence = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let flag = Arc::new(AtomicBool::new(false));
            let quiet = Arc::new(Silence::default());
            tokio::spawn(keep_connected(
                settings.clone(),
                (proto, db),
                rx,
                (flag.clone(), quiet.clone()),
                last_error.clone(),
            ));
            slots.push(tx);
            up.push(flag);
            silence.push(quiet);
        }
        Arc::new(SharedPool {
            slots,
            up,
            silence,
            next: AtomicUsize::new(0),
        })
    }

    /// A slot for a new client (round robin).
    pub fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()
    }

    /// Sends a job on slot `slot`.
    pub fn send(&self, slot: usize, job: Job) {
        let tx = &self.slots[slot % self.slots.len()];
        if let Err(mpsc::error::SendError(job)) = tx.send(job) {
            fail_job(job, &encode::error("ERR rekey: upstream pool is shut down"));
        }
    }

    pub fn healthy(&self) -> bool {
        self.up.iter().all(|f| f.load(Ordering::Relaxed))
    }

    /// True when the connection of `slot` has had requests waiting for longer than
    /// [`STALLED_AFTER`] with no reply (a busy script, a Redis that stopped answering).
    pub fn stalled(&self, slot: usize) -> bool {
        self.silence[slot % self.silence.len()].stalled(STALLED_AFTER)
    }
}

/// Owns one shared connection for its whole life: connect, serve, fail what was in flight,
/// back off (answering new jobs with `-ERR` meanwhile), reconnect. While Redis refuses the
/// handshake because it is busy or loading, each job is answered with Redis's own words and
/// the next job tries again.
async fn keep_connected(
    settings: UpstreamSettings,
    (proto, db): (Proto, u32),
    mut jobs: mpsc::UnboundedReceiver<Job>,
    (up, silence): (Arc<AtomicBool>, Arc<Silence>),
    last_error: LastError,
) {
    let mut backoff = Duration::from_millis(50);
    // Failed connects in a row: the first is a warning, then one in every 30 (about a minute at
    // the longest backoff), so an outage does not flood the log.
    let mut failures: u64 = 0;
    let mut connected_before = false;
    // A job taken from the channel to try a connection for (Redis was busy): sent first.
    let mut held: Option<Job> = None;
    loop {
        let why = match conn::connect(&settings.url, proto, db, settings.connect_timeout).await {
            Ok(stream) => {
                if connected_before {
                    stats().upstream_reconnects.increment(1);
                }
                connected_before = true;
                stats().upstream_pooled.increment(1.0);
                up.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(50);
                failures = 0;
                let mut driver = Driver::new(stream, true, settings.reply_timeout)
                    .with_probe(settings.url.clone(), settings.connect_timeout)
                    .with_silence(silence.clone());
                if let Some(job) = held.take() {
                    driver.queue(job);
                }
                let result = driver.run(&mut jobs).await;
                up.store(false, Ordering::Relaxed);
                stats().upstream_pooled.decrement(1.0);
                let why = match &result {
                    Ok(()) => "connection closed".to_string(),
                    Err(e) => e.to_string(),
                };
                driver.fail_pending(&why);
                if result.is_ok() {
                    return; // the pool was dropped
                }
                stats().upstream_errors.increment(1);
                last_error.set(&why);
                tracing::warn!(upstream = %settings.url, error = %why, "shared upstream connection lost");
                why
            }
            Err(e) => {
                if let Some(reply) = e.redis_busy_reply() {
                    let busy = encode::error(reply);
                    if let Some(job) = held.take() {
                        fail_job(job, &busy);
                    }
                    match next_job_within(&mut jobs, Duration::from_secs(1)).await {
                        Ok(job) => held = job,
                        Err(()) => return,
                    }
                    continue;
                }
                stats().upstream_errors.increment(1);
                last_error.set(&e.to_string());
                failures += 1;
                if failures % 30 == 1 {
                    tracing::warn!(upstream = %settings.url, error = %e, attempts = failures, "cannot connect to upstream");
                } else {
                    tracing::debug!(upstream = %settings.url, error = %e, attempts = failures, "cannot connect to upstream");
                }
                e.to_string()
            }
        };
        let err = encode::error(&format!("ERR rekey: upstream unavailable ({why})"));
        if let Some(job) = held.take() {
            fail_job(job, &err);
        }
        if !answer_until(&mut jobs, backoff, &err).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// The next job, if one arrives within `wait`; `Err` when the pool is gone.
async fn next_job_within(
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    wait: Duration,
) -> Result<Option<Job>, ()> {
    match tokio::time::timeout(wait, jobs.recv()).await {
        Ok(Some(job)) => Ok(Some(job)),
        Ok(None) => Err(()),
        Err(_) => Ok(None),
    }
}

/// Answers every job that arrives within `wait` with `err`; false when the pool is gone.
async fn answer_until(
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    wait: Duration,
    err: &Bytes,
) -> bool {
    let wait = tokio::time::sleep(wait);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            _ = &mut wait => return true,
            job = jobs.recv() => match job {
                Some(job) => fail_job(job, err),
                None => return false,
            },
        }
    }
}

/// A dedicated upstream connection lent to one client.
#[derive(Clone)]
pub struct PinnedConn {
    tx: mpsc::UnboundedSender<Job>,
    /// Weak: the pool's idle list holds connections, which must not keep the pool alive.
    pool: Weak<PinnedPool>,
    pub id: u64,
    /// The id Redis gave this connection (`CLIENT ID`), for `CLIENT TRACKING … REDIRECT`
    /// aimed at the client holding it; `None` if Redis did not say.
    pub redis_id: Option<u64>,
}

impl std::fmt::Debug for PinnedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedConn({})", self.id)
    }
}

impl PinnedConn {
    pub fn send(&self, job: Job) {
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            fail_job(
                job,
                &encode::error("ERR rekey: pinned upstream connection lost"),
            );
        }
    }

    /// True once the connection's task has ended (the upstream closed it).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Sends a request whose reply is dropped.
    pub fn send_quiet(&self, req: &Request) {
        self.send(Job::Send {
            payload: req.raw().clone(),
            reply: ReplyTo::Discard,
        });
    }

    /// Ends the lease: `RESET` travels behind the client's last request, and the connection
    /// returns to its pool once that is answered.
    pub fn release(self) {
        let reset = Request::from_args(["RESET"]);
        let pool = self.pool.clone();
        let job = Job::Send {
            payload: reset.raw().clone(),
            reply: ReplyTo::Release {
                conn: self.clone(),
                pool,
            },
        };
        self.send(job);
    }

    /// Ends the lease by closing the connection (a blocking command is still in flight; Redis
    /// unblocks it when the connection goes).
    pub fn close(self) {
        self.send(Job::Close);
    }
}

/// The bounded set of pinned connections.
pub struct PinnedPool {
    url: UpstreamUrl,
    connect_timeout: Duration,
    max: usize,
    total: Arc<AtomicUsize>,
    idle: Mutex<Vec<PinnedConn>>,
    next_id: AtomicU64,
    /// Signalled when a connection is given back or closed.
    returned: Arc<Notify>,
    last_error: LastError,
}

enum OpenError {
    /// At `max_pinned`: worth waiting for one to come back.
    Full(String),
    Failed(String),
}
use OpenError::{Failed, Full};

/// Idle pinned connections kept for reuse; more are closed.
const MAX_IDLE: usize = 16;

impl PinnedPool {
    /// Takes an idle connection, opens one, or (at `max_pinned`) waits for one to come back,
    /// up to the connect timeout.
    async fn acquire(self: &Arc<Self>, proto: Proto, db: u32) -> Result<PinnedConn, String> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let conn = loop {
            let returned = self.returned.notified();
            if let Some(c) = self.take_idle() {
                // `RESET` logged it out: the same handshake a new connection gets.
                for req in conn::ready_commands(&self.url, proto, db) {
                    c.send_quiet(&req);
                }
                break c;
            }
            match self.open(proto, db).await {
                Ok(c) => break c,
                Err(Full(msg)) => {
                    if tokio::time::timeout_at(deadline, returned).await.is_err() {
                        return Err(msg);
                    }
                }
                Err(Failed(msg)) => return Err(msg),
            }
        };
        Ok(conn)
    }

    fn take_idle(&self) -> Option<PinnedConn> {
        let mut idle = self.idle.lock().expect("idle list poisoned");
        while let Some(c) = idle.pop() {
            if !c.tx.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// Opens a new connection, ready for `proto` and `db`.
    async fn open(self: &Arc<Self>, proto: Proto, db: u32) -> Result<PinnedConn, OpenError> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Full(format!(
                "ERR rekey: too many pinned upstream connections (pool.max_pinned = {})",
                self.max
            )));
        }
        let stream = match conn::connect(&self.url, proto, db, self.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                self.total.fetch_sub(1, Ordering::AcqRel);
                self.last_error.set(&e.to_string());
                return Err(Failed(format!("ERR rekey: upstream unavailable ({e})")));
            }
        };
        let redis_id = redis_client_id(&stream, self.connect_timeout).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let total = self.total.clone();
        let returned = self.returned.clone();
        stats().upstream_pinned.increment(1.0);
        tokio::spawn(async move {
            let mut driver = Driver::new(stream, false, None);
            let why = match driver.run(&mut rx).await {
                Ok(()) => "connection closed".to_string(),
                Err(e) => e.to_string(),
            };
            driver.fail_pending(&why);
            rx.close();
            let err = encode::error(&format!("ERR rekey: upstream {why}"));
            while let Ok(job) = rx.try_recv() {
                fail_job(job, &err);
            }
            total.fetch_sub(1, Ordering::AcqRel);
            stats().upstream_pinned.decrement(1.0);
            returned.notify_one();
        });
        Ok(PinnedConn {
            tx,
            pool: Arc::downgrade(self),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            redis_id,
        })
    }

    /// Called by the connection when the `RESET` that ended a lease has been answered.
    pub fn give_back(&self, conn: PinnedConn) {
        let mut idle = self.idle.lock().expect("idle list poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        drop(idle);
        self.returned.notify_one();
    }
}

/// Asks a new connection for its `CLIENT ID` (kept for the connection's life: `RESET` does
/// not change it).
async fn redis_client_id(stream: &crate::transport::Transport, wait: Duration) -> Option<u64> {
    let req = Request::from_args(["CLIENT", "ID"]);
    let mut buf = BytesMut::new();
    let reply = tokio::time::timeout(wait, conn::roundtrip(stream, &req, &mut buf))
        .await
        .ok()?
        .ok()?;
    let digits = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}
