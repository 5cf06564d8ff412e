//! Compiled rules: the forward rewrite of a key's prefix, the reverse mapping of key names in
//! replies, and the rewrite of glob patterns (KEYS, SCAN MATCH, PSUBSCRIBE).
//!
//! A rule's `match` is a regex anchored at the start of the key; the matched text is the app's
//! prefix `P`, and `replace` (with `${1}`/`${name}` captures) expands to the upstream prefix `R`.
//! Forward: `P + rest` becomes `R + rest` for the first rule that matches. Reverse: a reply key
//! `R + rest` becomes `P + rest`, with the `P` the request used (or this client last used).
//! A key no rule matches costs a regex scan and no allocation.
//!
//! No I/O here, and no knowledge of sockets or connections: the engine ([`rewrite`]) takes a
//! request and a reply as bytes and says what they become, so it is tested and fuzzed alone.

pub mod glob;
pub mod memory;
pub mod rewrite;

use crate::stats::RuleHits;
use regex::bytes::Regex;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One `[[rules]]` entry as the config file states it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(rename = "match")]
    pub pattern: String,
    pub replace: String,
    pub apps: Option<Vec<String>>,
    #[serde(default)]
    pub channels: bool,
}

/// One compiled rule, with its hit counters.
pub struct Rule {
    pub name: String,
    /// `match` as configured.
    source: String,
    regex: Regex,
    replace: String,
    /// `replace` when it uses no captures: the same upstream prefix for every key.
    fixed: Option<Vec<u8>>,
    /// The pattern when it is a plain literal prefix (`^sess:`, or `^` alone): matched with
    /// `starts_with`, without the regex engine.
    literal: Option<Vec<u8>>,
    /// Every match starts with one of these (from the regex's literal prefixes): a key that
    /// starts with none is rejected without running the regex. `None`: no useful set.
    prefixes: Option<Vec<Vec<u8>>>,
    /// With a fixed replacement: the pattern is exactly these literals (`^(AppA|AppB)_`), in
    /// the regex's order of preference, so the first that starts a key is the match.
    exact: Option<Vec<Vec<u8>>>,
    apps: Option<Vec<String>>,
    pub channels: bool,
    /// Hit counts per client label (see [`RuleSet::label_of`]), index 0 being `-`.
    hits: Vec<Arc<RuleHits>>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("match", &self.regex.as_str())
            .finish()
    }
}

/// A rewrite that applies to one key: replace the first `prefix_len` bytes with `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite<'r> {
    pub rule: usize,
    pub prefix_len: usize,
    /// The new prefix: borrowed from the rule when it is fixed, so the common case costs no
    /// allocation and no reference counting.
    pub to: Cow<'r, [u8]>,
}

impl Rewrite<'_> {
    /// The rewritten key.
    pub fn apply(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.to.len() + key.len() - self.prefix_len);
        out.extend_from_slice(&self.to);
        out.extend_from_slice(&key[self.prefix_len..]);
        out
    }
}

#[derive(Debug, thiserror::Error)]
#[error("rule {name:?}: {reason}")]
pub struct RuleError {
    pub name: String,
    pub reason: String,
}

impl Rule {
    pub fn compile(cfg: &RuleConfig) -> Result<Rule, RuleError> {
        let err = |reason: String| RuleError {
            name: cfg.name.clone(),
            reason,
        };
        if cfg.name.is_empty() {
            return Err(err("a rule needs a name".into()));
        }
        let body = cfg.pattern.strip_prefix('^').unwrap_or(&cfg.pattern);
        let regex = Regex::new(&format!("^(?:{body})")).map_err(|e| err(e.to_string()))?;
        check_replace(&cfg.replace, &regex).map_err(err)?;
        let (prefixes, exact) = match required_prefixes(regex.as_str()) {
            Some((list, true)) => (Some(list.clone()), Some(list)),
            Some((list, false)) => (Some(list), None),
            None => (None, None),
        };
        let fixed = (!cfg.replace.contains('$')).then(|| cfg.replace.clone().into_bytes());
        Ok(Rule {
            name: cfg.name.clone(),
            source: cfg.pattern.clone(),
            regex,
            replace: cfg.replace.clone(),
            literal: is_literal(body).then(|| body.as_bytes().to_vec()),
            prefixes,
            exact: exact.filter(|_| fixed.is_some()),
            fixed,
            apps: cfg.apps.clone().filter(|a| !a.iter().any(|x| x == "*")),
            channels: cfg.channels,
            hits: vec![RuleHits::of(&cfg.name, NO_LABEL)],
        })
    }

