//! `rekey migrate`: moves the keys apps wrote before rekey was in front of Redis to the names
//! the rules give them, so that sessions (and anything else) written under the apps' own
//! prefixes are found again once the apps talk through rekey.
//!
//! Why it exists: rekey rewrites names on the way in, so the moment an app is pointed at it,
//! its old keys (`AppA_<id>`) are invisible under their new upstream names (`shared_<id>`).
//! Without a migration every logged-in user would lose their session at the switch. This
//! command walks the upstream (`SCAN`, with a `MATCH` glob from each rule's literal prefix,
//! or every key for rules without one), asks the rules what each key is called upstream (the
//! same [`RuleSet::forward`] the proxy uses), and moves it there, keeping its value, type and
//! TTL, never overwriting a name that exists (the app already wrote it through rekey: the
//! newer value wins, the old key stays and is reported).
//!
//! A run is idempotent and resumable: a moved key no longer matches a rule (and where rules
//! rewrite their own results, as `match = '^'` does, a key under a rule's fixed upstream
//! prefix is never moved), so running it again (after a crash, a `^C`, a collision resolved by
//! hand) only moves what is left.
//!
//! - [`plan`]: which keys, which new names, which SCAN passes; `--reverse`'s inverse rules.
//! - [`nodes`]: the upstream, the Sentinel's primary, or a cluster's primaries and slot map.
//! - [`client`]: a small pipelined RESP client on rekey's own upstream handshake.
//! - [`mover`]: `RENAMENX`, or `DUMP`/`RESTORE … ABSTTL`/checked delete across cluster slots.
//! - [`rate`], [`progress`]: `--rate`, the progress bar or log, the summary.

pub mod client;
pub mod mover;
pub mod nodes;
pub mod plan;
pub mod progress;
pub mod rate;

use crate::cluster::TopologyError;
use crate::config::Config;
use crate::protocol::Request;
use crate::rules::RuleSet;
use crate::upstream::conn::ConnError;
use crate::upstream::sentinel::SentinelError;
use client::Reply;
use mover::{Move, Mover, Outcome};
use nodes::Nodes;
use plan::{Decision, Pass, Plan};
use progress::Progress;
use rate::Rate;
use std::time::{Duration, Instant};

/// Keys per SCAN page and per pipeline.
const BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("upstream {addr}: {error}")]
    Conn { addr: String, error: ConnError },
    #[error("upstream {addr}: no reply within {ms} ms")]
    Timeout { addr: String, ms: u64 },
    #[error("upstream {addr} answered {command} with {reply}")]
    Reply {
        addr: String,
        command: String,
        reply: String,
    },
    #[error("cluster: {0}")]
    Topology(#[from] TopologyError),
    #[error("sentinel: {0}")]
    Sentinel(#[from] SentinelError),
    #[error("--reverse: {0}")]
    Reverse(String),
    #[error("{0}")]
    NoRules(String),
}

/// What `rekey migrate` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Print what would move; change nothing.
    pub dry_run: bool,
    /// At most this many keys moved per second.
    pub rate: Option<u32>,
    /// The client identity whose rules apply (an `[[apps]]` name or AUTH user).
    pub app: Option<String>,
    /// Move keys back from the rules' upstream names to the apps' names.
    pub reverse: bool,
}

/// Tallies of keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Keys the SCAN passes returned.
    pub scanned: u64,
    /// Of those, keys a rule rewrites.
    pub matched: u64,
    /// Moved to their new names (dry run: would be).
    pub moved: u64,
    /// Left where they are: already under an upstream prefix, unchanged by their rule, or
    /// gone before they could move.
    pub skipped: u64,
    /// The new name exists: both kept (dry run: would collide).
    pub collisions: u64,
    /// Not moved because of an error; a later run tries again.
    pub failed: u64,
}

