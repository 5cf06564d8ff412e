//! A reply frame as a small tree, for the few replies whose bytes rekey changes: key names
//! mapped back (KEYS, SCAN, BLPOP, XREAD, pub/sub messages) and replies merged from cluster
//! nodes. Decoding and re-encoding are exact for both RESP2 and RESP3: every frame keeps its
//! type byte, and untouched subframes keep their original bytes, so only the strings that
//! change are re-encoded. This is the one reply type for replies that are re-encoded;
//! redis-protocol's `BytesFrame` ([`super::reply::decode`]) is used where a reply is only read
//! (cluster slots, Sentinel, INFO: replies rekey asks for itself), because its RESP3 decoder
//! cannot read RESP2's nulls, which clients' replies carry (see the test
//! `redis_protocol_cannot_carry_resp2_replies`).

use crate::protocol::encode::push_header;
use crate::protocol::scan::{line, parse_int};
use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Any frame kept as its original bytes (numbers, nulls, errors…).
    Raw(Bytes),
    /// A string frame (`$`, `+`, `=`): type byte and content.
    Str { kind: u8, data: Bytes },
    /// An aggregate (`*`, `>`, `%`, `~`): type byte and children (maps: key, value, key, value…).
    Agg { kind: u8, items: Vec<Node> },
}

impl Node {
    /// Decodes one complete frame; `None` if `frame` is not exactly one valid frame.
    pub fn decode(frame: &Bytes) -> Option<Node> {
        let (node, used) = decode_at(frame, 0, 0)?;
        (used == frame.len()).then_some(node)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Node::Raw(b) => out.put_slice(b),
            Node::Str { kind: b'+', data } => {
                out.put_u8(b'+');
                out.put_slice(data);
                out.put_slice(b"\r\n");
            }
            Node::Str { kind, data } => {
                push_header(out, *kind, data.len());
                out.put_slice(data);
                out.put_slice(b"\r\n");
            }
            Node::Agg { kind, items } => {
                let n = if *kind == b'%' {
                    items.len() / 2
                } else {
                    items.len()
                };
                push_header(out, *kind, n);
                for i in items {
                    i.encode(out);
                }
            }
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// The content of a string frame.
    pub fn as_str(&self) -> Option<&Bytes> {
        match self {
            Node::Str { data, .. } => Some(data),
            _ => None,
        }
    }

    /// The value of an integer frame (`:n`).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Node::Raw(b) if b.first() == Some(&b':') => {
                std::str::from_utf8(b.get(1..b.len().saturating_sub(2))?)
                    .ok()?
                    .parse()
                    .ok()
            }
            _ => None,
        }
    }

    /// Children of an aggregate.
    pub fn items_mut(&mut self) -> Option<&mut Vec<Node>> {
        match self {
            Node::Agg { items, .. } => Some(items),
            _ => None,
        }
    }

    /// The children of an array, set or push: not of a map, whose items come in pairs.
    pub fn list_mut(&mut self) -> Option<&mut Vec<Node>> {
        match self {
            Node::Agg { kind, items } if *kind != b'%' => Some(items),
            _ => None,
        }
    }

    pub fn items(&self) -> Option<&[Node]> {
        match self {
            Node::Agg { items, .. } => Some(items),
            _ => None,
        }
    }

    /// Replaces a string frame's content (a verbatim string keeps its format prefix).
    pub fn set_str(&mut self, new: Vec<u8>) {
        if let Node::Str { data, .. } = self {
            *data = Bytes::from(new);
        }
    }
}

const MAX_DEPTH: usize = 64;

fn decode_at(buf: &Bytes, pos: usize, depth: usize) -> Option<(Node, usize)> {
    if depth > MAX_DEPTH {
        return None;
    }
    let kind = *buf.get(pos)?;
    let (head, next) = line(buf, pos + 1)?;
    match kind {
        b'+' => Some((
            Node::Str {
                kind,
                data: buf.slice(pos + 1..next - 2),
            },
            next,
        )),
        b'$' | b'=' => {
            let n = parse_int(head)?;
            if n < 0 {
                return Some((Node::Raw(buf.slice(pos..next)), next));
            }
            let end = next + n as usize;
            if buf.get(end..end + 2)? != b"\r\n" {
                return None;
            }
            Some((
                Node::Str {
                    kind,
                    data: buf.slice(next..end),
                },
                end + 2,
            ))
        }
        b'*' | b'>' | b'~' | b'%' => {
            let n = parse_int(head)?;
            if n < 0 {
                return Some((Node::Raw(buf.slice(pos..next)), next));
            }
            let count = if kind == b'%' {
                2 * n as usize
            } else {
                n as usize
            };
            let mut items = Vec::with_capacity(count.min(1024));
            let mut p = next;
            for _ in 0..count {
                let (item, np) = decode_at(buf, p, depth + 1)?;
                items.push(item);
                p = np;
            }
            Some((Node::Agg { kind, items }, p))
        }
        _ => {
            let len = crate::protocol::reply::frame_len(&buf[pos..]).ok()??;
            Some((Node::Raw(buf.slice(pos..pos + len)), pos + len))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        let frames: &[&[u8]] = &[
            b"*2\r\n$1\r\n0\r\n*2\r\n$3\r\nabc\r\n$-1\r\n",
            b"%1\r\n$1\r\nk\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*0\r\n",
            b">3\r\n$7\r\nmessage\r\n+ch\r\n:5\r\n",
            b"*-1\r\n",
            b"_\r\n",
        ];
        for f in frames {
            let b = Bytes::copy_from_slice(f);
            let n = Node::decode(&b).unwrap();
            assert_eq!(n.to_bytes(), b);
        }
    }

    /// Why replies that rekey changes go through this tree and not redis-protocol's
    /// `BytesFrame`: its RESP3 decoder refuses RESP2's nulls (`$-1`, `*-1`) outright, which
    /// RESP2 clients get in every KEYS/SCAN/BLPOP/XREAD-shaped reply; the tree reads both
    /// protocols and keeps every frame it does not change as its original bytes.
    #[test]
    fn redis_protocol_cannot_carry_resp2_replies() {
        use redis_protocol::resp3::decode::complete::decode_bytes;
        for raw in [
            &b"*2\r\n$1\r\na\r\n*-1\r\n"[..],
            b"*2\r\n$1\r\na\r\n$-1\r\n",
        ] {
            let raw = Bytes::copy_from_slice(raw);
            assert!(decode_bytes(&raw).is_err(), "redis-protocol cannot read it");
            assert_eq!(Node::decode(&raw).unwrap().to_bytes(), raw, "the tree can");
        }
    }

    #[test]
    fn integers_read_as_numbers() {
        for (raw, n) in [
            (&b":5\r\n"[..], Some(5)),
            (b":-12\r\n", Some(-12)),
            (b"+5\r\n", None),
        ] {
            assert_eq!(
                Node::decode(&Bytes::copy_from_slice(raw)).unwrap().as_int(),
                n
            );
        }
    }

    #[test]
    fn changed_strings_are_reencoded() {
        let b = Bytes::from_static(b"*2\r\n$4\r\nab:1\r\n+ok\r\n");
        let mut n = Node::decode(&b).unwrap();
        n.items_mut().unwrap()[0].set_str(b"long:1".to_vec());
        n.items_mut().unwrap()[1].set_str(b"fine".to_vec());
        assert_eq!(n.to_bytes().as_ref(), b"*2\r\n$6\r\nlong:1\r\n+fine\r\n");
        assert!(Node::decode(&Bytes::from_static(b"*2\r\n$1\r\na\r\n")).is_none());
    }
}