    /// The `match` regex as configured.
    pub fn pattern(&self) -> &str {
        &self.source
    }

    pub fn replace(&self) -> &str {
        &self.replace
    }

    /// Counts `n` keys rewritten for clients of label `label` (a caller may tally a run of
    /// requests and count them at once).
    pub fn count_forward_n(&self, label: usize, n: u64) {
        let hits = self.hits.get(label).unwrap_or(&self.hits[0]);
        hits.forward.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one key mapped back for a client of label `label`.
    pub fn count_reverse(&self, label: usize) {
        let hits = self.hits.get(label).unwrap_or(&self.hits[0]);
        hits.reverse.fetch_add(1, Ordering::Relaxed);
    }

    /// Keys rewritten (forward, reverse) by rules of this name since rekey started, for every
    /// client label together.
    pub fn hits(&self) -> (u64, u64) {
        self.hits.iter().fold((0, 0), |(f, r), h| {
            (
                f + h.forward.load(Ordering::Relaxed),
                r + h.reverse.load(Ordering::Relaxed),
            )
        })
    }

    /// True when the rule applies to a client identified as `app` (or to everyone).
    #[inline]
    pub fn applies(&self, app: Option<&str>) -> bool {
        match &self.apps {
            None => true,
            Some(list) => app.is_some_and(|a| list.iter().any(|x| x == a)),
        }
    }

    /// The rewrite for `key`, if this rule matches its prefix.
    #[inline]
    pub fn rewrite(&self, key: &[u8]) -> Option<(usize, Cow<'_, [u8]>)> {
        if let (Some(lit), Some(fixed)) = (&self.literal, &self.fixed) {
            return has_prefix(key, lit).then(|| (lit.len(), Cow::Borrowed(&fixed[..])));
        }
        if let (Some(exact), Some(fixed)) = (&self.exact, &self.fixed) {
            let lit = exact.iter().find(|l| has_prefix(key, l))?;
            return Some((lit.len(), Cow::Borrowed(&fixed[..])));
        }
        if !self.may_match(key) {
            return None;
        }
        let found = self.regex.find(key)?;
        if let Some(fixed) = &self.fixed {
            return Some((found.end(), Cow::Borrowed(&fixed[..]))); // no captures: no allocation
        }
        let caps = self.regex.captures(key)?;
        let mut to = Vec::new();
        caps.expand(self.replace.as_bytes(), &mut to);
        Some((found.end(), Cow::Owned(to)))
    }

    /// Literal prefixes every key this rule matches starts with (one for a plain prefix such
    /// as `^sess:`, a few for `^(AppA|AppB)_`), for a `SCAN … MATCH <prefix>*` that finds
    /// the rule's keys; `None` when there is no useful set (`^` alone, a class, a long
    /// alternation): only a full scan filtered by [`Rule::matches`] finds them all.
    pub fn scan_prefixes(&self) -> Option<&[Vec<u8>]> {
        match &self.literal {
            Some(lit) if !lit.is_empty() => Some(std::slice::from_ref(lit)),
            Some(_) => None,
            None => self.prefixes.as_deref(),
        }
    }

    /// The one literal prefix this rule matches, when its `match` is exactly that (`^sess:`,
    /// `^(AppA)_`): the only name a reverse mapping can give back.
    pub fn literal_match(&self) -> Option<&[u8]> {
        match (&self.literal, &self.exact) {
            (Some(lit), _) => Some(lit),
            (None, Some(exact)) if exact.len() == 1 => Some(&exact[0]),
            _ => None,
        }
    }

    /// The apps this rule is limited to (`None`: every client).
    pub fn apps(&self) -> Option<&[String]> {
        self.apps.as_deref()
    }

    /// The upstream prefix, when `replace` uses no captures (the same for every key).
    pub fn fixed_replacement(&self) -> Option<Vec<u8>> {
        self.fixed.clone()
    }

    /// True when `key` lies in a namespace this rule rewrites (an app's raw prefix).
    pub fn matches(&self, key: &[u8]) -> bool {
        if let Some(lit) = &self.literal {
            return has_prefix(key, lit);
        }
        if let Some(exact) = &self.exact {
            return exact.iter().any(|l| has_prefix(key, l));
        }
        if !self.may_match(key) {
            return false;
        }
        self.regex.is_match(key)
    }
}

/// `${n}` and `${name}` in `replace` must name groups of `match`.
impl Rule {
    /// False when the key cannot match: it starts with none of the regex's literal prefixes.
    fn may_match(&self, key: &[u8]) -> bool {
        match &self.prefixes {
            Some(list) => list.iter().any(|p| has_prefix(key, p)),
            None => true,
        }
    }
}

/// [`RuleSet::by_prefix`]: every rule's literal prefixes in order, when each rule is decided by
/// its prefixes alone (a literal or exact set of literals, and a fixed replacement).
fn prefix_list(rules: &[Rule]) -> Option<Vec<(Vec<u8>, usize)>> {
    let mut list = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        rule.fixed.as_ref()?;
        match (&rule.literal, &rule.exact) {
            (Some(lit), _) => list.push((lit.clone(), i)),
            (None, Some(exact)) => list.extend(exact.iter().map(|l| (l.clone(), i))),
            (None, None) => return None,
        }
    }
    Some(list)
}

