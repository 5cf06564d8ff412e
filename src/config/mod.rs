//! Configuration: the TOML schema ([`schema`]), and its validation (`validate.rs`, one
//! function per section) into a [`Config`] that the proxy can run with. A config is validated
//! whole; nothing half-valid is ever served.
//! Load and validate only: applying a config (binding, reloading, swapping pools) is
//! [`crate::server`]'s job.

mod access;
pub mod schema;
pub mod upstream_auth;
mod validate;

pub use access::{Access, Share};

use crate::rules::RuleSet;
use crate::tls::{ServerTls, TlsError};
use crate::upstream::credentials::source::AuthSpec;
use crate::upstream::credentials::CredentialRef;
use crate::upstream::url::{UpstreamUrl, UrlError};
use crate::upstream::UpstreamSettings;
// `redis-sentinel://`'s settings: the upstream layer's type, which resolves them.
pub use crate::upstream::sentinel::SentinelConfig;
use schema::{FileConfig, FlushPolicy, MetricsConfig, PoolConfig, UserConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("listen address {addr:?}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("admin address {addr:?}: {reason}")]
    Admin { addr: String, reason: String },
    #[error("upstream: {0}")]
    Upstream(#[from] UrlError),
    #[error("rule {name:?}: {reason}")]
    Rule { name: String, reason: String },
    #[error("app {name:?}: {reason}")]
    App { name: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("[tls.{section}]: {source}")]
    Tls {
        section: &'static str,
        source: TlsError,
    },
}

/// A listener and the app identity of clients arriving on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub app: Option<String>,
    /// A `tls_listen` address: clients do a TLS handshake first (`[tls.server]`).
    pub tls: bool,
}

/// Client authentication at the proxy.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    pub requirepass: Option<String>,
    pub users: Vec<UserConfig>,
}

impl ClientAuth {
    /// True when clients must AUTH before anything else.
    pub fn required(&self) -> bool {
        self.requirepass.is_some() || !self.users.is_empty()
    }

    /// Checks credentials in constant time per candidate. `user` None means `default`.
    pub fn check(&self, user: Option<&[u8]>, pass: &[u8]) -> bool {
        let user = user.unwrap_or(b"default");
        let mut ok = false;
        if user == b"default" {
            if let Some(p) = &self.requirepass {
                ok |= constant_time_eq(p.as_bytes(), pass);
            }
        }
        for u in &self.users {
            let name_ok = constant_time_eq(u.name.as_bytes(), user);
            let pass_ok = constant_time_eq(u.password.as_bytes(), pass);
            ok |= name_ok & pass_ok;
        }
        ok
    }
}

/// Compares two secrets in constant time (`subtle`): no early exit on the first difference.
/// Lengths are not secret (Redis compares passwords the same way).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Limits applied to each client.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_clients: usize,
    pub max_bulk_bytes: usize,
    pub max_array_len: usize,
    pub max_pipeline: usize,
    pub max_output_bytes: usize,
    pub idle_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// A pooled upstream connection that answers nothing for this long is dropped and its
    /// waiting requests get `-ERR` (`None`: wait forever).
    pub reply_timeout: Option<Duration>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub listeners: Vec<ListenerConfig>,
    pub admin: Option<SocketAddr>,
    /// Bearer token that `POST /reload` requires, when set.
    pub admin_token: Option<String>,
    /// Where the upstream is, as configured (the live address is the proxy's, see
    /// [`UpstreamTarget`]).
    pub upstream: UpstreamTarget,
    pub auth: ClientAuth,
    pub flush: FlushPolicy,
    pub limits: Limits,
    pub pool: PoolConfig,
    pub metrics: MetricsConfig,
    /// Worker threads (resolved: at least 1).
    pub threads: usize,
    pub rules: Arc<RuleSet>,
    /// Each identity's ACL and limits.
    pub access: Arc<Access>,
    /// `[tls.server]`, read and checked: what `tls_listen` listeners present. Reloaded with
    /// the config (a new certificate serves new connections; open ones keep theirs).
    pub server_tls: Option<Arc<ServerTls>>,
    /// Distinct for every config validated in this process; prefix memories key on it.
    pub generation: u64,
    /// `[upstream_auth]`, validated: the server starts its source and attaches the live
    /// credential to the upstream's URLs ([`UpstreamTarget::with_credentials`]).
    pub upstream_auth: Option<AuthSpec>,
}

