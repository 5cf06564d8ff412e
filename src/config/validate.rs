//! From the file as written ([`FileConfig`]) to a [`Config`] the proxy can run with: one
//! function per section of the file, each checking its section and building its part.
//!
//! Why a file of its own: `mod.rs` says what a config *is* (the types the rest of rekey
//! reads); this says what a valid one looks like, section by section, so a new setting's
//! checks go beside those of its section. [`Config::validate`] runs the sections in a fixed
//! order, and the first error found is the one reported (tests compare the texts).

use super::schema::{FileConfig, LimitsConfig, OneOrMany, PoolConfig};
use super::{
    ClientAuth, Config, ConfigError, Limits, ListenerConfig, SentinelConfig, UpstreamTarget,
    GENERATION,
};
use crate::rules::RuleSet;
use crate::tls::{ServerTls, UpstreamTls};
use crate::upstream::url::{UpstreamUrl, UrlError};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl Config {
    /// Checks every section, in the order the errors are reported, and builds the config.
    pub(super) fn validate(file: FileConfig) -> Result<Config, ConfigError> {
        let listeners = listeners(&file)?;
        let server_tls = server_tls(&file, &listeners)?;
        let admin = admin(&file)?;
        let upstream = upstream(&file)?;
        let limits = limits(&file.limits)?;
        check_pool(&file.pool)?;
        let auth = auth(&file)?;
        let rules = rules(&file)?;
        let access = super::access::access(&file)?;
        let own_logins = access
            .identities
            .values()
            .any(|s| s.upstream_login.is_some());
        if own_logins && matches!(upstream, UpstreamTarget::Cluster { .. }) {
            return Err(ConfigError::Invalid(
                "upstream_user/upstream_password of an identity need a single or Sentinel upstream, not a cluster".into(),
            ));
        }
        let upstream_auth =
            super::upstream_auth::upstream_auth(file.upstream_auth.as_ref(), &upstream)?;
        Ok(Config {
            source: None,
            listeners,
            admin,
            admin_token: file.admin_token.clone().filter(|t| !t.is_empty()),
            upstream,
            auth,
            flush: file.flush,
            limits,
            pool: file.pool.clone(),
            metrics: file.metrics.clone(),
            threads: threads(file.threads),
            rules: Arc::new(rules),
            access: Arc::new(access),
            server_tls,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            upstream_auth,
        })
    }
}

/// `listen`, `tls_listen` and each `[[apps]]`' own: parsed, none twice, at least one.
fn listeners(file: &FileConfig) -> Result<Vec<ListenerConfig>, ConfigError> {
    let top = std::slice::from_ref(&file.listen);
    let mut listeners = bind_addrs(top, file.tls_listen.as_slice(), None)?;
    for app in &file.apps {
        if app.name.is_empty() {
            return Err(ConfigError::App {
                name: app.name.clone(),
                reason: "empty name".into(),
            });
        }
        let (plain, secure) = (app.listen.as_slice(), app.tls_listen.as_slice());
        listeners.extend(bind_addrs(plain, secure, Some(&app.name))?);
    }
    check_listeners(&listeners)?;
    Ok(listeners)
}

/// The listeners of one `listen`/`tls_listen` pair, plain ones first, in the order written.
fn bind_addrs(
    plain: &[OneOrMany],
    secure: &[OneOrMany],
    app: Option<&str>,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    let plain = plain.iter().flat_map(OneOrMany::to_vec).map(|a| (a, false));
    let secure = secure.iter().flat_map(OneOrMany::to_vec).map(|a| (a, true));
    plain
        .chain(secure)
        .map(|(addr, tls)| {
            Ok(ListenerConfig {
                addr: parse_addr(&addr).map_err(|reason| ConfigError::Listen { addr, reason })?,
                app: app.map(str::to_string),
                tls,
            })
        })
        .collect()
}

/// No address listed twice (port 0 may repeat: each gets its own port), and at least one.
fn check_listeners(listeners: &[ListenerConfig]) -> Result<(), ConfigError> {
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
    Ok(())
}