/// The literal prefixes every match of `pattern` starts with, when there are a few of them,
/// in order of preference, and whether they are exact (the pattern matches just these).
fn required_prefixes(pattern: &str) -> Option<(Vec<Vec<u8>>, bool)> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::ParserBuilder::new()
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let literals = seq.literals()?;
    let useful = !literals.is_empty()
        && literals.len() <= 32
        && literals.iter().all(|l| !l.as_bytes().is_empty());
    let exact = literals.iter().all(|l| l.is_exact());
    useful.then(|| {
        (
            literals.iter().map(|l| l.as_bytes().to_vec()).collect(),
            exact,
        )
    })
}

/// `key.starts_with(prefix)` without a libc `memcmp` call: prefixes are a few bytes long.
#[inline]
fn has_prefix(key: &[u8], prefix: &[u8]) -> bool {
    key.len() >= prefix.len() && key.iter().zip(prefix).all(|(a, b)| a == b)
}

/// A regex body with no metacharacter matches exactly its own text.
fn is_literal(body: &str) -> bool {
    !body
        .chars()
        .any(|c| "\\.+*?()|[]{}^$#".contains(c) || c.is_whitespace())
}

fn check_replace(replace: &str, regex: &Regex) -> Result<(), String> {
    let mut rest = replace;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: &str = if let Some(stripped) = rest.strip_prefix('{') {
            let end = stripped.find('}').ok_or("unclosed ${ in replace")?;
            &stripped[..end]
        } else if rest.starts_with('$') {
            rest = &rest[1..];
            continue;
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        };
        if name.is_empty() {
            continue;
        }
        let known = match name.parse::<usize>() {
            Ok(n) => n < regex.captures_len(),
            Err(_) => regex.capture_names().flatten().any(|n| n == name),
        };
        if !known {
            return Err(format!(
                "replace uses ${{{name}}}, which match does not capture"
            ));
        }
    }
    Ok(())
}

/// The `app` label of clients with no configured identity.
pub const NO_LABEL: &str = "-";

/// The rules of one config, in file order.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Client labels for metrics: `-`, then the config's `[[apps]]` and `[[users]]` names (a
    /// bounded set: an AUTH user the config does not name counts as `-`).
    labels: Vec<String>,
    /// When every rule is a set of literal prefixes with a fixed replacement (the usual
    /// session rules), all of them as one list in rule order, each literal with its rule:
    /// the first that starts a key, of a rule that applies, decides.
    by_prefix: Option<Vec<(Vec<u8>, usize)>>,
}

impl RuleSet {
    pub fn compile(cfgs: &[RuleConfig]) -> Result<RuleSet, RuleError> {
        Self::compile_labelled(cfgs, &[])
    }

    /// [`RuleSet::compile`], counting hits per client label: `names` are the config's app and
    /// user names (`-` is added first).
    pub fn compile_labelled(cfgs: &[RuleConfig], names: &[String]) -> Result<RuleSet, RuleError> {
        let mut labels = vec![NO_LABEL.to_string()];
        for n in names {
            if !labels.contains(n) {
                labels.push(n.clone());
            }
        }
        let mut rules: Vec<Rule> = cfgs.iter().map(Rule::compile).collect::<Result<_, _>>()?;
        for r in &mut rules {
            r.hits = labels.iter().map(|l| RuleHits::of(&r.name, l)).collect();
        }
        let by_prefix = prefix_list(&rules);
        Ok(RuleSet {
            rules,
            labels,
            by_prefix,
        })
    }

