//! One ACL selector: the commands, keys and channels one set of rules allows, built rule by
//! rule as Redis's `ACLSetSelector` builds it, and checked as `ACLSelectorCheckCmd` checks.
//! A user is a root selector plus any number of `(…)` selectors; a request passes when one
//! of them allows all of it (see [`super::Acl`]).

use crate::commands::acl_table::{ACL_COMMANDS, CATEGORIES, KEY_READ, KEY_WRITE};
use crate::rules::glob;

/// Words of the command bit set: one bit per [`ACL_COMMANDS`] entry.
const WORDS: usize = ACL_COMMANDS.len().div_ceil(64);

/// Why a rule was refused: Redis's own reason texts.
pub(super) const UNKNOWN: &str = "Unknown command or category name in ACL";
pub(super) const SYNTAX: &str = "Syntax error";
const AFTER_ALLKEYS: &str = "Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns";
const AFTER_ALLCHANNELS: &str = "Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels";
const SUB_FIRST_ARG: &str = "Allowing first-arg of a subcommand is not supported";

/// A key pattern and what it allows (`~p`: both, `%R~p`: read, `%W~p`: write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyPattern {
    pub(super) perms: u8,
    pub(super) pattern: Vec<u8>,
    /// `pattern` is `prefix*` with no other special character: matched as a prefix.
    prefix: Option<usize>,
    /// A prefix of at most 8 bytes as a little-endian word and its mask: a key of 8 bytes or
    /// more is matched with one load and one compare (the lane checks one key per request).
    word: Option<(u64, u64)>,
}

impl KeyPattern {
    fn new(perms: u8, pattern: &[u8]) -> KeyPattern {
        let body = pattern.strip_suffix(b"*");
        let plain = body.is_some_and(|b| !b.iter().any(|c| b"*?[]\\".contains(c)));
        let prefix = plain.then(|| pattern.len() - 1);
        let word = prefix.filter(|&n| n <= 8).map(|n| {
            let mut bytes = [0u8; 8];
            bytes[..n].copy_from_slice(&pattern[..n]);
            let mask = if n == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * n)) - 1
            };
            (u64::from_le_bytes(bytes), mask)
        });
        KeyPattern {
            perms,
            pattern: pattern.to_vec(),
            prefix,
            word,
        }
    }

    /// The pattern as `(word, mask)` when it is a prefix of at most 8 bytes.
    pub(super) fn word(&self) -> Option<(u64, u64)> {
        self.word
    }

    #[inline]
    fn matches(&self, key: &[u8]) -> bool {
        if let (Some((value, mask)), Some(head)) = (self.word, key.first_chunk::<8>()) {
            return u64::from_le_bytes(*head) & mask == value;
        }
        match self.prefix {
            // Prefixes are short: a byte loop beats a call to memcmp.
            Some(n) => key.len() >= n && self.pattern[..n].iter().zip(key).all(|(a, b)| a == b),
            None => glob::matches(&self.pattern, key),
        }
    }
}

/// What one selector allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// One bit per [`ACL_COMMANDS`] entry.
    commands: [u64; WORDS],
    /// Set by `+@all`/`allcommands` only: commands rekey's table does not know (a newer
    /// Redis's) are allowed too, as Redis allows commands added after the rules were set.
    pub(super) all_commands: bool,
    /// `+cmd|arg` of a command that is not a container: that first argument only.
    first_args: Vec<(u16, Vec<Vec<u8>>)>,
    /// The command rules as written, for `ACL LIST` (a later rule for the same name replaces
    /// an earlier one; `±@all` starts over).
    pub(super) command_rules: Vec<String>,
    pub(super) all_keys: bool,
    pub(super) keys: Vec<KeyPattern>,
    pub(super) all_channels: bool,
    pub(super) channels: Vec<Vec<u8>>,
}

