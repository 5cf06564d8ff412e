//! `aws_iam`: the Amazon ElastiCache / MemoryDB IAM authentication token. The password is a
//! SigV4-presigned `GET http://<cache_name>/?Action=connect&User=<user>` (plus
//! `ResourceType=ServerlessCache` for ElastiCache Serverless) for service `elasticache`
//! (`memorydb` for MemoryDB), valid 15 minutes, without its scheme; the user is the
//! IAM-enabled Redis user. Signing is the official `aws-sigv4` crate's; the token's layout
//! is botocore's (the AWS documentation's Python example), checked byte for byte in the tests.
//!
//! The AWS credentials come from the standard chain, in the SDKs' order: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), web identity (EKS IRSA:
//! `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`, STS `AssumeRoleWithWebIdentity`), the
//! container endpoint (EKS Pod Identity, ECS: `AWS_CONTAINER_CREDENTIALS_FULL_URI` /
//! `_RELATIVE_URI`), then the EC2 instance role (IMDSv2). `AWS_ENDPOINT_URL_STS` and
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` move the endpoints, as in the SDKs.

use crate::upstream::credentials::http::{self, percent_encode};
use crate::upstream::credentials::time::parse_rfc3339;
use crate::upstream::credentials::{Credential, Secret};
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use std::time::{Duration, SystemTime};

/// How long a token is valid (the services' fixed 15 minutes).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// `[upstream_auth.aws_iam]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSpec {
    /// The replication group / cache / cluster name (lowercase, as the service wants it).
    pub cache_name: String,
    /// The region; `None`: `AWS_REGION`, then `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// ElastiCache Serverless.
    pub serverless: bool,
    /// `elasticache` or `memorydb`.
    pub service: String,
}

/// AWS credentials (the secret parts never printed).
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub expires_at: Option<SystemTime>,
}

pub struct AwsSource {
    spec: AwsSpec,
    user: String,
    timeout: Duration,
}

impl AwsSource {
    pub fn new(spec: AwsSpec, user: String, timeout: Duration) -> AwsSource {
        AwsSource {
            spec,
            user,
            timeout,
        }
    }

    pub fn name(&self) -> String {
        format!("aws_iam {}", self.spec.cache_name)
    }

    pub async fn fetch(&self) -> Result<Credential, String> {
        let region = self.region()?;
        let creds = credential_chain(&region, self.timeout).await?;
        let now = SystemTime::now();
        let token = presign(&self.spec, &self.user, &region, &creds, now)?;
        let expires = now + TOKEN_LIFETIME;
        Ok(Credential {
            user: Some(self.user.clone()),
            secret: Secret::new(token),
            expires_at: Some(creds.expires_at.map_or(expires, |t| t.min(expires))),
        })
    }

    fn region(&self) -> Result<String, String> {
        self.spec
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .ok_or_else(|| "no region: set region, or AWS_REGION".to_string())
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The IAM auth token for `user` on `spec`'s cache, signed at `now`.
pub fn presign(
    spec: &AwsSpec,
    user: &str,
    region: &str,
    creds: &AwsCredentials,
    now: SystemTime,
) -> Result<String, String> {
    let mut query = vec![("Action", "connect"), ("User", user)];
    if spec.serverless {
        query.push(("ResourceType", "ServerlessCache"));
    }
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let url = format!("http://{}/?{query}", spec.cache_name);
    let identity = aws_credential_types::Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        creds.expires_at,
        "rekey",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(&spec.service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| format!("signing: {e}"))?
        .into();
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| format!("signing: {e}"))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    let mut token = format!("{}/?{query}", spec.cache_name);
    for name in SIGNED_ORDER {
        if let Some((_, value)) = instructions.params().iter().find(|(n, _)| *n == name) {
            token.push_str(&format!("&{name}={}", percent_encode(value)));
        }
    }
    Ok(token)
}

/// The order botocore writes the signing parameters in (the token is compared as text).
const SIGNED_ORDER: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Security-Token",
    "X-Amz-Signature",
];

