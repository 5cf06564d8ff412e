//! Which keys move, and where: the SCAN passes that find the keys the rules rewrite, and, for
//! each key found, the name the rules give it (exactly what rekey would send upstream for the
//! app's own name), or why it stays.

use crate::rules::{glob, RuleConfig, RuleSet};

/// More literal prefixes than this in all (a case-insensitive prefix, long alternations) and
/// one full scan is cheaper than a SCAN pass per prefix.
const MAX_PASSES: usize = 8;

/// One walk over a node's keyspace: `SCAN … MATCH <glob>`, or every key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    Match(Vec<u8>),
    Full,
}

impl Pass {
    pub fn describe(&self) -> String {
        match self {
            Pass::Match(g) => format!("MATCH {}", crate::migrate::show(g)),
            Pass::Full => "every key".into(),
        }
    }
}

/// What happens to one key a SCAN returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No rule that applies rewrites it (a SCAN MATCH glob is wider than a rule's regex).
    NotOurs,
    /// Move it to `target`.
    Move { rule: usize, target: Vec<u8> },
    /// A rule matches, and the key stays where it is.
    Stay { rule: usize, why: Stay },
    /// A rule matches, but moving the key would not be safe: its new name would match a rule
    /// again, and is under no upstream prefix, so a second run would move it a second time.
    Unsafe { rule: usize, target: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stay {
    /// The rule gives it its own name.
    Unchanged,
    /// Its rule rewrites its own results (`match = '^'`), and it starts with a rule's
    /// upstream prefix: it may be a name rekey already wrote (or one a previous run moved),
    /// so it is never moved (tenants' namespaces).
    UpstreamName,
}

/// The rules as the migration uses them, for one client identity.
pub struct Plan<'r> {
    rules: &'r RuleSet,
    app: Option<&'r str>,
    /// Every rule's fixed, non-empty upstream prefix (of any app): names under one of these
    /// may have been written by rekey.
    upstream_prefixes: Vec<Vec<u8>>,
    passes: Vec<Pass>,
}

impl<'r> Plan<'r> {
    pub fn new(rules: &'r RuleSet, app: Option<&'r str>) -> Plan<'r> {
        let mut upstream_prefixes: Vec<Vec<u8>> = rules
            .rules()
            .iter()
            .filter_map(|r| r.fixed_replacement())
            .filter(|p| !p.is_empty())
            .collect();
        upstream_prefixes.sort();
        upstream_prefixes.dedup();
        Plan {
            rules,
            app,
            upstream_prefixes,
            passes: passes(rules, app),
        }
    }

    /// The rules that apply to this identity, by index.
    pub fn applying(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.rules.rules().len()).filter(|&i| self.rules.rules()[i].applies(self.app))
    }

    /// The SCAN passes that together find every key a rule moves.
    pub fn passes(&self) -> &[Pass] {
        &self.passes
    }

    pub fn decide(&self, key: &[u8]) -> Decision {
        let Some(rw) = self.rules.forward(self.app, key) else {
            return Decision::NotOurs;
        };
        let rule = rw.rule;
        let target = rw.apply(key);
        if target == key {
            return Decision::Stay {
                rule,
                why: Stay::Unchanged,
            };
        }
        if self.rules.forward(self.app, &target).is_none() {
            // The new name is no rule's: the next run leaves it alone.
            return Decision::Move { rule, target };
        }
        // The rules rewrite their own results (`match = '^'`): a key under an upstream prefix
        // may be one rekey wrote or a previous run moved, and is never moved; a new name
        // under one is left alone by the next run for the same reason.
        if self.under_upstream_prefix(key) {
            return Decision::Stay {
                rule,
                why: Stay::UpstreamName,
            };
        }
        if self.under_upstream_prefix(&target) {
            return Decision::Move { rule, target };
        }
        Decision::Unsafe { rule, target }
    }

    fn under_upstream_prefix(&self, key: &[u8]) -> bool {
        self.upstream_prefixes.iter().any(|p| key.starts_with(p))
    }
}

