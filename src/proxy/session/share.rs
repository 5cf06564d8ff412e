//! The client's place in its identity's fair share ([`crate::proxy::tenants`]): counted
//! among the identity's clients while it is one of them (over `max_clients`, Redis's
//! `-ERR max number of clients reached` and the connection closes), a pinned connection
//! counted against `max_pinned` (over it, a clear error: the command is not run), and its
//! requests spent from `max_requests_per_sec` (over it, reading pauses until the budget
//! refills: nothing is refused, nothing is lost).

use crate::proxy::session::Session;
use crate::proxy::tenants::{Member, PinSlot};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redis's reply to a client over `maxclients`.
pub(super) const MAX_CLIENTS: &str = "ERR max number of clients reached";

/// What the session holds of its identity's share.
#[derive(Debug, Default)]
pub(super) struct Tenancy {
    /// Counted among its identity's clients (none: no identity).
    member: Option<Member>,
    /// Counted among its identity's pinned connections while it holds one.
    pin_slot: Option<PinSlot>,
    /// Reading waits until then: the identity is over its request budget.
    pub(super) paused_until: Option<Instant>,
}

impl Session {
    /// Follows a change of identity into its share; false when the new identity is at its
    /// `max_clients` (the client must be told and closed).
    pub(super) fn follow_share(&mut self) -> bool {
        let identity = self.identity().map(str::to_string);
        let current = self
            .tenancy
            .member
            .as_ref()
            .map(|m| m.tenant().name.as_str());
        if current == identity.as_deref() {
            return true;
        }
        self.tenancy.member = None;
        self.tenancy.pin_slot = None;
        let Some(name) = identity else {
            return true;
        };
        let max = self.view.cfg.access.share(Some(&name)).max_clients;
        self.tenancy.member = self.proxy.tenants.get(&name).join(max);
        self.tenancy.member.is_some()
    }

    /// Follows the client's identity to its own upstream login, or back to the proxy's.
    pub(super) fn follow_own_upstream(&mut self) {
        let url = self.proxy.upstream.load().url().clone();
        let own = (self.proxy.own_upstreams).of(&self.view.cfg, &url, self.identity());
        let cell = own.unwrap_or_else(|| Arc::clone(&self.proxy.upstream));
        self.sender.follow(&cell);
    }

    /// Counts a pinned connection about to be taken against the identity's `max_pinned`;
    /// the error to answer when it is at the limit.
    pub(super) fn take_pin_slot(&mut self) -> Result<(), String> {
        let Some(member) = &self.tenancy.member else {
            return Ok(());
        };
        let tenant = member.tenant();
        let max = self.view.cfg.access.share(Some(&tenant.name)).max_pinned;
        match tenant.pin(max) {
            Some(slot) => {
                self.tenancy.pin_slot = Some(slot);
                Ok(())
            }
            None => Err(format!(
                "ERR rekey: '{}' holds its max_pinned ({}) connections for transactions, blocking commands and subscriptions already",
                tenant.name,
                max.unwrap_or_default()
            )),
        }
    }

    /// Gives the pinned-connection count back once the client holds none.
    pub(super) fn sync_pin_slot(&mut self) {
        if self.lease.pin.is_none() {
            self.tenancy.pin_slot = None;
        }
    }

    /// Spends `n` requests from the identity's budget; pauses reading when it is spent.
    #[inline]
    pub(super) fn spend_budget(&mut self, n: u64) {
        if n == 0 || self.tenancy.member.is_none() {
            return;
        }
        self.spend_budget_of_member(n);
    }

    #[inline(never)]
    fn spend_budget_of_member(&mut self, n: u64) {
        let Some(member) = &self.tenancy.member else {
            return;
        };
        let tenant = member.tenant();
        let Some(rate) = self
            .view
            .cfg
            .access
            .share(Some(&tenant.name))
            .max_requests_per_sec
        else {
            return;
        };
        let now = Instant::now();
        if let Some(wait) = tenant.spend(n, rate, now) {
            crate::stats::app_throttled(self.view.app_stats.label(), wait);
            self.tenancy.paused_until = Some(now + wait);
        }
    }

    /// Whether reading waits for the budget; clears the pause once it is over.
    #[inline]
    pub(super) fn paused(&mut self) -> bool {
        match self.tenancy.paused_until {
            Some(t) if t > Instant::now() => true,
            Some(_) => {
                self.tenancy.paused_until = None;
                false
            }
            None => false,
        }
    }

    /// How long the current pause has left (an hour when there is none: the timer is off).
    pub(super) fn pause_left(&self) -> Duration {
        self.tenancy
            .paused_until
            .map_or(Duration::from_secs(3600), |t| {
                t.saturating_duration_since(Instant::now())
            })
    }
}
