//! Moving keys, a batch at a time, never overwriting and never losing a value:
//!
//! - Where the new name is in the same slot (one Redis, or a cluster key whose hash tag the
//!   rule keeps): `RENAMENX`, pipelined. Atomic; keeps the value, type and TTL; `0` means the
//!   new name exists (a collision) and nothing changed.
//! - Across slots in a cluster: `MULTI DUMP PEXPIRETIME EXEC` on the key's node, `RESTORE new
//!   <expiry> <payload> ABSTTL` (no `REPLACE`) on the new name's node, then a script that
//!   deletes the old key only if it still holds the value that was copied. If the old key
//!   changed in between (an app not yet behind rekey wrote it), the copy is taken back and the
//!   key is reported as failed, to be moved by a later run. A run killed between `RESTORE` and
//!   the delete leaves two equal keys: the next run finds the new name holding exactly the old
//!   key's value and finishes the move.
//! - Dry run: `EXISTS new` tells a move from a collision; nothing is written.

use crate::migrate::client::{Client, Reply};
use crate::migrate::nodes::Nodes;
use crate::migrate::MigrateError;
use crate::protocol::Request;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// Deletes `KEYS[1]` if its serialized value is `ARGV[1]`: 1 deleted, 0 gone, -1 different.
pub const DELETE_IF_SAME: &str = "local v = redis.call('DUMP', KEYS[1]) \
if not v then return 0 end \
if v == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end \
return -1";

/// One key to move.
#[derive(Debug, Clone)]
pub struct Move {
    pub key: Vec<u8>,
    pub target: Vec<u8>,
    pub rule: usize,
}

/// What became of one move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Under its new name now (dry run: would be).
    Moved,
    /// The new name exists: both kept, the key stays (dry run: would collide).
    Collision,
    /// The key was gone before it could move (expired, deleted, or moved by a concurrent run).
    Vanished,
    /// Not moved, for the reason given; a later run tries again.
    Failed(String),
}

/// How the expiry of a key copied across slots is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// `PEXPIRETIME` (Redis 7): an absolute time, restored with `ABSTTL`.
    Absolute,
    /// `PTTL` (older Redis): milliseconds left, restored as they are.
    Relative,
}

/// A key copied to its new name, whose old name is still to be deleted.
struct Copied {
    index: usize,
    payload: Bytes,
    /// True when this run created the new name (false: it already held the same value, left
    /// by an interrupted run).
    restored: bool,
}

pub struct Mover {
    pub nodes: Nodes,
    clients: Vec<Option<Client>>,
    connect_timeout: Duration,
    reply_timeout: Duration,
    dry_run: bool,
    expiry: Expiry,
    /// False once a node refused the delete-if-unchanged script (scripting not allowed to
    /// this user): plain `DEL` then, with a warning.
    scripts: bool,
    /// Warnings for the summary.
    pub notes: Vec<String>,
}

impl Mover {
    pub fn new(
        nodes: Nodes,
        connect_timeout: Duration,
        reply_timeout: Duration,
        dry_run: bool,
    ) -> Mover {
        let clients = nodes.urls.iter().map(|_| None).collect();
        Mover {
            nodes,
            clients,
            connect_timeout,
            reply_timeout,
            dry_run,
            expiry: Expiry::Absolute,
            scripts: true,
            notes: Vec::new(),
        }
    }

    /// The connection to node `i`, opened on first use.
    pub async fn client(&mut self, i: usize) -> Result<&mut Client, MigrateError> {
        let slot = &mut self.clients[i];
        let client = match slot.take() {
            Some(c) => c,
            None => {
                Client::connect(
                    &self.nodes.urls[i],
                    self.nodes.db,
                    self.connect_timeout,
                    self.reply_timeout,
                )
                .await?
            }
        };
        Ok(slot.insert(client))
    }

    /// Moves keys found on node `src`; one outcome per move, in order. An `Err` is a lost
    /// connection or a timeout: the run stops (what was done stays done; run it again).
    pub async fn execute(
        &mut self,
        src: usize,
        moves: &[Move],
    ) -> Result<Vec<Outcome>, MigrateError> {
        if self.dry_run {
            return self.check(moves).await;
        }
        let mut out = vec![Outcome::Vanished; moves.len()];
        let (local, across): (Vec<usize>, Vec<usize>) =
            (0..moves.len()).partition(|&i| self.nodes.same_slot(&moves[i].key, &moves[i].target));
        self.rename(src, moves, &local, &mut out).await?;
        if !across.is_empty() {
            self.copy_across(src, moves, &across, &mut out).await?;
        }
        Ok(out)
    }

