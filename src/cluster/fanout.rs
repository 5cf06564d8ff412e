//! Commands that one cluster node cannot answer alone.
//!
//! - Split: MGET, MSET, DEL, UNLINK, EXISTS and TOUCH whose keys span slots become one
//!   sub-command per slot; the replies are merged back in the client's key order.
//! - Fan-out: DBSIZE, KEYS, FLUSHDB, FLUSHALL and RANDOMKEY go to every primary and are
//!   merged (RANDOMKEY: a key from the first node that has one).
//! - SCAN walks the primaries one after the other behind a composite cursor: the low
//!   [`NODE_BITS`] bits name the node, the rest is that node's own cursor.
//!
//! The parts are sent on the nodes' shared connections by a small task that gathers their
//! replies and delivers one merged reply to the client, in its place in the reply order.

use crate::cluster::{redirect, Cluster, Redirect, ASKING};
use crate::protocol::encode::Proto;
use crate::protocol::reply;
use crate::protocol::tree::Node;
use crate::protocol::Request;
use crate::upstream::{mailbox, Delivery, Job, ReplyTo, SharedPool, Sink};
use bytes::Bytes;
use std::sync::Arc;

/// Bits of a composite SCAN cursor that name the node.
pub const NODE_BITS: u32 = 10;

/// How the parts' replies become the client's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// Integer replies added up (DEL, UNLINK, EXISTS, TOUCH, DBSIZE).
    Sum,
    /// Every part said `+OK` (MSET, FLUSHDB, FLUSHALL).
    AllOk,
    /// Arrays concatenated (KEYS).
    Concat,
    /// The first reply that is not null (RANDOMKEY: a key, if any node has one).
    FirstNonNull,
    /// MGET: for each of the client's keys, (part, index in that part's reply).
    Mget(Vec<(usize, usize)>),
    /// One SCAN step on node `node` of `nodes`: the cursor in the reply is made composite.
    Scan { node: usize, nodes: usize },
}

/// One sub-command and the pool of the node it goes to.
pub struct Part {
    pub pool: Arc<SharedPool>,
    pub payload: Bytes,
}

/// The commands split by slot, and how their replies merge.
pub fn splittable(name: &str) -> Option<Merge> {
    match name {
        "mget" => Some(Merge::Mget(Vec::new())),
        "mset" => Some(Merge::AllOk),
        "del" | "unlink" | "exists" | "touch" => Some(Merge::Sum),
        _ => None,
    }
}

/// The keyless commands answered by every primary, and how their replies merge. By the
/// request's own name: not every such command is in the command table (DBSIZE has no keys).
pub fn fanned_out(command: &[u8]) -> Option<Merge> {
    let is = |name: &str| command.eq_ignore_ascii_case(name.as_bytes());
    if is("dbsize") {
        Some(Merge::Sum)
    } else if is("keys") {
        Some(Merge::Concat)
    } else if is("flushdb") || is("flushall") {
        Some(Merge::AllOk)
    } else if is("randomkey") {
        Some(Merge::FirstNonNull)
    } else {
        None
    }
}

/// Splits a multi-key command by slot: `(slot, sub-request)` per group, in first-seen order,
/// and the merge (for MGET, with the key order filled in). `keys` are the key argument
/// indices with their slots; MSET keys carry their value (the next argument) along.
pub fn split(req: &Request, keys: &[(usize, u16)], merge: Merge) -> (Vec<(u16, Request)>, Merge) {
    let name = req.arg(0).unwrap_or_default();
    let pairs = merge == Merge::AllOk; // MSET key value …
    let mut groups: Vec<(u16, Vec<&[u8]>)> = Vec::new();
    let mut order = Vec::with_capacity(keys.len());
    for &(i, slot) in keys {
        let g = match groups.iter().position(|(s, _)| *s == slot) {
            Some(g) => g,
            None => {
                groups.push((slot, vec![name]));
                groups.len() - 1
            }
        };
        let args = &mut groups[g].1;
        order.push((g, args.len() - 1));
        args.push(req.arg(i).unwrap_or_default());
        if pairs {
            args.push(req.arg(i + 1).unwrap_or_default());
        }
    }
    let merge = match merge {
        Merge::Mget(_) => Merge::Mget(order),
        other => other,
    };
    let parts = groups
        .into_iter()
        .map(|(slot, args)| (slot, Request::from_args(args)))
        .collect();
    (parts, merge)
}

/// SCAN with a composite cursor: which node to ask and the request with that node's cursor.
/// `Err` is the client's error reply for a cursor rekey never gave out.
pub fn scan_step(req: &Request, nodes: usize) -> Result<(usize, Request), &'static str> {
    let cursor: u64 = std::str::from_utf8(req.arg(1).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or("ERR invalid cursor")?;
    let node = (cursor & ((1 << NODE_BITS) - 1)) as usize;
    if node >= nodes.max(1) {
        return Err("ERR invalid cursor");
    }
    let node_cursor = (cursor >> NODE_BITS).to_string();
    let args = req
        .args()
        .enumerate()
        .map(|(i, a)| if i == 1 { node_cursor.as_bytes() } else { a });
    Ok((node, Request::from_args(args)))
}

