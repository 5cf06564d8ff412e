//! Pinned connections: a dedicated connection ([`PinnedConn`]) lent to one client at a time,
//! returned after `RESET` (which ends MULTI, WATCH, subscriptions and tracking) so the next
//! borrower starts clean. The total is bounded by `max_pinned`; up to `MAX_IDLE` returned
//! connections wait for reuse.
//!
//! A lease ends with [`PinnedConn::release`]: `RESET` travels behind the client's last request
//! with a [`GiveBack`] this pool made, and the driver fires it when `RESET` is answered. So the
//! driver never imports this file. It knows nothing of the shared pools or of `Upstream`.

use crate::protocol::encode::{self, Proto};
use crate::protocol::Request;
use crate::stats::stats;
use crate::transport::Transport;
use crate::upstream::contract::{GiveBack, Job, ReplyTo};
use crate::upstream::credentials::renew::Renewal;
use crate::upstream::dial::{self, LastError};
use crate::upstream::driver::{fail_job, Driver};
use crate::upstream::url::UpstreamUrl;
use bytes::BytesMut;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

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
        let job = Job::Send {
            payload: reset.raw().clone(),
            reply: ReplyTo::Release(self.give_back()),
        };
        self.send(job);
    }

    /// What the connection's driver fires when that `RESET` is answered: this connection back
    /// on its pool's idle list (if the pool is still there).
    fn give_back(&self) -> GiveBack {
        let conn = self.clone();
        let pool = self.pool.clone();
        GiveBack::new(move || {
            if let Some(pool) = pool.upgrade() {
                pool.give_back(conn);
            }
        })
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
    /// An empty pool of at most `max` connections to `url`.
    pub fn new(
        url: UpstreamUrl,
        connect_timeout: Duration,
        max: usize,
        last_error: LastError,
    ) -> PinnedPool {
        PinnedPool {
            url,
            connect_timeout,
            max,
            total: Arc::new(AtomicUsize::new(0)),
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            returned: Arc::new(Notify::new()),
            last_error,
        }
    }

    /// Number of pinned connections open (lent or idle).
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Takes an idle connection, opens one, or (at `max_pinned`) waits for one to come back,
    /// up to the connect timeout.
    pub async fn acquire(self: &Arc<Self>, proto: Proto, db: u32) -> Result<PinnedConn, String> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let conn = loop {
            let returned = self.returned.notified();
            if let Some(c) = self.take_idle() {
                // `RESET` logged it out: the same handshake a new connection gets.
                for req in dial::ready_commands(&self.url, proto, db) {
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
        let renewal = Renewal::watching(self.url.auth.as_ref(), proto);
        let stream = match dial::connect(&self.url, proto, db, self.connect_timeout).await {
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
            let mut driver = Driver::new(stream, false, None).with_renewal(renewal);
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

    /// Called (through `PinnedConn::give_back`) when the `RESET` that ended a lease has been
    /// answered.
    fn give_back(&self, conn: PinnedConn) {
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
async fn redis_client_id(stream: &Transport, wait: Duration) -> Option<u64> {
    let req = Request::from_args(["CLIENT", "ID"]);
    let mut buf = BytesMut::new();
    let reply = tokio::time::timeout(wait, dial::roundtrip(stream, &req, &mut buf))
        .await
        .ok()?
        .ok()?;
    let digits = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}
