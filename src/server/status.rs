//! `/status`: what an operator needs to see at a glance, as JSON.

use crate::acl::Acl;
use crate::config::Config;
use crate::proxy::Proxy;
use crate::server::reload::Reloader;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

pub fn render(proxy: &Proxy, reloader: &Reloader) -> String {
    let config = proxy.config.load();
    let reload = reloader.status();
    let upstream = proxy.upstream.load();
    let rules: Vec<_> = config
        .rules
        .rules()
        .iter()
        .map(|r| {
            let (forward, reverse) = r.hits();
            json!({
                "name": r.name,
                "match": r.pattern(),
                "replace": r.replace(),
                "channels": r.channels,
                "hits": {"forward": forward, "reverse": reverse},
            })
        })
        .collect();
    let identities = identities(proxy, &config);
    let body = json!({
        "config": {
            "file": config.source.as_ref().map(|p| p.display().to_string()),
            "generation": config.generation,
        },
        "reload": {
            "last_time_unix": reload.last_time.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()),
            "last_result": match reload.last_ok { None => "none", Some(true) => "ok", Some(false) => "error" },
            "last_error": reload.last_error,
            "needs_restart": reload.needs_restart,
        },
        "rules": rules,
        "upstream": {
            "url": upstream.url().to_string(),
            "configured": config.upstream.to_string(),
            "healthy": upstream.healthy(),
            "shared_pools": upstream.pool_states(),
            "pinned_connections": upstream.pinned_total(),
            "last_error": upstream.last_error().map(|(at, why)| json!({
                "time_unix": at.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
                "error": why,
            })),
            "tls": config.upstream.template().tls.is_some(),
            "auth": config.upstream.credentials().map(|c| c.status_json()),
        },
        "clients": proxy.clients.load(Ordering::Relaxed),
        "identities": identities,
        "listeners": config.listeners.iter().map(|l| json!({"addr": l.addr.to_string(), "app": l.app})).collect::<Vec<_>>(),
    });
    format!("{body:#}\n")
}

/// Each identity's effective ACL (as `ACL LIST` prints it), its limits, and what it holds
/// now; `default` is the clients with no identity.
fn identities(proxy: &Proxy, config: &Config) -> Vec<serde_json::Value> {
    let mut names: Vec<&String> = config.access.identities.keys().collect();
    names.sort();
    let default = std::iter::once((None, &config.access.default));
    let named = names
        .into_iter()
        .map(|n| (Some(n.as_str()), &config.access.identities[n]));
    default
        .chain(named)
        .map(|(name, share)| {
            let acl = share
                .acl
                .as_deref()
                .map_or_else(|| Acl::unrestricted().describe(), Acl::describe);
            let tenant = name.map(|n| proxy.tenants.get(n));
            json!({
                "name": name.unwrap_or("default"),
                "acl": acl,
                "max_clients": share.max_clients,
                "max_pinned": share.max_pinned,
                "max_requests_per_sec": share.max_requests_per_sec,
                "clients": tenant.as_ref().map(|t| t.clients()),
                "pinned": tenant.as_ref().map(|t| t.pinned()),
            })
        })
        .collect()
}
