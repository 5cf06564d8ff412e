//! `azure`: a Microsoft Entra ID access token for Azure Cache for Redis / Azure Managed Redis
//! (scope `https://redis.azure.com/.default`), logged in as `AUTH <object id> <token>`. The
//! user is the token's `oid` claim unless `user` is given. Tokens last about an hour; the
//! refresher renews them 5 minutes ahead and every live connection sends `AUTH` again before
//! the service would close it.
//!
//! Two ways to get one, as Azure's SDKs do:
//! - workload identity (AKS): `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//!   `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST` (set by the AKS webhook); the token
//!   endpoint's client-credentials grant with the projected service account token as client
//!   assertion (re-read on every request: the kubelet rotates it);
//! - managed identity: the instance metadata service (IMDS), `Metadata: true`, with the
//!   user-assigned identity's `client_id` when one is given.
//!
//! `identity = "auto"` (the default) picks workload identity when `AZURE_FEDERATED_TOKEN_FILE`
//! is set, else managed identity.

use crate::upstream::credentials::http;
use crate::upstream::credentials::source::{resolve_user, UserSpec};
use crate::upstream::credentials::time::parse_expiry;
use crate::upstream::credentials::{Credential, Secret};
use base64::Engine;
use std::time::{Duration, SystemTime};

/// The scope of Azure Cache for Redis and Azure Managed Redis.
pub const REDIS_SCOPE: &str = "https://redis.azure.com/.default";
/// The instance metadata service's token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
const AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";

/// Which flow gets the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Workload identity when `AZURE_FEDERATED_TOKEN_FILE` is set, else managed identity.
    Auto,
    Managed,
    Workload,
}

/// `[upstream_auth.azure]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureSpec {
    pub identity: Identity,
    /// A user-assigned managed identity's client id; for workload identity, instead of
    /// `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    pub scope: String,
    pub imds_endpoint: String,
}

pub struct AzureSource {
    spec: AzureSpec,
    user: UserSpec,
    timeout: Duration,
}

/// A token as an endpoint answered it.
struct Token {
    access_token: String,
    expires_at: Option<SystemTime>,
}

impl AzureSource {
    pub fn new(spec: AzureSpec, user: UserSpec, timeout: Duration) -> AzureSource {
        AzureSource {
            spec,
            user,
            timeout,
        }
    }

    pub fn name(&self) -> String {
        let how = match self.identity() {
            Identity::Workload => "workload identity",
            _ => "managed identity",
        };
        format!("azure ({how})")
    }

    fn identity(&self) -> Identity {
        match self.spec.identity {
            Identity::Auto if env("AZURE_FEDERATED_TOKEN_FILE").is_some() => Identity::Workload,
            Identity::Auto => Identity::Managed,
            other => other,
        }
    }

    pub async fn fetch(&self) -> Result<Credential, String> {
        let token = match self.identity() {
            Identity::Workload => self.workload().await?,
            _ => self.managed().await?,
        };
        let user = match resolve_user(&self.user).await? {
            Some(u) => u,
            None => object_id(&token.access_token)?,
        };
        Ok(Credential {
            user: Some(user),
            secret: Secret::new(token.access_token),
            expires_at: token.expires_at,
        })
    }

    /// Managed identity: `GET <imds>?api-version=2018-02-01&resource=…[&client_id=…]`.
    async fn managed(&self) -> Result<Token, String> {
        let resource = self.spec.scope.trim_end_matches("/.default");
        let mut query = vec![("api-version", "2018-02-01"), ("resource", resource)];
        if let Some(id) = &self.spec.client_id {
            query.push(("client_id", id));
        }
        let url = format!("{}?{}", self.spec.imds_endpoint, http::form(&query));
        let resp = http::request("GET", &url, &[("Metadata", "true")], b"", self.timeout).await?;
        token(&resp, "the instance metadata service")
    }