/// `[tls.server]`: its certificate and key read, and present whenever a `tls_listen` is.
fn server_tls(
    file: &FileConfig,
    listeners: &[ListenerConfig],
) -> Result<Option<Arc<ServerTls>>, ConfigError> {
    let Some(t) = &file.tls.server else {
        return match listeners.iter().find(|l| l.tls) {
            Some(l) => Err(ConfigError::Listen {
                addr: l.addr.to_string(),
                reason: "tls_listen needs [tls.server] cert_file and key_file".into(),
            }),
            None => Ok(None),
        };
    };
    let tls = ServerTls::load(t).map_err(|source| ConfigError::Tls {
        section: "server",
        source,
    })?;
    Ok(Some(Arc::new(tls)))
}

/// `admin`: the address of the admin HTTP listener, when set.
fn admin(file: &FileConfig) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(a) = &file.admin else {
        return Ok(None);
    };
    let addr = parse_addr(a).map_err(|reason| ConfigError::Admin {
        addr: a.clone(),
        reason,
    })?;
    Ok(Some(addr))
}

/// `upstream` with `[tls.upstream]`: the URL parsed, and TLS settings only for a TLS scheme.
fn upstream(file: &FileConfig) -> Result<UpstreamTarget, ConfigError> {
    let tls = match &file.tls.upstream {
        Some(t) => Some(UpstreamTls::load(t).map_err(|source| ConfigError::Tls {
            section: "upstream",
            source,
        })?),
        None => None,
    };
    let upstream = parse_upstream(&file.upstream, tls.as_ref())?;
    if tls.is_some() && upstream.template().tls.is_none() {
        return Err(ConfigError::Invalid(format!(
            "[tls.upstream] is set but upstream {} is not TLS: use rediss://, \
             rediss-cluster:// or rediss-sentinel://",
            upstream.template()
        )));
    }
    Ok(upstream)
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
    if let Some(sentinel) = parse_sentinel(s)? {
        return Ok(UpstreamTarget::Sentinel(sentinel_tls(sentinel, tls)));
    }
    let with_tls = |mut u: UpstreamUrl| {
        u.tls = tls.clone();
        u
    };
    let Some(rest) = s.strip_prefix("redis-cluster://") else {
        return Ok(UpstreamTarget::Single(with_tls(UpstreamUrl::parse(s)?)));
    };
    let (auth, hosts) = split_auth(rest);
    let hosts = hosts.trim_end_matches('/');
    let seeds = hosts
        .split(',')
        .map(|h| UpstreamUrl::parse(&format!("redis://{auth}{}", h.trim())).map(with_tls))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UpstreamTarget::Cluster { seeds })
}

/// TLS for a Sentinel setup: to the sentinels when `[tls.upstream]` says so, and always to
/// the primary, which is announced by IP address and so is verified against the first
/// sentinel's host name (or `server_name`).
fn sentinel_tls(mut sentinel: SentinelConfig, tls: Option<UpstreamTls>) -> SentinelConfig {
    if tls.as_ref().is_some_and(UpstreamTls::for_sentinels) {
        for s in &mut sentinel.sentinels {
            s.tls = tls.clone();
        }
    }
    sentinel.primary.tls = tls
        .as_ref()
        .map(|t| t.verifying_as(&sentinel.sentinels[0].host));
    sentinel
}

/// `user:pass@` (with its `@`, or empty) and what follows it.
fn split_auth(rest: &str) -> (&str, &str) {
    match rest.rfind('@') {
        Some(i) => (&rest[..=i], &rest[i + 1..]),
        None => ("", rest),
    }
}

