//! Client requests: `*N\r\n$len\r\narg\r\n…` or an inline line (`PING\r\n`), parsed
//! incrementally out of a `BytesMut` without copying arguments.
//!
//! A parsed [`Request`] keeps the request's original bytes plus the byte ranges of its
//! arguments, so forwarding an untouched request is a refcount bump, and looking at an argument
//! is a slice. Limits (bulk length, array length, inline size) are checked on the headers, before
//! the payload is buffered, with the same error texts Redis uses.

use bytes::{Bytes, BytesMut};
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

/// One client request: the bytes as received and where each argument is.
#[derive(Debug, Clone)]
pub struct Request {
    raw: Bytes,
    args: SmallVec<[Range<u32>; 8]>,
}

impl Request {
    /// Builds a request from arguments, encoded as a RESP array (used for inline commands,
    /// rewritten requests and requests rekey sends itself).
    pub fn from_args<I, A>(args: I) -> Request
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        let args: SmallVec<[A; 8]> = args.into_iter().collect();
        let pieces = args.iter().map(|a| (a.as_ref(), &[][..]));
        let mut buf = BytesMut::with_capacity(encoded_len(pieces.clone()));
        write_pieces(&mut buf, pieces)
    }

    /// Builds a request whose arguments are each the concatenation of two parts (a rewritten
    /// key is its new prefix and the rest of the old key). The bytes are carved from a
    /// per-thread arena, so a rewritten request usually costs no allocation: the arena's space
    /// is reused once the requests cut from it are gone.
    pub fn from_pieces<'a>(
        args: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + Clone,
    ) -> Request {
        let size = encoded_len(args.clone());
        ARENA.with(|arena| {
            let mut arena = arena.borrow_mut();
            if arena.capacity() < size {
                // Reclaims the old space when every request cut from it is gone.
                arena.reserve(size.max(ARENA_CHUNK));
            }
            write_pieces(&mut arena, args)
        })
    }

    /// This request with argument `i` replaced by `head ++ tail` for each change (the changes
    /// [`splice`] takes), built as a new request.
    pub fn with_changes<'a>(
        &'a self,
        changes: impl Iterator<Item = (usize, &'a [u8], &'a [u8])> + Clone,
    ) -> Request {
        Request::from_pieces(self.args().enumerate().map(move |(i, arg)| {
            match changes.clone().find(|(c, _, _)| *c == i) {
                Some((_, head, tail)) => (head, tail),
                None => (arg, &[][..]),
            }
        }))
    }

    /// The request exactly as it goes on the wire (RESP array).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The wire bytes, giving up the request (no reference-count traffic).
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Number of arguments, command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// True for an empty request (`*0`), which Redis silently ignores.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// Argument `i` (0 is the command name), if present.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        self.args
            .get(i)
            .map(|r| &self.raw[r.start as usize..r.end as usize])
    }

    /// Argument `i` as a zero-copy `Bytes`.
    pub fn arg_bytes(&self, i: usize) -> Option<Bytes> {
        self.args
            .get(i)
            .map(|r| self.raw.slice(r.start as usize..r.end as usize))
    }

    /// All arguments, command name first.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone + '_ {
        self.args
            .iter()
            .map(|r| &self.raw[r.start as usize..r.end as usize])
    }

    /// True when argument `i` equals `word`, ignoring ASCII case.
    pub fn arg_is(&self, i: usize, word: &str) -> bool {
        self.arg(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    }
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

/// Space the per-thread arena of rewritten requests grows by.
const ARENA_CHUNK: usize = 64 * 1024;

thread_local! {
    static ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
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
            Scan::Array { len, args } => Ok(Some(Request {
                raw: buf.split_to(len).freeze(),
                args,
            })),
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
    pub fn peek(&self, buf: &[u8]) -> Option<Peeked> {
        if buf.first() != Some(&b'*') {
            return None;
        }
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
    pub fn name<'a>(&self, raw: &'a [u8]) -> &'a [u8] {
        &raw[self.name.start as usize..self.name.end as usize]
    }

    /// Argument 1 of the request that starts at `raw[0]`.
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

/// Appends a request whose arguments are each `head ++ tail` to `buf`, and cuts it off as a
/// [`Request`].
fn write_pieces<'a>(
    buf: &mut BytesMut,
    args: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
) -> Request {
    let mut ranges = SmallVec::new();
    push_header(buf, b'*', args.len());
    for (head, tail) in args {
        push_header(buf, b'$', head.len() + tail.len());
        let start = buf.len() as u32;
        buf.extend_from_slice(head);
        buf.extend_from_slice(tail);
        ranges.push(start..buf.len() as u32);
        buf.extend_from_slice(b"\r\n");
    }
    Request {
        raw: buf.split().freeze(),
        args: ranges,
    }
}

/// Size on the wire of `req` with arguments replaced by [`splice`].
pub fn spliced_len<'a>(
    req: &Request,
    changes: impl Iterator<Item = (usize, &'a [u8], &'a [u8])>,
) -> usize {
    changes.fold(req.raw.len(), |len, (i, head, tail)| {
        let old = req.args[i].len();
        let new = head.len() + tail.len();
        len + header_len(new) + new - header_len(old) - old
    })
}