impl Counts {
    fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Moved => self.moved += 1,
            Outcome::Collision => self.collisions += 1,
            Outcome::Vanished => self.skipped += 1,
            Outcome::Failed(_) => self.failed += 1,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub counts: Counts,
    /// Per rule: its name and its counts (`scanned` unused).
    pub rules: Vec<(String, Counts)>,
    pub elapsed: Duration,
    pub dry_run: bool,
    pub nodes: usize,
    pub passes: usize,
    /// Things the operator should know (rules left out, fallbacks taken).
    pub notes: Vec<String>,
}

impl Summary {
    /// 0: every key a rule rewrites is under its new name (dry run: would be); 1: some key
    /// failed to move; 2: nothing failed, but collisions left old keys in place.
    pub fn exit_code(&self) -> i32 {
        if self.counts.failed > 0 {
            1
        } else if self.counts.collisions > 0 {
            2
        } else {
            0
        }
    }

    /// Keys moved per second.
    pub fn rate(&self) -> f64 {
        self.counts.moved as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }

    pub fn report(&self) -> String {
        let c = &self.counts;
        let (head, moved, collided) = match self.dry_run {
            true => ("dry run (nothing changed)", "would move", "would collide"),
            false => ("migrate", "moved", "collisions"),
        };
        let mut out = format!(
            "{head}: {:.2}s, {} node(s), {} SCAN pass(es) each: scanned {} keys, {} matched a rule: {moved} {}, skipped {}, {collided} {}, failed {} ({:.0} keys/s)\n",
            self.elapsed.as_secs_f64(),
            self.nodes,
            self.passes,
            c.scanned,
            c.matched,
            c.moved,
            c.skipped,
            c.collisions,
            c.failed,
            self.rate(),
        );
        for (name, r) in &self.rules {
            out.push_str(&format!(
                "  rule {name:?}: {moved} {}, skipped {}, {collided} {}, failed {}\n",
                r.moved, r.skipped, r.collisions, r.failed
            ));
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        match self.exit_code() {
            1 => out.push_str("  some keys were not moved (see the lines above): fix the cause and run it again\n"),
            2 => out.push_str("  collisions: those old keys stay where they are, next to the newer keys apps wrote through rekey; delete them once you have looked\n"),
            _ => {}
        }
        out
    }
}

/// A key name as printed: printable ASCII as it is, other bytes (and `\`, `"`) escaped, in
/// quotes.
pub fn show(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len() + 2);
    s.push('"');
    for &b in key {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('"');
    s
}

/// Runs the migration the config's rules describe, against the config's upstream.
pub async fn run(
    config: &Config,
    opts: &Options,
    progress: &mut Progress,
) -> Result<Summary, MigrateError> {
    let started = Instant::now();
    let app = opts.app.as_deref();
    let reversed;
    let rules: &RuleSet = if opts.reverse {
        reversed = plan::reverse(&config.rules, app).map_err(MigrateError::Reverse)?;
        &reversed
    } else {
        &config.rules
    };
    let plan = Plan::new(rules, app);
    let who = app.map_or("clients with no app identity".to_string(), |a| {
        format!("app {a:?}")
    });
    if plan.applying().next().is_none() {
        return Err(MigrateError::NoRules(format!(
            "no rule applies to {who}: nothing to migrate{}",
            if app.is_none() && !rules.is_empty() {
                " (rules limited to apps need --app NAME)"
            } else {
                ""
            }
        )));
    }
    let mut notes: Vec<String> = rules
        .rules()
        .iter()
        .filter(|r| !r.applies(app))
        .map(|r| {
            format!(
                "rule {:?} is limited to apps {:?}: not migrated for {who} (run with --app NAME for each)",
                r.name,
                r.apps().unwrap_or_default()
            )
        })
        .collect();

    let nodes = Nodes::discover(config).await?;
    let node_count = nodes.urls.len();
    let reply_timeout = config
        .limits
        .reply_timeout
        .unwrap_or(Duration::from_secs(60));
    let mut mover = Mover::new(
        nodes,
        config.limits.connect_timeout,
        reply_timeout,
        opts.dry_run,
    );
    let mut sizes = Vec::with_capacity(node_count);
    for i in 0..node_count {
        let reply = mover
            .client(i)
            .await?
            .call(Request::from_args(["DBSIZE"]))
            .await?;
        sizes.push(reply.int().unwrap_or(0).max(0) as u64);
    }
    let passes = plan.passes().to_vec();
    progress.set_total(sizes.iter().sum::<u64>() * passes.len() as u64);

    let mut run = Run {
        plan: &plan,
        rules,
        mover,
        rate: Rate::new(opts.rate),
        counts: Counts::default(),
        per_rule: vec![Counts::default(); rules.rules().len()],
        progress,
        dry_run: opts.dry_run,
    };
    let mut done = 0u64;
    for (node, size) in sizes.iter().enumerate() {
        for pass in &passes {
            run.scan(node, pass, done, *size).await?;
            done += size;
        }
    }
    run.progress.update(&run.counts);
    run.progress.finish();
    notes.append(&mut run.mover.notes);
    Ok(Summary {
        counts: run.counts,
        rules: plan
            .applying()
            .map(|i| (rules.rules()[i].name.clone(), run.per_rule[i]))
            .collect(),
        elapsed: started.elapsed(),
        dry_run: opts.dry_run,
        nodes: node_count,
        passes: passes.len(),
        notes,
    })
}

/// The state of a run while it scans.
struct Run<'a> {
    plan: &'a Plan<'a>,
    rules: &'a RuleSet,
    mover: Mover,
    rate: Rate,
    counts: Counts,
    per_rule: Vec<Counts>,
    progress: &'a mut Progress,
    dry_run: bool,
}