    /// The metrics label index of a client identified as `app` (0, `-`, for no identity or
    /// one the config does not name).
    pub fn label_of(&self, app: Option<&str>) -> usize {
        app.and_then(|a| self.labels.iter().position(|l| l == a))
            .unwrap_or(0)
    }

    /// The client labels, by index.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The name a client identified as `app` would have used for upstream name `key`, when
    /// only one is possible: a rule that applies, whose `match` is one literal prefix `P` and
    /// whose fixed, non-empty replacement `R` starts `key` (the first such rule). Used when
    /// the client's connection has not itself used a prefix of that rule yet.
    pub fn reverse_unique(
        &self,
        app: Option<&str>,
        key: &[u8],
        channels: bool,
    ) -> Option<(usize, Vec<u8>)> {
        self.rules.iter().enumerate().find_map(|(i, r)| {
            let (lit, to) = (r.literal.as_ref()?, r.fixed.as_ref()?);
            let usable = !to.is_empty() && r.applies(app) && (!channels || r.channels);
            (usable && has_prefix(key, to)).then(|| (i, [&lit[..], &key[to.len()..]].concat()))
        })
    }

    /// True when any rule rewrites keys of a client identified as `app`.
    pub fn rewrites_for(&self, app: Option<&str>) -> bool {
        self.rules.iter().any(|r| r.applies(app))
    }

