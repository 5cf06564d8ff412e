//! Reply frames from Redis: where one ends, what kind it is, and decoding when needed.
//!
//! The upstream connection only needs to know where each reply frame ends to hand it, as the
//! original bytes, to the client that asked. [`frame_len`] walks RESP2/RESP3 headers with one
//! counter and no allocation. When rekey must look inside a reply (pub/sub messages, key names to
//! map back) it decodes that one frame with redis-protocol's zero-copy `BytesFrame`.

use crate::protocol::scan::{find_crlf, parse_int, quick_len};
use bytes::Bytes;
use redis_protocol::resp3::types::BytesFrame;

/// Reply bytes that are not valid RESP: the upstream connection is desynchronised and is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reply from upstream at byte {at}: {what}")]
pub struct FrameError {
    pub at: usize,
    pub what: &'static str,
}

/// Length of the first complete frame in `buf`, `Ok(None)` if more bytes are needed.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    FrameScanner::default().scan(buf)
}

/// Finds frame ends across partial reads: a frame that arrives in many pieces (a large LRANGE
/// reply) is walked once, not once per read.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    pos: usize,
    remaining: u64,
}

impl Default for FrameScanner {
    fn default() -> Self {
        FrameScanner {
            pos: 0,
            remaining: 1,
        }
    }
}

impl FrameScanner {
    /// Continues scanning `buf` (which must start with the same bytes as on the previous call)
    /// and returns the frame's length once complete; the scanner is then reset for the next one.
    #[inline]
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if self.pos == 0 && self.remaining == 1 {
            if let Some(len) = quick_frame(buf) {
                return Ok(Some(len));
            }
        }
        self.walk(buf)
    }

    /// The general walk of [`FrameScanner::scan`], header by header.
    #[inline(never)]
    fn walk(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        while self.remaining > 0 {
            let pos = self.pos;
            let Some(&kind) = buf.get(pos) else {
                return Ok(None);
            };
            let Some(eol) = find_crlf(buf, pos + 1) else {
                return Ok(None);
            };
            let line = &buf[pos + 1..eol];
            let next = eol + 2;
            let (advance_to, children) = match kind {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => (next, 0),
                b'$' | b'!' | b'=' => {
                    let n = header_int(line, pos)?;
                    if n < 0 {
                        (next, 0) // RESP2 null bulk
                    } else {
                        let end = next + n as usize;
                        if buf.len() < end + 2 {
                            return Ok(None);
                        }
                        (end + 2, 0)
                    }
                }
                b'*' | b'~' | b'>' => (next, header_int(line, pos)?.max(0) as u64),
                b'%' => (next, 2 * header_int(line, pos)?.max(0) as u64),
                // Attributes precede the frame they describe and do not count as one.
                b'|' => (next, 2 * header_int(line, pos)?.max(0) as u64 + 1),
                _ => {
                    return Err(FrameError {
                        at: pos,
                        what: "unknown frame type",
                    })
                }
            };
            self.pos = advance_to;
            self.remaining = self.remaining - 1 + children;
        }
        let len = self.pos;
        *self = FrameScanner::default();
        Ok(Some(len))
    }
}

/// The size of the commonest complete frames in one step: a bulk string with a short
/// canonical header, or a status, error or integer line. `None` leaves the rest (and any
/// incomplete frame) to the general walk.
#[inline(always)]
fn quick_frame(buf: &[u8]) -> Option<usize> {
    match buf.first()? {
        b'$' => {
            if let [_, b'-', b'1', b'\r', b'\n', ..] = *buf {
                return Some(5); // nil
            }
            let (n, start) = quick_len(buf, 1)?;
            let end = start + n + 2;
            (buf.len() >= end).then_some(end)
        }
        b'+' | b'-' | b':' => find_crlf(buf, 1).map(|cr| cr + 2),
        b'*' => match *buf {
            [_, b'-', b'1', b'\r', b'\n', ..] => Some(5),
            _ => None,
        },
        _ => None,
    }
}

fn header_int(line: &[u8], at: usize) -> Result<i64, FrameError> {
    parse_int(line).ok_or(FrameError {
        at,
        what: "bad length",
    })
}

/// True for a RESP3 push frame (`>`), which answers no request.
pub fn is_push(frame: &[u8]) -> bool {
    frame.first() == Some(&b'>')
}

/// True for an error reply (`-` or RESP3 `!`).
pub fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-') | Some(b'!'))
}

/// Decodes one whole frame (RESP2 or RESP3) into redis-protocol's zero-copy frame type.
pub fn decode(frame: &Bytes) -> Option<BytesFrame> {
    redis_protocol::resp3::decode::complete::decode_bytes(frame)
        .ok()
        .flatten()
        .map(|(f, _)| f)
}

/// The elements of an array or push frame, if it is one.
pub fn elements(frame: &BytesFrame) -> Option<&[BytesFrame]> {
    match frame {
        BytesFrame::Array { data, .. } | BytesFrame::Push { data, .. } => Some(data),
        _ => None,
    }
}

/// The bytes of a string-like frame (blob, simple, verbatim).
pub fn as_bytes(frame: &BytesFrame) -> Option<&Bytes> {
    match frame {
        BytesFrame::BlobString { data, .. } | BytesFrame::SimpleString { data, .. } => Some(data),
        BytesFrame::VerbatimString { data, .. } => Some(data),
        _ => None,
    }
}

/// The value of an integer frame.
pub fn as_int(frame: &BytesFrame) -> Option<i64> {
    match frame {
        BytesFrame::Number { data, .. } => Some(*data),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_of_every_kind() {
        let frames: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":12\r\n",
            b"$3\r\nabc\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"_\r\n",
            b",1.5\r\n",
            b"#t\r\n",
            b"%1\r\n+k\r\n*2\r\n:1\r\n:2\r\n",
            b"~1\r\n+a\r\n",
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"!3\r\nerr\r\n",
            b"*0\r\n",
        ];
        for f in frames {
            let mut buf = f.to_vec();
            buf.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(
                frame_len(&buf).unwrap(),
                Some(f.len()),
                "{}",
                String::from_utf8_lossy(f)
            );
            for cut in 0..f.len() {
                assert_eq!(
                    frame_len(&f[..cut]).unwrap(),
                    None,
                    "{} cut {cut}",
                    String::from_utf8_lossy(f)
                );
            }
        }
    }

    #[test]
    fn resumes_across_reads() {
        let f = b"*3\r\n$3\r\nabc\r\n:1\r\n*1\r\n+x\r\n";
        let mut s = FrameScanner::default();
        for cut in 0..f.len() {
            assert_eq!(s.scan(&f[..cut]).unwrap(), None);
        }
        assert_eq!(s.scan(f).unwrap(), Some(f.len()));
        assert_eq!(s.scan(b"+OK\r\n").unwrap(), Some(5));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(frame_len(b"?what\r\n").is_err());
        assert!(frame_len(b"$x\r\n").is_err());
    }

    #[test]
    fn decodes_push() {
        let f = Bytes::from_static(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n");
        let d = decode(&f).unwrap();
        let e = elements(&d).unwrap();
        assert_eq!(as_bytes(&e[0]).unwrap().as_ref(), b"message");
        assert!(is_push(&f));
    }
}