impl Selector {
    /// A selector that allows nothing (a new Redis user's, or a new `(…)` selector's).
    pub(super) fn empty() -> Selector {
        Selector {
            commands: [0; WORDS],
            all_commands: false,
            first_args: Vec::new(),
            command_rules: Vec::new(),
            all_keys: false,
            keys: Vec::new(),
            all_channels: false,
            channels: Vec::new(),
        }
    }

    /// `+@all ~* &*`: what every identity without an `acl` may do.
    pub(super) fn unrestricted() -> Selector {
        let mut s = Selector::empty();
        s.set_all(true);
        s.all_keys = true;
        s.all_channels = true;
        s
    }

    /// Applies one rule (`+get`, `~p*`, `resetchannels`, …); `Err` holds Redis's reason.
    pub(super) fn apply(&mut self, op: &str) -> Result<(), &'static str> {
        let lower = op.to_ascii_lowercase();
        match lower.as_str() {
            "allcommands" | "+@all" => self.set_all(true),
            "nocommands" | "-@all" => self.set_all(false),
            "allkeys" | "~*" => {
                self.all_keys = true;
                self.keys.clear();
            }
            "resetkeys" => {
                self.all_keys = false;
                self.keys.clear();
            }
            "allchannels" | "&*" => {
                self.all_channels = true;
                self.channels.clear();
            }
            "resetchannels" => {
                self.all_channels = false;
                self.channels.clear();
            }
            _ => return self.apply_pattern_or_command(op),
        }
        Ok(())
    }

    fn apply_pattern_or_command(&mut self, op: &str) -> Result<(), &'static str> {
        let bytes = op.as_bytes();
        match bytes.first() {
            Some(b'~') => self.add_key(KEY_READ | KEY_WRITE, &bytes[1..]),
            Some(b'%') => {
                let tilde = bytes.iter().position(|&c| c == b'~').ok_or(SYNTAX)?;
                let mut perms = 0;
                for &c in &bytes[1..tilde] {
                    perms |= match c.to_ascii_uppercase() {
                        b'R' => KEY_READ,
                        b'W' => KEY_WRITE,
                        _ => return Err(SYNTAX),
                    };
                }
                if perms == 0 {
                    return Err(SYNTAX);
                }
                self.add_key(perms, &bytes[tilde + 1..])
            }
            Some(b'&') => {
                if self.all_channels {
                    return Err(AFTER_ALLCHANNELS);
                }
                let ch = bytes[1..].to_vec();
                if !self.channels.contains(&ch) {
                    self.channels.push(ch);
                }
                Ok(())
            }
            Some(b'+') => self.command_rule(&op[1..], true),
            Some(b'-') => self.command_rule(&op[1..], false),
            _ => Err(SYNTAX),
        }
    }

    fn add_key(&mut self, perms: u8, pattern: &[u8]) -> Result<(), &'static str> {
        if self.all_keys {
            return Err(AFTER_ALLKEYS);
        }
        if perms == KEY_READ | KEY_WRITE && pattern == b"*" {
            self.all_keys = true;
            self.keys.clear();
            return Ok(());
        }
        // The same pattern again widens what it allows.
        match self.keys.iter_mut().find(|k| k.pattern == pattern) {
            Some(k) => k.perms |= perms,
            None => self.keys.push(KeyPattern::new(perms, pattern)),
        }
        Ok(())
    }

    /// `±@category`, `±command`, `±container|sub`, `+command|first-arg`, resolved as
    /// Redis's `ACLSetSelector` resolves them (the last `|` splits a first argument off).
    fn command_rule(&mut self, name: &str, allow: bool) -> Result<(), &'static str> {
        let lower = name.to_ascii_lowercase();
        if let Some(cat) = lower.strip_prefix('@') {
            let bit = CATEGORIES.iter().position(|c| *c == cat).ok_or(UNKNOWN)?;
            for (i, c) in ACL_COMMANDS.iter().enumerate() {
                if c.categories & (1 << bit) != 0 {
                    self.set_command(i, allow);
                }
            }
        } else if !allow || !lower.contains('|') {
            let id = index_of(&lower).ok_or(UNKNOWN)?;
            self.set_command(id, allow);
        } else {
            self.pipe_rule(&lower)?;
        }
        self.note_rule(&lower, allow);
        Ok(())
    }

    /// `+container|sub` (that subcommand) or `+command|first-arg` (that first argument of a
    /// command without subcommands).
    fn pipe_rule(&mut self, lower: &str) -> Result<(), &'static str> {
        let (cmd, arg) = lower.rsplit_once('|').ok_or(UNKNOWN)?;
        let id = index_of(cmd).ok_or(UNKNOWN)?;
        if cmd.contains('|') {
            return Err(SUB_FIRST_ARG);
        }
        if arg.is_empty() {
            return Err(SYNTAX);
        }
        if ACL_COMMANDS[id].container {
            let sub = index_of(lower).ok_or(UNKNOWN)?;
            self.set_command(sub, true);
            return Ok(());
        }
        let arg = arg.as_bytes().to_vec();
        match self.first_args.iter_mut().find(|(c, _)| *c as usize == id) {
            Some((_, args)) if !args.contains(&arg) => args.push(arg),
            Some(_) => {}
            None => self.first_args.push((id as u16, vec![arg])),
        }
        Ok(())
    }

    /// A command (a container with every subcommand) on or off; its first-arg rules go.
    fn set_command(&mut self, id: usize, allow: bool) {
        self.set(id, allow);
        self.first_args.retain(|(c, _)| *c as usize != id);
        if ACL_COMMANDS[id].container {
            let prefix = format!("{}|", ACL_COMMANDS[id].name);
            for (i, c) in ACL_COMMANDS.iter().enumerate() {
                if c.name.starts_with(&prefix) {
                    self.set(i, allow);
                }
            }
        }
    }

    fn set_all(&mut self, allow: bool) {
        self.commands = [if allow { u64::MAX } else { 0 }; WORDS];
        self.all_commands = allow;
        self.first_args.clear();
        self.command_rules.clear();
    }

    fn set(&mut self, id: usize, allow: bool) {
        if allow {
            self.commands[id / 64] |= 1 << (id % 64);
        } else {
            self.commands[id / 64] &= !(1 << (id % 64));
        }
    }

    /// Remembers a command rule for `ACL LIST`: a later rule for the same name replaces an
    /// earlier one, as Redis 7.2 keeps them.
    fn note_rule(&mut self, lower: &str, allow: bool) {
        self.command_rules.retain(|r| &r[1..] != lower);
        let sign = if allow { '+' } else { '-' };
        self.command_rules.push(format!("{sign}{lower}"));
    }

    /// Whether command `id` may run with `first_arg` (its argument 1, for first-arg rules).
    pub(super) fn allows_command(&self, id: usize, first_arg: Option<&[u8]>) -> bool {
        if self.commands[id / 64] & (1 << (id % 64)) != 0 {
            return true;
        }
        let Some(arg) = first_arg else {
            return false;
        };
        self.first_args
            .iter()
            .find(|(c, _)| *c as usize == id)
            .is_some_and(|(_, args)| args.iter().any(|a| a.eq_ignore_ascii_case(arg)))
    }

    /// Whether a key used as `need` ([`KEY_READ`] | [`KEY_WRITE`]) matches a pattern that
    /// allows at least that.
    #[inline]
    pub(super) fn allows_key(&self, key: &[u8], need: u8) -> bool {
        self.all_keys
            || self
                .keys
                .iter()
                .any(|p| p.perms & need == need && p.matches(key))
    }

    /// Whether a channel (or, for `PSUBSCRIBE`, a pattern, which must equal an allowed one)
    /// is allowed.
    pub(super) fn allows_channel(&self, channel: &[u8], is_pattern: bool) -> bool {
        self.all_channels
            || self.channels.iter().any(|p| {
                if is_pattern {
                    p == channel
                } else {
                    glob::matches(p, channel)
                }
            })
    }
}