/// The standard chain: the first provider that is configured answers (its failure is the
/// error: a configured provider that fails is not skipped, as in the SDKs).
pub async fn credential_chain(region: &str, timeout: Duration) -> Result<AwsCredentials, String> {
    if let Some(c) = from_env()? {
        return Ok(c);
    }
    if let (Some(file), Some(role)) = (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
        return web_identity(&file, &role, region, timeout).await;
    }
    if let Some(url) = container_url() {
        return container(&url, timeout).await;
    }
    instance_role(timeout).await
}

fn from_env() -> Result<Option<AwsCredentials>, String> {
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Ok(Some(AwsCredentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: env("AWS_SESSION_TOKEN"),
            expires_at: None,
        })),
        (Some(_), None) => Err("AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY".into()),
        _ => Ok(None),
    }
}

/// STS `AssumeRoleWithWebIdentity` (an unsigned call) with the projected token file.
async fn web_identity(
    file: &str,
    role: &str,
    region: &str,
    timeout: Duration,
) -> Result<AwsCredentials, String> {
    let token = tokio::fs::read_to_string(file)
        .await
        .map_err(|e| format!("cannot read AWS_WEB_IDENTITY_TOKEN_FILE {file}: {e}"))?;
    let endpoint = env("AWS_ENDPOINT_URL_STS")
        .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
    let session = env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "rekey".into());
    let body = http::form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role),
        ("RoleSessionName", &session),
        ("WebIdentityToken", token.trim()),
    ]);
    let url = format!("{}/", endpoint.trim_end_matches('/'));
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    let resp = http::request("POST", &url, &headers, body.as_bytes(), timeout).await?;
    let text = String::from_utf8_lossy(&resp.body);
    if resp.status != 200 {
        let code = xml_field(&text, "Code").unwrap_or("no error code");
        return Err(format!(
            "STS AssumeRoleWithWebIdentity answered {}: {code}",
            resp.status
        ));
    }
    let field = |name| {
        xml_field(&text, name)
            .map(str::to_string)
            .ok_or_else(|| format!("STS answer has no {name}"))
    };
    Ok(AwsCredentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
        expires_at: xml_field(&text, "Expiration").and_then(|t| parse_rfc3339(t).ok()),
    })
}

/// The text of the first `<name>…</name>` element.
fn xml_field<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim())
}

/// `AWS_CONTAINER_CREDENTIALS_FULL_URI`, or the ECS agent's address with `_RELATIVE_URI`.
fn container_url() -> Option<String> {
    env("AWS_CONTAINER_CREDENTIALS_FULL_URI").or_else(|| {
        env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").map(|p| format!("http://169.254.170.2{p}"))
    })
}

/// The container credentials endpoint (EKS Pod Identity, ECS task roles).
async fn container(url: &str, timeout: Duration) -> Result<AwsCredentials, String> {
    let auth = match env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(f) => Some(
            tokio::fs::read_to_string(&f)
                .await
                .map_err(|e| {
                    format!("cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {f}: {e}")
                })?
                .trim()
                .to_string(),
        ),
        None => env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    };
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let resp = http::request("GET", url, &headers, b"", timeout).await?;
    if resp.status != 200 {
        return Err(format!(
            "container credentials endpoint answered {}",
            resp.status
        ));
    }
    json_credentials(&resp.body, "container credentials endpoint")
}

