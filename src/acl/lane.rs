//! What the forwarding lane asks of an ACL, answered ahead of time.
//!
//! The lane forwards a request without ever making it a `Request` (see
//! `proxy::session::lane`); it may take a request only when the ACL plainly allows it, and
//! it asks for every request of a pipeline. Walking the selectors each time (command bit, key
//! specs, key patterns) cost about a tenth of the lane's whole work per request, so an
//! [`Acl`] keeps its answer per command, worked out once when it is parsed: the command is
//! not the lane's to take, is taken as it is, or is taken when its one key (the first
//! argument) matches a pattern of the root selector. That last question is kept cheap too:
//! patterns that are short prefixes (`~AppA_*`) are compared as masked 8-byte words, kept
//! inline, with no loop over pattern structs.
//!
//! Everything here only decides whether the lane may take a request; a request it may not
//! take goes through the general path's full check ([`Acl::check`]), which gives Redis's
//! refusal. Measured with `benches/callgrind` (`acl-5-rules` against `none`).

use super::selector::Selector;
use super::Acl;
use crate::commands::{self, CommandSpec, ACL_KEYS_ELSEWHERE, ACL_NO_KEYS, NO_ACL};

/// The lane's answer for one command, one byte: [`GENERAL`], [`TAKE`], [`ANY_SELECTOR`], or
/// the need ([`KEY_READ`] | [`KEY_WRITE`], 1 to 3) of its one key (argument 1), which must
/// match a root selector pattern that allows that much.
///
/// [`KEY_READ`]: crate::commands::acl_table::KEY_READ
/// [`KEY_WRITE`]: crate::commands::acl_table::KEY_WRITE
type Verdict = u8;
/// Not for the lane: the general path checks it (and may refuse it).
const GENERAL: Verdict = 0;
/// Allowed whatever its arguments.
const TAKE: Verdict = 4;
/// Allowed when one selector allows it with its key (the selectors are walked).
const ANY_SELECTOR: Verdict = 5;
/// Added to a need: the root selector's patterns for it are not all short prefixes, and are
/// matched as patterns.
const WALK: Verdict = 0x10;

/// The lane's answers for every command of the table, for one ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LaneGate {
    /// One per command id ([`CommandSpec::id`]); id 0, a command the table does not know, is
    /// [`GENERAL`].
    verdicts: Box<[Verdict]>,
    /// Per need (1 to 3), the root selector's patterns that allow it as words (when the
    /// verdict is that need; with [`WALK`] the patterns are matched as patterns).
    words: [Words; 4],
}

/// Most prefixes [`Words`] holds.
const MAX_WORDS: usize = 4;

/// Key patterns that are prefixes of at most 8 bytes, as `(word, mask)`: a key of 8 bytes or
/// more matches one when its first 8 bytes, masked, equal the word. Kept inline, not behind a
/// pointer, and always [`MAX_WORDS`] long (an unused entry matches nothing): the lane reads
/// them for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Words([(u64, u64); MAX_WORDS]);

impl Words {
    /// Matches no key: a mask of 0 leaves 0, never 1.
    const NONE: (u64, u64) = (1, 0);

    /// The words of `patterns`, `None` unless every one is a short prefix (and there are at
    /// most [`MAX_WORDS`]).
    fn of(patterns: impl Iterator<Item = Option<(u64, u64)>>) -> Option<Words> {
        let mut out = [Words::NONE; MAX_WORDS];
        for (i, word) in patterns.enumerate() {
            *out.get_mut(i)? = word?;
        }
        Some(Words(out))
    }

    /// Whether `key` matches one of the words; `None` for a key shorter than 8 bytes.
    #[inline(always)]
    fn matches(&self, key: &[u8]) -> Option<bool> {
        let head = u64::from_le_bytes(*key.first_chunk::<8>()?);
        Some(self.0.iter().any(|&(value, mask)| head & mask == value))
    }
}

