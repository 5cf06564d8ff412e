//! What the `[upstream_auth]` table asks for ([`AuthSpec`], validated config data) and the
//! [`Source`] that produces credentials from it: one variant per kind, each in its own file.
//!
//! Its own file so that the config layer can build an `AuthSpec` without knowing how any
//! source works, and so that [`Credentials`](super::Credentials) fetches through one `match`.

use crate::upstream::credentials::{aws, azure, command, file, Credential, CredentialError};
use std::path::PathBuf;
use std::time::Duration;

/// Where the user name comes from, for sources that do not give one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UserSpec {
    /// Redis's `default` user (`AUTH secret`), or the one the source names.
    #[default]
    Default,
    Name(String),
    /// Read from a file (trailing newline dropped), re-read with the secret.
    File(PathBuf),
}

/// The kind of source, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A file holding the secret (a mounted Kubernetes Secret, a Vault agent's output).
    PasswordFile(PathBuf),
    /// A helper program: argv, run without a shell.
    Command(Vec<String>),
    /// Microsoft Entra ID (managed identity or workload identity).
    Azure(azure::AzureSpec),
    /// An ElastiCache / MemoryDB IAM auth token (the user is required).
    AwsIam(aws::AwsSpec),
}

/// `[upstream_auth]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSpec {
    pub source: SourceSpec,
    pub user: UserSpec,
    /// How long one fetch may take (a command, an HTTP exchange).
    pub timeout: Duration,
}

/// A source of credentials, ready to fetch.
pub enum Source {
    File(file::FileSource),
    Command(command::CommandSource),
    Azure(azure::AzureSource),
    Aws(aws::AwsSource),
    /// Never changes (tests, one-off tools).
    Fixed(Credential),
}

impl Source {
    pub fn new(spec: &AuthSpec) -> Source {
        match &spec.source {
            SourceSpec::PasswordFile(path) => {
                Source::File(file::FileSource::new(path.clone(), spec.user.clone()))
            }
            SourceSpec::Command(argv) => Source::Command(command::CommandSource::new(
                argv.clone(),
                spec.user.clone(),
                spec.timeout,
            )),
            SourceSpec::Azure(a) => Source::Azure(azure::AzureSource::new(
                a.clone(),
                spec.user.clone(),
                spec.timeout,
            )),
            SourceSpec::AwsIam(a) => {
                let user = match &spec.user {
                    UserSpec::Name(n) => n.clone(),
                    // The config refuses aws_iam without a user name.
                    _ => String::new(),
                };
                Source::Aws(aws::AwsSource::new(a.clone(), user, spec.timeout))
            }
        }
    }

    /// How logs, errors and `/status` name this source (no secret in it).
    pub fn name(&self) -> String {
        match self {
            Source::File(f) => f.name(),
            Source::Command(c) => c.name(),
            Source::Azure(a) => a.name(),
            Source::Aws(a) => a.name(),
            Source::Fixed(_) => "fixed".into(),
        }
    }

    /// Fetches the credential now.
    pub async fn fetch(&self) -> Result<Credential, CredentialError> {
        let result = match self {
            Source::File(f) => f.fetch().await,
            Source::Command(c) => c.fetch().await,
            Source::Azure(a) => a.fetch().await,
            Source::Aws(a) => a.fetch().await,
            Source::Fixed(c) => Ok(c.clone()),
        };
        result.map_err(|reason| CredentialError {
            source_name: self.name(),
            reason,
        })
    }

    /// Files whose change means "fetch again" (the file source's).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        match self {
            Source::File(f) => f.paths(),
            _ => Vec::new(),
        }
    }
}

/// Reads a user name or secret file: UTF-8, the trailing line break dropped, not empty.
pub async fn read_trimmed(path: &std::path::Path, what: &str) -> Result<String, String> {
    let text = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let text =
        String::from_utf8(text).map_err(|_| format!("{what} {} is not UTF-8", path.display()))?;
    let trimmed = text.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(format!("{what} {} is empty", path.display()));
    }
    Ok(trimmed.to_string())
}

/// The user name `spec` says, read now when it is a file.
pub async fn resolve_user(spec: &UserSpec) -> Result<Option<String>, String> {
    match spec {
        UserSpec::Default => Ok(None),
        UserSpec::Name(n) => Ok(Some(n.clone())),
        UserSpec::File(p) => read_trimmed(p, "user_file").await.map(Some),
    }
}
