//! Live reload: a new config is read and validated whole, then swapped in atomically
//! (`arc-swap`); a bad one is refused, logged, counted and shown on `/status`, and the old one
//! keeps serving. Triggers: the file changing (editors that replace the file included), SIGHUP,
//! and `POST /reload` on the admin listener.
//!
//! Settings that cannot change while serving (listen and admin addresses) are kept as they are
//! and reported as needing a restart. A changed upstream gets new pools; the old ones finish
//! their in-flight replies and close. So does a changed `[upstream_auth]` table (its new
//! source must produce a credential first); an unchanged one makes its source fetch again.

use crate::config::Config;
use crate::proxy::Proxy;
use crate::stats::stats;
use crate::upstream::credentials::watch::watch_file;
use crate::upstream::credentials::{CredentialRef, Credentials};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The outcome of the last reload, for `/status`.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub last_time: Option<SystemTime>,
    pub last_ok: Option<bool>,
    pub last_error: Option<String>,
    pub needs_restart: Vec<String>,
}

/// Reload bookkeeping shared by every trigger.
#[derive(Default)]
pub struct Reloader {
    /// The config file, when rekey was started with one.
    pub source: Option<PathBuf>,
    /// `--upstream` given on the command line wins over the file, at start and on reload.
    pub upstream_override: Option<crate::config::UpstreamTarget>,
    status: Mutex<ReloadStatus>,
    /// Serializes reloads.
    running: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        source: Option<PathBuf>,
        upstream_override: Option<crate::config::UpstreamTarget>,
    ) -> Reloader {
        Reloader {
            source,
            upstream_override,
            ..Default::default()
        }
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.lock().expect("reload status poisoned").clone()
    }

    fn record(&self, result: Result<Vec<String>, String>) {
        let mut st = self.status.lock().expect("reload status poisoned");
        st.last_time = Some(SystemTime::now());
        match result {
            Ok(needs_restart) => {
                st.last_ok = Some(true);
                st.last_error = None;
                st.needs_restart = needs_restart;
            }
            Err(e) => {
                st.last_ok = Some(false);
                st.last_error = Some(e);
            }
        }
    }
}

/// Reloads the config file now. `Ok` carries the generation now serving.
pub async fn reload(proxy: &Proxy, reloader: &Reloader) -> Result<u64, String> {
    let _one_at_a_time = reloader.running.lock().await;
    let Some(path) = reloader.source.clone() else {
        return Err("rekey was started without a config file (-c)".into());
    };
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let mut new = match loaded {
        Ok(c) => c,
        Err(e) => {
            stats().reloads_error.increment(1);
            tracing::error!(error = %e, "config reload refused; the previous config keeps serving");
            reloader.record(Err(e.clone()));
            return Err(e);
        }
    };
    if let Some(u) = &reloader.upstream_override {
        new.upstream = u.clone();
    }
    let old = proxy.config.load_full();
    if let Err(e) = credentials(&old, &mut new).await {
        stats().reloads_error.increment(1);
        tracing::error!(error = %e, "config reload refused; the previous config keeps serving");
        reloader.record(Err(e.clone()));
        return Err(e);
    }
    crate::server::warn_insecure(&new);
    let needs_restart = keep_fixed_settings(&old, &mut new);
    for what in &needs_restart {
        tracing::warn!(setting = %what, "changed in the config file but needs a restart to take effect");
    }
    if upstream_changed(&old, &new) {
        tracing::info!(upstream = %new.upstream, "upstream changed: new pools; the old ones drain");
        proxy.swap_upstream(&new, new.upstream.template().clone());
    }
    let generation = new.generation;
    crate::server::publish_config(&new);
    proxy.config.store(Arc::new(new));
    stats().reloads_ok.increment(1);
    stats().config_generation.set(generation as f64);
    tracing::info!(generation, "config reloaded");
    reloader.record(Ok(needs_restart));
    Ok(generation)
}

/// Keeps what cannot change live; returns the names of settings that changed anyway.
fn keep_fixed_settings(old: &Config, new: &mut Config) -> Vec<String> {
    let mut changed = Vec::new();
    if old.listeners != new.listeners {
        changed.push("listen / [[apps]] listen".to_string());
        new.listeners = old.listeners.clone();
    }
    if old.threads != new.threads {
        changed.push("threads".to_string());
        new.threads = old.threads;
    }
    if old.admin != new.admin {
        changed.push("admin".to_string());
        new.admin = old.admin;
    }
    // One Redis can be swapped live; a cluster's seeds or a Sentinel setup, or a move to or
    // from one, needs a restart.
    let live = old.upstream.reloadable() && new.upstream.reloadable();
    if !live && old.upstream != new.upstream {
        changed.push(format!("upstream ({})", new.upstream));
        new.upstream = old.upstream.clone();
    }
    if !live && old.upstream_auth != new.upstream_auth {
        changed.push("[upstream_auth]".to_string());
        new.upstream_auth = old.upstream_auth.clone();
    }
    changed
}

/// The live `[upstream_auth]` credential of the new config. An unchanged table keeps the
/// running source, which fetches again now (a reload or SIGHUP reruns a helper command and
/// re-reads a password file); so does a changed one in front of a cluster or a Sentinel setup
/// (that needs a restart). A changed table in front of one Redis starts its source first (a
/// source that cannot produce a credential refuses the reload: the old login keeps serving),
/// and the upstream gets new pools that log in with it while the old ones drain.
async fn credentials(old: &Config, new: &mut Config) -> Result<(), String> {
    let running = old.upstream.credentials().cloned();
    let live = old.upstream.reloadable() && new.upstream.reloadable();
    if old.upstream_auth == new.upstream_auth || !live {
        if let Some(c) = &running {
            c.refresh_now();
        }
        new.upstream.with_credentials(running);
        return Ok(());
    }
    let started = match &new.upstream_auth {
        Some(spec) => Some(CredentialRef(
            Credentials::start(spec).await.map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    new.upstream.with_credentials(started);
    Ok(())
}

fn upstream_changed(old: &Config, new: &Config) -> bool {
    if !new.upstream.reloadable() {
        return false; // cluster nodes' pools are the cluster's; Sentinel's primary is followed
    }
    old.upstream != new.upstream
        || old.pool.connections != new.pool.connections
        || old.pool.max_pinned != new.pool.max_pinned
        || old.limits.connect_timeout != new.limits.connect_timeout
        || old.limits.reply_timeout != new.limits.reply_timeout
}

/// Reloads on SIGHUP until the process ends.
pub async fn on_sighup(proxy: Arc<Proxy>, reloader: Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading config");
        let _ = reload(&proxy, &reloader).await;
    }
}

/// Reloads when the config file changes ([`watch_file`]: editors that rename a new file over
/// the old one and Kubernetes ConfigMap `..data` swaps included). Events are debounced.
pub async fn on_file_change(proxy: Arc<Proxy>, reloader: Arc<Reloader>) {
    let Some(path) = reloader.source.clone() else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = match watch_file(&path, tx) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "cannot watch the config file; reload with SIGHUP or POST /reload");
            return;
        }
    };
    while rx.recv().await.is_some() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        while rx.try_recv().is_ok() {}
        tracing::info!(path = %path.display(), "config file changed: reloading");
        let _ = reload(&proxy, &reloader).await;
    }
}
