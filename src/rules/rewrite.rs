//! Applying the rules to one request and to its reply.
//!
//! Forward ([`rewrite_request`]): the command table says which arguments are keys (key specs,
//! SORT patterns), key patterns (KEYS, SCAN MATCH) or channels (pub/sub, keyspace
//! notifications); each is rewritten by the first matching rule. A request nothing matches is
//! forwarded as its original bytes; in one that changes, the new arguments are spliced into
//! the original bytes ([`rewrite_into`], straight into the session's send buffer), and a
//! single-key command (the commonest case) takes a short path that builds no plan.
//!
//! Reverse ([`map_reply`], [`map_push`]): key names in replies go back to the prefix the
//! request used (exactly, for keys it named), or the one this client last used; keys in
//! another app's raw namespace are hidden from KEYS/SCAN.

use crate::commands::keys::{self, Begin, Find, KeySpec, Positions};
use crate::commands::{CommandSpec, Extra, ReplyKeys};
use crate::protocol::request;
use crate::protocol::tree::Node;
use crate::protocol::Request;
use crate::rules::glob;
use crate::rules::memory::PrefixMemory;
use crate::rules::{Rewrite, RuleSet};
use crate::stats::stats;
use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use std::borrow::Cow;

/// What a reply needs to be mapped back.
#[derive(Debug, Default, Clone)]
pub struct ReplyCtx {
    pub kind: Option<ReplyKeys>,
    /// Keys the request named: (upstream name, name the client used).
    pub exact: Vec<Exact>,
    /// KEYS, SCAN … MATCH, PUBSUB CHANNELS: the pattern the client sent. Names mapped back
    /// must match it, as they would in the client's own Redis.
    pub pattern: Option<Vec<u8>>,
    /// EXEC: the context of each queued command, in order (`None`: nothing of its own to
    /// map). Each element of EXEC's array is mapped as that command's reply would be.
    pub queued: Option<Vec<Option<Box<ReplyCtx>>>>,
}

/// A key the request named: its upstream name, the name the client used, and the rule.
#[derive(Debug, Clone)]
pub struct Exact {
    pub upstream: Vec<u8>,
    pub client: Vec<u8>,
    pub rule: usize,
}

/// A request after the rules: `None` when it is forwarded unchanged.
pub struct Rewritten {
    pub request: Option<Request>,
    pub ctx: Option<Box<ReplyCtx>>,
}

/// The client context the rules need.
pub struct Scope<'a> {
    pub rules: &'a RuleSet,
    pub app: Option<&'a str>,
    pub memory: &'a mut PrefixMemory,
}

impl<'a> Scope<'a> {
    fn key(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.key_with_rule(key).map(|(_, k)| k)
    }

    fn key_with_rule(&mut self, key: &[u8]) -> Option<(usize, Vec<u8>)> {
        let rw = self.key_rewrite(key)?;
        Some((rw.rule, rw.apply(key)))
    }

    /// The rewrite of a key, counted and remembered (the new key is not built here).
    fn key_rewrite(&mut self, key: &[u8]) -> Option<Rewrite<'a>> {
        let mut tally = RuleTally::default();
        let rw = sole_key_rewrite(self.rules, self.app, self.memory, key, &mut tally);
        tally.flush(self.rules, self.app);
        rw
    }

    fn glob(&mut self, pattern: &[u8], channels: bool) -> Option<Vec<u8>> {
        let rw = self.rules.forward_glob(self.app, pattern, channels)?;
        Some(self.apply(rw, pattern))
    }

    fn apply(&mut self, rw: Rewrite<'_>, arg: &[u8]) -> Vec<u8> {
        let label = self.rules.label_of(self.app);
        self.rules.rules()[rw.rule].count_forward_n(label, 1);
        self.memory.remember(rw.rule, &rw.to, &arg[..rw.prefix_len]);
        rw.apply(arg)
    }

    /// A channel name or pattern: keyspace channels rewrite their key part with key rules,
    /// other channels use channel rules.
    fn channel(&mut self, name: &[u8], pattern: bool) -> Option<Vec<u8>> {
        if let Some(split) = keyspace_split(name) {
            let (head, key) = name.split_at(split);
            let new_key = if pattern {
                self.glob(key, false)
            } else {
                self.key(key)
            }?;
            return Some([head, &new_key].concat());
        }
        if pattern {
            return self.glob(name, true);
        }
        let rw = self.rules.forward_channel(self.app, name)?;
        Some(self.apply(rw, name))
    }

    /// Maps an upstream key name back for this client: `None` means hide it.
    pub fn key_back(&self, key: &[u8], exact: &[Exact]) -> Option<Vec<u8>> {
        if let Some(e) = exact.iter().find(|e| e.upstream == key) {
            self.count_reverse(e.rule);
            return Some(e.client.clone());
        }
        if let Some((rule, k)) = self
            .memory
            .reverse(key)
            .or_else(|| self.rules.reverse_unique(self.app, key, false))
        {
            self.count_reverse(rule);
            return Some(k);
        }
        if self.rules.hides(self.app, key, false) {
            return None;
        }
        Some(key.to_vec())
    }

    fn count_reverse(&self, rule: usize) {
        let label = self.rules.label_of(self.app);
        self.rules.rules()[rule].count_reverse(label);
    }

    fn channel_back(&self, name: &[u8]) -> Vec<u8> {
        if let Some(split) = keyspace_split(name) {
            let (head, key) = name.split_at(split);
            let back = self
                .memory
                .reverse(key)
                .or_else(|| self.rules.reverse_unique(self.app, key, false))
                .map(|(_, k)| k)
                .unwrap_or_else(|| key.to_vec());
            return [head, &back].concat();
        }
        self.memory
            .reverse(name)
            .or_else(|| self.rules.reverse_unique(self.app, name, true))
            .map(|(_, k)| k)
            .unwrap_or_else(|| name.to_vec())
    }
}

