//! Each identity's fair share of the proxy at run time: how many clients and pinned upstream
//! connections it holds now, and its request budget. The limits themselves are the config's
//! (`max_clients`, `max_pinned`, `max_requests_per_sec` on `[[users]]`/`[[apps]]`, read at
//! each use, so a reload applies at once); the counts live here, by identity name, across
//! reloads. One app that opens thousands of connections, parks them in `BLPOP` or floods
//! requests then takes only its own share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How far ahead of its budget an identity may run before its clients are paused: a burst
/// of a tenth of a second's requests.
const BURST: Duration = Duration::from_millis(100);

/// Every identity's counts.
#[derive(Debug, Default)]
pub struct Tenants {
    by_name: Mutex<HashMap<String, Arc<Tenant>>>,
}

impl Tenants {
    /// The counts of identity `name`.
    pub fn get(&self, name: &str) -> Arc<Tenant> {
        let mut map = self.by_name.lock().expect("tenants lock");
        Arc::clone(
            map.entry(name.to_string())
                .or_insert_with(|| Arc::new(Tenant::new(name))),
        )
    }
}

/// One identity's clients, pinned connections and request budget.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    clients: AtomicUsize,
    pinned: AtomicUsize,
    /// When the budget is spent up to (nanoseconds after `epoch`): the next request is due
    /// then (the "theoretical arrival time" of a GCRA bucket).
    due: AtomicU64,
    epoch: Instant,
}

/// One of a tenant's clients; counted until dropped.
#[derive(Debug)]
pub struct Member(Arc<Tenant>);

/// One of a tenant's pinned connections; counted until dropped.
#[derive(Debug)]
pub struct PinSlot(Arc<Tenant>);

impl Tenant {
    fn new(name: &str) -> Tenant {
        Tenant {
            name: name.to_string(),
            clients: AtomicUsize::new(0),
            pinned: AtomicUsize::new(0),
            due: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Counts one more client, unless that would exceed `max`.
    pub fn join(self: &Arc<Self>, max: Option<usize>) -> Option<Member> {
        take(&self.clients, max).then(|| Member(Arc::clone(self)))
    }

    /// Counts one more pinned connection, unless that would exceed `max`.
    pub fn pin(self: &Arc<Self>, max: Option<usize>) -> Option<PinSlot> {
        take(&self.pinned, max).then(|| PinSlot(Arc::clone(self)))
    }

    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    pub fn pinned(&self) -> usize {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Spends `n` requests of a budget of `per_sec`: how long the spender should stop
    /// reading (`None`: within the budget and its burst). Shared by all of the tenant's
    /// clients; nothing is refused, the reading just waits.
    pub fn spend(&self, n: u64, per_sec: u64, now: Instant) -> Option<Duration> {
        let interval = 1_000_000_000 / per_sec.max(1);
        let now_ns = now.duration_since(self.epoch).as_nanos() as u64;
        let cost = n.saturating_mul(interval);
        let mut due = self.due.load(Ordering::Relaxed);
        loop {
            let next = due.max(now_ns).saturating_add(cost);
            match self
                .due
                .compare_exchange_weak(due, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    let ahead = Duration::from_nanos(next.saturating_sub(now_ns));
                    return ahead.checked_sub(BURST).filter(|d| !d.is_zero());
                }
                Err(seen) => due = seen,
            }
        }
    }
}

/// Takes one of `count` unless it is at `max` already.
fn take(count: &AtomicUsize, max: Option<usize>) -> bool {
    let limit = max.unwrap_or(usize::MAX);
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

impl Member {
    pub fn tenant(&self) -> &Arc<Tenant> {
        &self.0
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for PinSlot {
    fn drop(&mut self) {
        self.0.pinned.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_and_pins_are_counted_up_to_the_limit() {
        let tenants = Tenants::default();
        let t = tenants.get("a");
        let one = t.join(Some(2)).unwrap();
        let _two = t.join(Some(2)).unwrap();
        assert!(t.join(Some(2)).is_none());
        drop(one);
        let _three = t.join(Some(2)).unwrap();
        assert_eq!(tenants.get("a").clients(), 2, "the same tenant by name");
        let p = t.pin(Some(1)).unwrap();
        assert!(t.pin(Some(1)).is_none());
        drop(p);
        assert_eq!(t.pinned(), 0);
        assert!(t.pin(None).is_some());
    }

    #[test]
    fn a_budget_pauses_only_beyond_its_burst() {
        let t = Tenants::default().get("a");
        let now = Instant::now();
        // 1000/s: 100 requests are the burst.
        assert_eq!(t.spend(100, 1000, now), None);
        let wait = t.spend(100, 1000, now).unwrap();
        assert_eq!(wait, Duration::from_millis(100));
        // A second later the budget has refilled.
        assert_eq!(t.spend(50, 1000, now + Duration::from_secs(2)), None);
    }
}