/// EC2 instance metadata (IMDSv2): a session token, the role's name, its credentials.
async fn instance_role(timeout: Duration) -> Result<AwsCredentials, String> {
    let base =
        env("AWS_EC2_METADATA_SERVICE_ENDPOINT").unwrap_or_else(|| "http://169.254.169.254".into());
    let base = base.trim_end_matches('/');
    let ttl = [("X-aws-ec2-metadata-token-ttl-seconds", "21600")];
    let resp = http::request(
        "PUT",
        &format!("{base}/latest/api/token"),
        &ttl,
        b"",
        timeout,
    )
    .await
    .map_err(|e| {
        format!("no AWS credentials in the environment, and the instance metadata service: {e}")
    })?;
    if resp.status != 200 {
        return Err(format!(
            "instance metadata token request answered {}",
            resp.status
        ));
    }
    let session = String::from_utf8_lossy(&resp.body).trim().to_string();
    let auth = [("X-aws-ec2-metadata-token", session.as_str())];
    let roles_url = format!("{base}/latest/meta-data/iam/security-credentials/");
    let resp = http::request("GET", &roles_url, &auth, b"", timeout).await?;
    let roles = String::from_utf8_lossy(&resp.body);
    let role = roles.lines().next().unwrap_or_default().trim();
    if resp.status != 200 || role.is_empty() {
        return Err(format!(
            "the instance has no IAM role (metadata answered {})",
            resp.status
        ));
    }
    let resp = http::request("GET", &format!("{roles_url}{role}"), &auth, b"", timeout).await?;
    if resp.status != 200 {
        return Err(format!(
            "instance role credentials answered {}",
            resp.status
        ));
    }
    json_credentials(&resp.body, "instance metadata")
}

/// `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`.
fn json_credentials(body: &[u8], what: &str) -> Result<AwsCredentials, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| format!("{what} answered no JSON"))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(|x| x.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("{what} answer has no {name}"))
    };
    Ok(AwsCredentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: field("Token").ok(),
        expires_at: field("Expiration")
            .ok()
            .and_then(|t| parse_rfc3339(&t).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_2024_01_02_03_04_05() -> SystemTime {
        parse_rfc3339("2024-01-02T03:04:05Z").unwrap()
    }

    fn spec(cache: &str, serverless: bool) -> AwsSpec {
        AwsSpec {
            cache_name: cache.into(),
            region: None,
            serverless,
            service: "elasticache".into(),
        }
    }

    /// The vectors come from botocore 1.44.18 (`RequestSigner.generate_presigned_url`, the AWS
    /// documentation's ElastiCache IAM example) at 2024-01-02T03:04:05Z; the script is in
    /// `tests/tools/elasticache_iam_token.py`.
    #[test]
    fn tokens_match_botocore_byte_for_byte() {
        let creds = AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            expires_at: None,
        };
        let t = presign(
            &spec("my-cache", false),
            "app-user",
            "us-east-1",
            &creds,
            at_2024_01_02_03_04_05(),
        )
        .unwrap();
        assert_eq!(t, "my-cache/?Action=connect&User=app-user&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20240102%2Fus-east-1%2Felasticache%2Faws4_request&X-Amz-Date=20240102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=7d1e1eebeee4b50d04445b22c2632c62a096e7cebf4ebd17639a489ae4656d83");
        let creds = AwsCredentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "secret/key+x".into(),
            session_token: Some("FwoGZXIvYXdzE//session+token==".into()),
            expires_at: None,
        };
        let t = presign(
            &spec("my-serverless-cache", true),
            "app user+1",
            "eu-west-1",
            &creds,
            at_2024_01_02_03_04_05(),
        )
        .unwrap();
        assert_eq!(t, "my-serverless-cache/?Action=connect&User=app%20user%2B1&ResourceType=ServerlessCache&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAEXAMPLE%2F20240102%2Feu-west-1%2Felasticache%2Faws4_request&X-Amz-Date=20240102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FwoGZXIvYXdzE%2F%2Fsession%2Btoken%3D%3D&X-Amz-Signature=6168b39a0fc37cb6a0c9951a5cb3620415f795ba70acc7af15134804f476f772");
    }

    #[test]
    fn sts_answers_are_read() {
        let xml = "<AssumeRoleWithWebIdentityResponse><Credentials><AccessKeyId>AK</AccessKeyId>\
                   <SecretAccessKey>SK</SecretAccessKey><SessionToken>ST</SessionToken>\
                   <Expiration>2030-01-02T03:04:05Z</Expiration></Credentials></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_field(xml, "AccessKeyId"), Some("AK"));
        assert_eq!(xml_field(xml, "Expiration"), Some("2030-01-02T03:04:05Z"));
        assert_eq!(xml_field(xml, "Nope"), None);
    }
}