impl LaneGate {
    /// The answers for the ACL made of `root` and `selectors`.
    pub(super) fn of(root: &Selector, selectors: &[Selector]) -> LaneGate {
        let mut verdicts = vec![GENERAL; commands::specs().len() + 1];
        for spec in commands::specs() {
            verdicts[spec.id as usize] = verdict(root, selectors, spec);
        }
        let words: [Option<Words>; 4] = std::array::from_fn(|need| {
            let need = need as u8;
            let allowing = root.keys.iter().filter(|p| p.perms & need == need);
            Words::of(allowing.map(|p| p.word()))
        });
        // A need whose patterns are not all words is walked.
        for verdict in verdicts.iter_mut() {
            if matches!(*verdict, 1..=3) && words[*verdict as usize].is_none() {
                *verdict |= WALK;
            }
        }
        let words = words.map(|w| w.unwrap_or(Words([Words::NONE; MAX_WORDS])));
        LaneGate {
            verdicts: verdicts.into_boxed_slice(),
            words,
        }
    }
}

impl Acl {
    /// The lane's check: true when a selector certainly allows `spec` with argument 1
    /// `arg1` (its one key, when it has keys) without a look at any other argument. False
    /// sends the request the general way, whose [`Acl::check`] decides.
    #[inline(always)]
    pub fn lane_permits(&self, spec: &CommandSpec, arg1: Option<&[u8]>) -> bool {
        let verdict = self.lane.verdicts.get(spec.id as usize).copied();
        let verdict = verdict.unwrap_or(GENERAL);
        if let (1..=3, Some(key)) = (verdict, arg1) {
            if let Some(allowed) = self.lane.words[verdict as usize].matches(key) {
                return allowed;
            }
        }
        verdict == TAKE || (verdict != GENERAL && self.lane_walk(verdict, spec, arg1))
    }

    /// [`Acl::lane_permits`] where the verdict does not tell at once: the patterns (or the
    /// selectors) are walked.
    #[inline(never)]
    fn lane_walk(&self, verdict: Verdict, spec: &CommandSpec, arg1: Option<&[u8]>) -> bool {
        match (verdict, arg1) {
            (need, Some(key)) if matches!(need & !WALK, 1..=3) => {
                self.root.allows_key(key, need & !WALK)
            }
            (ANY_SELECTOR, _) => self.selectors().any(|s| selector_permits(s, spec, arg1)),
            _ => false,
        }
    }
}

/// The verdict for `spec`: taken outright when a selector allows the command with no key
/// to check; by its key when only the root selector could allow it; else walked or left to
/// the general path.
fn verdict(root: &Selector, selectors: &[Selector], spec: &CommandSpec) -> Verdict {
    if spec.acl == NO_ACL {
        return GENERAL;
    }
    let all = || std::iter::once(root).chain(selectors);
    let allows = |s: &Selector| s.allows_command(spec.acl as usize, None);
    let outright = |s: &Selector| match spec.acl_keys {
        ACL_NO_KEYS => true,
        ACL_KEYS_ELSEWHERE => s.all_keys && s.all_channels,
        _ => s.all_keys,
    };
    if all().any(|s| allows(s) && outright(s)) {
        return TAKE;
    }
    if spec.acl_keys == ACL_NO_KEYS || spec.acl_keys == ACL_KEYS_ELSEWHERE {
        return GENERAL;
    }
    match (selectors.is_empty(), allows(root)) {
        (true, true) => spec.acl_keys,
        (false, _) if all().any(allows) => ANY_SELECTOR,
        _ => GENERAL,
    }
}