/// The `upstream` setting: one Redis, a cluster's seeds, or the sentinels of a primary. This
/// is configuration only; where rekey is connected now (the primary Sentinel named last, the
/// cluster's nodes) lives in the proxy's live upstream and cluster map, in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// `redis://[user:pass@]host:port[/db]`.
    Single(UpstreamUrl),
    /// `redis-cluster://[user:pass@]host:port,host:port`: the nodes rekey learns the cluster
    /// from.
    Cluster { seeds: Vec<UpstreamUrl> },
    /// `redis-sentinel://[user:pass@]host:port,…/primary[/db]`.
    Sentinel(SentinelConfig),
}

impl UpstreamTarget {
    /// The credentials and db of every data connection (a cluster's first seed; for Sentinel,
    /// the primary's, on an address still to be asked for).
    pub fn template(&self) -> &UpstreamUrl {
        match self {
            UpstreamTarget::Single(url) => url,
            UpstreamTarget::Cluster { seeds } => &seeds[0],
            UpstreamTarget::Sentinel(s) => &s.primary,
        }
    }

    /// The db a new client starts in.
    pub fn db(&self) -> u32 {
        self.template().db
    }

    /// Attaches the live `[upstream_auth]` credential (or none) to every URL rekey logs in
    /// with: the one Redis, each cluster seed (and so each node), a Sentinel's primary.
    pub fn with_credentials(&mut self, creds: Option<CredentialRef>) {
        match self {
            UpstreamTarget::Single(url) => url.auth = creds,
            UpstreamTarget::Cluster { seeds } => {
                seeds.iter_mut().for_each(|s| s.auth = creds.clone())
            }
            UpstreamTarget::Sentinel(s) => s.primary.auth = creds,
        }
    }

    /// The live credential attached by [`UpstreamTarget::with_credentials`], if any.
    pub fn credentials(&self) -> Option<&CredentialRef> {
        self.template().auth.as_ref()
    }

    /// Whether a reload may move to another upstream of this kind without a restart.
    pub fn reloadable(&self) -> bool {
        matches!(self, UpstreamTarget::Single(_))
    }
}