/// Sends the parts, gathers their replies and delivers the merged reply as request `seq`.
/// A part redirected with `-MOVED`/`-ASK` (a slot moving meanwhile) is sent again where the
/// cluster says, a few times at most.
pub fn run(
    parts: Vec<Part>,
    merge: Merge,
    sink: Sink,
    seq: u64,
    cluster: Arc<Cluster>,
    (proto, worker): (Proto, usize),
) {
    tokio::spawn(async move {
        let payloads: Vec<Bytes> = parts.iter().map(|p| p.payload.clone()).collect();
        let mut replies = gather(parts).await;
        for _ in 0..MAX_PART_REDIRECTS {
            let redirected: Vec<(usize, Redirect)> = replies
                .iter()
                .enumerate()
                .filter_map(|(i, r)| redirect(r).map(|d| (i, d)))
                .collect();
            if redirected.is_empty() {
                break;
            }
            if redirected.iter().any(|(_, d)| !d.ask) {
                cluster.request_refresh();
            }
            let again = redirected
                .iter()
                .map(|(i, d)| {
                    let pool = cluster
                        .node_for_addr(&d.addr)
                        .upstream
                        .shared(worker, proto, 0);
                    let mut payload = payloads[*i].clone();
                    if d.ask {
                        payload = [ASKING, &payload[..]].concat().into();
                    }
                    Part { pool, payload }
                })
                .collect();
            let mut answers = gather(again).await;
            for (k, (i, d)) in redirected.iter().enumerate() {
                let mut answer = std::mem::take(&mut answers[k]);
                if d.ask {
                    answer = answer.slice(reply::frame_len(&answer).ok().flatten().unwrap_or(0)..);
                }
                replies[*i] = answer;
            }
        }
        let _ = sink.send(Delivery::Reply {
            seq,
            frame: combine(&replies, &merge),
        });
    });
}

/// Redirections followed for one part.
const MAX_PART_REDIRECTS: usize = 3;

/// Each part's reply, in part order (an ASKING-prefixed part answers with two frames).
async fn gather(parts: Vec<Part>) -> Vec<Bytes> {
    let n = parts.len();
    let (tx, mut rx) = mailbox::mailbox();
    for (i, part) in parts.into_iter().enumerate() {
        let asking = part.payload.starts_with(ASKING);
        let job = Job::Send {
            payload: part.payload,
            reply: ReplyTo::Client {
                sink: tx.clone(),
                seq: i as u64 * 2,
                count: 1 + asking as u32,
            },
        };
        part.pool.send(part.pool.pick(), job);
    }
    drop(tx);
    // Two places per part: an ASKING-prefixed part answers twice; the two are joined.
    let mut replies: Vec<Option<Bytes>> = vec![None; n * 2];
    while let Some(d) = rx.recv().await {
        // Parts that went out on one connection come back as one run; other frames are not
        // a part's.
        let _ = d.into_replies(|seq, frame| {
            if let Some(slot) = replies.get_mut(seq as usize) {
                *slot = Some(frame);
            }
        });
    }
    replies
        .chunks(2)
        .map(|pair| match pair {
            [Some(a), Some(b)] => [a.as_ref(), b.as_ref()].concat().into(),
            [Some(a), None] => a.clone(),
            _ => Bytes::from_static(b"-ERR rekey: a cluster node did not answer\r\n"),
        })
        .collect()
}

/// Merges the parts' replies; the first error wins.
pub fn combine(replies: &[Bytes], merge: &Merge) -> Bytes {
    if let Some(err) = replies.iter().find(|r| reply::is_error(r)) {
        return err.clone();
    }
    let nodes: Option<Vec<Node>> = replies.iter().map(Node::decode).collect();
    let bad = || Bytes::from_static(b"-ERR rekey: unexpected reply from a cluster node\r\n");
    let Some(nodes) = nodes else { return bad() };
    match merge {
        Merge::AllOk => replies.first().cloned().unwrap_or_else(bad),
        Merge::FirstNonNull => replies
            .iter()
            .find(|r| !matches!(r.as_ref(), b"$-1\r\n" | b"_\r\n"))
            .or(replies.first())
            .cloned()
            .unwrap_or_else(bad),
        Merge::Sum => {
            let mut sum = 0i64;
            for node in &nodes {
                match node.as_int() {
                    Some(n) => sum += n,
                    None => return bad(),
                }
            }
            Bytes::from(format!(":{sum}\r\n"))
        }
        Merge::Concat => {
            let kind = match nodes.first() {
                Some(Node::Agg { kind, .. }) => *kind,
                _ => return bad(),
            };
            let mut items = Vec::new();
            for node in nodes {
                match node {
                    Node::Agg { items: part, .. } => items.extend(part),
                    _ => return bad(),
                }
            }
            Node::Agg { kind, items }.to_bytes()
        }
        Merge::Mget(order) => {
            let mut parts: Vec<Vec<Node>> = Vec::with_capacity(nodes.len());
            for node in nodes {
                match node {
                    Node::Agg { items, .. } => parts.push(items),
                    _ => return bad(),
                }
            }
            let mut items = Vec::with_capacity(order.len());
            for &(p, i) in order {
                match parts.get_mut(p).and_then(|part| part.get_mut(i)) {
                    Some(item) => items.push(std::mem::replace(item, Node::Raw(Bytes::new()))),
                    None => return bad(),
                }
            }
            Node::Agg { kind: b'*', items }.to_bytes()
        }
        Merge::Scan { node, nodes: total } => {
            scan_reply(nodes.into_iter().next(), *node, *total).unwrap_or_else(bad)
        }
    }
}