/// `redis-sentinel://[user:pass@]host:port,host:port/mastername[/db]`: credentials and db are
/// the primary's.
fn parse_sentinel(s: &str) -> Result<Option<SentinelConfig>, UrlError> {
    let Some(rest) = s.strip_prefix("redis-sentinel://") else {
        return Ok(None);
    };
    let (auth, rest) = split_auth(rest);
    let (hosts, path) = rest.split_once('/').ok_or(UrlError::NoHost)?;
    let (master, db) = path.split_once('/').unwrap_or((path, ""));
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

/// `[limits]`: every bound at least 1 (a bulk string below 4 GiB); 0 turns the timeouts off.
fn limits(l: &LimitsConfig) -> Result<Limits, ConfigError> {
    first_failure(&[
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
    ])?;
    Ok(Limits {
        max_clients: l.max_clients,
        max_bulk_bytes: l.max_bulk_bytes,
        max_array_len: l.max_array_len,
        max_pipeline: l.max_pipeline,
        max_output_bytes: l.max_output_bytes,
        idle_timeout: (l.idle_timeout_secs > 0).then(|| Duration::from_secs(l.idle_timeout_secs)),
        connect_timeout: Duration::from_millis(l.connect_timeout_ms.max(1)),
        reply_timeout: (l.reply_timeout_ms > 0).then(|| Duration::from_millis(l.reply_timeout_ms)),
    })
}

/// `[pool]`: 1 to 1024 shared connections, at least one pinned.
fn check_pool(p: &PoolConfig) -> Result<(), ConfigError> {
    first_failure(&[
        (p.connections == 0, "pool.connections must be at least 1"),
        (
            p.connections > 1024,
            "pool.connections must be at most 1024",
        ),
        (p.max_pinned == 0, "pool.max_pinned must be at least 1"),
    ])
}

/// The message of the first check that fails (`true` means wrong).
fn first_failure(checks: &[(bool, &str)]) -> Result<(), ConfigError> {
    match checks.iter().find(|(bad, _)| *bad) {
        Some((_, msg)) => Err(ConfigError::Invalid(msg.to_string())),
        None => Ok(()),
    }
}

/// `requirepass` and `[[users]]`: user names non-empty, without white space.
fn auth(file: &FileConfig) -> Result<ClientAuth, ConfigError> {
    for u in &file.users {
        if u.name.is_empty() || u.name.contains(char::is_whitespace) {
            return Err(ConfigError::Invalid(format!(
                "user name {:?} is not valid",
                u.name
            )));
        }
    }
    Ok(ClientAuth {
        requirepass: file.requirepass.clone(),
        users: file.users.clone(),
    })
}

/// `[[rules]]`, compiled, with hits counted per app and per user name.
fn rules(file: &FileConfig) -> Result<RuleSet, ConfigError> {
    let apps = file.apps.iter().map(|a| a.name.clone());
    let users = file.users.iter().map(|u| u.name.clone());
    let names: Vec<String> = apps.chain(users).collect();
    RuleSet::compile_labelled(&file.rules, &names).map_err(|e| ConfigError::Rule {
        name: e.name,
        reason: e.reason,
    })
}

/// `threads`: 0 means half the cores (a proxy shares the machine with Redis and the apps), at
/// least one.
fn threads(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism()
            .map(|n| n.get() / 2)
            .unwrap_or(1)
            .max(1),
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_first_section_in_error_is_reported() {
        let e = error("listen = \"nope\"\nadmin = \"nope2\"\n[pool]\nconnections = 0");
        assert!(e.contains("\"nope\""), "{e}");
        let e = error("admin = \"nope\"\n[limits]\nmax_clients = 0");
        assert!(e.starts_with("admin address"), "{e}");
        let e = error("[limits]\nmax_pipeline = 0\n[pool]\nmax_pinned = 0");
        assert_eq!(e, "limits.max_pipeline must be at least 1");
        let e = error(
            "[[users]]\nname = 'a b'\npassword = 'p'\n[[rules]]\nname='r'\nmatch='('\nreplace=''",
        );
        assert_eq!(e, "user name \"a b\" is not valid");
    }

    #[test]
    fn listeners_are_checked_across_apps() {
        let e =
            error("listen = \"127.0.0.1:7000\"\n[[apps]]\nname = 'a'\nlisten = \"127.0.0.1:7000\"");
        assert_eq!(e, "listen address \"127.0.0.1:7000\": listed twice");
        let e = error("[[apps]]\nname = ''\nlisten = \"nope\"");
        assert_eq!(e, "app \"\": empty name");
        let c =
            Config::parse("[[apps]]\nname = 'a'\nlisten = ['127.0.0.1:0', '127.0.0.1:0']").unwrap();
        let apps: Vec<_> = c.listeners.iter().map(|l| l.app.as_deref()).collect();
        assert_eq!(apps, [None, Some("a"), Some("a")]);
    }
}