    /// Dry run: `EXISTS new` on the new name's node.
    async fn check(&mut self, moves: &[Move]) -> Result<Vec<Outcome>, MigrateError> {
        let mut out = vec![Outcome::Moved; moves.len()];
        let reqs = (0..moves.len())
            .map(|i| (i, Request::from_args([&b"EXISTS"[..], &moves[i].target])))
            .collect();
        for (i, r) in self.on_new_names(moves, reqs, &mut out).await? {
            out[i] = match r.int() {
                Some(0) => Outcome::Moved,
                Some(_) => Outcome::Collision,
                None => Outcome::Failed(format!("EXISTS answered {}", r.describe())),
            };
        }
        Ok(out)
    }

    /// Sends each `(index, request)` to the node that serves move `index`'s new name, one
    /// pipeline per node, and returns the replies by index. A name whose slot no node serves
    /// fails its move and sends nothing.
    async fn on_new_names(
        &mut self,
        moves: &[Move],
        reqs: Vec<(usize, Request)>,
        out: &mut [Outcome],
    ) -> Result<Vec<(usize, Reply)>, MigrateError> {
        let mut groups: BTreeMap<usize, (Vec<usize>, Vec<Request>)> = BTreeMap::new();
        for (i, req) in reqs {
            match self.nodes.node_of(&moves[i].target) {
                Some(node) => {
                    let (idx, reqs) = groups.entry(node).or_default();
                    idx.push(i);
                    reqs.push(req);
                }
                None => {
                    out[i] = Outcome::Failed("no cluster node serves the new name's slot".into())
                }
            }
        }
        let mut replies = Vec::new();
        for (node, (idx, reqs)) in groups {
            let got = self.client(node).await?.pipeline(&reqs).await?;
            replies.extend(idx.into_iter().zip(got));
        }
        Ok(replies)
    }

    async fn rename(
        &mut self,
        src: usize,
        moves: &[Move],
        which: &[usize],
        out: &mut [Outcome],
    ) -> Result<(), MigrateError> {
        let reqs: Vec<Request> = which
            .iter()
            .map(|&i| Request::from_args([&b"RENAMENX"[..], &moves[i].key, &moves[i].target]))
            .collect();
        let replies = self.client(src).await?.pipeline(&reqs).await?;
        for (&i, r) in which.iter().zip(replies) {
            out[i] = match &r {
                Reply::Int(1) => Outcome::Moved,
                Reply::Int(0) => Outcome::Collision,
                Reply::Error(e) if e.contains("no such key") => Outcome::Vanished,
                other => Outcome::Failed(format!("RENAMENX answered {}", other.describe())),
            };
        }
        Ok(())
    }

    /// A cluster move across slots: copy, then delete the old key if it did not change.
    async fn copy_across(
        &mut self,
        src: usize,
        moves: &[Move],
        which: &[usize],
        out: &mut [Outcome],
    ) -> Result<(), MigrateError> {
        let dumps = self.dump(src, moves, which, out).await?;
        let mut copied: Vec<Copied> = Vec::new();
        let mut busy: Vec<(usize, Bytes)> = Vec::new();
        let restores: Vec<usize> = dumps.iter().map(|(i, _, _)| *i).collect();
        let payloads: BTreeMap<usize, (Bytes, i64)> =
            dumps.into_iter().map(|(i, p, e)| (i, (p, e))).collect();
        let reqs = restores
            .iter()
            .map(|&i| {
                let (payload, expiry) = &payloads[&i];
                (i, self.restore_request(&moves[i].target, payload, *expiry))
            })
            .collect();
        for (i, r) in self.on_new_names(moves, reqs, out).await? {
            let payload = payloads[&i].0.clone();
            match &r {
                Reply::Str(_) => copied.push(Copied {
                    index: i,
                    payload,
                    restored: true,
                }),
                Reply::Error(e) if e.starts_with("BUSYKEY") => busy.push((i, payload)),
                other => out[i] = Outcome::Failed(format!("RESTORE answered {}", other.describe())),
            }
        }
        // The new name exists: an interrupted run's copy (the same value) or a collision.
        let reqs = busy
            .iter()
            .map(|(i, _)| (*i, Request::from_args([&b"DUMP"[..], &moves[*i].target])))
            .collect();
        for (i, r) in self.on_new_names(moves, reqs, out).await? {
            let payload = busy.iter().find(|(j, _)| *j == i).map(|(_, p)| p.clone());
            match (r.bytes(), payload) {
                (Some(now), Some(p)) if *now == p => copied.push(Copied {
                    index: i,
                    payload: p,
                    restored: false,
                }),
                _ => out[i] = Outcome::Collision,
            }
        }
        self.delete_sources(src, moves, copied, out).await
    }

