//! The config a session works under: the proxy's current one (picked up with one pointer
//! compare per command), or the snapshot a transaction started with, and the metrics label
//! of the client's identity under it.

use crate::acl::Acl;
use crate::config::{Config, Limits};
use crate::stats;
use arc_swap::{ArcSwap, Cache};
use std::sync::Arc;

/// A session's view of the config.
pub(super) struct ConfigView {
    /// The config in force, refreshed when the proxy's config generation moves.
    pub(super) cfg: Arc<Config>,
    /// The proxy's config as it is now (one pointer compare to check).
    pub(super) live: Cache<Arc<ArcSwap<Config>>, Arc<Config>>,
    /// The config a transaction started with: rules do not change between MULTI and EXEC.
    pub(super) snapshot: Option<Arc<Config>>,
    /// The command counters of this client's `app` label (its identity, as the config names
    /// it), kept up to date by [`ConfigView::relabel`].
    pub(super) app_stats: Arc<stats::AppCommands>,
    /// The limits the client was accepted under.
    pub(super) limits: Limits,
    /// The ACL of the client's identity under `cfg` (`None`: it may do anything), kept up
    /// to date by [`ConfigView::relabel`]: a reload applies to the next command, as
    /// `ACL SETUSER` does in Redis.
    pub(super) acl: Option<Arc<Acl>>,
}

impl ConfigView {
    pub(super) fn new(live: &Arc<ArcSwap<Config>>) -> ConfigView {
        let cfg = live.load_full();
        ConfigView {
            limits: cfg.limits.clone(),
            cfg,
            live: Cache::new(Arc::clone(live)),
            snapshot: None,
            app_stats: stats::AppCommands::of(crate::rules::NO_LABEL),
            acl: None,
        }
    }

    /// Picks up a reloaded config (one atomic load when nothing changed); true when it
    /// changed (the label may have).
    pub(super) fn refresh(&mut self) -> bool {
        let live = self.live.load();
        if Arc::ptr_eq(live, &self.cfg) {
            return false;
        }
        self.cfg = Arc::clone(live);
        true
    }

    /// The config this command runs under: the transaction's snapshot, or the current one.
    pub(super) fn in_force(&self) -> &Arc<Config> {
        self.snapshot.as_ref().unwrap_or(&self.cfg)
    }

    /// Follows the client's identity into the metrics' `app` label and its ACL.
    pub(super) fn relabel(&mut self, identity: Option<&str>) {
        self.acl = self.cfg.access.acl(identity).cloned();
        let rules = &self.cfg.rules;
        let label = rules
            .labels()
            .get(rules.label_of(identity))
            .map_or(crate::rules::NO_LABEL, String::as_str);
        if self.app_stats.label() != label {
            self.app_stats = stats::AppCommands::of(label);
        }
    }
}