/// Where the key part of `__keyspace@<db>__:<key>` starts.
fn keyspace_split(name: &[u8]) -> Option<usize> {
    if !name.starts_with(b"__keyspace@") {
        return None;
    }
    name.windows(3).position(|w| w == b"__:").map(|i| i + 3)
}

fn is_keyevent(channel: &[u8]) -> bool {
    channel.starts_with(b"__keyevent@")
}

/// Applies the rules to a request.
pub fn rewrite_request(scope: &mut Scope<'_>, spec: &CommandSpec, req: &Request) -> Rewritten {
    plan_request(scope, spec, req).into_rewritten(req)
}

/// What [`rewrite_into`] did with a request.
pub enum Outcome {
    /// Nothing changed: forward the original bytes.
    Unchanged,
    /// The rewritten request.
    Rebuilt(Request),
    /// The rewritten request is encoded in the buffer the caller passed.
    Encoded,
}

/// Applies the rules to a request. A changed request is encoded into `out` when one is given
/// and the request is smaller than `max_encoded`, else built as a [`Request`]. Also returns
/// how to map the reply back.
pub fn rewrite_into(
    scope: &mut Scope<'_>,
    spec: &CommandSpec,
    req: &Request,
    out: Option<&mut BytesMut>,
    max_encoded: usize,
) -> (Outcome, Option<Box<ReplyCtx>>) {
    if has_sole_key(spec) {
        return (rewrite_sole_key(scope, req, out, max_encoded), None);
    }
    let mut plan = plan_request(scope, spec, req);
    let ctx = plan.ctx.take();
    if plan.is_unchanged() {
        return (Outcome::Unchanged, ctx);
    }
    (encode(req, plan.spliced(req), out, max_encoded), ctx)
}

/// A changed request: encoded into `out` when one is given and the request is smaller than
/// `max_encoded`, else built as a [`Request`].
fn encode<'a>(
    req: &'a Request,
    changes: impl Iterator<Item = (usize, &'a [u8], &'a [u8])> + Clone,
    out: Option<&mut BytesMut>,
    max_encoded: usize,
) -> Outcome {
    match out {
        Some(out) if request::spliced_len(req, changes.clone()) < max_encoded => {
            out.clear();
            request::splice(req, changes, out);
            Outcome::Encoded
        }
        _ => Outcome::Rebuilt(req.with_changes(changes)),
    }
}

/// True for the commonest shape, by the command table: the only key is argument 1 (GET, SET,
/// HSET, EXPIRE, …), nothing else in the request is rewritten and the reply names no keys.
pub fn has_sole_key(spec: &CommandSpec) -> bool {
    spec.extra == Extra::None
        && spec.reply == ReplyKeys::None
        && matches!(
            spec.keys,
            [KeySpec {
                begin: Begin::Index(1),
                find: Find::Range {
                    last: 0,
                    step: 1..,
                    ..
                },
                ..
            }]
        )
}

/// [`rewrite_into`] for a command with [`has_sole_key`]: no plan to build, one argument to
/// splice.
fn rewrite_sole_key(
    scope: &mut Scope<'_>,
    req: &Request,
    out: Option<&mut BytesMut>,
    max_encoded: usize,
) -> Outcome {
    let Some(key) = req.arg(1) else {
        return Outcome::Unchanged;
    };
    let Some(rw) = scope.key_rewrite(key) else {
        return Outcome::Unchanged;
    };
    let change = [(1, rw.to.as_ref(), &key[rw.prefix_len..])];
    encode(req, change.into_iter(), out, max_encoded)
}

