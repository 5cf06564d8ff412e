//! What renewal has done, for `/status`, logs and metrics: the source's last fetch, its
//! failures in a row, and how many live connections took or refused a new credential.
//!
//! Metrics (`rekey_upstream_auth_renewals_total{result}` with `result` = `ok` / `refused`
//! (one live connection's `AUTH`) or `source_error` (the source could not produce a
//! credential); `rekey_upstream_credential_expiry_timestamp_seconds`;
//! `rekey_upstream_credential_renewal_failing`) are published from here, so the names live in
//! one place.

use crate::upstream::credentials::time::unix_secs;
use crate::upstream::credentials::Credential;
use serde_json::json;
use std::time::SystemTime;

/// Renewal bookkeeping of one [`Credentials`](super::Credentials).
#[derive(Debug)]
pub struct RenewalStatus {
    source: String,
    /// When the current credential was fetched.
    issued: SystemTime,
    last_fetch: SystemTime,
    /// The last failure to fetch, when the latest attempt failed.
    last_error: Option<(SystemTime, String)>,
    failures_in_a_row: u32,
    connections_renewed: u64,
    connections_refused: u64,
    last_refusal: Option<(SystemTime, String)>,
}

impl RenewalStatus {
    pub fn new(source: String, first: &Credential) -> RenewalStatus {
        let now = SystemTime::now();
        register_metrics();
        publish_expiry(first);
        RenewalStatus {
            source,
            issued: now,
            last_fetch: now,
            last_error: None,
            failures_in_a_row: 0,
            connections_renewed: 0,
            connections_refused: 0,
            last_refusal: None,
        }
    }

    /// When the current credential was fetched.
    pub fn issued(&self) -> SystemTime {
        self.issued
    }

    /// A fetch succeeded; `changed`: it brought a new credential.
    pub fn fetched(&mut self, current: &Credential, changed: bool) {
        let now = SystemTime::now();
        self.last_fetch = now;
        if changed {
            self.issued = now;
        }
        self.last_error = None;
        self.failures_in_a_row = 0;
        publish_expiry(current);
        metrics::gauge!("rekey_upstream_credential_renewal_failing").set(0.0);
    }

    /// A fetch failed with `why`; returns the failures in a row so far.
    pub fn fetch_failed(&mut self, why: &str) -> u32 {
        self.last_error = Some((SystemTime::now(), why.to_string()));
        self.failures_in_a_row += 1;
        metrics::counter!("rekey_upstream_auth_renewals_total", "result" => "source_error")
            .increment(1);
        metrics::gauge!("rekey_upstream_credential_renewal_failing").set(1.0);
        self.failures_in_a_row
    }

    /// One live connection answered its renewal `AUTH`: accepted, or refused with `why`.
    pub fn connection_answered(&mut self, refused: Option<&str>) {
        match refused {
            None => {
                self.connections_renewed += 1;
                metrics::counter!("rekey_upstream_auth_renewals_total", "result" => "ok")
                    .increment(1);
            }
            Some(why) => {
                self.connections_refused += 1;
                self.last_refusal = Some((SystemTime::now(), why.to_string()));
                metrics::counter!("rekey_upstream_auth_renewals_total", "result" => "refused")
                    .increment(1);
            }
        }
    }

    pub fn to_json(&self, current: &Credential) -> serde_json::Value {
        let at = |t: &Option<(SystemTime, String)>| {
            t.as_ref()
                .map(|(when, why)| json!({"time_unix": unix_secs(*when), "error": why}))
        };
        let expired = current.expires_at.is_some_and(|t| t <= SystemTime::now());
        let state = match (expired, self.failures_in_a_row) {
            (true, _) => "expired",
            (false, 0) => "ok",
            (false, _) => "failing",
        };
        json!({
            "source": self.source,
            "user": current.user.as_deref().unwrap_or("default"),
            "expires_at_unix": current.expires_at.map(unix_secs),
            "renewal": state,
            "issued_unix": unix_secs(self.issued),
            "last_fetch_unix": unix_secs(self.last_fetch),
            "failures_in_a_row": self.failures_in_a_row,
            "last_error": at(&self.last_error),
            "connections": {
                "renewed": self.connections_renewed,
                "refused": self.connections_refused,
                "last_refusal": at(&self.last_refusal),
            },
        })
    }
}

/// Exports the renewal metrics at zero (a fixed login exports them too, so dashboards and
/// alerts find them everywhere: expiry 0 means "does not expire").
pub fn register_metrics() {
    metrics::gauge!("rekey_upstream_credential_renewal_failing").set(0.0);
    metrics::gauge!("rekey_upstream_credential_expiry_timestamp_seconds").set(0.0);
    for result in ["ok", "refused", "source_error"] {
        metrics::counter!("rekey_upstream_auth_renewals_total", "result" => result).increment(0);
    }
}

/// Publishes the current credential's expiry (0 when it does not expire).
pub fn publish_expiry(current: &Credential) {
    let at = current.expires_at.map(unix_secs).unwrap_or(0.0);
    metrics::gauge!("rekey_upstream_credential_expiry_timestamp_seconds").set(at);
}
