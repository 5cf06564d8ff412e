//! FLUSHDB/FLUSHALL from a client whose keys are rewritten: the shared namespace holds every
//! app's data, so a flush is refused (`flush = "refuse"`, the default) or scoped to the
//! client's own upstream prefixes (`flush = "scoped"`: SCAN MATCH + UNLINK, on a connection of
//! its own so no shared connection waits on it).

use crate::config::schema::FlushPolicy;
use crate::config::Config;
use crate::protocol::encode::{self, Proto};
use crate::protocol::reply;
use crate::protocol::tree::Node;
use crate::protocol::Request;
use crate::proxy::session::Session;
use crate::upstream::conn;
use crate::upstream::UpstreamUrl;
use bytes::BytesMut;

impl Session {
    pub(super) async fn flush(&mut self, config: &Config, req: &Request) {
        if config.flush == FlushPolicy::Refuse {
            let name = String::from_utf8_lossy(req.arg(0).unwrap_or_default()).to_ascii_uppercase();
            return self.reply(encode::error(&format!(
                "ERR rekey: {name} refused: this client's keys are rewritten into a namespace other apps share (set flush = \"scoped\" to delete only this app's keys)"
            )));
        }
        let prefixes = self.flush_prefixes(config);
        let timeout = config.limits.connect_timeout;
        let mut result = Ok(0);
        for url in self.flush_targets() {
            let cluster = self.proxy.cluster.is_some();
            result = scoped_flush(&url, timeout, self.conn.db, &prefixes, cluster).await;
            tracing::debug!(upstream = %url, result = ?result, "scoped flush");
            if result.is_err() {
                break;
            }
        }
        match result {
            Ok(_) => self.reply(encode::simple("OK")),
            Err(e) => self.reply(encode::error(&format!(
                "ERR rekey: scoped flush failed: {e}"
            ))),
        }
    }

    /// Where the client's keys live now: every primary of a cluster, else the live upstream
    /// (after a Sentinel failover, the new primary; not the address the config started with).
    fn flush_targets(&mut self) -> Vec<UpstreamUrl> {
        match &self.proxy.cluster {
            Some(cluster) => cluster
                .topology()
                .nodes
                .iter()
                .map(|n| n.upstream.url().clone())
                .collect(),
            None => vec![self.sender.live_upstream().url().clone()],
        }
    }

    /// Upstream prefixes this client writes to: those it used, and those of its rules whose
    /// replacement has no captures.
    fn flush_prefixes(&self, config: &Config) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = self.memory_prefixes();
        for rule in config
            .rules
            .rules()
            .iter()
            .filter(|r| r.applies(self.identity()))
        {
            if let Some(p) = rule.fixed_replacement() {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }
}

/// Deletes every key under `prefixes` in `db` of the Redis at `url`; returns how many. On a
/// cluster node (`cluster`), keys are unlinked one slot at a time (a multi-key command must
/// stay within one slot).
async fn scoped_flush(
    url: &UpstreamUrl,
    timeout: std::time::Duration,
    db: u32,
    prefixes: &[Vec<u8>],
    cluster: bool,
) -> Result<usize, conn::ConnError> {
    let stream = conn::connect(url, Proto::Resp2, db, timeout).await?;
    let mut buf = BytesMut::new();
    let mut deleted = 0;
    for prefix in prefixes {
        let mut pattern = crate::rules::glob::escape(prefix);
        pattern.push(b'*');
        let mut cursor = b"0".to_vec();
        loop {
            let scan =
                Request::from_args([&b"SCAN"[..], &cursor, b"MATCH", &pattern, b"COUNT", b"1000"]);
            let frame = conn::roundtrip(&stream, &scan, &mut buf).await?;
            let node = Node::decode(&frame).filter(|_| !reply::is_error(&frame));
            let Some(items) = node
                .as_ref()
                .and_then(|n| n.items())
                .filter(|i| i.len() == 2)
            else {
                break;
            };
            cursor = items[0]
                .as_str()
                .map(|c| c.to_vec())
                .unwrap_or_else(|| b"0".to_vec());
            let keys: Vec<&[u8]> = items[1]
                .items()
                .unwrap_or_default()
                .iter()
                .filter_map(|k| k.as_str().map(|b| b.as_ref()))
                .collect();
            for group in unlink_groups(&keys, cluster) {
                let unlink = Request::from_args(std::iter::once(&b"UNLINK"[..]).chain(group));
                let reply = conn::roundtrip(&stream, &unlink, &mut buf).await?;
                if reply::is_error(&reply) {
                    let text = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
                    return Err(conn::ConnError::ErrorReply {
                        addr: url.addr(),
                        reply: text,
                    });
                }
            }
            deleted += keys.len();
            if cursor == b"0" {
                break;
            }
        }
    }
    Ok(deleted)
}

/// The keys of one SCAN page in UNLINK-sized groups: all at once, or per cluster slot.
fn unlink_groups<'k>(keys: &[&'k [u8]], cluster: bool) -> Vec<Vec<&'k [u8]>> {
    if keys.is_empty() {
        return Vec::new();
    }
    if !cluster {
        return vec![keys.to_vec()];
    }
    let mut by_slot: std::collections::BTreeMap<u16, Vec<&[u8]>> = Default::default();
    for &k in keys {
        by_slot
            .entry(crate::cluster::slot::slot_of(k))
            .or_default()
            .push(k);
    }
    by_slot.into_values().collect()
}