/// The rewrite of the key of a command with [`has_sole_key`] (argument 1) by `app`'s rules,
/// remembered like any other and counted in `tally`; the caller splices it in. A [`Scope`]'s
/// parts are given apart (`memory` already at the rules' generation): the rewrite borrows
/// only the rules, so that the lanes may go on using the rest of the session.
pub fn sole_key_rewrite<'r>(
    rules: &'r RuleSet,
    app: Option<&str>,
    memory: &mut PrefixMemory,
    key: &[u8],
    tally: &mut RuleTally,
) -> Option<Rewrite<'r>> {
    let Some(rw) = rules.forward(app, key) else {
        tally.unmatched += 1;
        return None;
    };
    tally.add(rules, app, rw.rule);
    memory.remember(rw.rule, &rw.to, &key[..rw.prefix_len]);
    Some(rw)
}

/// Rule hits counted over a run of requests and added to the shared counters at once (one
/// atomic add per run instead of one per key).
#[derive(Debug, Default)]
pub struct RuleTally {
    /// The rule of the current stretch of hits, and how many.
    current: Option<(usize, u64)>,
    /// Keys no rule rewrote.
    unmatched: u64,
}

impl RuleTally {
    fn add(&mut self, rules: &RuleSet, app: Option<&str>, rule: usize) {
        match &mut self.current {
            Some((r, n)) if *r == rule => *n += 1,
            _ => {
                self.flush_hits(rules, app);
                self.current = Some((rule, 1));
            }
        }
    }

    fn flush_hits(&mut self, rules: &RuleSet, app: Option<&str>) {
        if let Some((rule, n)) = self.current.take() {
            if let Some(r) = rules.rules().get(rule) {
                r.count_forward_n(rules.label_of(app), n);
            }
        }
    }

    /// Adds the counts to the rules' and the proxy's counters, for a client identified as
    /// `app`.
    pub fn flush(&mut self, rules: &RuleSet, app: Option<&str>) {
        self.flush_hits(rules, app);
        if self.unmatched > 0 {
            stats()
                .unmatched_keys
                .fetch_add(self.unmatched, std::sync::atomic::Ordering::Relaxed);
            self.unmatched = 0;
        }
    }
}

/// What the rules change in one request, decided before anything is encoded: the caller
/// either forwards the original bytes (nothing changed), splices the new arguments into its
/// send buffer ([`rewrite_into`]), or builds a [`Request`] of it. [`Plan::write_to`] and
/// [`Plan::encoded_len`] serve the tests and the fuzzer that check those agree.
pub struct Plan<'r> {
    changes: SmallVec<[(usize, NewArg<'r>); 4]>,
    /// How to map the reply back, when it carries key names.
    pub ctx: Option<Box<ReplyCtx>>,
}

/// Decides the request's rewrites (counting and remembering each, as the rules require).
pub fn plan_request<'r>(scope: &mut Scope<'r>, spec: &CommandSpec, req: &Request) -> Plan<'r> {
    let mut changes: SmallVec<[(usize, NewArg<'r>); 4]> = SmallVec::new();
    let mut key_pos = Positions::new();
    let mut glob_pos = Positions::new();
    keys::positions(spec.keys, req, &mut key_pos);
    match spec.extra {
        Extra::Sort => keys::sort_arguments(req, &mut key_pos, &mut glob_pos),
        Extra::KeysPattern => glob_pos.push(1),
        Extra::ScanMatch => {
            if let Some(i) = (2..req.len()).find(|&i| req.arg_is(i, "MATCH")) {
                glob_pos.push(i + 1);
            }
        }
        _ => {}
    }
    let mut ctx = ReplyCtx {
        kind: reply_kind(spec, req),
        ..ReplyCtx::default()
    };
    if ctx.kind.is_some() {
        ctx.pattern = client_pattern(spec.extra, req, &glob_pos);
    }
    for &i in &key_pos {
        let Some(key) = req.arg(i) else { continue };
        if let Some(rw) = scope.key_rewrite(key) {
            if ctx.kind.is_some() {
                ctx.exact.push(Exact {
                    upstream: rw.apply(key),
                    client: key.to_vec(),
                    rule: rw.rule,
                });
            }
            changes.push((
                i,
                NewArg::Prefix {
                    to: rw.to,
                    skip: rw.prefix_len,
                },
            ));
        }
    }
    for &i in &glob_pos {
        if let Some(new) = req.arg(i).and_then(|p| scope.glob(p, false)) {
            changes.push((i, NewArg::Whole(new)));
        }
    }
    channel_changes(scope, spec.extra, req, &mut changes);
    // In argument order, one change per argument (the first decided wins).
    changes.sort_by_key(|(i, _)| *i);
    changes.dedup_by_key(|(i, _)| *i);
    Plan {
        changes,
        ctx: ctx.kind.map(|_| Box::new(ctx)),
    }
}

impl<'r> Plan<'r> {
    /// True when no argument changes: the request is forwarded as its original bytes.
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changed arguments in order, each as (index, new head, rest of the old argument).
    fn spliced<'a>(
        &'a self,
        req: &'a Request,
    ) -> impl Iterator<Item = (usize, &'a [u8], &'a [u8])> + Clone + use<'a, 'r> {
        self.changes.iter().filter_map(|(i, new)| {
            let arg = req.arg(*i)?;
            Some(match new {
                NewArg::Prefix { to, skip } => (*i, to.as_ref(), &arg[*skip..]),
                NewArg::Whole(new) => (*i, new.as_slice(), &[][..]),
            })
        })
    }

    /// Size of the rewritten request on the wire.
    pub fn encoded_len(&self, req: &Request) -> usize {
        request::spliced_len(req, self.spliced(req))
    }

    /// Appends the rewritten request, RESP-encoded, to `buf`: the original bytes with the
    /// changed arguments spliced in.
    pub fn write_to(&self, req: &Request, buf: &mut BytesMut) {
        request::splice(req, self.spliced(req), buf);
    }

    /// The rewritten request as a [`Request`] (`None` when nothing changed).
    pub fn into_rewritten(self, req: &Request) -> Rewritten {
        let request = (!self.is_unchanged()).then(|| req.with_changes(self.spliced(req)));
        Rewritten {
            request,
            ctx: self.ctx,
        }
    }
}