/// One selector's answer for a command whose one key is argument 1.
fn selector_permits(sel: &Selector, spec: &CommandSpec, arg1: Option<&[u8]>) -> bool {
    sel.allows_command(spec.acl as usize, None)
        && arg1.is_some_and(|key| sel.allows_key(key, spec.acl_keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::acl_table::{KEY_READ, KEY_WRITE};
    use crate::protocol::Request;

    /// ACLs of every shape the gate treats differently: words, a glob, a long prefix, more
    /// prefixes than [`MAX_WORDS`], read/write patterns, selectors, first-arg rules.
    const ACLS: &[&str] = &[
        "+@all -@dangerous -debug ~key:* ~counter:*",
        "+@all ~AppB_*",
        "+@all ~App?_*",
        "+@all ~AVeryLongPrefix_*",
        "+@all ~a* ~b* ~c* ~d* ~e*",
        "+@all %R~r* %W~w* ~rw*",
        "+@read -@write ~*",
        "-@all +get +set ~k* (+@all ~other*) (+mget %R~m*)",
        "-@all +client|id +select|0 +get|x ~*",
        "nocommands ~*",
        "+@all resetkeys",
    ];

    /// Keys long and short, matching and not.
    const KEYS: &[&str] = &[
        "key:000000012345",
        "key:1",
        "counter:12",
        "AppB_session_1",
        "AppC_session_1",
        "AVeryLongPrefix_x",
        "AVeryLongPrefiy_x",
        "e_12345678",
        "rw_123456789",
        "r_12345678",
        "w_12345678",
        "other_12345678",
        "m_123456789",
        "k",
        "",
    ];

    /// `spec` called with `key` as argument 1 and as many more arguments as its arity asks.
    fn request(spec: &CommandSpec, key: &str) -> Request {
        let arity = crate::commands::acl_table::ACL_COMMANDS[spec.acl as usize].arity;
        let argc = arity.unsigned_abs().max(2) as usize;
        let mut args = vec![spec.name.to_string(), key.to_string()];
        args.resize(argc, "1".to_string());
        Request::from_args(args)
    }

    #[test]
    fn what_the_lane_takes_the_full_check_allows() {
        for text in ACLS {
            let acl = Acl::parse(text).unwrap();
            for spec in commands::specs().filter(|s| s.acl != NO_ACL && !s.name.contains('|')) {
                for key in KEYS {
                    let req = request(spec, key);
                    if acl.lane_permits(spec, req.arg(1)) {
                        assert_eq!(
                            acl.check(spec, &req),
                            Ok(()),
                            "{text}: the lane took {} {key}",
                            spec.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_lane_takes_what_it_can_tell_by_words_and_by_walking() {
        let get = commands::lookup(&Request::from_args(["GET", "k"]));
        let set = commands::lookup(&Request::from_args(["SET", "k", "v"]));
        assert_eq!(get.acl_keys, KEY_READ);
        assert_eq!(set.acl_keys, KEY_READ | KEY_WRITE);
        let takes = |text: &str, spec: &CommandSpec, key: &str| {
            Acl::parse(text)
                .unwrap()
                .lane_permits(spec, Some(key.as_bytes()))
        };
        // Words: long keys by their first 8 bytes, short keys by their patterns.
        assert!(takes("+@all ~key:* ~counter:*", get, "counter:000000001"));
        assert!(takes("+@all ~key:* ~counter:*", get, "key:1"));
        assert!(!takes("+@all ~key:* ~counter:*", get, "keys:00000001"));
        // Patterns that are not words are walked.
        assert!(takes("+@all ~App?_*", get, "AppC_session"));
        assert!(!takes("+@all ~App?_*", get, "AppCC_session"));
        assert!(takes("+@all ~AVeryLongPrefix_*", get, "AVeryLongPrefix_1"));
        assert!(!takes("+@all ~AVeryLongPrefix_*", get, "AVeryLongPrefiy_1"));
        assert!(takes("+@all ~a* ~b* ~c* ~d* ~e*", get, "e_12345678"));
        // What a pattern allows: GET reads, SET (which may read with GET) needs both.
        assert!(takes("+@all %R~r*", get, "r_12345678"));
        assert!(!takes("+@all %W~w*", get, "w_12345678"));
        assert!(!takes("+@all %W~w*", set, "w_12345678"));
        assert!(takes("+@all ~rw*", set, "rw_12345678"));
        // Selectors: any one may allow it.
        let acl = "-@all +get ~k* (+@all ~other*)";
        assert!(takes(acl, get, "other_12345678"));
        assert!(takes(acl, set, "other_12345678"));
        assert!(!takes(acl, set, "k_12345678"));
        assert!(takes(acl, get, "k_12345678"));
    }
}
