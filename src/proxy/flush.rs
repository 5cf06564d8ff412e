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
        match scoped_flush(config, self.db, &prefixes).await {
            Ok(_) => self.reply(encode::simple("OK")),
            Err(e) => self.reply(encode::error(&format!(
                "ERR rekey: scoped flush failed: {e}"
            ))),
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

/// Deletes every key under `prefixes` in `db`; returns how many.
async fn scoped_flush(
    config: &Config,
    db: u32,
    prefixes: &[Vec<u8>],
) -> Result<usize, conn::ConnError> {
    let stream = conn::connect(
        &config.upstream,
        Proto::Resp2,
        db,
        config.limits.connect_timeout,
    )
    .await?;
    let mut buf = BytesMut::new();
    let mut deleted = 0;
    for prefix in prefixes {
        let mut pattern = glob_escape(prefix);
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
            if !keys.is_empty() {
                let unlink =
                    Request::from_args(std::iter::once(&b"UNLINK"[..]).chain(keys.iter().copied()));
                conn::roundtrip(&stream, &unlink, &mut buf).await?;
                deleted += keys.len();
            }
            if cursor == b"0" {
                break;
            }
        }
    }
    Ok(deleted)
}

/// Escapes glob metacharacters so a prefix matches literally.
fn glob_escape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 4);
    for &c in s {
        if matches!(c, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(c);
    }
    out
}