/// What the reply of `req` carries that must be mapped back.
fn reply_kind(spec: &CommandSpec, req: &Request) -> Option<ReplyKeys> {
    if spec.extra == Extra::Pubsub {
        return if req.arg_is(1, "NUMSUB") || req.arg_is(1, "SHARDNUMSUB") {
            Some(ReplyKeys::NumSub)
        } else if req.arg_is(1, "CHANNELS") || req.arg_is(1, "SHARDCHANNELS") {
            Some(ReplyKeys::Channels)
        } else {
            None
        };
    }
    (spec.reply != ReplyKeys::None).then_some(spec.reply)
}

/// The glob the client's names must match: KEYS's pattern, SCAN's MATCH, PUBSUB CHANNELS's.
fn client_pattern(extra: Extra, req: &Request, glob_pos: &Positions) -> Option<Vec<u8>> {
    let at = match extra {
        Extra::KeysPattern | Extra::ScanMatch => *glob_pos.first()?,
        Extra::Pubsub => 2,
        _ => return None,
    };
    req.arg(at).map(<[u8]>::to_vec)
}

/// Rewrites the `PREFIX` arguments of `CLIENT TRACKING … BCAST PREFIX p …` as key prefixes
/// (a rule applies when its match lies inside the prefix); `None` when none changes.
/// Invalidations that come back carry upstream names and are mapped back like any key.
pub fn rewrite_tracking(scope: &mut Scope<'_>, req: &Request) -> Option<Request> {
    let mut changes: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut i = 3;
    while i + 1 < req.len() {
        if req.arg_is(i, "PREFIX") {
            if let Some(new) = req.arg(i + 1).and_then(|p| scope.glob(p, false)) {
                changes.push((i + 1, new));
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    if changes.is_empty() {
        return None;
    }
    let pieces = changes.iter().map(|(i, new)| (*i, new.as_slice(), &[][..]));
    Some(req.with_changes(pieces))
}

/// A changed argument: a new prefix on the rest of the old one, or a whole new value.
enum NewArg<'r> {
    Prefix { to: Cow<'r, [u8]>, skip: usize },
    Whole(Vec<u8>),
}

fn channel_changes(
    scope: &mut Scope<'_>,
    extra: Extra,
    req: &Request,
    changes: &mut SmallVec<[(usize, NewArg<'_>); 4]>,
) {
    let (from, to, pattern) = match extra {
        Extra::Channels => (1, req.len(), false),
        Extra::Channel => (1, 2.min(req.len()), false),
        Extra::ChannelPatterns => (1, req.len(), true),
        Extra::Pubsub if req.arg_is(1, "NUMSUB") || req.arg_is(1, "SHARDNUMSUB") => {
            (2, req.len(), false)
        }
        Extra::Pubsub if req.arg_is(1, "CHANNELS") || req.arg_is(1, "SHARDCHANNELS") => {
            (2, 3.min(req.len()), true)
        }
        _ => return,
    };
    for i in from..to {
        if let Some(new) = req.arg(i).and_then(|c| scope.channel(c, pattern)) {
            changes.push((i, NewArg::Whole(new)));
        }
    }
}

/// Maps key names in a reply back for this client: the keys its command returns, and key
/// names quoted in an error.
pub fn map_reply(scope: &Scope<'_>, ctx: &ReplyCtx, frame: Bytes) -> Bytes {
    if is_error(&frame) {
        return map_error(scope, &ctx.exact, frame);
    }
    if ctx.kind.is_none() && ctx.queued.is_none() {
        return frame;
    }
    let Some(mut node) = Node::decode(&frame) else {
        return frame;
    };
    if map_node(scope, ctx, &mut node) {
        node.to_bytes()
    } else {
        frame
    }
}

fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// Maps key names quoted in an error reply (`-NOGROUP No such key 'shared_x' or consumer
/// group 'g'`, `… for key name 'shared_x'`) back for this client. Redis quotes keys in single
/// quotes; a quoted word that is no rewritten key stays as it is.
pub fn map_error(scope: &Scope<'_>, exact: &[Exact], frame: Bytes) -> Bytes {
    let head = match frame.first() {
        Some(b'-') => 1,
        Some(b'!') => match memchr::memchr(b'\n', &frame) {
            Some(nl) => nl + 1,
            None => return frame,
        },
        _ => return frame,
    };
    // A frame too short to hold its own CRLF is not an error reply we can read: as it is.
    let Some(text) = frame.get(head..frame.len().saturating_sub(2)) else {
        return frame;
    };
    let Some(mapped) = map_quoted(scope, exact, text) else {
        return frame;
    };
    let mut out = BytesMut::with_capacity(mapped.len() + 16);
    if frame[0] == b'!' {
        out.extend_from_slice(format!("!{}\r\n", mapped.len()).as_bytes());
    } else {
        out.extend_from_slice(&frame[..head]);
    }
    out.extend_from_slice(&mapped);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// `text` with every `'name'` that is a rewritten key mapped back; `None` when none is.
fn map_quoted(scope: &Scope<'_>, exact: &[Exact], text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut done = 0;
    let mut i = 0;
    while let Some(open) = text[i..].iter().position(|&c| c == b'\'').map(|o| i + o) {
        let Some(close) = text[open + 1..]
            .iter()
            .position(|&c| c == b'\'')
            .map(|c| open + 1 + c)
        else {
            break;
        };
        let word = &text[open + 1..close];
        match scope.key_back(word, exact) {
            Some(back) if back != word => {
                out.extend_from_slice(&text[done..open + 1]);
                out.extend_from_slice(&back);
                done = close;
            }
            _ => {}
        }
        i = close + 1;
    }
    if done == 0 {
        return None;
    }
    out.extend_from_slice(&text[done..]);
    Some(out)
}

/// [`map_reply`] on a decoded reply; true when anything changed.
fn map_node(scope: &Scope<'_>, ctx: &ReplyCtx, node: &mut Node) -> bool {
    if let Some(queued) = &ctx.queued {
        return map_exec(scope, queued, node);
    }
    let Some(kind) = ctx.kind else { return false };
    match kind {
        ReplyKeys::None => false,
        ReplyKeys::First | ReplyKeys::Single => {
            let target = match (&mut *node, kind) {
                (Node::Agg { items, .. }, ReplyKeys::First) => items.first_mut(),
                (n @ Node::Str { .. }, ReplyKeys::Single) => Some(n),
                _ => None,
            };
            target.map(|n| map_str(scope, ctx, n)).unwrap_or(false)
        }
        ReplyKeys::Streams => match node {
            Node::Agg { kind: b'%', items } => items
                .iter_mut()
                .step_by(2)
                .fold(false, |acc, n| map_str(scope, ctx, n) | acc),
            Node::Agg { items, .. } => items.iter_mut().fold(false, |acc, s| {
                acc | s
                    .items_mut()
                    .and_then(|i| i.first_mut())
                    .map(|n| map_str(scope, ctx, n))
                    .unwrap_or(false)
            }),
            _ => false,
        },
        ReplyKeys::Secrets => crate::commands::secrets::mask_config_reply(node),
        ReplyKeys::List => filter_keys(scope, ctx, node.list_mut()),
        ReplyKeys::Scan => filter_keys(
            scope,
            ctx,
            node.items_mut()
                .and_then(|i| i.get_mut(1))
                .and_then(|n| n.list_mut()),
        ),
        ReplyKeys::Channels => map_channels(scope, ctx, node.list_mut()),
        ReplyKeys::TrackingInfo => map_tracking_info(scope, node),
        ReplyKeys::NumSub => match node.items_mut() {
            Some(items) => items.iter_mut().step_by(2).fold(false, |acc, n| {
                let back = n.as_str().map(|c| scope.channel_back(c));
                match back {
                    Some(b) if Some(&b[..]) != n.as_str().map(|s| &s[..]) => {
                        n.set_str(b);
                        true
                    }
                    _ => acc,
                }
            }),
            None => false,
        },
    }
}

/// EXEC's array: each element mapped as its queued command's reply (errors by their quoted
/// names).
fn map_exec(scope: &Scope<'_>, queued: &[Option<Box<ReplyCtx>>], node: &mut Node) -> bool {
    let Some(items) = node.list_mut() else {
        return false;
    };
    let mut changed = false;
    for (i, item) in items.iter_mut().enumerate() {
        let ctx = queued.get(i).and_then(|c| c.as_deref());
        if let Node::Raw(raw) = item {
            if is_error(raw) {
                let exact = ctx.map(|c| &c.exact[..]).unwrap_or(&[]);
                let mapped = map_error(scope, exact, raw.clone());
                if mapped != *raw {
                    *raw = mapped;
                    changed = true;
                }
                continue;
            }
        }
        if let Some(ctx) = ctx {
            changed |= map_node(scope, ctx, item);
        }
    }
    changed
}

/// CLIENT TRACKINGINFO: the `prefixes` (BCAST) are key prefixes, mapped back.
fn map_tracking_info(scope: &Scope<'_>, node: &mut Node) -> bool {
    let Some(items) = node.items_mut() else {
        return false;
    };
    let at = items
        .iter()
        .step_by(2)
        .position(|n| n.as_str().is_some_and(|k| k.as_ref() == b"prefixes"));
    let Some(list) = at
        .and_then(|i| items.get_mut(2 * i + 1))
        .and_then(Node::list_mut)
    else {
        return false;
    };
    let mut changed = false;
    for n in list.iter_mut() {
        match n.as_str().and_then(|p| scope.key_back(p, &[])) {
            Some(back) if Some(&back[..]) != n.as_str().map(|s| &s[..]) => {
                n.set_str(back);
                changed = true;
            }
            _ => {}
        }
    }
    if changed {
        // Redis lists the prefixes in the order of their names (its prefix tree's order):
        // the client's names, not the upstream ones.
        list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    changed
}

/// PUBSUB CHANNELS: channel names mapped back, kept when they match the client's pattern.
fn map_channels(scope: &Scope<'_>, ctx: &ReplyCtx, items: Option<&mut Vec<Node>>) -> bool {
    let Some(items) = items else { return false };
    let before = items.len();
    let mut changed = false;
    items.retain_mut(|n| {
        let Some(name) = n.as_str() else { return true };
        let back = scope.channel_back(name);
        let keep = ctx
            .pattern
            .as_deref()
            .is_none_or(|p| glob::matches(p, &back));
        if keep && back != name.as_ref() {
            n.set_str(back);
            changed = true;
        }
        keep
    });
    changed || items.len() != before
}

fn map_str(scope: &Scope<'_>, ctx: &ReplyCtx, node: &mut Node) -> bool {
    let Some(key) = node.as_str() else {
        return false;
    };
    match scope.key_back(key, &ctx.exact) {
        Some(back) if back != key.as_ref() => {
            node.set_str(back);
            true
        }
        _ => false,
    }
}

fn filter_keys(scope: &Scope<'_>, ctx: &ReplyCtx, items: Option<&mut Vec<Node>>) -> bool {
    let Some(items) = items else { return false };
    let before = items.len();
    let mut changed = false;
    items.retain_mut(|n| {
        match n
            .as_str()
            .map(|k| (scope.key_back(k, &ctx.exact), k.clone()))
        {
            Some((None, _)) => false,
            Some((Some(back), _))
                if ctx
                    .pattern
                    .as_deref()
                    .is_some_and(|p| !glob::matches(p, &back)) =>
            {
                false
            }
            Some((Some(back), key)) => {
                if back != key.as_ref() {
                    n.set_str(back);
                    changed = true;
                }
                true
            }
            None => true,
        }
    });
    changed || items.len() != before
}

/// Maps channel names, patterns and key payloads in a pub/sub message or push back.
pub fn map_push(scope: &Scope<'_>, frame: Bytes) -> Bytes {
    let Some(mut node) = Node::decode(&frame) else {
        return frame;
    };
    let Some(items) = node.items_mut() else {
        return frame;
    };
    let kind = match items.first().and_then(|n| n.as_str()) {
        Some(k) => k.to_ascii_lowercase(),
        None => return frame,
    };
    let mut changed = false;
    let mut set = |n: &mut Node, new: Vec<u8>| {
        if n.as_str().is_some_and(|old| old.as_ref() != new.as_slice()) {
            n.set_str(new);
            changed = true;
        }
    };
    match kind.as_slice() {
        b"message" | b"smessage" if items.len() == 3 => {
            let channel = items[1].as_str().cloned().unwrap_or_default();
            let back = scope.channel_back(&channel);
            set(&mut items[1], back);
            map_payload(scope, &channel, &mut items[2], &mut set);
        }
        b"pmessage" if items.len() == 4 => {
            let channel = items[2].as_str().cloned().unwrap_or_default();
            let pattern_back = items[1]
                .as_str()
                .map(|p| scope.channel_back(p))
                .unwrap_or_default();
            set(&mut items[1], pattern_back);
            let back = scope.channel_back(&channel);
            set(&mut items[2], back);
            map_payload(scope, &channel, &mut items[3], &mut set);
        }
        b"subscribe" | b"unsubscribe" | b"psubscribe" | b"punsubscribe" | b"ssubscribe"
        | b"sunsubscribe"
            if items.len() == 3 =>
        {
            if let Some(back) = items[1].as_str().map(|c| scope.channel_back(c)) {
                set(&mut items[1], back);
            }
        }
        b"invalidate" if items.len() == 2 => {
            if let Some(keys) = items[1].items_mut() {
                for k in keys.iter_mut() {
                    if let Some(back) = k.as_str().and_then(|key| scope.key_back(key, &[])) {
                        set(k, back);
                    }
                }
            }
        }
        _ => {}
    }
    if changed {
        node.to_bytes()
    } else {
        frame
    }
}

/// Payloads that are key names: keyevent notifications, and RESP2 tracking invalidations.
fn map_payload(
    scope: &Scope<'_>,
    channel: &[u8],
    payload: &mut Node,
    set: &mut impl FnMut(&mut Node, Vec<u8>),
) {
    if is_keyevent(channel) {
        if let Some(back) = payload.as_str().and_then(|k| scope.key_back(k, &[])) {
            set(payload, back);
        }
    } else if channel == b"__redis__:invalidate" {
        if let Some(keys) = payload.items_mut() {
            for k in keys.iter_mut() {
                if let Some(back) = k.as_str().and_then(|key| scope.key_back(key, &[])) {
                    set(k, back);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::lookup;
    use crate::rules::RuleConfig;

    fn rules() -> RuleSet {
        RuleSet::compile(&[
            RuleConfig {
                name: "s".into(),
                pattern: r"^(\{?)(AppA|AppB)_".into(),
                replace: "${1}shared_".into(),
                apps: None,
                channels: false,
            },
            RuleConfig {
                name: "ch".into(),
                pattern: "^appA:".into(),
                replace: "shared:".into(),
                apps: None,
                channels: true,
            },
        ])
        .unwrap()
    }

    fn run(
        rules: &RuleSet,
        mem: &mut PrefixMemory,
        args: &[&str],
    ) -> (Vec<String>, Option<Box<ReplyCtx>>) {
        let req = Request::from_args(args);
        let mut scope = Scope {
            rules,
            app: None,
            memory: mem,
        };
        let plan = plan_request(&mut scope, lookup(&req), &req);
        let mut spliced = BytesMut::new();
        if !plan.is_unchanged() {
            plan.write_to(&req, &mut spliced);
            assert_eq!(plan.encoded_len(&req), spliced.len());
        }
        let out = plan.into_rewritten(&req);
        if let Some(rebuilt) = &out.request {
            assert_eq!(&spliced[..], &rebuilt.raw()[..], "splice and rebuild agree");
        }
        // What the session uses gives the same bytes, encoded or built.
        let mut scope = Scope {
            rules,
            app: None,
            memory: mem,
        };
        let mut encoded = BytesMut::new();
        let direct = rewrite_into(&mut scope, lookup(&req), &req, Some(&mut encoded), 1 << 20).0;
        let built = rewrite_into(&mut scope, lookup(&req), &req, None, 0).0;
        match (&out.request, direct, built) {
            (None, Outcome::Unchanged, Outcome::Unchanged) => {}
            (Some(r), Outcome::Encoded, Outcome::Rebuilt(b)) => {
                assert_eq!(&encoded[..], &r.raw()[..]);
                assert_eq!(b.raw(), r.raw());
            }
            _ => panic!("rewrite_into disagrees with the plan for {args:?}"),
        }
        let r = out.request.unwrap_or(req);
        (
            r.args()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
            out.ctx,
        )
    }

    #[test]
    fn sole_key_commands_take_the_short_path_with_the_same_result() {
        assert!(has_sole_key(lookup(&Request::from_args(["GET", "k"]))));
        assert!(has_sole_key(lookup(&Request::from_args([
            "HSET", "k", "f", "v"
        ]))));
        assert!(!has_sole_key(lookup(&Request::from_args(["MGET", "k"]))));
        let rules = rules();
        let mut m = PrefixMemory::default();
        assert_eq!(
            run(&rules, &mut m, &["SET", "AppA_1", "v", "EX", "10"]).0,
            ["SET", "shared_1", "v", "EX", "10"]
        );
        assert_eq!(run(&rules, &mut m, &["GET", "k"]).0, ["GET", "k"]);
        assert_eq!(run(&rules, &mut m, &["GET"]).0, ["GET"]);
    }

    #[test]
    fn spliced_lengths_cross_header_widths() {
        let rules = rules();
        let mut m = PrefixMemory::default();
        for n in [1, 4, 5, 6, 90, 94, 95, 99, 994, 995] {
            let key = format!("AppA_{}", "k".repeat(n));
            let want = format!("shared_{}", "k".repeat(n));
            assert_eq!(
                run(&rules, &mut m, &["MSET", &key, "v", "AppB_2", &key]).0,
                ["MSET", &want, "v", "shared_2", &key]
            );
        }
    }

    #[test]
    fn rewrites_keys_patterns_and_channels() {
        let rules = rules();
        let mut m = PrefixMemory::default();
        assert_eq!(
            run(&rules, &mut m, &["MSET", "AppA_1", "AppA_x", "k", "v"]).0,
            ["MSET", "shared_1", "AppA_x", "k", "v"]
        );
        assert_eq!(
            run(
                &rules,
                &mut m,
                &["EVALSHA", "abc", "2", "{AppA_1}_Data", "AppB_2", "AppA_arg"]
            )
            .0,
            [
                "EVALSHA",
                "abc",
                "2",
                "{shared_1}_Data",
                "shared_2",
                "AppA_arg"
            ]
        );
        assert_eq!(
            run(
                &rules,
                &mut m,
                &["SCAN", "0", "MATCH", "AppA_*", "COUNT", "10"]
            )
            .0,
            ["SCAN", "0", "MATCH", "shared_*", "COUNT", "10"]
        );
        assert_eq!(
            run(&rules, &mut m, &["PUBLISH", "appA:event", "AppA_1"]).0,
            ["PUBLISH", "shared:event", "AppA_1"]
        );
        assert_eq!(
            run(&rules, &mut m, &["PSUBSCRIBE", "__keyspace@*__:AppA_*"]).0,
            ["PSUBSCRIBE", "__keyspace@*__:shared_*"]
        );
        assert_eq!(
            run(
                &rules,
                &mut m,
                &["SORT", "AppA_l", "BY", "AppA_w_*", "STORE", "AppA_d"]
            )
            .0,
            ["SORT", "shared_l", "BY", "shared_w_*", "STORE", "shared_d"]
        );
    }

    #[test]
    fn maps_replies_back() {
        let rules = rules();
        let mut m = PrefixMemory::default();
        let (_, ctx) = run(&rules, &mut m, &["BLPOP", "AppB_q", "0"]);
        let scope = Scope {
            rules: &rules,
            app: None,
            memory: &mut m,
        };
        let reply = Bytes::from_static(b"*2\r\n$8\r\nshared_q\r\n$1\r\nv\r\n");
        assert_eq!(
            map_reply(&scope, ctx.as_ref().unwrap(), reply).as_ref(),
            b"*2\r\n$6\r\nAppB_q\r\n$1\r\nv\r\n"
        );
        let (_, ctx) = run(&rules, &mut m, &["SCAN", "0", "MATCH", "AppA_*"]);
        let scope = Scope {
            rules: &rules,
            app: None,
            memory: &mut m,
        };
        let reply = Bytes::from_static(
            b"*2\r\n$1\r\n0\r\n*3\r\n$8\r\nshared_1\r\n$6\r\nAppB_9\r\n$5\r\nplain\r\n",
        );
        assert_eq!(
            map_reply(&scope, ctx.as_ref().unwrap(), reply).as_ref(),
            b"*2\r\n$1\r\n0\r\n*1\r\n$6\r\nAppA_1\r\n",
            "names that do not match the client's own pattern are left out"
        );
        let push = Bytes::from_static(
            b">3\r\n$7\r\nmessage\r\n$30\r\n__keyevent@0__:expired_shared_\r\n$8\r\nshared_1\r\n",
        );
        assert!(map_push(&scope, push).ends_with(b"$6\r\nAppA_1\r\n"));
    }

    /// Fuzzer regression (rewrite_roundtrip): a map where a SCAN/KEYS reply has a list lost
    /// one item of a pair when filtered and re-encoded as an invalid frame.
    #[test]
    fn key_lists_are_filtered_only_in_lists() {
        let rules = rules();
        let mut m = PrefixMemory::default();
        let (_, ctx) = run(&rules, &mut m, &["KEYS", "AppA_*"]);
        let scope = Scope {
            rules: &rules,
            app: None,
            memory: &mut m,
        };
        let map = Bytes::from_static(b"%1\r\n$6\r\nAppB_9\r\n:1\r\n");
        let out = map_reply(&scope, ctx.as_ref().unwrap(), map.clone());
        assert_eq!(out, map);
        let set = Bytes::from_static(b"~2\r\n$6\r\nAppB_9\r\n$8\r\nshared_1\r\n");
        let out = map_reply(&scope, ctx.as_ref().unwrap(), set);
        assert_eq!(out.as_ref(), b"~1\r\n$6\r\nAppA_1\r\n");
    }

    /// Fuzzer regression (rewrite_roundtrip, CI): an error frame too short to hold its CRLF
    /// (`-\r`, a truncated `!8\r\n` blob) is passed on as it is instead of panicking.
    #[test]
    fn short_error_frames_pass_unchanged() {
        let rules = rules();
        let mut m = PrefixMemory::default();
        let scope = Scope {
            rules: &rules,
            app: None,
            memory: &mut m,
        };
        for raw in [&b"-"[..], b"-\r", b"!8\r\n", b"!8\r\nab", b"!\n"] {
            let frame = Bytes::copy_from_slice(raw);
            assert_eq!(map_error(&scope, &[], frame.clone()), frame);
        }
        let quoted = Bytes::from_static(b"-ERR no such key 'shared_1'\r\n");
        assert_eq!(
            map_error(&scope, &[], quoted).as_ref(),
            b"-ERR no such key 'shared_1'\r\n",
            "a key the client never named is left as it is"
        );
    }
}