/// The passes for the rules that apply to `app`: one `MATCH <prefix>*` per literal prefix
/// (a prefix covered by a shorter one is left out), or a single full scan when a rule has no
/// literal prefix or there are too many.
fn passes(rules: &RuleSet, app: Option<&str>) -> Vec<Pass> {
    let mut prefixes: Vec<Vec<u8>> = Vec::new();
    for rule in rules.rules().iter().filter(|r| r.applies(app)) {
        match rule.scan_prefixes() {
            Some(list) => prefixes.extend(list.iter().cloned()),
            None => return vec![Pass::Full],
        }
    }
    prefixes.sort();
    prefixes.dedup();
    let kept: Vec<Vec<u8>> = prefixes
        .iter()
        .filter(|p| {
            !prefixes
                .iter()
                .any(|q| q.len() < p.len() && p.starts_with(q))
        })
        .cloned()
        .collect();
    let merged = merge(kept);
    if merged.len() > MAX_PASSES {
        return vec![Pass::Full];
    }
    merged.iter().map(|p| Pass::Match(class_glob(p))).collect()
}

/// A prefix as a sequence of byte sets: a glob with a class where the set has several bytes.
type Shape = Vec<Vec<u8>>;

/// Folds prefixes of the same length that differ in one position into one shape with a class
/// there (`AppA_`, `AppB_` → `App[AB]_`; a case-insensitive `s-x:` → `[Ss]-[Xx]:`),
/// so that fewer SCAN passes walk the keyspace. Exact: the shapes match the same names.
fn merge(prefixes: Vec<Vec<u8>>) -> Vec<Shape> {
    let mut shapes: Vec<Shape> = prefixes
        .into_iter()
        .map(|p| p.into_iter().map(|b| vec![b]).collect())
        .collect();
    'again: loop {
        for i in 0..shapes.len() {
            for j in i + 1..shapes.len() {
                let (a, b) = (&shapes[i], &shapes[j]);
                if a.len() != b.len() {
                    continue;
                }
                let differ: Vec<usize> = (0..a.len()).filter(|&k| a[k] != b[k]).collect();
                if let [k] = differ[..] {
                    let other = shapes.remove(j);
                    let set = &mut shapes[i][k];
                    set.extend_from_slice(&other[k]);
                    set.sort_unstable();
                    set.dedup();
                    continue 'again;
                }
            }
        }
        return shapes;
    }
}

/// The glob `shape*`, every byte escaped so it matches only itself.
fn class_glob(shape: &Shape) -> Vec<u8> {
    let mut g = Vec::new();
    for set in shape {
        match set[..] {
            [one] => g.extend(glob::escape(&[one])),
            _ => {
                g.push(b'[');
                for &b in set {
                    if matches!(b, b']' | b'\\' | b'^' | b'-' | b'[') {
                        g.push(b'\\');
                    }
                    g.push(b);
                }
                g.push(b']');
            }
        }
    }
    g.push(b'*');
    g
}

