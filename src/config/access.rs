//! What each identity may do and use, validated: its ACL ([`crate::acl::Acl`], compiled from
//! the `acl` string, any error reported with the rule's position) and its share of the
//! proxy (clients, pinned connections, requests per second). An identity is an `[[apps]]`
//! name (clients of its listeners) or a `[[users]]` name (clients that logged in as it);
//! clients with neither are the `default` user, whose ACL is the top-level `acl`.

use super::schema::{AppConfig, FileConfig, UserConfig};
use super::ConfigError;
use crate::acl::Acl;
use std::collections::HashMap;
use std::sync::Arc;

/// One identity's ACL and limits (`None`: no limit of its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Share {
    /// `None`: it may do anything (`+@all ~* &*`).
    pub acl: Option<Arc<Acl>>,
    pub max_clients: Option<usize>,
    pub max_pinned: Option<usize>,
    pub max_requests_per_sec: Option<u64>,
    /// Its own upstream login (user, password): its connections to Redis log in as that.
    pub upstream_login: Option<(Option<String>, String)>,
}

impl Share {
    /// True when it sets nothing: the identity is as if it had no entry.
    pub fn is_unlimited(&self) -> bool {
        *self == Share::default()
    }
}

/// Every identity's [`Share`].
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Clients with no identity (the `default` user).
    pub default: Share,
    /// By app or user name: every one the config names.
    pub identities: HashMap<String, Share>,
}

impl Access {
    /// The share of `identity`: its entry's (an app or user without one may do anything);
    /// the default user's for `None` or a name the config does not know.
    pub fn share(&self, identity: Option<&str>) -> &Share {
        identity
            .and_then(|i| self.identities.get(i))
            .unwrap_or(&self.default)
    }

    /// The ACL of `identity`; `None`: unrestricted.
    pub fn acl(&self, identity: Option<&str>) -> Option<&Arc<Acl>> {
        self.share(identity).acl.as_ref()
    }

    /// Whether any identity has an ACL or a limit.
    pub fn any(&self) -> bool {
        !self.default.is_unlimited() || self.identities.values().any(|s| !s.is_unlimited())
    }
}

/// The top-level `acl`, and each `[[apps]]` and `[[users]]` entry's share. A name that is an
/// app and a user too may set its share in one of the two places only.
pub(super) fn access(file: &FileConfig) -> Result<Access, ConfigError> {
    let default = Share {
        acl: compile("acl", file.acl.as_deref())?,
        ..Share::default()
    };
    let mut identities = HashMap::new();
    let apps = file
        .apps
        .iter()
        .map(|a| (format!("app {:?}", a.name), &a.name, app_share(a)));
    let users = file
        .users
        .iter()
        .map(|u| (format!("user {:?}", u.name), &u.name, user_share(u)));
    for (what, name, share) in apps.chain(users) {
        let share = share.compile(&what)?;
        match identities.get(name) {
            Some(set) if !share.is_unlimited() && !Share::is_unlimited(set) => {
                return Err(ConfigError::Invalid(format!(
                    "{what}: its acl and limits are set for the app of the same name already"
                )));
            }
            Some(_) if share.is_unlimited() => {}
            _ => {
                identities.insert(name.clone(), share);
            }
        }
    }
    Ok(Access {
        default,
        identities,
    })
}

/// An entry's share as written.
struct Written<'a> {
    acl: Option<&'a str>,
    max_clients: Option<usize>,
    max_pinned: Option<usize>,
    max_requests_per_sec: Option<u64>,
    upstream_user: Option<&'a str>,
    upstream_password: Option<&'a str>,
}

fn app_share(a: &AppConfig) -> Written<'_> {
    Written {
        acl: a.acl.as_deref(),
        max_clients: a.max_clients,
        max_pinned: a.max_pinned,
        max_requests_per_sec: a.max_requests_per_sec,
        upstream_user: a.upstream_user.as_deref(),
        upstream_password: a.upstream_password.as_deref(),
    }
}

fn user_share(u: &UserConfig) -> Written<'_> {
    Written {
        acl: u.acl.as_deref(),
        max_clients: u.max_clients,
        max_pinned: u.max_pinned,
        max_requests_per_sec: u.max_requests_per_sec,
        upstream_user: u.upstream_user.as_deref(),
        upstream_password: u.upstream_password.as_deref(),
    }
}

impl Written<'_> {
    fn compile(&self, what: &str) -> Result<Share, ConfigError> {
        if self.max_requests_per_sec == Some(0) {
            return Err(ConfigError::Invalid(format!(
                "{what}: max_requests_per_sec must be at least 1"
            )));
        }
        let upstream_login = match (self.upstream_user, self.upstream_password) {
            (user, Some(pass)) => Some((user.map(str::to_string), pass.to_string())),
            (Some(_), None) => {
                return Err(ConfigError::Invalid(format!(
                    "{what}: upstream_user needs upstream_password"
                )))
            }
            (None, None) => None,
        };
        Ok(Share {
            acl: compile(&format!("{what}: acl"), self.acl)?,
            max_clients: self.max_clients,
            max_pinned: self.max_pinned,
            max_requests_per_sec: self.max_requests_per_sec,
            upstream_login,
        })
    }
}

fn compile(what: &str, text: Option<&str>) -> Result<Option<Arc<Acl>>, ConfigError> {
    let Some(text) = text else {
        return Ok(None);
    };
    Acl::parse(text)
        .map(|acl| Some(Arc::new(acl)))
        .map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn acls_are_compiled_per_identity_and_errors_say_where() {
        let c = Config::parse(
            "acl = '-@all +ping'\n\
             [[users]]\nname = 'appb'\npassword = 'p'\nacl = '+@all -@dangerous ~AppB_*'\n\
             [[apps]]\nname = 'a'\nlisten = '127.0.0.1:0'\nmax_clients = 3",
        )
        .unwrap();
        assert!(c.access.acl(Some("appb")).is_some());
        assert!(c.access.acl(Some("a")).is_none());
        assert_eq!(c.access.share(Some("a")).max_clients, Some(3));
        assert!(c.access.acl(None).is_some());
        assert!(c.access.acl(Some("nobody")).is_some(), "the default user's");
        assert!(c.access.share(Some("a")).acl.is_none(), "an identity's own");
        let e = Config::parse("[[users]]\nname = 'u'\npassword = 'p'\nacl = '+get ~a +nosuch'")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "user \"u\": acl: rule 3 ('+nosuch', at byte 8): Unknown command or category name in ACL"
        );
    }
}