impl Run<'_> {
    /// One SCAN pass over node `node` (`size` keys; `done` keys examined before it).
    async fn scan(
        &mut self,
        node: usize,
        pass: &Pass,
        done: u64,
        size: u64,
    ) -> Result<(), MigrateError> {
        let count = BATCH.to_string();
        let mut cursor: Vec<u8> = b"0".to_vec();
        loop {
            let mut args: Vec<&[u8]> = vec![b"SCAN", &cursor];
            if let Pass::Match(glob) = pass {
                args.extend([&b"MATCH"[..], glob]);
            }
            args.extend([&b"COUNT"[..], count.as_bytes()]);
            let client = self.mover.client(node).await?;
            let reply = client.call(Request::from_args(args)).await?;
            let (next, keys) = scan_page(reply).map_err(|reply| MigrateError::Reply {
                addr: client.addr().to_string(),
                command: "SCAN".into(),
                reply,
            })?;
            self.counts.scanned += keys.len() as u64;
            let moves = self.decide(keys);
            let batch = self.rate.batch(BATCH);
            for chunk in moves.chunks(batch) {
                self.rate.take(chunk.len()).await;
                let outcomes = self.mover.execute(node, chunk).await?;
                for (m, outcome) in chunk.iter().zip(&outcomes) {
                    self.record(m, outcome);
                }
                self.progress.update(&self.counts);
            }
            cursor = next;
            let finished = cursor == b"0";
            let fraction = if finished {
                1.0
            } else {
                scan_fraction(&cursor)
            };
            self.progress
                .set_position(done + (fraction * size as f64) as u64);
            self.progress.update(&self.counts);
            if finished {
                return Ok(());
            }
        }
    }

    /// Sorts one page of keys: the moves to make; the others are counted (and the unsafe
    /// ones reported) here.
    fn decide(&mut self, keys: Vec<bytes::Bytes>) -> Vec<Move> {
        let mut moves = Vec::new();
        for key in keys {
            match self.plan.decide(&key) {
                Decision::NotOurs => {}
                Decision::Move { rule, target } => {
                    self.counts.matched += 1;
                    moves.push(Move {
                        key: key.to_vec(),
                        target,
                        rule,
                    });
                }
                Decision::Stay { rule, .. } => {
                    self.counts.matched += 1;
                    self.counts.skipped += 1;
                    self.per_rule[rule].skipped += 1;
                }
                Decision::Unsafe { rule, target } => {
                    self.counts.matched += 1;
                    self.counts.failed += 1;
                    self.per_rule[rule].failed += 1;
                    self.progress.println(&format!(
                        "failed: {} -> {}: rule {:?} would rewrite the new name again (a second run would move it again); fix the rule",
                        show(&key),
                        show(&target),
                        self.rules.rules()[rule].name
                    ));
                }
            }
        }
        moves
    }

    fn record(&mut self, m: &Move, outcome: &Outcome) {
        self.counts.add(outcome);
        self.per_rule[m.rule].add(outcome);
        let (key, target) = (show(&m.key), show(&m.target));
        let line = match (outcome, self.dry_run) {
            (Outcome::Moved, true) => format!("would move: {key} -> {target}"),
            (Outcome::Collision, true) => {
                format!("would collide: {key} -> {target}: the new name exists; both would be kept")
            }
            (Outcome::Collision, false) => format!(
                "collision: {key} -> {target}: the new name exists (kept); the old key stays"
            ),
            (Outcome::Failed(why), _) => format!("failed: {key} -> {target}: {why}"),
            _ => return,
        };
        self.progress.println(&line);
    }
}