/// The rules that undo `rules` for `app` (`migrate --reverse`): each rule that applies, whose
/// `match` is one literal prefix `P` and whose `replace` is a fixed, non-empty `R`, becomes
/// `^R` → `P`. Any other rule that applies cannot be undone by a machine: the error names it
/// and says what to do instead.
pub fn reverse(rules: &RuleSet, app: Option<&str>) -> Result<RuleSet, String> {
    let mut out: Vec<RuleConfig> = Vec::new();
    for rule in rules.rules().iter().filter(|r| r.applies(app)) {
        let name = &rule.name;
        let why = |what: &str| {
            format!(
                "rule {name:?} cannot be reversed automatically: {what}; write the inverse rule in a config of its own and run `rekey -c THAT migrate`"
            )
        };
        let from = rule
            .literal_match()
            .ok_or_else(|| why("its match is not one literal prefix"))?;
        let to = rule
            .fixed_replacement()
            .ok_or_else(|| why("its replace uses captures"))?;
        if to.is_empty() {
            return Err(why(
                "it strips its prefix, so every key would match the reverse",
            ));
        }
        let (Ok(from), Ok(to)) = (std::str::from_utf8(from), std::str::from_utf8(&to)) else {
            return Err(why("its prefixes are not UTF-8"));
        };
        let pattern = format!("^{}", regex::escape(to));
        if let Some(other) = out.iter().find(|r| r.pattern == pattern) {
            return Err(format!(
                "rules {:?} and {name:?} both write under {to:?}: --reverse cannot tell whose keys are whose (run it with --app, or write the inverse rule in a config of its own)",
                other.name.trim_end_matches(" (reverse)")
            ));
        }
        out.push(RuleConfig {
            name: format!("{name} (reverse)"),
            pattern,
            replace: from.replace('$', "$$"),
            apps: rule.apps().map(|a| a.to_vec()),
            channels: false,
        });
    }
    RuleSet::compile(&out).map_err(|e| e.to_string())
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

    fn set(rules: &[RuleConfig]) -> RuleSet {
        RuleSet::compile(rules).unwrap()
    }

    #[test]
    fn passes_follow_the_literal_prefixes() {
        let rules = set(&[
            rule("aspnet", r"^(\{?)(AppA|AppB)_", "${1}shared_"),
            rule("sess", "^sess:", "s:"),
            rule("sess2", "^sess:old:", "s:"),
        ]);
        let mut got: Vec<String> = Plan::new(&rules, None)
            .passes()
            .iter()
            .map(Pass::describe)
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "MATCH \"App[AB]_*\"",
                "MATCH \"sess:*\"",
                "MATCH \"{App[AB]_*\""
            ]
        );
        let all = set(&[rule("sess", "^sess:", "s:"), rule("ns", "^", "t2:")]);
        assert_eq!(Plan::new(&all, None).passes(), [Pass::Full]);
        // Unicode case folding: `ſ` (U+017F) is an `s` too.
        let ci = set(&[rule("ci", "^(?i)s-x:", "s:")]);
        assert_eq!(
            Plan::new(&ci, None).passes(),
            [
                Pass::Match(b"[Ss]-[Xx]:*".to_vec()),
                Pass::Match("ſ-[Xx]:*".as_bytes().to_vec())
            ]
        );
        let ci = set(&[rule("ci", "^(?i)session:", "s:")]);
        assert_eq!(
            Plan::new(&ci, None).passes(),
            [Pass::Full],
            "too many prefixes"
        );
        let glob = set(&[rule("g", r"^a\*b\[", "x")]);
        assert_eq!(
            Plan::new(&glob, None).passes(),
            [Pass::Match(b"a\\*b\\[*".to_vec())]
        );
    }

    /// Each pass's glob matches exactly the names the rules' prefixes start.
    #[test]
    fn merged_globs_match_what_the_prefixes_match() {
        let rules = set(&[
            rule("aspnet", r"^(\{?)(AppA|AppB|Ap]A)_", "${1}shared_"),
            rule("ci", "^(?i)s-x:", "s:"),
        ]);
        let plan = Plan::new(&rules, None);
        let globs: Vec<Vec<u8>> = plan
            .passes()
            .iter()
            .map(|p| match p {
                Pass::Match(g) => g.clone(),
                Pass::Full => panic!("a full pass"),
            })
            .collect();
        assert!(globs.len() < 8, "{:?}", plan.passes());
        let names: [&[u8]; 12] = [
            b"AppA_1", b"AppB_1", b"Ap]A_1", b"{AppA_1", b"{Ap]A_", b"S-X:1", b"s-x:", b"AppC_1",
            b"ApA_1", b"s_x:1", b"S-Y:1", b"App]_1",
        ];
        for name in names {
            let by_glob = globs.iter().any(|g| glob::matches(g, name));
            let by_rule = rules.rules().iter().any(|r| r.matches(name));
            assert_eq!(by_glob, by_rule, "{}", crate::migrate::show(name));
        }
    }

    #[test]
    fn decisions() {
        let rules = set(&[rule("aspnet", r"^(\{?)(AppA|AppB)_", "${1}shared_")]);
        let plan = Plan::new(&rules, None);
        assert_eq!(
            plan.decide(b"{AppA_1}_Data"),
            Decision::Move {
                rule: 0,
                target: b"{shared_1}_Data".to_vec()
            }
        );
        assert_eq!(plan.decide(b"AppC_1"), Decision::NotOurs);
        assert_eq!(plan.decide(b"shared_1"), Decision::NotOurs);
    }

    #[test]
    fn upstream_names_never_move_twice() {
        let rules = set(&[rule("ns", "^", "t2:")]);
        let plan = Plan::new(&rules, None);
        assert_eq!(
            plan.decide(b"k"),
            Decision::Move {
                rule: 0,
                target: b"t2:k".to_vec()
            }
        );
        assert!(matches!(
            plan.decide(b"t2:k"),
            Decision::Stay {
                why: Stay::UpstreamName,
                ..
            }
        ));
        // Another tenant's namespace is not this tenant's to take.
        let mut t1 = rule("t1", "^", "t1:");
        t1.apps = Some(vec!["T1".into()]);
        let mut t2 = rule("t2", "^", "t2:");
        t2.apps = Some(vec!["T2".into()]);
        let rules = set(&[t1, t2]);
        let plan = Plan::new(&rules, Some("T2"));
        assert!(matches!(plan.decide(b"t1:k"), Decision::Stay { .. }));
        assert!(matches!(plan.decide(b"k"), Decision::Move { rule: 1, .. }));
        // A prefix shortened to a part of itself: `appA:sess:1` is under the upstream prefix
        // `appA:`, but its new name `appA:1` is no rule's, so it moves.
        let shorter = set(&[rule("shorter", "^appA:sess:", "appA:")]);
        assert_eq!(
            Plan::new(&shorter, None).decide(b"appA:sess:1"),
            Decision::Move {
                rule: 0,
                target: b"appA:1".to_vec()
            }
        );
        let same = set(&[rule("same", "^x:", "x:")]);
        assert!(matches!(
            Plan::new(&same, None).decide(b"x:1"),
            Decision::Stay {
                why: Stay::Unchanged,
                ..
            }
        ));
    }

    #[test]
    fn a_target_that_matches_again_is_unsafe() {
        // `a1` becomes `ab1`, which the rule matches again (captures: no fixed prefix).
        let rules = set(&[rule("grow", "^(a)", "${1}b")]);
        assert!(matches!(
            Plan::new(&rules, None).decide(b"a1"),
            Decision::Unsafe { .. }
        ));
    }

    #[test]
    fn reverse_rules_undo_literal_ones() {
        let rules = set(&[rule("sess", "^sess:", "shared.+:")]);
        let back = reverse(&rules, None).unwrap();
        let rw = back.forward(None, b"shared.+:1").unwrap();
        assert_eq!(rw.apply(b"shared.+:1"), b"sess:1");
        assert!(back.forward(None, b"sharedxx:1").is_none());
        let e = reverse(
            &set(&[rule("aspnet", r"^(\{?)(AppA|AppB)_", "${1}shared_")]),
            None,
        )
        .unwrap_err();
        assert!(e.contains("aspnet") && e.contains("literal"), "{e}");
        let e = reverse(&set(&[rule("strip", "^t1:", "")]), None).unwrap_err();
        assert!(e.contains("strips"), "{e}");
        let e = reverse(
            &set(&[
                rule("a", "^AppA_", "shared_"),
                rule("b", "^AppB_", "shared_"),
            ]),
            None,
        )
        .unwrap_err();
        assert!(e.contains("whose keys"), "{e}");
    }
}