/// Rewrites a node's `[cursor, keys]` SCAN reply with the composite cursor.
fn scan_reply(reply: Option<Node>, node: usize, nodes: usize) -> Option<Bytes> {
    let Node::Agg { kind, mut items } = reply? else {
        return None;
    };
    let node_cursor: u64 = std::str::from_utf8(items.first()?.as_str()?)
        .ok()?
        .parse()
        .ok()?;
    let next = if node_cursor != 0 {
        (node_cursor << NODE_BITS) | node as u64
    } else if node + 1 < nodes {
        (node + 1) as u64
    } else {
        0
    };
    items[0].set_str(next.to_string().into_bytes());
    Some(Node::Agg { kind, items }.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(r: &Request) -> Vec<String> {
        r.args()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn mget_splits_by_slot_and_merges_in_key_order() {
        let req = Request::from_args(["MGET", "a", "b", "c"]);
        let (parts, merge) = split(&req, &[(1, 7), (2, 9), (3, 7)], Merge::Mget(Vec::new()));
        assert_eq!(parts.len(), 2);
        assert_eq!(args(&parts[0].1), ["MGET", "a", "c"]);
        assert_eq!(args(&parts[1].1), ["MGET", "b"]);
        let replies = [
            Bytes::from_static(b"*2\r\n$2\r\nva\r\n$-1\r\n"),
            Bytes::from_static(b"*1\r\n$2\r\nvb\r\n"),
        ];
        assert_eq!(
            combine(&replies, &merge).as_ref(),
            b"*3\r\n$2\r\nva\r\n$2\r\nvb\r\n$-1\r\n"
        );
    }

    #[test]
    fn mset_carries_values_and_sums_add_up() {
        let req = Request::from_args(["MSET", "a", "1", "b", "2"]);
        let (parts, _) = split(&req, &[(1, 1), (3, 2)], Merge::AllOk);
        assert_eq!(args(&parts[0].1), ["MSET", "a", "1"]);
        assert_eq!(args(&parts[1].1), ["MSET", "b", "2"]);
        let keys = [
            Bytes::from_static(b"$-1\r\n"),
            Bytes::from_static(b"$1\r\nk\r\n"),
        ];
        assert_eq!(
            combine(&keys, &Merge::FirstNonNull).as_ref(),
            b"$1\r\nk\r\n"
        );
        let ints = [Bytes::from_static(b":2\r\n"), Bytes::from_static(b":3\r\n")];
        assert_eq!(combine(&ints, &Merge::Sum).as_ref(), b":5\r\n");
        let err = [
            Bytes::from_static(b"+OK\r\n"),
            Bytes::from_static(b"-ERR x\r\n"),
        ];
        assert_eq!(combine(&err, &Merge::AllOk).as_ref(), b"-ERR x\r\n");
    }

    #[test]
    fn scan_cursor_walks_the_nodes() {
        let (node, req) = scan_step(&Request::from_args(["SCAN", "0", "COUNT", "10"]), 3).unwrap();
        assert_eq!(
            (node, args(&req)),
            (
                0,
                vec!["SCAN".into(), "0".into(), "COUNT".into(), "10".into()]
            )
        );
        let more = Bytes::from_static(b"*2\r\n$2\r\n12\r\n*0\r\n");
        let out = combine(&[more], &Merge::Scan { node: 0, nodes: 3 });
        let next = (12u64 << NODE_BITS).to_string();
        assert!(out.windows(next.len()).any(|w| w == next.as_bytes()));
        let (node, req) = scan_step(&Request::from_args(["SCAN", &next]), 3).unwrap();
        assert_eq!((node, args(&req)[1].as_str()), (0, "12"));
        let done = Bytes::from_static(b"*2\r\n$1\r\n0\r\n*0\r\n");
        assert_eq!(
            combine(
                std::slice::from_ref(&done),
                &Merge::Scan { node: 0, nodes: 3 }
            )
            .as_ref(),
            b"*2\r\n$1\r\n1\r\n*0\r\n"
        );
        assert_eq!(
            combine(&[done], &Merge::Scan { node: 2, nodes: 3 }).as_ref(),
            b"*2\r\n$1\r\n0\r\n*0\r\n"
        );
        assert!(scan_step(&Request::from_args(["SCAN", "5"]), 3).is_err());
    }
}