/// Index of the ACL command named `lower`.
fn index_of(lower: &str) -> Option<usize> {
    ACL_COMMANDS.binary_search_by(|c| c.name.cmp(lower)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> usize {
        index_of(name).unwrap()
    }

    fn sel(rules: &[&str]) -> Selector {
        let mut s = Selector::empty();
        for r in rules {
            s.apply(r).unwrap();
        }
        s
    }

    #[test]
    fn categories_commands_and_subcommands() {
        let s = sel(&["+@all", "-@dangerous", "+config|get"]);
        assert!(s.allows_command(id("get"), None));
        assert!(!s.allows_command(id("flushall"), None));
        assert!(s.allows_command(id("config|get"), None));
        assert!(!s.allows_command(id("config|set"), None));
        let s = sel(&["-@all", "+client"]);
        assert!(s.allows_command(id("client|list"), None));
        assert!(!s.allows_command(id("get"), None));
        assert!(!s.all_commands);
    }

    #[test]
    fn first_args_of_plain_commands_only() {
        let s = sel(&["+select|0"]);
        assert!(s.allows_command(id("select"), Some(b"0")));
        assert!(!s.allows_command(id("select"), Some(b"1")));
        let mut s = Selector::empty();
        assert_eq!(s.apply("-select|0"), Err(UNKNOWN));
        assert_eq!(s.apply("+config|get|x"), Err(SUB_FIRST_ARG));
        assert_eq!(s.apply("+config|nosuch"), Err(UNKNOWN));
        assert_eq!(s.apply("+@nosuch"), Err(UNKNOWN));
        assert_eq!(s.apply("+get)"), Err(UNKNOWN));
    }

    #[test]
    fn key_patterns_with_permissions() {
        let s = sel(&["%R~r*", "%W~w*", "~both"]);
        assert!(s.allows_key(b"r1", KEY_READ));
        assert!(!s.allows_key(b"r1", KEY_WRITE));
        assert!(s.allows_key(b"w1", KEY_WRITE));
        assert!(!s.allows_key(b"w1", KEY_READ | KEY_WRITE));
        assert!(s.allows_key(b"both", KEY_READ | KEY_WRITE));
        assert!(s.allows_key(b"r1", 0));
        assert!(!s.allows_key(b"x", 0));
        // Keys long enough for the one-word compare, and prefixes of every length up to it.
        for prefix in ["", "k", "key:", "12345678", "123456789"] {
            let s = sel(&[&format!("~{prefix}*")]);
            assert!(
                s.allows_key(format!("{prefix}0000000000").as_bytes(), 3),
                "{prefix}"
            );
            assert!(s.allows_key(prefix.as_bytes(), 3), "{prefix}");
            if !prefix.is_empty() {
                assert!(!s.allows_key(format!("x{prefix}0000000000").as_bytes(), 3));
                assert!(!s.allows_key(&prefix.as_bytes()[1..], 3));
            }
        }
        let mut s = sel(&["allkeys"]);
        assert_eq!(s.apply("%R~x"), Err(AFTER_ALLKEYS));
        let mut s = sel(&["%R~*"]);
        assert!(!s.all_keys);
        assert_eq!(s.apply("~x"), Ok(()));
        assert_eq!(s.apply("%X~a"), Err(SYNTAX));
        assert_eq!(s.apply("%~a"), Err(SYNTAX));
    }

    #[test]
    fn channels_glob_but_patterns_are_literal() {
        let s = sel(&["&news.*"]);
        assert!(s.allows_channel(b"news.eu", false));
        assert!(!s.allows_channel(b"news.eu", true));
        assert!(s.allows_channel(b"news.*", true));
        let mut s = sel(&["allchannels"]);
        assert_eq!(s.apply("&x"), Err(AFTER_ALLCHANNELS));
    }

    #[test]
    fn later_rule_for_a_name_replaces_the_earlier() {
        let s = sel(&["-@all", "+get", "-flushall", "+flushall"]);
        assert_eq!(s.command_rules, ["+get", "+flushall"]);
    }
}
