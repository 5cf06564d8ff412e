//! Replies that rekey writes itself (errors, PONG, HELLO, emulated CLIENT commands), in the
//! client's protocol version: RESP3 types where the client said `HELLO 3`, their RESP2
//! equivalents otherwise, exactly as Redis would send them. [`push_header`] is the one writer of
//! `<kind><n>\r\n` headers, for these replies, for requests rekey builds and for re-encoded
//! reply trees.

use bytes::{BufMut, Bytes, BytesMut};

/// Protocol version of a client or an upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Resp2,
    Resp3,
}

impl Proto {
    pub fn number(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// Builds one or more frames into a buffer.
pub struct Encoder {
    buf: BytesMut,
    proto: Proto,
}

impl Encoder {
    pub fn new(proto: Proto) -> Encoder {
        Encoder {
            buf: BytesMut::with_capacity(64),
            proto,
        }
    }

    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }

    fn line(&mut self, kind: u8, body: &[u8]) -> &mut Self {
        self.buf.put_u8(kind);
        self.buf.put_slice(body);
        self.buf.put_slice(b"\r\n");
        self
    }

    fn header(&mut self, kind: u8, n: i64) -> &mut Self {
        match usize::try_from(n) {
            Ok(n) => push_header(&mut self.buf, kind, n),
            Err(_) => {
                let mut digits = itoa::Buffer::new();
                self.line(kind, digits.format(n).as_bytes());
            }
        }
        self
    }

    pub fn simple(&mut self, s: &str) -> &mut Self {
        self.line(b'+', s.as_bytes())
    }

    /// An error line; `msg` includes the code (`ERR …`, `NOAUTH …`).
    pub fn error(&mut self, msg: &str) -> &mut Self {
        let clean: String = msg
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        self.line(b'-', clean.as_bytes())
    }

    pub fn int(&mut self, n: i64) -> &mut Self {
        self.header(b':', n)
    }

    pub fn bulk(&mut self, data: &[u8]) -> &mut Self {
        self.header(b'$', data.len() as i64);
        self.buf.put_slice(data);
        self.buf.put_slice(b"\r\n");
        self
    }

    pub fn null(&mut self) -> &mut Self {
        match self.proto {
            Proto::Resp3 => self.line(b'_', b""),
            Proto::Resp2 => self.line(b'$', b"-1"),
        }
    }

    pub fn array(&mut self, n: usize) -> &mut Self {
        self.header(b'*', n as i64)
    }

    /// A map of `n` pairs (flat array of 2n in RESP2).
    pub fn map(&mut self, n: usize) -> &mut Self {
        match self.proto {
            Proto::Resp3 => self.header(b'%', n as i64),
            Proto::Resp2 => self.header(b'*', 2 * n as i64),
        }
    }

    /// A double (RESP3 `,`), a bulk string in RESP2, as Redis's `addReplyDouble`.
    pub fn double(&mut self, v: f64) -> &mut Self {
        let text = format!("{v}");
        match self.proto {
            Proto::Resp3 => self.line(b',', text.as_bytes()),
            Proto::Resp2 => self.bulk(text.as_bytes()),
        }
    }

    /// An out-of-band push (a plain array in RESP2, as Redis sends pub/sub messages).
    pub fn push(&mut self, n: usize) -> &mut Self {
        match self.proto {
            Proto::Resp3 => self.header(b'>', n as i64),
            Proto::Resp2 => self.header(b'*', n as i64),
        }
    }

    /// A verbatim text (RESP3 `=txt:`), a bulk string in RESP2 (CLIENT INFO, INFO).
    pub fn verbatim(&mut self, text: &[u8]) -> &mut Self {
        match self.proto {
            Proto::Resp3 => {
                self.header(b'=', text.len() as i64 + 4);
                self.buf.put_slice(b"txt:");
                self.buf.put_slice(text);
                self.buf.put_slice(b"\r\n");
                self
            }
            Proto::Resp2 => self.bulk(text),
        }
    }
}

/// A single error frame.
pub fn error(msg: &str) -> Bytes {
    let mut e = Encoder::new(Proto::Resp2);
    e.error(msg);
    e.finish()
}

/// A single simple-string frame.
pub fn simple(s: &'static str) -> Bytes {
    let mut e = Encoder::new(Proto::Resp2);
    e.simple(s);
    e.finish()
}

/// Length of `<kind><n>\r\n`.
pub fn header_len(n: usize) -> usize {
    3 + match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        _ => n.ilog10() as usize + 1,
    }
}

/// Appends `<kind><n>\r\n`: one copy for the short lengths nearly every request has.
pub fn push_header(buf: &mut BytesMut, kind: u8, n: usize) {
    let digit = |v: usize| b'0' + (v % 10) as u8;
    match n {
        0..=9 => buf.extend_from_slice(&[kind, digit(n), b'\r', b'\n']),
        10..=99 => buf.extend_from_slice(&[kind, digit(n / 10), digit(n), b'\r', b'\n']),
        _ => {
            let mut digits = itoa::Buffer::new();
            buf.extend_from_slice(&[kind]);
            buf.extend_from_slice(digits.format(n).as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_shapes() {
        let mut e = Encoder::new(Proto::Resp2);
        e.map(1).bulk(b"k").null();
        assert_eq!(e.finish().as_ref(), b"*2\r\n$1\r\nk\r\n$-1\r\n");
        let mut e = Encoder::new(Proto::Resp3);
        e.map(1).bulk(b"k").null().push(0).verbatim(b"x");
        assert_eq!(
            e.finish().as_ref(),
            b"%1\r\n$1\r\nk\r\n_\r\n>0\r\n=5\r\ntxt:x\r\n"
        );
        assert_eq!(error("ERR a\r\nb").as_ref(), b"-ERR a  b\r\n");
        let mut e = Encoder::new(Proto::Resp2);
        e.int(0).int(-42).int(i64::MIN);
        assert_eq!(
            e.finish().as_ref(),
            b":0\r\n:-42\r\n:-9223372036854775808\r\n"
        );
    }
}
