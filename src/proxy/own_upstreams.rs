//! Upstream pools of their own for identities that name their own Redis login
//! (`upstream_user`/`upstream_password` on `[[users]]`/`[[apps]]`). A proxy cannot see the
//! commands a Lua script or function calls; logged in upstream as a Redis user of its own, an
//! identity's scripts are held to that user's ACL by Redis itself. Its connections are
//! multiplexed like everyone's, per (upstream login, protocol, db): one [`Upstream`] per
//! identity, following the proxy's upstream (a Sentinel failover, a reload) to its new
//! address, and replaced when the login changes.

use crate::config::Config;
use crate::upstream::{Upstream, UpstreamUrl};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A login: (user, password).
type Login = (Option<String>, String);

/// Every identity's own upstream.
#[derive(Default)]
pub struct OwnUpstreams {
    by_identity: Mutex<HashMap<String, Own>>,
}

struct Own {
    login: Login,
    live: Arc<ArcSwap<Upstream>>,
}

impl OwnUpstreams {
    /// The live upstream of `identity` under `config` when it names a login of its own (made
    /// on first use, on the proxy's current address `url`); `None`: the proxy's.
    pub fn of(
        &self,
        config: &Config,
        url: &UpstreamUrl,
        identity: Option<&str>,
    ) -> Option<Arc<ArcSwap<Upstream>>> {
        let name = identity?;
        let login = config.access.identities.get(name)?.upstream_login.clone()?;
        let mut map = self.by_identity.lock().expect("own upstreams lock");
        match map.get_mut(name) {
            Some(own) if own.login == login => {}
            Some(own) => {
                own.live.store(Upstream::new(
                    config.upstream_settings(logged_in(url, &login)),
                ));
                own.login = login;
            }
            None => {
                let upstream = Upstream::new(config.upstream_settings(logged_in(url, &login)));
                map.insert(
                    name.to_string(),
                    Own {
                        login,
                        live: Arc::new(ArcSwap::new(upstream)),
                    },
                );
            }
        }
        map.get(name).map(|own| Arc::clone(&own.live))
    }

    /// The proxy's upstream moved to `url`: every identity's own follows, with its login.
    pub fn follow(&self, config: &Config, url: &UpstreamUrl) {
        let map = self.by_identity.lock().expect("own upstreams lock");
        for own in map.values() {
            own.live.store(Upstream::new(
                config.upstream_settings(logged_in(url, &own.login)),
            ));
        }
    }
}

/// `url` with `login` in place of its credentials (the identity's own login, not the
/// proxy's `[upstream_auth]` credential).
fn logged_in(url: &UpstreamUrl, login: &Login) -> UpstreamUrl {
    UpstreamUrl {
        user: login.0.clone(),
        pass: Some(login.1.clone()),
        auth: None,
        ..url.clone()
    }
}
