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
    /// The connection has sent a `SUBSCRIBE` (`PSUBSCRIBE`, `SSUBSCRIBE`) since its last
    /// `RESET`: in RESP2 it may be in subscribe mode (a lease ends with `RESET`).
    subscribed: bool,
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
            subscribed: false,
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

    /// Notes a change of credential or a retry that is due, without waiting.
    fn notice(&mut self) {
        if matches!(self.changes.has_changed(), Ok(true)) {
            self.changes.borrow_and_update();
            self.due = true;
            self.retry_at = None;
            self.backoff = FIRST_RETRY;
        }
        if self.retry_at.is_some_and(|at| at <= Instant::now()) {
            self.retry_at = None;
            self.due = true;
        }
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

    /// Notes what a pinned connection sends: its transaction state and protocol (a lease
    /// may switch it with `HELLO`; `RESET` brings it back to RESP2), and a lease's handshake
    /// `AUTH` made with a credential that has changed since (it then needs one more).
    pub fn note_sent(&mut self, payload: &[u8]) {
        for (name, arg1, frame) in command_words(payload) {
            let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
            if is("AUTH") {
                self.due |= frame != &self.creds.current().auth_request().raw()[..];
            } else if is("MULTI") {
                self.in_multi = true;
            } else if is("EXEC") || is("DISCARD") {
                self.in_multi = false;
            } else if is("SUBSCRIBE") || is("PSUBSCRIBE") || is("SSUBSCRIBE") {
                self.subscribed = true;
            } else if is("RESET") {
                self.in_multi = false;
                self.subscribed = false;
                self.resp3 = false;
            } else if is("HELLO") {
                match arg1 {
                    Some(b"3") => self.resp3 = true,
                    Some(b"2") => self.resp3 = false,
                    _ => {}
                }
            }
        }
    }

    /// The `AUTH` to queue now, if one is owed and the connection can take it. Also checks
    /// for a change without waiting, so a connection too busy for its driver to pick the
    /// renewal branch renews with its next request.
    pub fn take(&mut self) -> Option<Bytes> {
        self.notice();
        if !self.due {
            return None;
        }
        if self.in_multi || (self.subscribed && !self.resp3) {
            tracing::debug!(
                in_multi = self.in_multi,
                subscribed = self.subscribed,
                "upstream login renewal held back"
            );
            return None;
        }
        self.due = false;
        Some(self.creds.current().auth_request().into_raw())
    }

    /// The connection was `RESET` (logged out): the next handshake logs in afresh.
    pub fn reset(&mut self) {
        self.due = false;
        self.in_multi = false;
        self.subscribed = false;
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

/// A request's command name, first argument (if any) and whole frame.
pub type Words<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// The command name, first argument and whole frame of each request in `payload` (RESP
/// arrays of bulk strings, as rekey sends them); stops at anything else.
pub fn command_words(payload: &[u8]) -> Vec<Words<'_>> {
    let mut out = Vec::new();
    let mut rest = payload;
    while let Ok(Some(n)) = reply::frame_len(rest) {
        let frame = &rest[..n];
        let body = frame
            .strip_prefix(b"*")
            .and_then(|f| memchr::memmem::find(f, b"\r\n").map(|at| &f[at + 2..]));
        if let Some((name, after)) = body.and_then(bulk) {
            out.push((name, bulk(after).map(|(arg, _)| arg), frame));
        }
        rest = &rest[n..];
    }
    out
}

/// `$L\r\nDATA\r\n…` → (`DATA`, what follows).
fn bulk(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let buf = buf.strip_prefix(b"$")?;
    let crlf = memchr::memmem::find(buf, b"\r\n")?;
    let len: usize = std::str::from_utf8(&buf[..crlf]).ok()?.parse().ok()?;
    let end = (crlf + 2).checked_add(len)?;
    let data = buf.get(crlf + 2..end)?;
    Some((data, buf.get(end.checked_add(2)?..).unwrap_or_default()))
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
    fn a_change_is_seen_without_waiting() {
        let creds = creds();
        let mut r = Renewal::new(creds.clone(), false);
        assert!(r.take().is_none(), "nothing changed");
        creds.publish(Credential {
            user: Some("u".into()),
            secret: Secret::new("p2"),
            expires_at: None,
        });
        let auth = r.take().expect("the change is noticed by take itself");
        assert_eq!(&auth[..], &raw(&["AUTH", "u", "p2"])[..]);
        assert!(r.take().is_none(), "once");
    }

    #[test]
    fn names_of_a_pipeline() {
        let mut p = raw(&["MULTI"]);
        p.extend(raw(&["SET", "k", "v"]));
        p.extend(raw(&["exec"]));
        let words: Vec<_> = command_words(&p)
            .into_iter()
            .map(|(n, a, _)| (n, a))
            .collect();
        let want: [(&[u8], Option<&[u8]>); 3] =
            [(b"MULTI", None), (b"SET", Some(b"k")), (b"exec", None)];
        assert_eq!(words, want);
        assert!(command_words(b"*1\r\n$5\r\nMUL").is_empty());
        let huge = format!("*1\r\n${}\r\nx\r\n", usize::MAX);
        assert!(command_words(huge.as_bytes()).is_empty());
    }

    #[test]
    fn auth_waits_for_the_end_of_a_transaction_and_of_resp2_subscribe_mode() {
        let mut r = Renewal::new(creds(), false);
        r.due = true;
        r.note_sent(&raw(&["MULTI"]));
        assert!(r.take().is_none(), "inside MULTI");
        r.note_sent(&raw(&["EXEC"]));
        r.note_sent(&raw(&["SUBSCRIBE", "ch"]));
        assert!(r.take().is_none(), "RESP2 subscribe mode");
        r.note_sent(&raw(&["RESET"]));
        let auth = r.take().unwrap();
        assert_eq!(&auth[..], &raw(&["AUTH", "u", "p1"])[..]);
        assert!(r.take().is_none(), "once");
        let mut r3 = Renewal::new(creds(), true);
        r3.due = true;
        r3.note_sent(&raw(&["PSUBSCRIBE", "c*"]));
        assert!(r3.take().is_some(), "RESP3 subscribe mode takes AUTH");
        // A lease's RESET brings the connection back to RESP2; HELLO 3 switches it again.
        r3.due = true;
        r3.note_sent(&raw(&["RESET"]));
        r3.note_sent(&raw(&["SUBSCRIBE", "ch"]));
        assert!(r3.take().is_none(), "RESP2 again after RESET");
        r3.note_sent(&raw(&["HELLO", "3"]));
        assert!(r3.take().is_some());
        // A handshake AUTH made with an older credential needs one more right behind it.
        r3.note_sent(&raw(&["AUTH", "u", "p1"]));
        assert!(r3.take().is_none(), "the current credential");
        r3.note_sent(&raw(&["AUTH", "u", "p0"]));
        assert!(r3.take().is_some(), "an older one");
    }
}
