//! How to reach and size the upstream: the one value the configuration hands to
//! [`Upstream`](super::Upstream) and the shared pools read.
//!
//! Its own file, below everything that uses it, so that the shared pool can read its settings
//! without importing the `Upstream` that owns them. It knows nothing of connections.

use crate::upstream::url::UpstreamUrl;
use std::time::Duration;

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