    /// `MULTI DUMP <expiry> EXEC` for each key: (index, payload, expiry for RESTORE) of the
    /// keys still there; the gone ones are marked vanished.
    async fn dump(
        &mut self,
        src: usize,
        moves: &[Move],
        which: &[usize],
        out: &mut [Outcome],
    ) -> Result<Vec<(usize, Bytes, i64)>, MigrateError> {
        loop {
            let expiry_cmd: &[u8] = match self.expiry {
                Expiry::Absolute => b"PEXPIRETIME",
                Expiry::Relative => b"PTTL",
            };
            let mut reqs = Vec::with_capacity(which.len() * 4);
            for &i in which {
                reqs.push(Request::from_args(["MULTI"]));
                reqs.push(Request::from_args([&b"DUMP"[..], &moves[i].key]));
                reqs.push(Request::from_args([expiry_cmd, &moves[i].key]));
                reqs.push(Request::from_args(["EXEC"]));
            }
            let replies = self.client(src).await?.pipeline(&reqs).await?;
            let unknown = replies.chunks(4).any(|r| {
                r.get(2)
                    .and_then(Reply::error)
                    .is_some_and(|e| e.contains("unknown command"))
            });
            if unknown && self.expiry == Expiry::Absolute {
                self.expiry = Expiry::Relative;
                self.notes.push(
                    "the upstream has no PEXPIRETIME (Redis < 7): expiries of keys copied across slots were read with PTTL, exact to a few milliseconds".into(),
                );
                continue;
            }
            let mut dumps = Vec::new();
            for (&i, r) in which.iter().zip(replies.chunks(4)) {
                let exec = r.get(3).cloned().unwrap_or(Reply::Nil);
                let Reply::Array(items) = &exec else {
                    out[i] =
                        Outcome::Failed(format!("MULTI DUMP EXEC answered {}", exec.describe()));
                    continue;
                };
                match (items.first(), items.get(1).and_then(Reply::int)) {
                    (Some(Reply::Nil), _) | (_, Some(-2)) => out[i] = Outcome::Vanished,
                    (Some(Reply::Str(payload)), Some(expiry)) => {
                        let expiry = match (expiry, self.expiry) {
                            (-1, _) => 0,
                            // A key about to expire keeps a TTL (0 would mean none).
                            (n, Expiry::Relative) => n.max(1),
                            (n, Expiry::Absolute) => n,
                        };
                        dumps.push((i, payload.clone(), expiry));
                    }
                    (first, _) => {
                        let what = first.map(Reply::describe).unwrap_or_default();
                        out[i] = Outcome::Failed(format!("DUMP answered {what}"))
                    }
                }
            }
            return Ok(dumps);
        }
    }

    fn restore_request(&self, target: &[u8], payload: &[u8], expiry: i64) -> Request {
        let ttl = expiry.to_string();
        let mut args: Vec<&[u8]> = vec![b"RESTORE", target, ttl.as_bytes(), payload];
        if self.expiry == Expiry::Absolute && expiry > 0 {
            args.push(b"ABSTTL");
        }
        Request::from_args(args)
    }

    /// Deletes the old names of copied keys that still hold the copied value.
    async fn delete_sources(
        &mut self,
        src: usize,
        moves: &[Move],
        copied: Vec<Copied>,
        out: &mut [Outcome],
    ) -> Result<(), MigrateError> {
        if copied.is_empty() {
            return Ok(());
        }
        let reqs: Vec<Request> = copied
            .iter()
            .map(|c| self.delete_request(&moves[c.index].key, &c.payload))
            .collect();
        let replies = self.client(src).await?.pipeline(&reqs).await?;
        let refused = replies
            .iter()
            .filter_map(Reply::error)
            .any(|e| e.starts_with("NOPERM") || e.contains("unknown command"));
        if refused && self.scripts {
            self.scripts = false;
            self.notes.push(
                "the upstream refused EVAL: old keys copied across slots were deleted with a plain DEL, without checking that no app wrote them during the copy".into(),
            );
            return Box::pin(self.delete_sources(src, moves, copied, out)).await;
        }
        let mut undo: Vec<usize> = Vec::new();
        let mut undo_payloads: BTreeMap<usize, Bytes> = BTreeMap::new();
        for (c, r) in copied.into_iter().zip(replies) {
            let i = c.index;
            out[i] = match (r.int(), c.restored) {
                (Some(1), _) | (Some(0), _) => Outcome::Moved,
                (Some(-1), true) => {
                    undo.push(i);
                    undo_payloads.insert(i, c.payload);
                    Outcome::Failed(
                        "the key changed while it was copied (is every app behind rekey?); left in place"
                            .into(),
                    )
                }
                (Some(-1), false) => Outcome::Collision,
                _ => Outcome::Failed(format!(
                    "deleting the old key answered {}; the new name holds a copy",
                    r.describe()
                )),
            };
        }
        // Take back copies of keys that changed meanwhile (only if the copy is untouched).
        let reqs = undo
            .iter()
            .map(|&i| (i, self.delete_request(&moves[i].target, &undo_payloads[&i])))
            .collect();
        self.on_new_names(moves, reqs, out).await?;
        Ok(())
    }

    fn delete_request(&self, key: &[u8], payload: &[u8]) -> Request {
        if self.scripts {
            Request::from_args([&b"EVAL"[..], DELETE_IF_SAME.as_bytes(), b"1", key, payload])
        } else {
            Request::from_args([&b"DEL"[..], key])
        }
    }
}
