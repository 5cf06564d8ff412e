//! The incremental request parser: `*N\r\n$len\r\narg\r\n…` or an inline line
//! (`PING\r\n`), taken out of a client's `BytesMut` without copying arguments, or peeked at in
//! place by the forwarding lane. Limits (bulk length, array length, inline size) are checked on
//! the headers, before the payload is buffered, with the same error texts Redis uses.

use crate::protocol::request::Request;
use crate::protocol::scan::{find_cr, parse_int, quick_len};
use bytes::BytesMut;
use smallvec::SmallVec;
use std::ops::Range;

/// Longest inline command Redis accepts (PROTO_INLINE_MAX_SIZE).
const INLINE_MAX: usize = 64 * 1024;

/// A request that cannot be parsed. The client gets `-ERR Protocol error: <msg>` and is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid multibulk length")]
    MultibulkLength,
    #[error("invalid bulk length")]
    BulkLength,
    #[error("expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("too big inline request")]
    InlineTooBig,
    #[error("too big mbulk count string")]
    HeaderTooBig,
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
}

/// Incremental parser with the client's limits.
#[derive(Debug, Clone, Copy)]
pub struct RequestParser {
    pub max_bulk: usize,
    pub max_array: usize,
}

impl Default for RequestParser {
    fn default() -> Self {
        RequestParser {
            max_bulk: 512 * 1024 * 1024,
            max_array: 1024 * 1024,
        }
    }
}

/// How far ahead of the bytes received a large request's buffer is grown.
const MAX_RESERVE_AHEAD: usize = 4 * 1024 * 1024;

impl RequestParser {
    /// Takes one complete request off the front of `buf`. `Ok(None)` means more bytes are
    /// needed; `buf` is untouched then. `Ok(Some(None))`-like empty requests (`*0`, blank inline
    /// lines) are consumed and returned as empty requests.
    pub fn parse(&self, buf: &mut BytesMut) -> Result<Option<Request>, ParseError> {
        match self.scan(buf)? {
            Scan::Incomplete(hint) => {
                // Room for the rest of a large request, but only as fast as bytes arrive: a
                // header announcing 512 MB must not allocate it up front.
                let want = hint.min(buf.len() + MAX_RESERVE_AHEAD);
                if want > buf.capacity() {
                    buf.reserve(want - buf.len());
                }
                Ok(None)
            }
            Scan::Array { len, args } => {
                Ok(Some(Request::from_parts(buf.split_to(len).freeze(), args)))
            }
            Scan::Inline { len } => {
                let line = buf.split_to(len);
                let text = trim_line(&line);
                let words = split_inline(text)?;
                Ok(Some(Request::from_args(words)))
            }
        }
    }

    /// Looks at the complete request at the front of `buf` without taking it: its size and
    /// where its command name and first argument are, for the forwarding lane, which copies
    /// runs of requests as they are. `None` for anything else (incomplete, inline, malformed):
    /// [`RequestParser::parse`] deals with those.
    #[inline]
    pub fn peek(&self, buf: &[u8]) -> Option<Peeked> {
        if buf.first() != Some(&b'*') {
            return None;
        }
        if let Some(seen) = self.peek_short(buf) {
            return Some(seen);
        }
        self.peek_general(buf)
    }

    /// [`RequestParser::peek`] for the shape nearly every request has: fewer than ten
    /// arguments, each with a header of at most four digits. Anything else, complete or not,
    /// is `None` here and left to the exact walk, which also produces the errors.
    #[inline]
    fn peek_short(&self, buf: &[u8]) -> Option<Peeked> {
        let &[b'*', n, b'\r', b'\n', ..] = buf else {
            return None;
        };
        let argc = n.wrapping_sub(b'0') as usize;
        if argc == 0 || argc > 9 || argc > self.max_array {
            return None;
        }
        let mut first = [0..0u32, 0..0u32];
        let mut pos = 4;
        for i in 0..argc {
            let (len, start) = short_bulk_header(buf, pos)?;
            if len > self.max_bulk {
                return None;
            }
            let end = start + len;
            if buf.get(end..end + 2)? != b"\r\n" {
                return None;
            }
            if let Some(seen) = first.get_mut(i) {
                *seen = start as u32..end as u32;
            }
            pos = end + 2;
        }
        let [name, arg1] = first;
        Some(Peeked {
            len: pos,
            name,
            arg1: (argc > 1).then_some(arg1),
        })
    }

