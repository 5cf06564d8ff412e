//! Sentinel-managed upstreams (`upstream = "redis-sentinel://host:port,host:port/mastername"`):
//! where the sentinels are and which primary they watch ([`SentinelConfig`]), and asking them
//! where that primary is now ([`resolve`], `SENTINEL get-master-addr-by-name`).
//!
//! It lives here, beside the connections, because finding the primary is knowing where Redis
//! is: `server` asks before it serves, and `migrate` before it moves keys, and neither needs
//! the other for it. Following failovers as they happen (subscriptions to `+switch-master`,
//! new pools swapped in) is the server's job, `server::failover`, which asks here too.

use super::conn::query_once;
use super::UpstreamUrl;
use crate::protocol::reply;
use crate::protocol::Request;
use bytes::Bytes;
use std::time::Duration;

/// Where the sentinels are and which primary to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    pub sentinels: Vec<UpstreamUrl>,
    pub master: String,
    /// Credentials and db for the primary (the sentinels are asked without them).
    pub primary: UpstreamUrl,
}

impl SentinelConfig {
    /// The primary at `host:port`, with the primary's credentials, db and TLS.
    pub fn primary_at(&self, host: String, port: u16) -> UpstreamUrl {
        UpstreamUrl {
            host,
            port,
            ..self.primary.clone()
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no sentinel knows primary {master:?} ({last})")]
pub struct SentinelError {
    master: String,
    last: String,
}

/// Asks the sentinels, in order, for the primary's address; the error names the last
/// sentinel's answer or failure.
pub async fn resolve(
    cfg: &SentinelConfig,
    timeout: Duration,
) -> Result<UpstreamUrl, SentinelError> {
    let req = Request::from_args(["SENTINEL", "get-master-addr-by-name", &cfg.master]);
    let mut last = String::from("no sentinels");
    for sentinel in &cfg.sentinels {
        match ask(sentinel, &req, timeout).await {
            Ok((host, port)) => return Ok(cfg.primary_at(host, port)),
            Err(why) => last = format!("{}: {why}", sentinel.addr()),
        }
    }
    Err(SentinelError {
        master: cfg.master.clone(),
        last,
    })
}

/// One sentinel's answer: the address, or why there is none (its reply, or the failure).
async fn ask(
    sentinel: &UpstreamUrl,
    req: &Request,
    timeout: Duration,
) -> Result<(String, u16), String> {
    let frame = query_once(sentinel, req, timeout)
        .await
        .map_err(|e| e.to_string())?;
    parse_addr_reply(&frame).ok_or_else(|| String::from_utf8_lossy(&frame).trim().to_string())
}

/// `[ip, port]`, or a null when the sentinel does not know the name.
fn parse_addr_reply(frame: &Bytes) -> Option<(String, u16)> {
    let decoded = reply::decode(frame)?;
    let items = reply::elements(&decoded)?;
    let host = String::from_utf8_lossy(reply::as_bytes(items.first()?)?).into_owned();
    let port = std::str::from_utf8(reply::as_bytes(items.get(1)?)?)
        .ok()?
        .parse()
        .ok()?;
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_replies_parse() {
        let reply = Bytes::from_static(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n");
        assert_eq!(parse_addr_reply(&reply), Some(("127.0.0.1".into(), 6380)));
        assert_eq!(parse_addr_reply(&Bytes::from_static(b"*-1\r\n")), None);
    }

    #[test]
    fn the_primary_keeps_its_credentials_and_db() {
        let cfg = SentinelConfig {
            sentinels: vec![UpstreamUrl::parse("redis://127.0.0.1:26379").unwrap()],
            master: "mymaster".into(),
            primary: UpstreamUrl::parse("redis://:pw@0.0.0.0:0/2").unwrap(),
        };
        let url = cfg.primary_at("10.0.0.9".into(), 6380);
        assert_eq!((url.host.as_str(), url.port, url.db), ("10.0.0.9", 6380, 2));
        assert_eq!(url.pass.as_deref(), Some("pw"));
    }
}
