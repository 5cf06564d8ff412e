//! How long a shared connection has been waiting for Redis with nothing coming back.
//!
//! A client whose shared connection sits behind a busy script (or a Redis that stopped
//! answering) must still get Redis's own answer to `PING`: `-BUSY`, `-LOADING`, or an error
//! when Redis cannot be reached. The connection's driver keeps this one word up to date (a
//! relaxed store when a request is queued on an idle connection and after each read), and a
//! session reads it before sending a `PING` of a client that has nothing else in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A connection silent this long while requests wait counts as stalled: longer than a
/// loaded Redis ever takes between two replies, far shorter than any busy-script threshold.
pub const STALLED_AFTER: Duration = Duration::from_millis(200);

/// Milliseconds (plus one, so that 0 means "nothing waits") since the process's clock base
/// of the last progress on a connection with requests waiting.
#[derive(Debug, Default)]
pub struct Silence(AtomicU64);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn millis(at: Instant) -> u64 {
    at.saturating_duration_since(base()).as_millis() as u64 + 1
}

impl Silence {
    /// Requests wait, and something happened at `now` (a reply, or the first request).
    pub fn progress(&self, now: Instant) {
        self.0.store(millis(now), Ordering::Relaxed);
    }

    /// Nothing waits any more.
    pub fn idle(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// True when requests have waited longer than `limit` with no reply.
    pub fn stalled(&self, limit: Duration) -> bool {
        match self.0.load(Ordering::Relaxed) {
            0 => false,
            since => millis(Instant::now()).saturating_sub(since) > limit.as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_recent_progress_are_not_stalled() {
        let s = Silence::default();
        assert!(!s.stalled(Duration::ZERO));
        s.progress(Instant::now());
        assert!(!s.stalled(Duration::from_secs(5)));
        s.idle();
        assert!(!s.stalled(Duration::ZERO));
    }

    #[test]
    fn old_progress_with_requests_waiting_is_stalled() {
        let s = Silence::default();
        let _ = base();
        std::thread::sleep(Duration::from_millis(30));
        s.progress(Instant::now() - Duration::from_millis(25));
        assert!(s.stalled(Duration::from_millis(10)));
    }
}