    fn peek_general(&self, buf: &[u8]) -> Option<Peeked> {
        let mut first = [0..0, 0..0];
        let found = self.scan_array(buf, &mut 0, |i, r| {
            if i < 2 {
                first[i] = r;
            }
        });
        match found {
            Ok(Some((len, argc))) if argc > 0 => {
                let [name, arg1] = first;
                Some(Peeked {
                    len,
                    name,
                    arg1: (argc > 1).then_some(arg1),
                })
            }
            _ => None,
        }
    }

    fn scan(&self, buf: &[u8]) -> Result<Scan, ParseError> {
        if buf.is_empty() {
            return Ok(Scan::Incomplete(0));
        }
        if buf[0] != b'*' {
            return scan_inline(buf);
        }
        let mut args = SmallVec::new();
        let mut hint = 0;
        let found = self.scan_array(buf, &mut hint, |_, r| args.push(r))?;
        Ok(match found {
            Some((len, _)) => Scan::Array { len, args },
            None => Scan::Incomplete(hint),
        })
    }

    /// Walks the array request at the front of `buf` (`buf[0]` is `*`), calling `on_arg` with
    /// each argument's index and range; `Ok(Some((size, count)))` once complete, else
    /// `Ok(None)` with `hint` set to how many bytes would help, when known.
    fn scan_array(
        &self,
        buf: &[u8],
        hint: &mut usize,
        mut on_arg: impl FnMut(usize, Range<u32>),
    ) -> Result<Option<(usize, usize)>, ParseError> {
        let header = match quick_len(buf, 1) {
            Some((n, pos)) => Some((n as i64, pos)),
            None => read_header(buf, 1, INLINE_MAX)?,
        };
        let Some((count, mut pos)) = header else {
            return Ok(None);
        };
        if count > self.max_array as i64 {
            return Err(ParseError::MultibulkLength);
        }
        // Redis reads any count <= 0 (`*0`, `*-1`, `*-10`) as an empty request and goes on.
        let count = count.max(0) as usize;
        for i in 0..count {
            if pos >= buf.len() {
                return Ok(None);
            }
            if buf[pos] != b'$' {
                return Err(ParseError::ExpectedBulk(buf[pos] as char));
            }
            let header = match quick_len(buf, pos + 1) {
                Some((n, start)) => Some((n as i64, start)),
                None => read_header(buf, pos + 1, 32)?,
            };
            let Some((len, start)) = header else {
                return Ok(None);
            };
            if len < 0 || len as usize > self.max_bulk {
                return Err(ParseError::BulkLength);
            }
            let end = start + len as usize;
            if buf.len() < end + 2 {
                *hint = end + 2;
                return Ok(None);
            }
            if buf[end] != b'\r' || buf[end + 1] != b'\n' || end > u32::MAX as usize {
                return Err(ParseError::BulkLength);
            }
            on_arg(i, start as u32..end as u32);
            pos = end + 2;
        }
        Ok(Some((pos, count)))
    }
}

/// A bulk header `$<len>\r\n` at `pos` with one to four digits and no leading zero: its length
/// and where its payload starts. (At most 9,999 bytes an argument and nine arguments: the
/// offsets always fit [`Peeked`]'s `u32` ranges.)
#[inline(always)]
fn short_bulk_header(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let h = buf.get(pos..)?;
    if h.first() != Some(&b'$') {
        return None;
    }
    let digit = |i: usize| h.get(i).map(|b| b.wrapping_sub(b'0')).filter(|d| *d <= 9);
    let mut len = digit(1)? as usize;
    let mut i = 2;
    if len != 0 {
        while i < 5 {
            match digit(i) {
                Some(d) => len = len * 10 + d as usize,
                None => break,
            }
            i += 1;
        }
    }
    if h.get(i..i + 2)? != b"\r\n" {
        return None;
    }
    Some((len, pos + i + 2))
}