/// A SCAN reply: the next cursor and the keys; the reply described if it is not one.
fn scan_page(reply: Reply) -> Result<(Vec<u8>, Vec<bytes::Bytes>), String> {
    let describe = reply.describe();
    let Reply::Array(mut items) = reply else {
        return Err(describe);
    };
    if items.len() != 2 {
        return Err(describe);
    }
    let keys = match items.pop() {
        Some(Reply::Array(keys)) => keys
            .into_iter()
            .filter_map(|k| match k {
                Reply::Str(b) => Some(b),
                _ => None,
            })
            .collect(),
        _ => return Err(describe),
    };
    match items.pop() {
        Some(Reply::Str(cursor)) => Ok((cursor.to_vec(), keys)),
        _ => Err(describe),
    }
}

/// How far a SCAN cursor is through the keyspace, from 0 to 1: Redis walks its table in
/// reverse-binary order, so the cursor's bits reversed grow steadily from 0 to the end.
fn scan_fraction(cursor: &[u8]) -> f64 {
    let Some(n) = std::str::from_utf8(cursor)
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return 0.0;
    };
    n.reverse_bits() as f64 / 2f64.powi(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_readably() {
        assert_eq!(show(b"AppA_1"), "\"AppA_1\"");
        assert_eq!(show(b"a\"b\\c\xff\n"), "\"a\\\"b\\\\c\\xff\\x0a\"");
    }

    #[test]
    fn cursors_advance_in_reverse_binary() {
        // A table of 8 buckets is walked 0, 4, 2, 6, 1, 5, 3, 7.
        let order = [4u64, 2, 6, 1, 5, 3, 7];
        let fractions: Vec<f64> = order
            .iter()
            .map(|c| scan_fraction(c.to_string().as_bytes()))
            .collect();
        assert!(fractions.windows(2).all(|w| w[0] < w[1]), "{fractions:?}");
        assert_eq!(scan_fraction(b"4"), 0.125);
    }

    #[test]
    fn exit_codes() {
        let mut s = Summary {
            counts: Counts::default(),
            rules: Vec::new(),
            elapsed: Duration::from_secs(1),
            dry_run: false,
            nodes: 1,
            passes: 1,
            notes: Vec::new(),
        };
        assert_eq!(s.exit_code(), 0);
        s.counts.collisions = 1;
        assert_eq!(s.exit_code(), 2);
        s.counts.failed = 1;
        assert_eq!(s.exit_code(), 1);
    }
}
