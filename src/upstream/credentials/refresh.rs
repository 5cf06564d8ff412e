//! The task that keeps a [`Credentials`] fresh: it fetches again before the credential
//! expires (5 minutes or a tenth of its lifetime ahead, whichever is smaller), when a watched
//! file changes, and when asked (reload, SIGHUP); a failed fetch keeps the old credential in
//! use and is retried with backoff (1 s doubling to 1 minute), logged, counted and shown on
//! `/status`. A new credential is published; the connections renew themselves
//! ([`renew`](crate::upstream::credentials::renew)).

use crate::upstream::credentials::watch::watch_file;
use crate::upstream::credentials::Credentials;
use std::sync::Weak;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a credential that does not expire waits for a file change or a reload.
const IDLE: Duration = Duration::from_secs(24 * 3600);

/// Runs until the [`Credentials`] is dropped (a reload replaced the `[upstream_auth]` table
/// and the old pools are gone).
pub async fn run(weak: Weak<Credentials>) {
    let (tx, mut files) = mpsc::unbounded_channel();
    let _watchers = match weak.upgrade() {
        Some(creds) => watch_files(&creds, tx),
        None => return,
    };
    let mut backoff = FIRST_BACKOFF;
    let mut retry = false;
    loop {
        // Only a weak reference while waiting: dropping the credentials ends this task.
        let (wait, wake) = match weak.upgrade() {
            Some(creds) => (
                next_wait(&creds, retry.then_some(backoff)),
                creds.wake.clone(),
            ),
            None => return,
        };
        tracing::debug!(
            wait_ms = wait.as_millis() as u64,
            "upstream credential: next fetch"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            Some(()) = files.recv() => {
                // Debounce: a Secret update is several events.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while files.try_recv().is_ok() {}
            }
        }
        let Some(creds) = weak.upgrade() else { return };
        tracing::debug!(source = %creds.source_name(), "fetching the upstream credential");
        retry = !fetch_once(&creds).await;
        backoff = match retry {
            true => (backoff * 2).min(MAX_BACKOFF),
            false => FIRST_BACKOFF,
        };
    }
}

/// Watches the source's files; a file that cannot be watched is logged (SIGHUP and reload
/// still fetch again).
fn watch_files(
    creds: &Credentials,
    tx: mpsc::UnboundedSender<()>,
) -> Vec<notify::RecommendedWatcher> {
    let mut out = Vec::new();
    for path in creds.source.watched_files() {
        match watch_file(&path, tx.clone()) {
            Ok(w) => out.push(w),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot watch the upstream credential file; it is read again on SIGHUP or reload")
            }
        }
    }
    out
}

/// How long to sleep before the next fetch: the backoff after a failure, else until the
/// renewal time (at least a second, so a source that keeps giving a credential inside the
/// margin is not asked in a loop).
fn next_wait(creds: &Credentials, backoff: Option<Duration>) -> Duration {
    if let Some(b) = backoff {
        return b;
    }
    let issued = creds.with_status(|s| s.issued());
    match creds.current().renew_at(issued) {
        Some(at) => at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .max(FIRST_BACKOFF),
        None => IDLE,
    }
}

/// Fetches and publishes; false when the fetch failed (or gave back a credential that is
/// already due for renewal), so the next try backs off.
async fn fetch_once(creds: &Credentials) -> bool {
    match creds.source.fetch().await {
        Ok(next) => {
            let changed = creds.publish(next);
            let current = creds.current();
            creds.with_status(|s| s.fetched(&current, changed));
            if changed {
                tracing::info!(source = %creds.source_name(), user = current.user.as_deref().unwrap_or("default"), "upstream credential renewed; live connections send AUTH");
            }
            let due = current
                .renew_at(creds.with_status(|s| s.issued()))
                .is_some_and(|at| at <= SystemTime::now());
            !due || changed
        }
        Err(e) => {
            let n = creds.with_status(|s| s.fetch_failed(&e.reason));
            let expires = creds.current().expires_at;
            tracing::warn!(error = %e, failures_in_a_row = n, expires_in_secs = ?expires.map(|t| t.duration_since(SystemTime::now()).map(|d| d.as_secs()).unwrap_or(0)), "cannot renew the upstream credential; the current one stays in use");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::upstream::credentials::source::{AuthSpec, SourceSpec, UserSpec};
    use crate::upstream::credentials::Credentials;
    use std::time::Duration;

    #[tokio::test]
    async fn the_refresher_ends_when_the_credentials_are_dropped() {
        let dir = std::env::temp_dir().join(format!("rekey-refresh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "s").unwrap();
        let spec = AuthSpec {
            source: SourceSpec::PasswordFile(dir.join("pw")),
            user: UserSpec::Default,
            timeout: Duration::from_secs(1),
        };
        let creds = Credentials::start(&spec).await.unwrap();
        let weak = std::sync::Arc::downgrade(&creds);
        tokio::task::yield_now().await;
        drop(creds);
        // The task held no strong reference: the value is gone at once.
        assert!(weak.upgrade().is_none());
    }
}