/// A complete request seen in place by [`RequestParser::peek`]: ranges are relative to the
/// request's first byte.
#[derive(Debug, Clone)]
pub struct Peeked {
    /// Its size on the wire.
    pub len: usize,
    /// The command name.
    pub name: Range<u32>,
    /// Argument 1, if any.
    pub arg1: Option<Range<u32>>,
}

impl Peeked {
    /// The command name of the request that starts at `raw[0]`.
    #[inline]
    pub fn name<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        &raw[self.name.start as usize..self.name.end as usize]
    }

    /// Argument 1 of the request that starts at `raw[0]`.
    #[inline]
    pub fn arg1<'a>(&self, raw: &'a [u8]) -> Option<&'a [u8]> {
        self.arg1
            .as_ref()
            .map(|r| &raw[r.start as usize..r.end as usize])
    }
}

enum Scan {
    Incomplete(usize),
    Array {
        len: usize,
        args: SmallVec<[Range<u32>; 8]>,
    },
    Inline {
        len: usize,
    },
}

/// Reads `<int>\r\n` starting at `pos`. `Ok(None)`: incomplete.
fn read_header(buf: &[u8], pos: usize, max_len: usize) -> Result<Option<(i64, usize)>, ParseError> {
    let rest = &buf[pos.min(buf.len())..];
    let Some(cr) = find_cr(rest) else {
        if rest.len() > max_len {
            return Err(if max_len == INLINE_MAX {
                ParseError::HeaderTooBig
            } else {
                ParseError::BulkLength
            });
        }
        return Ok(None);
    };
    if cr + 1 >= rest.len() {
        return Ok(None);
    }
    if rest[cr + 1] != b'\n' {
        return Err(if max_len == INLINE_MAX {
            ParseError::MultibulkLength
        } else {
            ParseError::BulkLength
        });
    }
    let n = parse_int(&rest[..cr]).ok_or(if max_len == INLINE_MAX {
        ParseError::MultibulkLength
    } else {
        ParseError::BulkLength
    })?;
    Ok(Some((n, pos + cr + 2)))
}

fn scan_inline(buf: &[u8]) -> Result<Scan, ParseError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(nl) => Ok(Scan::Inline { len: nl + 1 }),
        None if buf.len() > INLINE_MAX => Err(ParseError::InlineTooBig),
        None => Ok(Scan::Incomplete(0)),
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
        end -= 1;
    }
    &line[..end]
}

/// What may follow a closing quote: a space or the end of the (C string) line.
fn ends_word(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0
}

