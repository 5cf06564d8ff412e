//! The shared pool for one (protocol, db): `connections` long-lived connections, each owned
//! by a task that reconnects with backoff (`keep_connected`). Clients keep one connection's
//! job channel for their session, so their pipelined requests stay in order on one FIFO. While
//! a connection is down, every job sent to it is answered at once with `-ERR` (no hang, no
//! retry).
//!
//! It runs drivers and knows nothing of pinned connections, of which worker or client uses it,
//! or of the `Upstream` that keeps it.

use crate::protocol::encode::{self, Proto};
use crate::stats::stats;
use crate::upstream::contract::Job;
use crate::upstream::credentials::renew::Renewal;
use crate::upstream::dial::{self, LastError};
use crate::upstream::driver::{fail_job, Driver};
use crate::upstream::settings::UpstreamSettings;
use crate::upstream::silence::{Silence, STALLED_AFTER};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// `connections` multiplexed connections for one (protocol, db).
pub struct SharedPool {
    slots: Vec<mpsc::UnboundedSender<Job>>,
    /// What each connection's task publishes, by slot.
    states: Vec<Arc<SlotState>>,
    next: AtomicUsize,
}

/// What the task owning one shared connection publishes for the pool.
#[derive(Default)]
struct SlotState {
    /// The connection is up.
    up: AtomicBool,
    /// How long its requests have waited with no reply.
    silence: Arc<Silence>,
}

impl SharedPool {
    /// Starts the pool's connections (each a task on the calling worker) for `proto` and
    /// `db`; `settings.connections` are split between the workers' pools.
    pub fn start(
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
        let mut states = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let state = Arc::new(SlotState::default());
            tokio::spawn(keep_connected(
                settings.clone(),
                (proto, db),
                rx,
                state.clone(),
                last_error.clone(),
            ));
            slots.push(tx);
            states.push(state);
        }
        Arc::new(SharedPool {
            slots,
            states,
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
        self.states.iter().all(|s| s.up.load(Ordering::Relaxed))
    }

    /// How many of the pool's connections are up.
    pub fn connections_up(&self) -> usize {
        self.states
            .iter()
            .filter(|s| s.up.load(Ordering::Relaxed))
            .count()
    }

    /// How many connections the pool has (up or not).
    pub fn connections(&self) -> usize {
        self.states.len()
    }

    /// True when the connection of `slot` has had requests waiting for longer than
    /// [`STALLED_AFTER`] with no reply (a busy script, a Redis that stopped answering).
    pub fn stalled(&self, slot: usize) -> bool {
        self.states[slot % self.states.len()]
            .silence
            .stalled(STALLED_AFTER)
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
    state: Arc<SlotState>,
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
        // Watching the credential from before the handshake: no change is missed.
        let renewal = Renewal::watching(settings.url.auth.as_ref(), proto);
        let why = match dial::connect(&settings.url, proto, db, settings.connect_timeout).await {
            Ok(stream) => {
                if connected_before {
                    stats().upstream_reconnects.increment(1);
                }
                connected_before = true;
                stats().upstream_pooled.increment(1.0);
                state.up.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(50);
                failures = 0;
                let mut driver = Driver::new(stream, true, settings.reply_timeout)
                    .with_probe(settings.url.clone(), settings.connect_timeout)
                    .with_silence(state.silence.clone())
                    .with_renewal(renewal);
                if let Some(job) = held.take() {
                    driver.queue(job);
                }
                let result = driver.run(&mut jobs).await;
                state.up.store(false, Ordering::Relaxed);
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
