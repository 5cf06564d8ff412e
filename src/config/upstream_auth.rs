//! `[upstream_auth]`: where the upstream login comes from when it is not fixed in the
//! `upstream` URL. The table as written ([`UpstreamAuthConfig`]) and its validation into the
//! upstream layer's [`AuthSpec`]: exactly one source (`password_file`, `command`, `azure`,
//! `aws_iam`), `user` or `user_file` at most one of, and never together with a password in
//! the URL.
//!
//! Its own file so that the table's rules sit in one place beside the rest of the schema.

use super::{ConfigError, UpstreamTarget};
use crate::upstream::credentials::source::{AuthSpec, SourceSpec, UserSpec};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[upstream_auth]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuthConfig {
    /// A file holding the secret (re-read when it changes).
    pub password_file: Option<PathBuf>,
    /// A helper program and its arguments; prints the secret or JSON.
    pub command: Option<Vec<String>>,
    /// The user name (else Redis's `default`, or the one the source gives).
    pub user: Option<String>,
    /// A file holding the user name (re-read with the secret).
    pub user_file: Option<PathBuf>,
    /// How long one fetch (a command, a token request) may take, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// The validated table, or `None` when the file has none.
pub fn upstream_auth(
    table: Option<&UpstreamAuthConfig>,
    upstream: &UpstreamTarget,
) -> Result<Option<AuthSpec>, ConfigError> {
    let Some(t) = table else {
        return Ok(None);
    };
    let invalid = |msg: &str| ConfigError::Invalid(format!("[upstream_auth]: {msg}"));
    if upstream
        .template()
        .pass
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(invalid(
            "the upstream URL has a password too: remove it from the URL (one login only)",
        ));
    }
    let source = source(t).map_err(|m| invalid(&m))?;
    let user = match (&t.user, &t.user_file) {
        (Some(_), Some(_)) => return Err(invalid("set user or user_file, not both")),
        (Some(u), None) if u.is_empty() || u.contains(char::is_whitespace) => {
            return Err(invalid(&format!("user {u:?} is not valid")))
        }
        (Some(u), None) => UserSpec::Name(u.clone()),
        (None, Some(f)) => UserSpec::File(f.clone()),
        // `redis://user:@host`: the user from the URL, the password from here.
        (None, None) => match upstream.template().user.clone() {
            Some(u) => UserSpec::Name(u),
            None => UserSpec::Default,
        },
    };
    if t.timeout_ms == 0 {
        return Err(invalid("timeout_ms must be at least 1"));
    }
    Ok(Some(AuthSpec {
        source,
        user,
        timeout: Duration::from_millis(t.timeout_ms),
    }))
}

/// The one source the table names.
fn source(t: &UpstreamAuthConfig) -> Result<SourceSpec, String> {
    let mut found = Vec::new();
    if let Some(p) = &t.password_file {
        found.push(("password_file", SourceSpec::PasswordFile(p.clone())));
    }
    if let Some(argv) = &t.command {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(
                "command must name a program: command = [\"/path/helper\", \"arg\"]".into(),
            );
        }
        found.push(("command", SourceSpec::Command(argv.clone())));
    }
    match found.len() {
        0 => Err("set one of password_file, command, azure, aws_iam".into()),
        1 => Ok(found.pop().expect("one").1),
        _ => {
            let names: Vec<_> = found.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "set only one of password_file, command, azure, aws_iam (found {})",
                names.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn exactly_one_source_and_no_url_password() {
        let e = error("[upstream_auth]\nuser = 'u'");
        assert_eq!(
            e,
            "[upstream_auth]: set one of password_file, command, azure, aws_iam"
        );
        let e = error("[upstream_auth]\npassword_file = '/p'\ncommand = ['/h']");
        assert!(
            e.contains("only one") && e.contains("password_file, command"),
            "{e}"
        );
        let e =
            error("upstream = 'redis://:pw@127.0.0.1:6379'\n[upstream_auth]\npassword_file = '/p'");
        assert!(e.contains("password too"), "{e}");
        assert!(!e.contains("pw@"), "{e}");
        let e = error("[upstream_auth]\npassword_file = '/p'\nuser = 'a'\nuser_file = '/u'");
        assert!(e.contains("not both"), "{e}");
        let e = error("[upstream_auth]\ncommand = []");
        assert!(e.contains("must name a program"), "{e}");
        let e = error("[upstream_auth]\npassword_file = '/p'\nbogus = 1");
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn the_url_user_is_the_default_user() {
        use crate::upstream::credentials::source::{SourceSpec, UserSpec};
        let c = Config::parse(
            "upstream = 'redis://app:@127.0.0.1:6379'\n[upstream_auth]\npassword_file = '/p'",
        )
        .unwrap();
        let spec = c.upstream_auth.unwrap();
        assert_eq!(spec.user, UserSpec::Name("app".into()));
        assert_eq!(spec.source, SourceSpec::PasswordFile("/p".into()));
    }
}