/// Splits an inline command line into words with Redis's quoting rules (`sdssplitargs`):
/// "double quotes" with \n \r \t \b \a \\ \" \xHH escapes, and 'single quotes' with \'.
pub fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        // Redis splits a C string: a NUL ends the line.
        if i >= line.len() || line[i] == 0 {
            return Ok(words);
        }
        let mut word = Vec::new();
        let mut dq = false;
        let mut sq = false;
        loop {
            if dq {
                if i >= line.len() || line[i] == 0 {
                    return Err(ParseError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < line.len()
                    && line[i + 1] == b'x'
                    && is_hex(line[i + 2])
                    && is_hex(line[i + 3])
                {
                    word.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                    i += 3;
                } else if c == b'\\' && i + 1 < line.len() {
                    i += 1;
                    word.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                } else if c == b'"' {
                    if i + 1 < line.len() && !ends_word(line[i + 1]) {
                        return Err(ParseError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    word.push(c);
                }
            } else if sq {
                if i >= line.len() || line[i] == 0 {
                    return Err(ParseError::UnbalancedQuotes);
                }
                let c = line[i];
                if c == b'\\' && i + 1 < line.len() && line[i + 1] == b'\'' {
                    i += 1;
                    word.push(b'\'');
                } else if c == b'\'' {
                    if i + 1 < line.len() && !ends_word(line[i + 1]) {
                        return Err(ParseError::UnbalancedQuotes);
                    }
                    i += 1;
                    break;
                } else {
                    word.push(c);
                }
            } else {
                if i >= line.len() {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => dq = true,
                    b'\'' => sq = true,
                    c => word.push(c),
                }
            }
            i += 1;
        }
        words.push(word);
    }
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::{splice, splice_head};

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ParseError> {
        let p = RequestParser::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = p.parse(&mut buf)? {
            out.push(r.args().map(|a| a.to_vec()).collect());
        }
        Ok(out)
    }

    #[test]
    fn parses_pipelined_arrays_zero_copy() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n";
        let p = RequestParser::default();
        let mut buf = BytesMut::from(&input[..]);
        let first = p.parse(&mut buf).unwrap().unwrap();
        assert_eq!(first.raw().as_ref(), b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n");
        assert_eq!(first.arg(1), Some(&b"a"[..]));
        let second = p.parse(&mut buf).unwrap().unwrap();
        assert!(second.arg_is(0, "ping"));
        assert!(buf.is_empty());
    }

    #[test]
    fn waits_for_every_split_point() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let p = RequestParser::default();
        for cut in 0..input.len() {
            let mut buf = BytesMut::from(&input[..cut]);
            assert!(p.parse(&mut buf).unwrap().is_none(), "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn inline_with_quotes() {
        let got = parse_all(b"SET k \"a b\\x41\" 'it\\'s'\r\nPING\n").unwrap();
        assert_eq!(
            got[0],
            vec![
                b"SET".to_vec(),
                b"k".to_vec(),
                b"a bA".to_vec(),
                b"it's".to_vec()
            ]
        );
        assert_eq!(got[1], vec![b"PING".to_vec()]);
        assert_eq!(
            parse_all(b"SET k \"oops\r\n"),
            Err(ParseError::UnbalancedQuotes)
        );
    }

    /// Fuzzer regression (request_decoder): a NUL in an inline line looped forever, pushing
    /// empty words. Redis reads the line as a C string: the NUL ends it.
    #[test]
    fn inline_nul_ends_the_line() {
        let got = parse_all(b"$1\0\0\0 x\r\nGET \"k\"\0 y\r\n").unwrap();
        assert_eq!(got[0], vec![b"$1".to_vec()]);
        assert_eq!(got[1], vec![b"GET".to_vec(), b"k".to_vec()]);
        assert_eq!(
            parse_all(b"GET \"k\0\"\r\n"),
            Err(ParseError::UnbalancedQuotes)
        );
    }

    #[test]
    fn redis_error_texts() {
        assert_eq!(parse_all(b"*x\r\n"), Err(ParseError::MultibulkLength));
        assert_eq!(
            parse_all(b"*1\r\n+x\r\n"),
            Err(ParseError::ExpectedBulk('+'))
        );
        assert_eq!(parse_all(b"*1\r\n$-5\r\n"), Err(ParseError::BulkLength));
        assert_eq!(
            parse_all(b"*1\r\n$3\r\nabcd\r\n"),
            Err(ParseError::BulkLength)
        );
        let p = RequestParser {
            max_bulk: 10,
            max_array: 4,
        };
        assert_eq!(
            p.parse(&mut BytesMut::from(&b"*5\r\n"[..])).unwrap_err(),
            ParseError::MultibulkLength
        );
        assert_eq!(
            p.parse(&mut BytesMut::from(&b"*1\r\n$11\r\n"[..]))
                .unwrap_err(),
            ParseError::BulkLength
        );
        let long = vec![b'a'; INLINE_MAX + 1];
        assert_eq!(parse_all(&long), Err(ParseError::InlineTooBig));
    }

    #[test]
    fn empty_requests_are_consumed() {
        assert_eq!(
            parse_all(b"*0\r\n\r\n").unwrap(),
            vec![Vec::<Vec<u8>>::new(), vec![]]
        );
    }

    /// Redis takes any multibulk count <= 0 as an empty request, down to i64's minimum.
    #[test]
    fn negative_counts_are_empty_requests() {
        let got = parse_all(b"*-10\r\n*-1\r\n*-9223372036854775808\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(got.unwrap().len(), 4);
        assert_eq!(
            parse_all(b"*-9223372036854775809\r\n"),
            Err(ParseError::MultibulkLength)
        );
        assert_eq!(parse_all(b"*-0\r\n"), Err(ParseError::MultibulkLength));
        assert!(RequestParser::default().peek(b"*-10\r\n").is_none());
    }

    #[test]
    fn peek_sees_what_parse_takes() {
        let p = RequestParser::default();
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*1\r\n$4\r\nPING\r\n";
        let seen = p.peek(input).unwrap();
        assert_eq!(seen.len, 33);
        assert_eq!(seen.name(input), b"SET");
        assert_eq!(seen.arg1(input), Some(&b"key"[..]));
        let ping = p.peek(&input[33..]).unwrap();
        assert_eq!(
            (ping.name(&input[33..]), ping.arg1(&input[33..])),
            (&b"PING"[..], None)
        );
        for cut in 0..33 {
            assert!(p.peek(&input[..cut]).is_none(), "cut at {cut}");
        }
        assert!(
            p.peek(b"PING\r\n").is_none(),
            "inline requests take the parser"
        );
        assert!(p.peek(b"*1\r\n$x\r\n").is_none(), "malformed ones too");
        assert!(p.peek(b"*0\r\n").is_none(), "and empty ones");
    }

    #[test]
    fn the_short_peek_agrees_with_the_exact_walk() {
        let limits = [
            RequestParser::default(),
            RequestParser {
                max_bulk: 3,
                max_array: 2,
            },
        ];
        let long = "v".repeat(1200);
        let inputs: Vec<Vec<u8>> = vec![
            b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000001\r\n".to_vec(),
            format!(
                "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{long}\r\n",
                long.len()
            )
            .into_bytes(),
            b"*1\r\n$0\r\n\r\n".to_vec(),
            b"*2\r\n$03\r\nGET\r\n$1\r\nk\r\n".to_vec(),
            b"*2\r\n$3\r\nGET\r\n$-1\r\n".to_vec(),
            b"*2\r\n$3\r\nGETX\r\n$1\r\nk\r\n".to_vec(),
            b"*2\r\n$3\r\nGET\r\n:1\r\n".to_vec(),
            b"*12\r\n$1\r\na\r\n".to_vec(),
            b"*01\r\n$1\r\na\r\n".to_vec(),
            b"*1\r\n$12345\r\n".to_vec(),
            b"*1\r\n$4\n\rPING\r\n".to_vec(),
        ];
        assert!(limits[0].peek_short(&inputs[0]).is_some());
        assert!(limits[0].peek_short(&inputs[1]).is_some());
        for p in limits {
            for input in &inputs {
                for cut in 0..=input.len() {
                    let buf = &input[..cut];
                    let general = p.peek_general(buf).map(|s| (s.len, s.name, s.arg1));
                    let short = p.peek_short(buf).map(|s| (s.len, s.name, s.arg1));
                    if short.is_some() {
                        assert_eq!(short, general, "{:?}", String::from_utf8_lossy(buf));
                    }
                    let seen = p.peek(buf).map(|s| (s.len, s.name, s.arg1));
                    assert_eq!(seen, general, "{:?}", String::from_utf8_lossy(buf));
                }
            }
        }
    }

    #[test]
    fn splicing_in_place_equals_splicing_a_request() {
        let p = RequestParser::default();
        let (long_key, long_head) = ("k".repeat(120), "h".repeat(60));
        for (key, cut, head) in [
            ("AppA_1", 5, "shared_"),
            ("k", 0, "ns:"),
            ("0123456789", 2, ""),
            ("key:0000000000000001", 0, "ns:"),
            ("key:000000000000001", 4, "0123456789"),
            (long_key.as_str(), 1, "ns:"),
            ("AppB_x", 5, long_head.as_str()),
        ] {
            let req = Request::from_args(["SET", key, "value"]);
            let mut expected = BytesMut::new();
            let tail = &key.as_bytes()[cut..];
            splice(
                &req,
                std::iter::once((1, head.as_bytes(), tail)),
                &mut expected,
            );
            // The request sits behind another one in a read buffer.
            let mut buf = b"*1\r\n$4\r\nPING\r\n".to_vec();
            let at = buf.len();
            buf.extend_from_slice(req.raw());
            let seen = p.peek(&buf[at..]).unwrap();
            let arg = seen.arg1.clone().unwrap();
            let arg = at + arg.start as usize..at + arg.end as usize;
            let mut out = BytesMut::new();
            let resume = splice_head(&buf, at, arg, cut, head.as_bytes(), &mut out);
            out.extend_from_slice(&buf[resume..at + seen.len]);
            assert_eq!(out, expected, "{key}");
        }
    }
}
