//! A small HTTP/1.1 client for the token endpoints the cloud sources call (the Azure instance
//! metadata service, the Entra ID token endpoint, AWS STS and instance metadata): one request
//! per connection (`Connection: close`), plain or over TLS with the system roots (the same
//! rustls setup as `rediss://`), a timeout on the whole exchange, a bounded body.
//!
//! Hand-written on the transport rekey already has, because the HTTP stack in the tree
//! (hyper) is a server, and these exchanges are a handful of small requests an hour. Errors
//! never carry a response body (it may hold a token): only the status, and for the caller to
//! add, the endpoint's own error code.

use crate::tls::UpstreamTls;
use crate::transport::Transport;
use crate::wire::{reserve_read, WriteQueue};
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::net::TcpStream;

/// The most a response may hold (headers and body).
const MAX_RESPONSE: usize = 1024 * 1024;

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
    };
    let (hostport, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h,
            p.parse()
                .map_err(|_| format!("{url:?}: port {p:?} is not a number"))?,
        ),
        _ => (hostport, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(Target {
        tls,
        host: host.to_string(),
        port,
        path,
    })
}

/// Sends one request and reads the whole response, within `timeout`.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    let target = parse_url(url)?;
    let host = target.host.clone();
    match tokio::time::timeout(timeout, exchange(&target, method, headers, body, timeout)).await {
        Ok(r) => r.map_err(|e| format!("{method} {}: {e}", redacted(url))),
        Err(_) => Err(format!(
            "{method} {} on {host}: no answer within {timeout:?}",
            redacted(url)
        )),
    }
}

/// The URL without its query (which may carry identifiers not worth logging).
pub fn redacted(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

async fn exchange(
    target: &Target,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    let addr = match target.host.contains(':') {
        true => format!("[{}]:{}", target.host, target.port),
        false => format!("{}:{}", target.host, target.port),
    };
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let stream = match target.tls {
        false => Transport::Tcp(tcp),
        true => UpstreamTls::system()
            .connect(tcp, &target.host, timeout)
            .await
            .map_err(|e| format!("TLS to {addr}: {e}"))?,
    };
    let head = request_head(target, method, headers, body.len());
    let mut out = WriteQueue::new();
    out.push(&Bytes::from(head));
    out.push(&Bytes::copy_from_slice(body));
    while !out.is_empty() {
        stream.writable().await.map_err(|e| e.to_string())?;
        out.try_write(&stream).map_err(|e| e.to_string())?;
    }
    read_response(&stream).await
}

fn request_head(target: &Target, method: &str, headers: &[(&str, &str)], len: usize) -> String {
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: rekey\r\n",
        target.path, target.host
    );
    if len > 0 || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

async fn read_response(stream: &Transport) -> Result<Response, String> {
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        if let Some(r) = parse_response(&buf, false)? {
            return Ok(r);
        }
        if buf.len() > MAX_RESPONSE {
            return Err("response too large".into());
        }
        stream.readable().await.map_err(|e| e.to_string())?;
        reserve_read(&mut buf);
        match stream.try_read_buf(&mut buf) {
            Ok(0) => {
                return parse_response(&buf, true)?
                    .ok_or_else(|| "connection closed before the whole response".into())
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The response in `buf`, when complete (`eof`: the peer closed, which ends a body without a
/// length).
fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf).map_err(|e| format!("bad response: {e}"))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &buf[head_len..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        match dechunk(rest)? {
            Some(b) => b,
            None => return Ok(None),
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length".to_string())?;
        if rest.len() < len {
            return Ok(None);
        }
        rest[..len].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, body }))
}

/// A chunked body, when complete.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// `application/x-www-form-urlencoded` (and query strings): `k=v&…`, percent-encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 percent-encoding: everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://169.254.169.254/metadata/identity/oauth2/token?x=1").unwrap();
        assert_eq!(
            t,
            Target {
                tls: false,
                host: "169.254.169.254".into(),
                port: 80,
                path: "/metadata/identity/oauth2/token?x=1".into()
            }
        );
        let t = parse_url("https://login.microsoftonline.com").unwrap();
        assert_eq!((t.port, t.path.as_str()), (443, "/"));
        let t = parse_url("http://127.0.0.1:8080?a=b").unwrap();
        assert_eq!((t.port, t.path.as_str()), (8080, "/?a=b"));
        let t = parse_url("http://[::1]:9/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://:80/").is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", false)
                .unwrap()
                .is_none()
        );
        let chunked = b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n";
        let r = parse_response(chunked, false).unwrap().unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"abcde"[..]));
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nall", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, b"all");
        assert!(parse_response(b"garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn encoding() {
        assert_eq!(
            form(&[("scope", "https://redis.azure.com/.default"), ("a b", "~")]),
            "scope=https%3A%2F%2Fredis.azure.com%2F.default&a%20b=~"
        );
    }
}
