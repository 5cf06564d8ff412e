//! `redis://[user:pass@]host:port[/db]` (or `rediss://` for TLS): where the upstream Redis is,
//! how to reach it and how to log in (the URL's `user:pass`, or the live credential of
//! `[upstream_auth]`, attached after the config is read).

use crate::tls::UpstreamTls;
use crate::upstream::credentials::CredentialRef;
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("upstream URL must start with redis:// or rediss:// (got {0:?})")]
    Scheme(String),
    #[error("upstream URL has no host")]
    NoHost,
    #[error("upstream URL port {0:?} is not a number")]
    Port(String),
    #[error("upstream URL database {0:?} is not a number")]
    Db(String),
}

/// A parsed upstream address. `Debug`/`Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub db: u32,
    /// `rediss://`: connect with TLS, with these settings.
    pub tls: Option<UpstreamTls>,
    /// `[upstream_auth]`: the live credential, which wins over `user`/`pass` (the config
    /// refuses both at once).
    pub auth: Option<CredentialRef>,
}

impl UpstreamUrl {
    pub fn parse(s: &str) -> Result<UpstreamUrl, UrlError> {
        let (rest, tls) = match (s.strip_prefix("redis://"), s.strip_prefix("rediss://")) {
            (Some(rest), _) => (rest, None),
            (_, Some(rest)) => (rest, Some(UpstreamTls::system())),
            _ => return Err(UrlError::Scheme(s.to_string())),
        };
        let (auth, rest) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((hp, db)) if !db.is_empty() => {
                (hp, db.parse().map_err(|_| UrlError::Db(db.to_string()))?)
            }
            Some((hp, _)) => (hp, 0),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| UrlError::Port(p.to_string()))?),
            None => (hostport, 6379),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let (user, pass) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        Ok(UpstreamUrl {
            host: host.to_string(),
            port,
            user,
            pass,
            db,
            tls,
            auth: None,
        })
    }

    /// `host:port`, for connecting.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match (&self.user, &self.pass) {
            _ if self.auth.is_some() => "***@".to_string(),
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => "***@".to_string(),
            _ => String::new(),
        };
        let scheme = match self.tls {
            Some(_) => "rediss",
            None => "redis",
        };
        write!(f, "{scheme}://{auth}{}/{}", self.addr(), self.db)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let u = UpstreamUrl::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6379, 0));
        let u = UpstreamUrl::parse("redis://bob:s3cret@localhost:7000/3").unwrap();
        assert_eq!(u.user.as_deref(), Some("bob"));
        assert_eq!(u.pass.as_deref(), Some("s3cret"));
        assert_eq!(u.db, 3);
        assert!(!u.to_string().contains("s3cret"));
        let u = UpstreamUrl::parse("redis://:pw@h").unwrap();
        assert_eq!(
            (u.user, u.pass.as_deref(), u.port),
            (None, Some("pw"), 6379)
        );
        assert!(UpstreamUrl::parse("http://x").is_err());
        let u = UpstreamUrl::parse("rediss://:k@cache.example.net:6380").unwrap();
        assert!(u.tls.is_some());
        assert_eq!(u.to_string(), "rediss://***@cache.example.net:6380/0");
        assert!(UpstreamUrl::parse("redis://h:notaport").is_err());
    }
}
