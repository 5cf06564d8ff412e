//! `[upstream_auth]`: where the upstream login comes from when it is not fixed in the
//! `upstream` URL. The table as written ([`UpstreamAuthConfig`]) and its validation into the
//! upstream layer's [`AuthSpec`]: exactly one source (`password_file`, `command`, `azure`,
//! `aws_iam`), `user` or `user_file` at most one of, and never together with a password in
//! the URL.
//!
//! Its own file so that the table's rules sit in one place beside the rest of the schema.

use super::{ConfigError, UpstreamTarget};
use crate::upstream::credentials::aws::AwsSpec;
use crate::upstream::credentials::azure::{AzureSpec, Identity, IMDS_ENDPOINT, REDIS_SCOPE};
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
    /// `[upstream_auth.azure]`: a Microsoft Entra ID token.
    pub azure: Option<AzureConfig>,
    /// `[upstream_auth.aws_iam]`: an ElastiCache / MemoryDB IAM auth token.
    pub aws_iam: Option<AwsIamConfig>,
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

/// `[upstream_auth.azure]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// `auto` (workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set), `managed` or
    /// `workload`.
    pub identity: Option<String>,
    /// A user-assigned managed identity's client id (workload identity: instead of
    /// `AZURE_CLIENT_ID`).
    pub client_id: Option<String>,
    /// The token's scope.
    pub scope: Option<String>,
    /// The instance metadata token endpoint (tests, proxies).
    pub imds_endpoint: Option<String>,
}

