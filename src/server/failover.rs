//! Following a Sentinel-managed primary through failovers. Where the primary is at start-up
//! is [`crate::upstream::sentinel`]'s to find; this module keeps rekey on it afterwards, two
//! ways: each sentinel's `+switch-master` announcements (a subscription per sentinel) and a
//! poll every few seconds in case an announcement was missed. A new primary gets new pools,
//! swapped in exactly like an upstream changed by a reload: sessions move on their next
//! command, the old pools drain.

use crate::protocol::reply::{self, FrameScanner};
use crate::protocol::Request;
use crate::proxy::Proxy;
use crate::upstream::conn;
use crate::upstream::sentinel::{self, SentinelConfig};
use crate::upstream::UpstreamUrl;
use crate::wire::WriteQueue;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the sentinels are asked even when they announce nothing.
const POLL_EVERY: Duration = Duration::from_secs(5);

/// `+switch-master` payload: `<name> <old-ip> <old-port> <new-ip> <new-port>`.
fn parse_switch(payload: &[u8], master: &str) -> Option<(String, u16)> {
    let text = std::str::from_utf8(payload).ok()?;
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() != 5 || words[0] != master {
        return None;
    }
    Some((words[3].to_string(), words[4].parse().ok()?))
}

/// Follows failovers until the task is dropped.
pub async fn follow(proxy: Arc<Proxy>, cfg: SentinelConfig) {
    let (tx, mut switches) = mpsc::unbounded_channel();
    let mut watchers = Vec::new();
    for url in cfg.sentinels.clone() {
        watchers.push(tokio::spawn(watch_announcements(
            url,
            cfg.master.clone(),
            tx.clone(),
        )));
    }
    let timeout = proxy.config.load().limits.connect_timeout;
    loop {
        let target = tokio::select! {
            Some((host, port)) = switches.recv() => Some(cfg.primary_at(host, port)),
            _ = tokio::time::sleep(POLL_EVERY) => sentinel::resolve(&cfg, timeout).await.ok(),
        };
        if let Some(url) = target {
            if &url != proxy.upstream.load().url() {
                switch_to(&proxy, url);
            }
        }
    }
}

/// New pools for a new primary; sessions move to them on their next command.
fn switch_to(proxy: &Proxy, url: UpstreamUrl) {
    tracing::warn!(primary = %url, "sentinel: primary changed; moving to it");
    proxy.swap_upstream(&proxy.config.load(), url);
    crate::stats::stats().upstream_reconnects.increment(1);
}

/// Subscribes to one sentinel's `+switch-master` and passes on switches of `master`;
/// reconnects after a second when the sentinel goes away.
async fn watch_announcements(
    sentinel: UpstreamUrl,
    master: String,
    tx: mpsc::UnboundedSender<(String, u16)>,
) {
    loop {
        if let Err(e) = subscribe_once(&sentinel, &master, &tx).await {
            tracing::debug!(sentinel = %sentinel, error = %e, "sentinel subscription ended");
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn subscribe_once(
    sentinel: &UpstreamUrl,
    master: &str,
    tx: &mpsc::UnboundedSender<(String, u16)>,
) -> Result<(), conn::ConnError> {
    let stream = conn::connect(
        sentinel,
        crate::protocol::encode::Proto::Resp2,
        0,
        Duration::from_secs(2),
    )
    .await?;
    let mut out = WriteQueue::new();
    out.push(Request::from_args(["SUBSCRIBE", "+switch-master"]).raw());
    conn::write_all(&stream, &mut out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = FrameScanner::default();
    loop {
        while let Some(n) = scanner.scan(&buf)? {
            let frame = buf.split_to(n).freeze();
            let Some(decoded) = reply::decode(&frame) else {
                continue;
            };
            let Some(items) = reply::elements(&decoded) else {
                continue;
            };
            let is_message = items
                .first()
                .and_then(reply::as_bytes)
                .is_some_and(|k| k.as_ref() == b"message");
            if let (true, Some(payload)) = (is_message, items.get(2).and_then(reply::as_bytes)) {
                if let Some(addr) = parse_switch(payload, master) {
                    let _ = tx.send(addr);
                }
            }
        }
        conn::read_more(&stream, &mut buf).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse() {
        assert_eq!(
            parse_switch(b"mymaster 127.0.0.1 6379 127.0.0.1 6380", "mymaster"),
            Some(("127.0.0.1".into(), 6380))
        );
        assert_eq!(parse_switch(b"other 1 2 3 4", "mymaster"), None);
    }
}
