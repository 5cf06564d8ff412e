//! Renewal on one live connection: when the credential changes, the connection's driver
//! queues `AUTH [user] secret` behind whatever it already queued, so it runs in pipeline
//! order, and consumes its reply itself (no client ever sees it). Nothing is dropped or
//! reconnected.
//!
//! `AUTH` is held back where Redis would not treat it as a login:
//! - inside `MULTI` (it would be queued into the client's transaction): sent right after the
//!   `EXEC` / `DISCARD` / `RESET` that ends it, so this file tracks those names in what a
//!   pinned connection sends;
//! - on a RESP2 connection in subscribe mode (Redis refuses `AUTH` there): the lease ends
//!   with `RESET`, and the next lease's handshake logs in with the credential current then.
//!   A RESP3 connection takes `AUTH` while subscribed.
//!
//! A refused `AUTH` leaves the connection logged in as before (Redis keeps the old login);
//! it is counted and retried with backoff while no newer credential arrives.

use crate::protocol::encode::Proto;
use crate::protocol::reply;
use crate::upstream::credentials::CredentialRef;
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// One connection's renewal state.
pub struct Renewal {
    creds: CredentialRef,
    changes: watch::Receiver<u64>,
    resp3: bool,
    /// The connection has sent `MULTI` and not yet what ends it.
    in_multi: bool,
    /// An `AUTH` with the current credential is owed.
    due: bool,
    /// The changes channel is gone: nothing more will come.
    closed: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Renewal {
    /// Watching `creds` from now on, for a connection speaking RESP3 (`resp3`) or RESP2.
    /// Made before the connection's handshake, so no change in between is missed.
    pub fn new(creds: CredentialRef, resp3: bool) -> Renewal {
        let mut changes = creds.subscribe();
        changes.mark_unchanged();
        Renewal {
            creds,
            changes,
            resp3,
            in_multi: false,
            due: false,
            closed: false,
            retry_at: None,
            backoff: FIRST_RETRY,
        }
    }

    /// For a connection logging in with `auth` (an upstream URL's) and speaking `proto`;
    /// `None` for a fixed login.
    pub fn watching(auth: Option<&CredentialRef>, proto: Proto) -> Option<Renewal> {
        Some(Renewal::new(auth?.clone(), proto == Proto::Resp3))
    }

    /// Resolves when an `AUTH` may be owed: the credential changed, or a retry is due.
    pub async fn wanted(&mut self) {
        let retry = self.retry_at;
        tokio::select! {
            r = self.changes.changed(), if !self.closed => match r {
                Ok(()) => {
                    self.due = true;
                    self.retry_at = None;
                    self.backoff = FIRST_RETRY;
                }
                Err(_) => self.closed = true,
            },
            _ = sleep_until(retry), if retry.is_some() => {
                self.retry_at = None;
                self.due = true;
            }
        }
    }

    /// Notes what a pinned connection sends (transaction state).
    pub fn note_sent(&mut self, payload: &[u8]) {
        for name in command_names(payload) {
            if name.eq_ignore_ascii_case(b"MULTI") {
                self.in_multi = true;
            } else if [&b"EXEC"[..], b"DISCARD", b"RESET"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                self.in_multi = false;
            }
        }
    }

    /// The `AUTH` to queue now, if one is owed and the connection can take it;
    /// `subscribed`: the connection is in subscribe mode.
    pub fn take(&mut self, subscribed: bool) -> Option<Bytes> {
        if !self.due || self.in_multi || (subscribed && !self.resp3) {
            return None;
        }
        self.due = false;
        Some(self.creds.current().auth_request().into_raw())
    }

    /// The connection was `RESET` (logged out): the next handshake logs in afresh.
    pub fn reset(&mut self) {
        self.due = false;
        self.in_multi = false;
        self.retry_at = None;
    }

    /// The reply to a renewal `AUTH`.
    pub fn answered(&mut self, frame: &[u8]) {
        if !reply::is_error(frame) {
            self.backoff = FIRST_RETRY;
            self.creds.with_status(|s| s.connection_answered(None));
            return;
        }
        let why = String::from_utf8_lossy(&frame[1..]).trim_end().to_string();
        self.creds
            .with_status(|s| s.connection_answered(Some(&why)));
        tracing::warn!(error = %why, retry_in_ms = self.backoff.as_millis() as u64, "upstream refused the renewed credential on a live connection; it stays logged in as before");
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The command name of each request in `payload` (RESP arrays of bulk strings, as rekey
/// sends them); stops at anything else.
pub fn command_names(payload: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = payload;
    while let Ok(Some(n)) = reply::frame_len(rest) {
        if let Some(name) = first_bulk(&rest[..n]) {
            out.push(name);
        }
        rest = &rest[n..];
    }
    out
}

/// `*N\r\n$L\r\nNAME\r\n…` → `NAME`.
fn first_bulk(frame: &[u8]) -> Option<&[u8]> {
    let after_header = frame.strip_prefix(b"*")?;
    let crlf = memchr::memmem::find(after_header, b"\r\n")?;
    let bulk = after_header[crlf + 2..].strip_prefix(b"$")?;
    let crlf2 = memchr::memmem::find(bulk, b"\r\n")?;
    let len: usize = std::str::from_utf8(&bulk[..crlf2]).ok()?.parse().ok()?;
    bulk.get(crlf2 + 2..crlf2 + 2 + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Request;
    use crate::upstream::credentials::{Credential, Credentials, Secret};

    fn creds() -> CredentialRef {
        CredentialRef(Credentials::fixed(Credential {
            user: Some("u".into()),
            secret: Secret::new("p1"),
            expires_at: None,
        }))
    }

    fn raw(args: &[&str]) -> Vec<u8> {
        Request::from_args(args.iter().copied()).raw().to_vec()
    }

    #[test]
    fn names_of_a_pipeline() {
        let mut p = raw(&["MULTI"]);
        p.extend(raw(&["SET", "k", "v"]));
        p.extend(raw(&["exec"]));
        let names = command_names(&p);
        assert_eq!(names, [&b"MULTI"[..], b"SET", b"exec"]);
        assert!(command_names(b"*1\r\n$5\r\nMUL").is_empty());
    }

    #[test]
    fn auth_waits_for_the_end_of_a_transaction_and_of_resp2_subscribe_mode() {
        let mut r = Renewal::new(creds(), false);
        r.due = true;
        r.note_sent(&raw(&["MULTI"]));
        assert!(r.take(false).is_none(), "inside MULTI");
        r.note_sent(&raw(&["EXEC"]));
        assert!(r.take(true).is_none(), "RESP2 subscribe mode");
        let auth = r.take(false).unwrap();
        assert_eq!(&auth[..], &raw(&["AUTH", "u", "p1"])[..]);
        assert!(r.take(false).is_none(), "once");
        let mut r3 = Renewal::new(creds(), true);
        r3.due = true;
        assert!(r3.take(true).is_some(), "RESP3 subscribe mode takes AUTH");
    }
}
