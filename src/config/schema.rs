//! The TOML file as written by operators (serde types), before validation.

use serde::Deserialize;

/// `listen = "addr"` or `listen = ["addr", ...]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default = "default_listen")]
    pub listen: OneOrMany,
    /// TLS listeners (beside `listen`, which may then be empty), with `[tls.server]`.
    pub tls_listen: Option<OneOrMany>,
    pub admin: Option<String>,
    /// When set, `POST /reload` needs `Authorization: Bearer <admin_token>`.
    pub admin_token: Option<String>,
    #[serde(default = "default_upstream")]
    pub upstream: String,
    pub requirepass: Option<String>,
    /// ACL of clients with no identity (the `default` user): `ACL SETUSER`'s rules.
    pub acl: Option<String>,
    /// Worker threads; 0 means half the CPU cores (at least one).
    #[serde(default)]
    pub threads: usize,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub flush: FlushPolicy,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub tls: TlsSection,
    /// `[upstream_auth]`: a changing upstream login (see `upstream_auth.rs`).
    pub upstream_auth: Option<super::upstream_auth::UpstreamAuthConfig>,
}

/// `[tls.upstream]` (for `rediss://` upstreams) and `[tls.server]` (for `tls_listen`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub upstream: Option<UpstreamTlsConfig>,
    pub server: Option<ServerTlsConfig>,
}

pub use crate::tls::{ServerTlsConfig, UpstreamTlsConfig};

pub fn default_listen() -> OneOrMany {
    OneOrMany::One("127.0.0.1:6380".into())
}

pub fn default_upstream() -> String {
    "redis://127.0.0.1:6379".into()
}

/// `[metrics]`: what `/metrics` adds beyond the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `rekey_command_duration_seconds{command}`: a latency histogram per command (off by
    /// default: one more histogram per command name in use).
    pub command_latency: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
    /// Its ACL, in the rule language of Redis 7's `ACL SETUSER` (none: may do anything).
    pub acl: Option<String>,
    /// Its clients at once (the next gets Redis's max-clients error).
    pub max_clients: Option<usize>,
    /// Its pinned upstream connections (transactions, blocking calls, subscriptions) at once.
    pub max_pinned: Option<usize>,
    /// Its requests per second over all of its clients; beyond, rekey reads more slowly.
    pub max_requests_per_sec: Option<u64>,
    /// Its own Redis user upstream (with `upstream_password`): its traffic goes over pools
    /// logged in as that user, so Redis's own ACL applies (inside scripts too).
    pub upstream_user: Option<String>,
    /// The password of `upstream_user` (or of `default` when no user is given).
    pub upstream_password: Option<String>,
}

/// What FLUSHDB/FLUSHALL do for a client whose keys are rewritten.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FlushPolicy {
    #[default]
    Refuse,
    Scoped,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_clients: usize,
    pub max_bulk_bytes: usize,
    pub max_array_len: usize,
    pub max_pipeline: usize,
    pub max_output_bytes: usize,
    pub idle_timeout_secs: u64,
    pub connect_timeout_ms: u64,
    pub reply_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_clients: 10_000,
            max_bulk_bytes: 512 * 1024 * 1024,
            max_array_len: 1024 * 1024,
            max_pipeline: 1024,
            max_output_bytes: 64 * 1024 * 1024,
            idle_timeout_secs: 0,
            connect_timeout_ms: 2_000,
            reply_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub connections: usize,
    pub max_pinned: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            // One connection per worker carries the biggest pipelined batches: the least work
            // for Redis per request (twemproxy's default too). More spread clients so a large
            // reply holds up fewer of them.
            connections: 1,
            max_pinned: 1024,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    pub listen: Option<OneOrMany>,
    pub tls_listen: Option<OneOrMany>,
    /// Its ACL, in the rule language of Redis 7's `ACL SETUSER` (none: may do anything).
    pub acl: Option<String>,
    /// Its clients at once (the next gets Redis's max-clients error).
    pub max_clients: Option<usize>,
    /// Its pinned upstream connections (transactions, blocking calls, subscriptions) at once.
    pub max_pinned: Option<usize>,
    /// Its requests per second over all of its clients; beyond, rekey reads more slowly.
    pub max_requests_per_sec: Option<u64>,
    /// Its own Redis user upstream (with `upstream_password`): its traffic goes over pools
    /// logged in as that user, so Redis's own ACL applies (inside scripts too).
    pub upstream_user: Option<String>,
    /// The password of `upstream_user` (or of `default` when no user is given).
    pub upstream_password: Option<String>,
}

/// `[[rules]]` entries are the rules layer's own type; the file format includes it as is.
pub use crate::rules::RuleConfig;
