//! Configuration: the TOML schema ([`schema`]), and its validation into a [`Config`] that the
//! proxy can run with. A config is validated whole; nothing half-valid is ever served.
//! Load and validate only: applying a config (binding, reloading, swapping pools) is
//! [`crate::server`]'s job.

pub mod schema;

use crate::rules::RuleSet;
use crate::tls::{ServerTls, TlsError, UpstreamTls};
use crate::upstream::url::{UpstreamUrl, UrlError};
use crate::upstream::UpstreamSettings;
use schema::{FileConfig, FlushPolicy, LimitsConfig, MetricsConfig, PoolConfig, UserConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// `[tls.server]`, read and checked: what `tls_listen` listeners present. Reloaded with
    /// the config (a new certificate serves new connections; open ones keep theirs).
    pub server_tls: Option<Arc<ServerTls>>,
    /// Distinct for every config validated in this process; prefix memories key on it.
    pub generation: u64,
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

/// Where the sentinels are and which primary to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    pub sentinels: Vec<UpstreamUrl>,
    pub master: String,
    /// Credentials and db for the primary (the sentinels are asked without them).
    pub primary: UpstreamUrl,
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

    fn validate(file: FileConfig) -> Result<Config, ConfigError> {
        let mut listeners = Vec::new();
        let plain = file.listen.to_vec().into_iter().map(|a| (a, false));
        let secure = file
            .tls_listen
            .iter()
            .flat_map(|l| l.to_vec())
            .map(|a| (a, true));
        for (addr, tls) in plain.chain(secure) {
            listeners.push(ListenerConfig {
                addr: parse_addr(&addr).map_err(|reason| ConfigError::Listen { addr, reason })?,
                app: None,
                tls,
            });
        }
        for app in &file.apps {
            if app.name.is_empty() {
                return Err(ConfigError::App {
                    name: app.name.clone(),
                    reason: "empty name".into(),
                });
            }
            let plain = app
                .listen
                .iter()
                .flat_map(|l| l.to_vec())
                .map(|a| (a, false));
            let secure = app
                .tls_listen
                .iter()
                .flat_map(|l| l.to_vec())
                .map(|a| (a, true));
            for (addr, tls) in plain.chain(secure) {
                let a = parse_addr(&addr).map_err(|reason| ConfigError::Listen {
                    addr: addr.clone(),
                    reason,
                })?;
                listeners.push(ListenerConfig {
                    addr: a,
                    app: Some(app.name.clone()),
                    tls,
                });
            }
        }
        for (i, l) in listeners.iter().enumerate() {
            if l.addr.port() != 0 && listeners[..i].iter().any(|o| o.addr == l.addr) {
                return Err(ConfigError::Listen {
                    addr: l.addr.to_string(),
                    reason: "listed twice".into(),
                });
            }
        }
        if listeners.is_empty() {
            return Err(ConfigError::Invalid(
                "no listener: set listen or tls_listen".into(),
            ));
        }
        let server_tls = match &file.tls.server {
            Some(t) => Some(Arc::new(ServerTls::load(t).map_err(|source| {
                ConfigError::Tls {
                    section: "server",
                    source,
                }
            })?)),
            None => None,
        };
        if server_tls.is_none() {
            if let Some(l) = listeners.iter().find(|l| l.tls) {
                return Err(ConfigError::Listen {
                    addr: l.addr.to_string(),
                    reason: "tls_listen needs [tls.server] cert_file and key_file".into(),
                });
            }
        }
        let admin = match &file.admin {
            Some(a) => Some(parse_addr(a).map_err(|reason| ConfigError::Admin {
                addr: a.clone(),
                reason,
            })?),
            None => None,
        };
        let upstream_tls = match &file.tls.upstream {
            Some(t) => Some(UpstreamTls::load(t).map_err(|source| ConfigError::Tls {
                section: "upstream",
                source,
            })?),
            None => None,
        };
        let upstream = parse_upstream(&file.upstream, upstream_tls.as_ref())?;
        if upstream_tls.is_some() && upstream.template().tls.is_none() {
            return Err(ConfigError::Invalid(format!(
                "[tls.upstream] is set but upstream {} is not TLS: use rediss://, \
                 rediss-cluster:// or rediss-sentinel://",
                upstream.template()
            )));
        }
        validate_limits(&file.limits, &file.pool)?;
        for u in &file.users {
            if u.name.is_empty() || u.name.contains(char::is_whitespace) {
                return Err(ConfigError::Invalid(format!(
                    "user name {:?} is not valid",
                    u.name
                )));
            }
        }
        let names: Vec<String> = file
            .apps
            .iter()
            .map(|a| a.name.clone())
            .chain(file.users.iter().map(|u| u.name.clone()))
            .collect();
        let rules =
            RuleSet::compile_labelled(&file.rules, &names).map_err(|e| ConfigError::Rule {
                name: e.name,
                reason: e.reason,
            })?;
        let l = &file.limits;
        Ok(Config {
            source: None,
            listeners,
            admin,
            admin_token: file.admin_token.clone().filter(|t| !t.is_empty()),
            upstream,
            auth: ClientAuth {
                requirepass: file.requirepass.clone(),
                users: file.users.clone(),
            },
            flush: file.flush,
            limits: Limits {
                max_clients: l.max_clients,
                max_bulk_bytes: l.max_bulk_bytes,
                max_array_len: l.max_array_len,
                max_pipeline: l.max_pipeline,
                max_output_bytes: l.max_output_bytes,
                idle_timeout: (l.idle_timeout_secs > 0)
                    .then(|| Duration::from_secs(l.idle_timeout_secs)),
                connect_timeout: Duration::from_millis(l.connect_timeout_ms.max(1)),
                reply_timeout: (l.reply_timeout_ms > 0)
                    .then(|| Duration::from_millis(l.reply_timeout_ms)),
            },
            pool: file.pool.clone(),
            metrics: file.metrics.clone(),
            threads: match file.threads {
                // A proxy shares the machine with Redis and the apps: half the cores.
                0 => std::thread::available_parallelism()
                    .map(|n| n.get() / 2)
                    .unwrap_or(1)
                    .max(1),
                n => n,
            },
            rules: Arc::new(rules),
            server_tls,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// `redis://…` for one Redis, `redis-cluster://[user:pass@]host:port,host:port` for a cluster
/// (its seeds), or `redis-sentinel://…` (see [`parse_sentinel`]); each with an `s` after
/// `redis` (`rediss://`, `rediss-cluster://`, `rediss-sentinel://`) for TLS to every node
/// (and every sentinel), with `tls` (`[tls.upstream]`) or else the system roots.
fn parse_upstream(s: &str, tls: Option<&UpstreamTls>) -> Result<UpstreamTarget, UrlError> {
    let (s, secure) = match s.strip_prefix("rediss") {
        Some(rest) => (format!("redis{rest}"), true),
        None => (s.to_string(), false),
    };
    let s = s.as_str();
    let tls = secure.then(|| tls.cloned().unwrap_or_else(UpstreamTls::system));
    let with_tls = |mut u: UpstreamUrl| {
        u.tls = tls.clone();
        u
    };
    if let Some(mut sentinel) = parse_sentinel(s)? {
        if tls.as_ref().is_some_and(UpstreamTls::for_sentinels) {
            sentinel.sentinels = sentinel.sentinels.into_iter().map(with_tls).collect();
        }
        // The primary is announced by IP address: verified against the first sentinel's
        // host name (or `server_name`).
        sentinel.primary.tls = tls
            .as_ref()
            .map(|t| t.verifying_as(&sentinel.sentinels[0].host));
        return Ok(UpstreamTarget::Sentinel(sentinel));
    }
    let Some(rest) = s.strip_prefix("redis-cluster://") else {
        return Ok(UpstreamTarget::Single(with_tls(UpstreamUrl::parse(s)?)));
    };
    let (auth, hosts) = match rest.rfind('@') {
        Some(i) => (&rest[..=i], &rest[i + 1..]),
        None => ("", rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let seeds = hosts
        .split(',')
        .map(|h| UpstreamUrl::parse(&format!("redis://{auth}{}", h.trim())).map(with_tls))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UpstreamTarget::Cluster { seeds })
}

/// `redis-sentinel://[user:pass@]host:port,host:port/mastername[/db]`: credentials and db are
/// the primary's.
fn parse_sentinel(s: &str) -> Result<Option<SentinelConfig>, UrlError> {
    let Some(rest) = s.strip_prefix("redis-sentinel://") else {
        return Ok(None);
    };
    let (auth, rest) = match rest.rfind('@') {
        Some(i) => (&rest[..=i], &rest[i + 1..]),
        None => ("", rest),
    };
    let (hosts, path) = rest.split_once('/').ok_or(UrlError::NoHost)?;
    let (master, db) = match path.split_once('/') {
        Some((m, db)) => (m, db),
        None => (path, ""),
    };
    if master.is_empty() {
        return Err(UrlError::Scheme(format!(
            "{s} (no primary name after the sentinels)"
        )));
    }
    let sentinels = hosts
        .split(',')
        .map(|h| UpstreamUrl::parse(&format!("redis://{}", h.trim())))
        .collect::<Result<Vec<_>, _>>()?;
    let primary = UpstreamUrl::parse(&format!("redis://{auth}0.0.0.0:0/{db}"))?;
    Ok(Some(SentinelConfig {
        sentinels,
        master: master.to_string(),
        primary,
    }))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|e| format!("{e} (expected ip:port, such as 127.0.0.1:6380)"))
}

fn validate_limits(l: &LimitsConfig, p: &PoolConfig) -> Result<(), ConfigError> {
    let checks = [
        (l.max_clients == 0, "limits.max_clients must be at least 1"),
        (
            l.max_bulk_bytes == 0,
            "limits.max_bulk_bytes must be at least 1",
        ),
        (
            l.max_bulk_bytes > u32::MAX as usize,
            "limits.max_bulk_bytes must be below 4 GiB",
        ),
        (
            l.max_array_len == 0,
            "limits.max_array_len must be at least 1",
        ),
        (
            l.max_pipeline == 0,
            "limits.max_pipeline must be at least 1",
        ),
        (
            l.max_output_bytes == 0,
            "limits.max_output_bytes must be at least 1",
        ),
        (p.connections == 0, "pool.connections must be at least 1"),
        (
            p.connections > 1024,
            "pool.connections must be at most 1024",
        ),
        (p.max_pinned == 0, "pool.max_pinned must be at least 1"),
    ];
    match checks.iter().find(|(bad, _)| *bad) {
        Some((_, msg)) => Err(ConfigError::Invalid(msg.to_string())),
        None => Ok(()),
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
