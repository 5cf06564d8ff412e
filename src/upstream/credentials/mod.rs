//! Upstream credentials that change while rekey runs: a rotated password in a file, a helper
//! command's output, a Microsoft Entra ID token, an ElastiCache IAM token. One
//! [`Credentials`] value holds the current user name and secret (`arc-swap`: every new
//! connection's `AUTH` reads it), renews it from its [`source`] before it expires or when the
//! file changes ([`refresh`]), and announces each change so that every live connection sends
//! `AUTH` again in its own pipeline ([`renew`]) instead of being dropped.
//!
//! Why its own directory, below every other file of `upstream`: the dialer, the driver and both
//! pools read it, and it reads none of them. It knows nothing of rules, and of commands only
//! the few that decide whether a connection can take `AUTH` now (`MULTI`/`EXEC`/`DISCARD`,
//! `SUBSCRIBE`, `HELLO`, `RESET`, `AUTH` itself).
//!
//! Secrets are a [`Secret`], whose `Debug` and `Display` print `***`: no log line, `/status`
//! field, metric or error text can carry one by accident.

pub mod aws;
pub mod azure;
pub mod command;
pub mod file;
pub mod http;
pub mod refresh;
pub mod renew;
pub mod source;
pub mod status;
pub mod time;
pub mod watch;

use crate::protocol::Request;
use crate::upstream::credentials::source::{AuthSpec, Source};
use crate::upstream::credentials::status::RenewalStatus;
use arc_swap::ArcSwap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{watch as signal, Notify};

/// A secret: shown as `***` by `Debug` and `Display`; [`Secret::expose`] is the one way out.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the `AUTH` command and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One login: a user name (none: Redis's `default`), a secret, and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub user: Option<String>,
    pub secret: Secret,
    pub expires_at: Option<SystemTime>,
}

/// Renew this long before expiry at most…
const MAX_MARGIN: Duration = Duration::from_secs(300);

impl Credential {
    /// `AUTH [user] secret`.
    pub fn auth_request(&self) -> Request {
        match &self.user {
            Some(user) => Request::from_args(["AUTH", user, self.secret.expose()]),
            None => Request::from_args(["AUTH", self.secret.expose()]),
        }
    }

    /// When to fetch a new one: before expiry by 5 minutes or a tenth of the lifetime
    /// (counted from `issued`), whichever is smaller. `None`: it does not expire.
    pub fn renew_at(&self, issued: SystemTime) -> Option<SystemTime> {
        let expires = self.expires_at?;
        let lifetime = expires.duration_since(issued).unwrap_or_default();
        Some(expires - MAX_MARGIN.min(lifetime / 10))
    }
}

/// Why a source could not produce a credential. Texts name the source and never a secret.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("upstream_auth {source_name}: {reason}")]
pub struct CredentialError {
    pub source_name: String,
    pub reason: String,
}

/// The live upstream credential, shared by every connection to the upstream.
pub struct Credentials {
    source: Source,
    current: ArcSwap<Credential>,
    /// Bumped on every change; each live connection's driver watches it.
    changes: signal::Sender<u64>,
    /// Wakes the refresher now (reload, SIGHUP, and this value dropped: the refresher ends).
    wake: Arc<Notify>,
    status: Mutex<RenewalStatus>,
}

impl Credentials {
    /// Fetches the first credential from `spec`'s source (an error names the source) and
    /// starts the task that renews it. Call inside a Tokio runtime.
    pub async fn start(spec: &AuthSpec) -> Result<Arc<Credentials>, CredentialError> {
        let source = Source::new(spec);
        let first = source.fetch().await?;
        let creds = Arc::new(Credentials {
            status: Mutex::new(RenewalStatus::new(source.name(), &first)),
            source,
            current: ArcSwap::from_pointee(first),
            changes: signal::channel(0).0,
            wake: Arc::new(Notify::new()),
        });
        tracing::info!(source = %creds.source.name(), user = creds.current().user.as_deref().unwrap_or("default"), "upstream credential loaded");
        tokio::spawn(refresh::run(Arc::downgrade(&creds)));
        Ok(creds)
    }

    /// A fixed credential that never changes (tests, and one-off tools).
    pub fn fixed(credential: Credential) -> Arc<Credentials> {
        Arc::new(Credentials {
            status: Mutex::new(RenewalStatus::new("fixed".into(), &credential)),
            source: Source::Fixed(credential.clone()),
            current: ArcSwap::from_pointee(credential),
            changes: signal::channel(0).0,
            wake: Arc::new(Notify::new()),
        })
    }

    /// The credential new connections log in with now.
    pub fn current(&self) -> Arc<Credential> {
        self.current.load_full()
    }

    /// A receiver that sees every later change (for one connection's driver).
    pub fn subscribe(&self) -> signal::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Asks the refresher to fetch again now (config reload, SIGHUP).
    pub fn refresh_now(&self) {
        self.wake.notify_one();
    }

    /// Where the credential comes from, for logs and `/status`.
    pub fn source_name(&self) -> String {
        self.source.name()
    }

    /// Makes `next` current and tells every live connection; false when nothing changed.
    pub fn publish(&self, next: Credential) -> bool {
        if *self.current() == next {
            return false;
        }
        self.current.store(Arc::new(next));
        self.changes.send_modify(|g| *g += 1);
        true
    }

    /// Shows what `/status` reports (never the secret).
    pub fn status_json(&self) -> serde_json::Value {
        let current = self.current();
        self.status
            .lock()
            .expect("renewal status poisoned")
            .to_json(&current)
    }

    fn with_status<T>(&self, f: impl FnOnce(&mut RenewalStatus) -> T) -> T {
        f(&mut self.status.lock().expect("renewal status poisoned"))
    }
}

impl Drop for Credentials {
    /// The refresher (which holds only a weak reference) wakes up and ends.
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// A shared [`Credentials`] that compares by identity, so that an [`UpstreamUrl`] holding one
/// stays comparable (two configs with the same live credentials are the same upstream).
///
/// [`UpstreamUrl`]: crate::upstream::url::UpstreamUrl
#[derive(Clone)]
pub struct CredentialRef(pub Arc<Credentials>);

impl PartialEq for CredentialRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CredentialRef {}

impl fmt::Debug for CredentialRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({})", self.0.source_name())
    }
}

impl std::ops::Deref for CredentialRef {
    type Target = Credentials;
    fn deref(&self) -> &Credentials {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credential {
            user: Some("u".into()),
            secret: Secret::new("hunter2"),
            expires_at: None,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(Secret::new("x").to_string(), "***");
        let e = CredentialError {
            source_name: "command".into(),
            reason: "exit status 1".into(),
        };
        assert_eq!(e.to_string(), "upstream_auth command: exit status 1");
    }

    #[test]
    fn renewal_margin_is_five_minutes_or_a_tenth() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = |secs| Credential {
            user: None,
            secret: Secret::new("s"),
            expires_at: Some(now + Duration::from_secs(secs)),
        };
        assert_eq!(c(3600).renew_at(now), Some(now + Duration::from_secs(3300)));
        assert_eq!(c(900).renew_at(now), Some(now + Duration::from_secs(810)));
        assert_eq!(c(0).renew_at(now), Some(now));
        let none = Credential {
            expires_at: None,
            ..c(1)
        };
        assert_eq!(none.renew_at(now), None);
    }
}