    /// Workload identity: the client-credentials grant with the federated token as client
    /// assertion.
    async fn workload(&self) -> Result<Token, String> {
        let need = |name: &str| env(name).ok_or_else(|| format!("workload identity needs {name}"));
        let tenant = need("AZURE_TENANT_ID")?;
        let client_id = match &self.spec.client_id {
            Some(id) => id.clone(),
            None => need("AZURE_CLIENT_ID")?,
        };
        let file = need("AZURE_FEDERATED_TOKEN_FILE")?;
        let assertion = tokio::fs::read_to_string(&file)
            .await
            .map_err(|e| format!("cannot read AZURE_FEDERATED_TOKEN_FILE {file}: {e}"))?;
        let authority = env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| AUTHORITY_HOST.into());
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            authority.trim_end_matches('/'),
            http::percent_encode(&tenant)
        );
        let body = http::form(&[
            ("client_id", &client_id),
            ("scope", &self.spec.scope),
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.trim()),
        ]);
        let headers = [("Content-Type", "application/x-www-form-urlencoded")];
        let resp = http::request("POST", &url, &headers, body.as_bytes(), self.timeout).await?;
        token(&resp, "the Entra ID token endpoint")
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// An OAuth token answer: `access_token`, and `expires_on` (Unix seconds, IMDS) or
/// `expires_in` (seconds from now, Entra ID). A refusal is reported by its error code and
/// description (which carry no secret), never by its body.
fn token(resp: &http::Response, from: &str) -> Result<Token, String> {
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    if resp.status != 200 {
        let code = v["error"].as_str().unwrap_or("no error code");
        let what: String = v["error_description"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Err(format!("{from} answered {}: {code} {what}", resp.status)
            .trim_end()
            .to_string());
    }
    let access_token = v["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{from} answered no access_token"))?
        .to_string();
    let expires_at = match (&v["expires_on"], &v["expires_in"]) {
        (on, _) if !on.is_null() => {
            Some(parse_expiry(on).map_err(|e| format!("{from}: expires_on {e}"))?)
        }
        (_, inn) if !inn.is_null() => {
            let secs = parse_expiry(inn).map_err(|e| format!("{from}: expires_in {e}"))?;
            let secs = secs
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            Some(SystemTime::now() + secs)
        }
        _ => None,
    };
    Ok(Token {
        access_token,
        expires_at,
    })
}

/// The `oid` (object id) claim of a JWT access token: the Redis user Entra ID logs in as.
pub fn object_id(jwt: &str) -> Result<String, String> {
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or("the access token is not a JWT; set user")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the access token's claims are not base64url; set user".to_string())?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| "the access token's claims are not JSON; set user".to_string())?;
    claims["oid"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the access token has no oid claim; set user".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims))
    }

    #[test]
    fn the_user_is_the_oid_claim() {
        let t = jwt(
            r#"{"oid":"7c9f1a2b-0000-4000-8000-000000000001","aud":"https://redis.azure.com"}"#,
        );
        assert_eq!(
            object_id(&t).unwrap(),
            "7c9f1a2b-0000-4000-8000-000000000001"
        );
        assert!(object_id(&jwt(r#"{"sub":"x"}"#))
            .unwrap_err()
            .contains("no oid"));
        assert!(object_id("opaque").unwrap_err().contains("not a JWT"));
    }

    #[test]
    fn token_answers() {
        let ok = http::Response {
            status: 200,
            body: br#"{"access_token":"t","expires_on":"1893553445","token_type":"Bearer"}"#
                .to_vec(),
        };
        let t = token(&ok, "imds").unwrap();
        assert_eq!(
            t.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_553_445))
        );
        let ok = http::Response {
            status: 200,
            body: br#"{"access_token":"t","expires_in":3599}"#.to_vec(),
        };
        assert!(token(&ok, "entra").unwrap().expires_at.unwrap() > SystemTime::now());
        let refused = http::Response {
            status: 400,
            body: br#"{"error":"invalid_client","error_description":"AADSTS700016: app not found","access_token":"leak"}"#.to_vec(),
        };
        let Err(e) = token(&refused, "entra") else {
            panic!("a refusal is an error")
        };
        assert!(e.contains("400: invalid_client AADSTS700016"), "{e}");
        assert!(!e.contains("leak"));
    }
}