impl std::fmt::Display for UpstreamTarget {
    /// As configured, with passwords hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts = |urls: &[UpstreamUrl]| {
            urls.iter()
                .map(UpstreamUrl::addr)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            UpstreamTarget::Single(url) => write!(f, "{url}"),
            UpstreamTarget::Cluster { seeds } => write!(f, "redis-cluster://{}", hosts(seeds)),
            UpstreamTarget::Sentinel(s) => {
                write!(f, "redis-sentinel://{}/{}", hosts(&s.sentinels), s.master)
            }
        }
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl Config {
    /// How pools to `url` are made under this config (the upstream, a cluster node, or a
    /// primary named by the sentinels).
    pub fn upstream_settings(&self, url: UpstreamUrl) -> UpstreamSettings {
        UpstreamSettings {
            url,
            connections: self.pool.connections,
            max_pinned: self.pool.max_pinned,
            connect_timeout: self.limits.connect_timeout,
            reply_timeout: self.limits.reply_timeout,
            workers: self.threads,
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut cfg = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.into(),
                source,
            },
            other => other,
        })?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("config"),
            source: Box::new(e),
        })?;
        Config::validate(file)
    }

    /// A plain proxy with no file: defaults, no rules.
    pub fn plain(listen: &str, upstream: &str) -> Result<Config, ConfigError> {
        let mut file: FileConfig = toml::from_str("").expect("empty config parses");
        file.listen = schema::OneOrMany::One(listen.to_string());
        file.upstream = upstream.to_string();
        Config::validate(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rekey.toml"))
                .unwrap();
        let cfg = Config::parse(&text).unwrap();
        assert_eq!(cfg.listeners[0].addr.port(), 6380);
        assert_eq!(cfg.upstream.template().port, 6379);
    }

    #[test]
    fn upstream_kinds_parse_into_one_target() {
        let target = |u: &str| {
            Config::parse(&format!("upstream = \"{u}\""))
                .unwrap()
                .upstream
        };
        let single = target("redis://:pw@10.0.0.1:6390/3");
        assert!(matches!(&single, UpstreamTarget::Single(u) if u.port == 6390));
        assert_eq!(single.db(), 3);
        assert!(single.reloadable());
        assert_eq!(single.to_string(), "redis://***@10.0.0.1:6390/3");
        let cluster = target("redis-cluster://u:pw@127.0.0.1:7000,127.0.0.1:7001");
        let UpstreamTarget::Cluster { seeds } = &cluster else {
            panic!("{cluster}")
        };
        assert_eq!(seeds.len(), 2);
        assert_eq!(
            seeds[1].user.as_deref(),
            Some("u"),
            "every seed has the credentials"
        );
        assert_eq!(cluster.template().port, 7000);
        assert!(!cluster.reloadable());
        assert_eq!(
            cluster.to_string(),
            "redis-cluster://127.0.0.1:7000,127.0.0.1:7001"
        );
        let sentinel = target("redis-sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/2");
        let UpstreamTarget::Sentinel(s) = &sentinel else {
            panic!("{sentinel}")
        };
        assert_eq!((s.master.as_str(), s.sentinels.len()), ("mymaster", 2));
        assert_eq!(sentinel.db(), 2, "the primary's db");
        assert_eq!(sentinel.template().pass.as_deref(), Some("pw"));
        assert!(!sentinel.to_string().contains("pw"), "{sentinel}");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Config::parse("listen = \"nope\"").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = Config::parse("upstream = \"http://x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("redis://"), "{e}");
        let e = Config::parse("[[rules]]\nname='r'\nmatch='('\nreplace=''")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rule \"r\""), "{e}");
        let e = Config::parse("bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = Config::parse("[pool]\nconnections = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pool.connections"), "{e}");
    }

    #[test]
    fn tls_settings_are_checked() {
        let e = Config::parse("tls_listen = \"127.0.0.1:0\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[tls.server]"), "{e}");
        let e = Config::parse("listen = []").unwrap_err().to_string();
        assert!(e.contains("tls_listen"), "{e}");
        let e = Config::parse("[tls.upstream]\nserver_name = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rediss://"), "{e}");
        let e = Config::parse(
            "upstream = \"rediss://h:1\"\n[tls.upstream]\nca_file = \"/nonexistent/ca.pem\"",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let e = Config::parse(
            "upstream = \"rediss://h:1\"\n[tls.upstream]\ncert_file = \"/nonexistent/c.pem\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cert_file"), "{e}");
    }

    #[test]
    fn tls_upstream_schemes() {
        let c = Config::parse("upstream = \"rediss://:pw@cache.example.net:6380\"").unwrap();
        let UpstreamTarget::Single(u) = &c.upstream else {
            panic!("{:?}", c.upstream)
        };
        assert!(u.tls.is_some());
        assert_eq!(u.port, 6380);
        let c = Config::parse("upstream = \"rediss-cluster://cfg.example.net:7000,10.0.0.2:7000\"")
            .unwrap();
        let UpstreamTarget::Cluster { seeds } = &c.upstream else {
            panic!("{:?}", c.upstream)
        };
        assert!(seeds.iter().all(|s| s.tls.is_some()));
        let c = Config::parse("upstream = \"rediss-sentinel://s1.example.net:26379/mymaster\"")
            .unwrap();
        let UpstreamTarget::Sentinel(s) = &c.upstream else {
            panic!("{:?}", c.upstream)
        };
        assert!(s.sentinels[0].tls.is_some());
        let primary_tls = s.primary.tls.clone().unwrap();
        // The primary, named by IP address, is verified as the sentinel's host.
        assert_eq!(primary_tls.name_for("10.0.0.9"), "s1.example.net");
        let c = Config::parse("upstream = \"redis-cluster://127.0.0.1:7000\"").unwrap();
        assert!(c.upstream.template().tls.is_none());
    }

    #[test]
    fn auth_checks() {
        let a = ClientAuth {
            requirepass: Some("pw".into()),
            users: vec![UserConfig {
                name: "appA".into(),
                password: "a".into(),
                ..UserConfig::default()
            }],
        };
        assert!(a.check(None, b"pw"));
        assert!(!a.check(None, b"pw2"));
        assert!(a.check(Some(b"appA"), b"a"));
        assert!(!a.check(Some(b"appA"), b"pw"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
    }
}