/// Appends `req` to `buf` with argument `i` replaced by `head ++ tail` for each change, given
/// in increasing argument order: the bytes between changed arguments are copied as they are.
pub fn splice<'a>(
    req: &Request,
    changes: impl Iterator<Item = (usize, &'a [u8], &'a [u8])>,
    buf: &mut BytesMut,
) {
    let raw = &req.raw;
    let mut copied = 0;
    for (i, head, tail) in changes {
        let payload = &req.args[i];
        // A bulk header is canonical (`$<len>\r\n`, as parsed or built), so its size is known.
        let header_start = payload.start as usize - header_len(payload.len());
        buf.extend_from_slice(&raw[copied..header_start]);
        push_header(buf, b'$', head.len() + tail.len());
        buf.extend_from_slice(head);
        buf.extend_from_slice(tail);
        copied = payload.end as usize;
    }
    buf.extend_from_slice(&raw[copied..]);
}

/// The in-place form of a one-argument [`splice`], for requests still in a read buffer:
/// appends `buf[from..]` up to the bulk header of the argument at `arg` (a canonical header,
/// as parsed), that argument's new header, and `head`, which replaces the argument's first
/// `cut` bytes. Returns where the caller goes on copying: the rest of the argument and of the
/// request follow unchanged.
pub fn splice_head(
    buf: &[u8],
    from: usize,
    arg: Range<usize>,
    cut: usize,
    head: &[u8],
    out: &mut BytesMut,
) -> usize {
    let header_start = arg.start - header_len(arg.len());
    out.extend_from_slice(&buf[from..header_start]);
    push_header(out, b'$', head.len() + arg.len() - cut);
    out.extend_from_slice(head);
    arg.start + cut
}

/// Size on the wire of a request whose arguments are each `head ++ tail`.
pub fn encoded_len<'a>(args: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>) -> usize {
    header_len(args.len())
        + args
            .map(|(head, tail)| {
                let n = head.len() + tail.len();
                header_len(n) + n + 2
            })
            .sum::<usize>()
}

/// Length of `<kind><n>\r\n`.
fn header_len(n: usize) -> usize {
    3 + match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        _ => n.ilog10() as usize + 1,
    }
}

/// Appends `<kind><n>\r\n`: one copy for the short lengths nearly every request has.
fn push_header(buf: &mut BytesMut, kind: u8, n: usize) {
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

/// The common case of [`read_header`] in one pass: a complete, well-formed, non-negative
/// length (no sign, no leading zero, at most 18 digits) followed by CRLF. `None` leaves every
/// other case, incomplete or wrong, to [`read_header`].
pub(crate) fn quick_len(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let bytes = buf.get(pos..)?;
    // One or two digits: nearly every header.
    match *bytes {
        [d @ b'0'..=b'9', b'\r', b'\n', ..] => return Some(((d - b'0') as usize, pos + 3)),
        [a @ b'1'..=b'9', b @ b'0'..=b'9', b'\r', b'\n', ..] => {
            return Some(((a - b'0') as usize * 10 + (b - b'0') as usize, pos + 4))
        }
        _ => {}
    }
    let mut v = 0usize;
    let mut i = 0;
    while i < bytes.len().min(18) {
        let d = bytes[i].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v * 10 + d as usize;
        i += 1;
    }
    let leading_zero = i > 1 && bytes[0] == b'0';
    if i == 0 || leading_zero || bytes.get(i..i + 2) != Some(b"\r\n") {
        return None;
    }
    Some((v, pos + i + 2))
}

/// Reads `<int>\r\n` starting at `pos`. `Ok(None)`: incomplete.
fn read_header(buf: &[u8], pos: usize, max_len: usize) -> Result<Option<(i64, usize)>, ParseError> {
    let rest = &buf[pos.min(buf.len())..];
    let Some(cr) = memchr_cr(rest) else {
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

fn memchr_cr(s: &[u8]) -> Option<usize> {
    memchr::memchr(b'\r', s)
}

/// Parses a decimal integer the way Redis's `string2ll` accepts it.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    // Like Redis: no leading zero, and no "-0".
    if digits.is_empty() || digits.len() > 19 || (digits[0] == b'0' && (neg || digits.len() > 1)) {
        return None;
    }
    // Accumulated negative: the range goes one further down (-9223372036854775808).
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub((d - b'0') as i64)?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
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

/// Splits an inline command line into words with Redis's quoting rules (`sdssplitargs`):
/// "double quotes" with \n \r \t \b \a \\ \" \xHH escapes, and 'single quotes' with \'.
/// What may follow a closing quote: a space or the end of the (C string) line.
fn ends_word(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0
}

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
    fn parse_int_takes_what_string2ll_takes() {
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"-0", b"01", b"+1", b"1 "] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn from_args_round_trips() {
        let r = Request::from_args(["SET", "k", ""]);
        assert_eq!(
            r.raw().as_ref(),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
        assert_eq!(r.arg(2), Some(&b""[..]));
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
