//! One client request: the bytes as received and where each argument is, and the writers
//! that build a request or splice new argument bytes into one.
//!
//! A [`Request`] keeps the request's original bytes plus the byte ranges of its arguments, so
//! forwarding an untouched request is a refcount bump, and looking at an argument is a slice.
//! Parsing requests out of a client's read buffer is [`super::parser`]'s job.

use crate::protocol::encode::{header_len, push_header};
use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use std::ops::Range;

/// One client request: the bytes as received and where each argument is.
#[derive(Debug, Clone)]
pub struct Request {
    raw: Bytes,
    args: SmallVec<[Range<u32>; 8]>,
}

impl Request {
    /// A request the parser found in `raw`, its arguments at `args`.
    pub(crate) fn from_parts(raw: Bytes, args: SmallVec<[Range<u32>; 8]>) -> Request {
        Request { raw, args }
    }

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

/// Space the per-thread arena of rewritten requests grows by.
const ARENA_CHUNK: usize = 64 * 1024;

thread_local! {
    static ARENA: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_args_round_trips() {
        let r = Request::from_args(["SET", "k", ""]);
        assert_eq!(
            r.raw().as_ref(),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
        assert_eq!(r.arg(2), Some(&b""[..]));
    }
}
