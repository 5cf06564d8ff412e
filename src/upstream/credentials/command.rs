//! `command`: a helper program prints the credential, as kubectl's exec credential plugins
//! and git's credential helpers do. Its standard output is the secret (one line), or a JSON
//! object `{"user": …, "password": …, "expires_at": …}` (`expires_at`: RFC 3339 text or Unix
//! seconds; `user` and `expires_at` optional). It runs without a shell, with a timeout; it is
//! run again before the credential expires and on reload or SIGHUP.
//!
//! Its standard error and output are never logged: only the exit status is, and what was
//! wrong with the output's shape.

use crate::upstream::credentials::source::{resolve_user, UserSpec};
use crate::upstream::credentials::time::parse_expiry;
use crate::upstream::credentials::{Credential, Secret};
use std::process::Stdio;
use std::time::Duration;

pub struct CommandSource {
    argv: Vec<String>,
    user: UserSpec,
    timeout: Duration,
}

impl CommandSource {
    pub fn new(argv: Vec<String>, user: UserSpec, timeout: Duration) -> CommandSource {
        CommandSource {
            argv,
            user,
            timeout,
        }
    }

    /// `command <program>`: the arguments may be secret-bearing, so only the program shows.
    pub fn name(&self) -> String {
        format!(
            "command {}",
            self.argv.first().map(String::as_str).unwrap_or("")
        )
    }

    pub async fn fetch(&self) -> Result<Credential, String> {
        let output = self.run().await?;
        let mut credential = parse_output(&output)?;
        if credential.user.is_none() {
            credential.user = resolve_user(&self.user).await?;
        }
        Ok(credential)
    }

    async fn run(&self) -> Result<Vec<u8>, String> {
        let (program, args) = self.argv.split_first().ok_or("empty command")?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(|e| format!("{program}: {e}"))?,
            Err(_) => {
                return Err(format!(
                    "{program} did not finish within {:?}",
                    self.timeout
                ))
            }
        };
        if !out.status.success() {
            return Err(format!("{program} failed ({})", out.status));
        }
        Ok(out.stdout)
    }
}

/// The helper's output: JSON when it starts with `{`, else the secret on its first line.
pub fn parse_output(out: &[u8]) -> Result<Credential, String> {
    let text = std::str::from_utf8(out).map_err(|_| "output is not UTF-8".to_string())?;
    let text = text.trim();
    if text.starts_with('{') {
        return parse_json(text);
    }
    let secret = text.lines().next().unwrap_or_default();
    if secret.is_empty() {
        return Err("printed no secret".into());
    }
    Ok(Credential {
        user: None,
        secret: Secret::new(secret),
        expires_at: None,
    })
}

fn parse_json(text: &str) -> Result<Credential, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("output is not valid JSON ({e})"))?;
    let field = |name: &str| v.get(name).filter(|x| !x.is_null());
    let secret = match field("password") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err("JSON field \"password\" must be a non-empty string".into()),
        None => return Err("JSON output has no \"password\"".into()),
    };
    let user = match field("user") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err("JSON field \"user\" must be a non-empty string".into()),
        None => None,
    };
    let expires_at = match field("expires_at") {
        Some(x) => Some(parse_expiry(x).map_err(|e| format!("JSON field \"expires_at\": {e}"))?),
        None => None,
    };
    Ok(Credential {
        user,
        secret: Secret::new(secret),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn output_forms() {
        let c = parse_output(b"s3cret\n").unwrap();
        assert_eq!((c.user, c.secret.expose()), (None, "s3cret"));
        let c =
            parse_output(br#"{"user":"app","password":"p","expires_at":"2030-01-02T03:04:05Z"}"#)
                .unwrap();
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(
            c.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_893_553_445))
        );
        let c = parse_output(br#"{"password":"p","expires_at":1893553445}"#).unwrap();
        assert_eq!(
            c.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_893_553_445))
        );
    }

    #[test]
    fn bad_output_says_why_without_the_secret() {
        for (out, want) in [
            (&b""[..], "no secret"),
            (b"{\"user\":\"u\"}", "no \"password\""),
            (
                b"{\"password\":\"hunter2\",\"expires_at\":\"soon\"}",
                "expires_at",
            ),
            (b"{\"password\":\"hunter2\"", "not valid JSON"),
            (b"\xff\xfe", "UTF-8"),
        ] {
            let e = parse_output(out).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