    /// The first rule that rewrites `key` for `app`.
    pub fn forward(&self, app: Option<&str>, key: &[u8]) -> Option<Rewrite<'_>> {
        if let Some(list) = &self.by_prefix {
            return list.iter().find_map(|(lit, i)| {
                let rule = &self.rules[*i];
                let fixed = rule.fixed.as_deref()?;
                (has_prefix(key, lit) && rule.applies(app)).then_some(Rewrite {
                    rule: *i,
                    prefix_len: lit.len(),
                    to: Cow::Borrowed(fixed),
                })
            });
        }
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.applies(app))
            .find_map(|(i, r)| {
                r.rewrite(key).map(|(prefix_len, to)| Rewrite {
                    rule: i,
                    prefix_len,
                    to,
                })
            })
    }

    /// The first channel rule (`channels = true`) that rewrites channel `name`.
    pub fn forward_channel(&self, app: Option<&str>, name: &[u8]) -> Option<Rewrite<'_>> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.channels && r.applies(app))
            .find_map(|(i, r)| {
                r.rewrite(name).map(|(prefix_len, to)| Rewrite {
                    rule: i,
                    prefix_len,
                    to,
                })
            })
    }

    /// Rewrites a glob pattern when a rule's match lies inside the pattern's literal head
    /// (the part before the first `*`, `?`, `[` or `\`).
    pub fn forward_glob(
        &self,
        app: Option<&str>,
        pattern: &[u8],
        channels: bool,
    ) -> Option<Rewrite<'_>> {
        let head_len = pattern
            .iter()
            .position(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'))
            .unwrap_or(pattern.len());
        let head = &pattern[..head_len];
        if channels {
            self.forward_channel(app, head)
        } else {
            self.forward(app, head)
        }
    }

    /// True when `key` is in a namespace one of `app`'s rules rewrites: such a key is not
    /// addressable by that client, and is hidden from its KEYS/SCAN.
    pub fn hides(&self, app: Option<&str>, key: &[u8], channels: bool) -> bool {
        self.rules
            .iter()
            .any(|r| r.applies(app) && (!channels || r.channels) && r.matches(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, m: &str, r: &str) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            pattern: m.into(),
            replace: r.into(),
            apps: None,
            channels: false,
        }
    }

    #[test]
    fn forward_with_captures_and_hash_tags() {
        let set =
            RuleSet::compile(&[rule("aspnet", r"^(\{?)(AppA|AppB)_", "${1}shared_")]).unwrap();
        let rw = set.forward(None, b"{AppA_abc}_Data").unwrap();
        assert_eq!(rw.apply(b"{AppA_abc}_Data"), b"{shared_abc}_Data");
        let rw = set.forward(None, b"AppB_xyz").unwrap();
        assert_eq!(rw.apply(b"AppB_xyz"), b"shared_xyz");
        assert!(set.forward(None, b"AppC_xyz").is_none());
    }

    #[test]
    fn literal_prefixes_match_without_the_regex_engine() {
        let set = RuleSet::compile(&[
            rule("sess", "^sess:", "shared:"),
            rule("dot", r"^a.b_", "x_"),
            rule("all", "^", "ns:"),
        ])
        .unwrap();
        assert!(set.rules()[0].literal.is_some());
        assert!(set.rules()[1].literal.is_none(), "'.' is a metacharacter");
        assert_eq!(set.rules()[2].literal.as_deref(), Some(&b""[..]));
        let rw = set.forward(None, b"sess:42").unwrap();
        assert_eq!(rw.apply(b"sess:42"), b"shared:42");
        assert_eq!(set.forward(None, b"aXb_1").unwrap().apply(b"aXb_1"), b"x_1");
        assert_eq!(
            set.forward(None, b"other").unwrap().apply(b"other"),
            b"ns:other"
        );
    }

    #[test]
    fn literal_prefixes_reject_keys_before_the_regex_runs() {
        let set = RuleSet::compile(&[
            rule("aspnet", r"^(\{?)(AppA|AppB)_", "${1}shared_"),
            rule("ci", r"^(?i)sess:", "s:"),
            rule("class", r"^[a-z]+:", "x:"),
        ])
        .unwrap();
        let aspnet = set.rules()[0].prefixes.as_ref().unwrap();
        assert_eq!(aspnet.len(), 4, "{aspnet:?}");
        // Whatever the prefilter says, the answers are the regex's.
        answers_like_the_regex(
            &set,
            &[
                b"{AppA_1}_Data",
                b"AppB_x",
                b"AppC_x",
                b"{AppA",
                b"SESS:1",
                b"Sess:2",
                b"sesx:",
                b"abc:1",
                b"ABC:1",
                b"",
                b"\xff\xfe",
            ],
        );
    }

    /// Each rule's `rewrite` (where the match ends) and `matches` agree with its regex.
    fn answers_like_the_regex(set: &RuleSet, keys: &[&[u8]]) {
        for key in keys {
            for r in set.rules() {
                let want = r.regex.find(key).map(|m| m.end());
                let got = r.rewrite(key).map(|(n, _)| n);
                assert_eq!(got, want, "{} on {key:?}", r.name);
                assert_eq!(r.matches(key), want.is_some(), "{} on {key:?}", r.name);
            }
        }
    }

    #[test]
    fn exact_literal_alternations_match_like_the_regex() {
        let set = RuleSet::compile(&[
            rule("apps", r"^(AppA|AppB)_", "shared_"),
            rule("short_first", r"^(a|ab)", "x"),
            rule("long_first", r"^(ab|a)", "y"),
            rule("ci", r"^(?i)sess:", "s:"),
            rule("class", r"^[a-z]+:", "c:"),
            rule("captures", r"^(AppA|AppB)_", "${1}"),
        ])
        .unwrap();
        let exact: Vec<bool> = set.rules().iter().map(|r| r.exact.is_some()).collect();
        assert_eq!(
            exact,
            [true, true, true, false, false, false],
            "(?i) is left to the regex"
        );
        answers_like_the_regex(
            &set,
            &[
                b"AppA_1", b"AppB_", b"AppC_1", b"App", b"abc", b"ac", b"a", b"b", b"SeSs:1",
                b"sess", b"",
            ],
        );
    }

    #[test]
    fn prefix_decided_rule_sets_answer_like_the_regexes() {
        let mut apps_only = rule("apps_only", r"^(AppA|AppB)_", "only_");
        apps_only.apps = Some(vec!["AppB".into()]);
        let configs = [
            apps_only,
            rule("apps", r"^(AppA|AppB)_", "shared_"),
            rule("sess", "^sess:", "s:"),
            rule("all", "^", "ns:"),
        ];
        let set = RuleSet::compile(&configs).unwrap();
        assert!(set.by_prefix.is_some());
        let mixed = RuleSet::compile(&[configs[1].clone(), rule("class", "^[a-z]+:", "c:")]);
        assert!(
            mixed.unwrap().by_prefix.is_none(),
            "a class needs the regex"
        );
        for app in [None, Some("AppA"), Some("AppB")] {
            for key in [&b"AppA_1"[..], b"AppB_2", b"sess:3", b"sess", b"other", b""] {
                // What walking the rules with their regexes answers.
                let want = set
                    .rules()
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.applies(app))
                    .find_map(|(i, r)| r.regex.find(key).map(|m| (i, m.end())));
                let got = set.forward(app, key).map(|rw| (rw.rule, rw.prefix_len));
                assert_eq!(got, want, "{app:?} {key:?}");
            }
        }
    }

    /// The hash tag Redis Cluster hashes (the part inside the first `{…}`, if non-empty).
    fn hash_tag(key: &[u8]) -> &[u8] {
        if let Some(open) = key.iter().position(|&c| c == b'{') {
            if let Some(len) = key[open + 1..].iter().position(|&c| c == b'}') {
                if len > 0 {
                    return &key[open + 1..open + 1 + len];
                }
            }
        }
        key
    }

    #[test]
    fn hash_tagged_keys_keep_sharing_a_tag() {
        let set =
            RuleSet::compile(&[rule("aspnet", r"^(\{?)(AppA|AppB)_", "${1}shared_")]).unwrap();
        let keys: [&[u8]; 3] = [
            b"{AppA_s1}_SessionStateItemCollection",
            b"{AppA_s1}_WriteLock",
            b"{AppA_s1}_SessionTimeout",
        ];
        let tags: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| hash_tag(&set.forward(None, k).unwrap().apply(k)).to_vec())
            .collect();
        assert!(tags.iter().all(|t| t == b"shared_s1"), "{tags:?}");
    }

    #[test]
    fn strip_and_add_namespace() {
        let set =
            RuleSet::compile(&[rule("strip", "^tenant1:", ""), rule("ns", "^", "t2:")]).unwrap();
        assert_eq!(
            set.forward(None, b"tenant1:k").unwrap().apply(b"tenant1:k"),
            b"k"
        );
        assert_eq!(
            set.forward(None, b"other").unwrap().apply(b"other"),
            b"t2:other"
        );
    }

    #[test]
    fn first_rule_wins_and_apps_filter() {
        let mut a = rule("a", "^x_", "A_");
        a.apps = Some(vec!["appA".into()]);
        let set = RuleSet::compile(&[a, rule("b", "^x_", "B_")]).unwrap();
        assert_eq!(
            set.forward(Some("appA"), b"x_1").unwrap().to.as_ref(),
            b"A_"
        );
        assert_eq!(
            set.forward(Some("appB"), b"x_1").unwrap().to.as_ref(),
            b"B_"
        );
        assert_eq!(set.forward(None, b"x_1").unwrap().to.as_ref(), b"B_");
    }

    #[test]
    fn globs_rewrite_only_inside_the_literal_head() {
        let set = RuleSet::compile(&[rule("s", "^sess:", "shared:")]).unwrap();
        assert_eq!(
            set.forward_glob(None, b"sess:*", false)
                .unwrap()
                .apply(b"sess:*"),
            b"shared:*"
        );
        assert!(set.forward_glob(None, b"se*", false).is_none());
        assert!(set.forward_glob(None, b"*", false).is_none());
    }

    #[test]
    fn scan_prefixes_cover_every_match() {
        let set = RuleSet::compile(&[
            rule("sess", "^sess:", "s:"),
            rule("apps", r"^(\{?)(AppA|AppB)_", "${1}shared_"),
            rule("all", "^", "ns:"),
            rule("class", r"^[a-z]+:", "c:"),
        ])
        .unwrap();
        let p = |i: usize| set.rules()[i].scan_prefixes().map(|l| l.to_vec());
        assert_eq!(p(0), Some(vec![b"sess:".to_vec()]));
        let mut apps = p(1).unwrap();
        apps.sort();
        assert_eq!(apps, [&b"AppA_"[..], b"AppB_", b"{AppA_", b"{AppB_"]);
        assert_eq!(p(2), None, "a namespace for every key needs a full scan");
        assert_eq!(p(3), None);
    }

    #[test]
    fn bad_replace_names_the_group() {
        let e = RuleSet::compile(&[rule("r", "^(a)_", "${2}")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("${2}"), "{e}");
        assert!(RuleSet::compile(&[rule("r", "^(?P<app>a)_", "${app}x")]).is_ok());
        assert!(RuleSet::compile(&[rule("r", "^(", "")]).is_err());
    }
}