/// `[upstream_auth.aws_iam]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AwsIamConfig {
    /// The replication group, serverless cache or MemoryDB cluster name.
    #[serde(default)]
    pub cache_name: String,
    /// The region (else `AWS_REGION` / `AWS_DEFAULT_REGION`).
    pub region: Option<String>,
    /// ElastiCache Serverless.
    #[serde(default)]
    pub serverless: bool,
    /// `elasticache` (default) or `memorydb`.
    pub service: Option<String>,
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
    if matches!(source, SourceSpec::AwsIam(_)) && !matches!(user, UserSpec::Name(_)) {
        return Err(invalid(
            "aws_iam needs user: the IAM-enabled Redis user (user_file is not supported)",
        ));
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
    if let Some(a) = &t.azure {
        found.push(("azure", SourceSpec::Azure(azure(a)?)));
    }
    if let Some(a) = &t.aws_iam {
        found.push(("aws_iam", SourceSpec::AwsIam(aws_iam(a)?)));
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

/// `[upstream_auth.azure]`: its identity flow known, defaults filled in.
fn azure(a: &AzureConfig) -> Result<AzureSpec, String> {
    let identity = match a.identity.as_deref().unwrap_or("auto") {
        "auto" => Identity::Auto,
        "managed" => Identity::Managed,
        "workload" => Identity::Workload,
        other => {
            return Err(format!(
                "azure.identity {other:?} is not one of auto, managed, workload"
            ))
        }
    };
    let imds_endpoint = a
        .imds_endpoint
        .clone()
        .unwrap_or_else(|| IMDS_ENDPOINT.into());
    if !imds_endpoint.starts_with("http://") && !imds_endpoint.starts_with("https://") {
        return Err(format!(
            "azure.imds_endpoint {imds_endpoint:?} is not an http(s) URL"
        ));
    }
    Ok(AzureSpec {
        identity,
        client_id: a.client_id.clone().filter(|c| !c.is_empty()),
        scope: a.scope.clone().unwrap_or_else(|| REDIS_SCOPE.into()),
        imds_endpoint,
    })
}

/// `[upstream_auth.aws_iam]`: a cache name (lowercased, as the services sign it) and a known
/// service.
fn aws_iam(a: &AwsIamConfig) -> Result<AwsSpec, String> {
    if a.cache_name.is_empty() || a.cache_name.contains(['/', '?', ' ']) {
        return Err(format!(
            "aws_iam.cache_name {:?} is not a cache name",
            a.cache_name
        ));
    }
    let service = a.service.clone().unwrap_or_else(|| "elasticache".into());
    if service != "elasticache" && service != "memorydb" {
        return Err(format!(
            "aws_iam.service {service:?} is not elasticache or memorydb"
        ));
    }
    Ok(AwsSpec {
        cache_name: a.cache_name.to_lowercase(),
        region: a.region.clone().filter(|r| !r.is_empty()),
        serverless: a.serverless,
        service,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::upstream::credentials::source::{SourceSpec, UserSpec};

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
    fn cloud_sources() {
        let e = error("[upstream_auth]\ncommand = ['/h']\n[upstream_auth.azure]");
        assert!(e.contains("found command, azure"), "{e}");
        let e = error("[upstream_auth.azure]\nidentity = 'magic'");
        assert!(e.contains("azure.identity \"magic\""), "{e}");
        let e = error("[upstream_auth.aws_iam]\ncache_name = 'c'");
        assert!(e.contains("aws_iam needs user"), "{e}");
        let e = error("[upstream_auth]\nuser = 'u'\n[upstream_auth.aws_iam]\ncache_name = ''");
        assert!(e.contains("cache_name"), "{e}");
        let c = Config::parse("[upstream_auth]\nuser = 'u'\n[upstream_auth.aws_iam]\ncache_name = 'My-Cache'\nregion = 'us-east-1'").unwrap();
        let SourceSpec::AwsIam(a) = c.upstream_auth.unwrap().source else {
            panic!()
        };
        assert_eq!(
            (a.cache_name.as_str(), a.service.as_str()),
            ("my-cache", "elasticache")
        );
        let c = Config::parse("[upstream_auth.azure]").unwrap();
        let SourceSpec::Azure(a) = c.upstream_auth.unwrap().source else {
            panic!()
        };
        assert_eq!(a.scope, "https://redis.azure.com/.default");
    }

    #[test]
    fn the_live_credential_reaches_every_kind_of_upstream() {
        use crate::upstream::credentials::{Credential, CredentialRef, Credentials, Secret};
        let creds = CredentialRef(Credentials::fixed(Credential {
            user: Some("u".into()),
            secret: Secret::new("s"),
            expires_at: None,
        }));
        for upstream in [
            "redis://127.0.0.1:6379",
            "redis-cluster://127.0.0.1:7000,127.0.0.1:7001",
            "redis-sentinel://127.0.0.1:26379/mymaster/2",
        ] {
            let mut c = Config::parse(&format!(
                "upstream = '{upstream}'\n[upstream_auth]\npassword_file = '/p'"
            ))
            .unwrap();
            c.upstream.with_credentials(Some(creds.clone()));
            assert_eq!(c.upstream.credentials(), Some(&creds), "{upstream}");
            match &c.upstream {
                crate::config::UpstreamTarget::Cluster { seeds } => {
                    assert!(seeds.iter().all(|s| s.auth.as_ref() == Some(&creds)))
                }
                crate::config::UpstreamTarget::Sentinel(s) => {
                    let primary = s.primary_at("10.0.0.9".into(), 6380);
                    assert_eq!(primary.auth.as_ref(), Some(&creds), "a failover keeps it");
                    assert!(
                        s.sentinels.iter().all(|s| s.auth.is_none()),
                        "not the sentinels'"
                    );
                }
                _ => {}
            }
        }
    }

    #[test]
    fn the_url_user_is_the_default_user() {
        let c = Config::parse(
            "upstream = 'redis://app:@127.0.0.1:6379'\n[upstream_auth]\npassword_file = '/p'",
        )
        .unwrap();
        let spec = c.upstream_auth.unwrap();
        assert_eq!(spec.user, UserSpec::Name("app".into()));
        assert_eq!(spec.source, SourceSpec::PasswordFile("/p".into()));
    }
}
