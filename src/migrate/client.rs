//! A small RESP client for the migration: one connection to one Redis node, made ready by
//! rekey's own upstream handshake (AUTH, SELECT), sending pipelines of requests and reading
//! their replies in order. Nothing is shared: the migration owns its connections.

use crate::migrate::MigrateError;
use crate::protocol::encode::Proto;
use crate::protocol::reply::FrameScanner;
use crate::protocol::scan::parse_int;
use crate::protocol::tree::Node;
use crate::protocol::Request;
use crate::transport::Transport;
use crate::upstream::conn;
use crate::upstream::UpstreamUrl;
use crate::wire::WriteQueue;
use bytes::{Bytes, BytesMut};
use std::time::Duration;

/// One reply, decoded (RESP2: the migration never asks for RESP3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple or bulk string.
    Str(Bytes),
    Int(i64),
    Nil,
    /// An error reply, without its `-` and CRLF.
    Error(String),
    Array(Vec<Reply>),
}

impl Reply {
    fn from_node(node: Node) -> Reply {
        match node {
            Node::Str { data, .. } => Reply::Str(data),
            Node::Agg { items, .. } => {
                Reply::Array(items.into_iter().map(Reply::from_node).collect())
            }
            Node::Raw(raw) => match raw.first() {
                Some(b':') => parse_int(raw[1..].trim_ascii_end())
                    .map(Reply::Int)
                    .unwrap_or_else(|| Reply::Error(lossy(&raw))),
                Some(b'-') | Some(b'!') => Reply::Error(lossy(&raw[1..])),
                Some(b'$') | Some(b'*') | Some(b'_') => Reply::Nil,
                _ => Reply::Error(format!("unexpected reply {}", lossy(&raw))),
            },
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Reply::Str(b) => Some(b),
            _ => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// A short description, for reports.
    pub fn describe(&self) -> String {
        match self {
            Reply::Str(b) => format!("{:?}", String::from_utf8_lossy(b)),
            Reply::Int(n) => n.to_string(),
            Reply::Nil => "nil".into(),
            Reply::Error(e) => e.clone(),
            Reply::Array(items) => format!("an array of {}", items.len()),
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end().to_string()
}

/// A connection to one node.
pub struct Client {
    stream: Transport,
    buf: BytesMut,
    scanner: FrameScanner,
    addr: String,
    /// A pipeline whose replies have not all come within this is given up.
    reply_timeout: Duration,
}

impl Client {
    /// Connects to `url` and runs the handshake rekey's upstream connections run: AUTH as the
    /// URL says, then SELECT `db`.
    pub async fn connect(
        url: &UpstreamUrl,
        db: u32,
        connect_timeout: Duration,
        reply_timeout: Duration,
    ) -> Result<Client, MigrateError> {
        let stream = conn::connect(url, Proto::Resp2, db, connect_timeout)
            .await
            .map_err(|error| MigrateError::Conn {
                addr: url.addr(),
                error,
            })?;
        Ok(Client {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            scanner: FrameScanner::default(),
            addr: url.addr(),
            reply_timeout,
        })
    }

    /// `host:port` of the node.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `reqs` in one write and reads one reply for each, in order. A connection error
    /// or a silence longer than the reply timeout fails the whole pipeline (the commands may
    /// or may not have run: each step of the migration is safe to run again).
    pub async fn pipeline(&mut self, reqs: &[Request]) -> Result<Vec<Reply>, MigrateError> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let limit = self.reply_timeout;
        match tokio::time::timeout(limit, self.exchange(reqs)).await {
            Ok(Ok(replies)) => Ok(replies),
            Ok(Err(error)) => Err(MigrateError::Conn {
                addr: self.addr.clone(),
                error,
            }),
            Err(_) => Err(MigrateError::Timeout {
                addr: self.addr.clone(),
                ms: limit.as_millis() as u64,
            }),
        }
    }

    /// One request, one reply.
    pub async fn call(&mut self, req: Request) -> Result<Reply, MigrateError> {
        let mut replies = self.pipeline(std::slice::from_ref(&req)).await?;
        Ok(replies.pop().unwrap_or(Reply::Nil))
    }

    async fn exchange(&mut self, reqs: &[Request]) -> Result<Vec<Reply>, conn::ConnError> {
        let mut out = WriteQueue::new();
        for r in reqs {
            out.push(r.raw());
        }
        conn::write_all(&self.stream, &mut out).await?;
        let mut replies = Vec::with_capacity(reqs.len());
        while replies.len() < reqs.len() {
            match self.scanner.scan(&self.buf)? {
                Some(n) => {
                    let frame = self.buf.split_to(n).freeze();
                    let reply = match Node::decode(&frame) {
                        Some(node) => Reply::from_node(node),
                        None => Reply::Error(format!("undecodable reply {}", lossy(&frame))),
                    };
                    replies.push(reply);
                }
                None => conn::read_more(&self.stream, &mut self.buf).await?,
            }
        }
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(raw: &'static [u8]) -> Reply {
        Reply::from_node(Node::decode(&Bytes::from_static(raw)).unwrap())
    }

    #[test]
    fn replies_decode() {
        assert_eq!(reply(b"+OK\r\n"), Reply::Str(Bytes::from_static(b"OK")));
        assert_eq!(reply(b":-2\r\n").int(), Some(-2));
        assert_eq!(reply(b"$-1\r\n"), Reply::Nil);
        assert_eq!(
            reply(b"-BUSYKEY Target key name already exists.\r\n").error(),
            Some("BUSYKEY Target key name already exists.")
        );
        assert_eq!(
            reply(b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n"),
            Reply::Array(vec![
                Reply::Str(Bytes::from_static(b"0")),
                Reply::Array(vec![Reply::Str(Bytes::from_static(b"k"))])
            ])
        );
    }
}
