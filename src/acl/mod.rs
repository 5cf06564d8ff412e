//! Access control per identity, in the language of Redis 7's `ACL SETUSER`.
//!
//! Apps that share one Redis through rekey share its one upstream user: whatever that user may
//! do, each app could do to the others (`FLUSHALL`, `CLIENT PAUSE`, another app's keys). An
//! `acl = "…"` on a `[[users]]` or `[[apps]]` entry gives that identity its own Redis ACL,
//! which the proxy checks on the names the app sends, before any rule rewrites them, with
//! Redis's own replies (`-NOPERM …`) and `ACL LOG` entries ([`log`]).
//!
//! An [`Acl`] is what Redis keeps for a user's permissions: a root [`Selector`] and any number
//! of `(…)` selectors; a request is allowed when one selector allows its command, every key
//! it names (read or written, as the command's key specs say) and every channel. What a
//! command is (its ACL categories, arity, key specs) comes from
//! [`crate::commands::acl_table`], generated from Redis's `COMMAND INFO`.

pub mod describe;
mod lane;
pub mod log;
mod selector;

use crate::commands::acl_table::{AclCommand, ACL_COMMANDS, KEY_READ, KEY_WRITE, NOT_KEY};
use crate::commands::keys::{self, Find, Positions};
use crate::commands::{self, CommandSpec, Extra, NO_ACL};
use crate::protocol::Request;
pub use selector::Selector;
use smallvec::SmallVec;

/// A rule Redis would refuse, and where it is in the `acl` string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {number} ('{rule}', at byte {offset}): {reason}")]
pub struct AclError {
    /// 1-based, counting a `(…)` selector as one rule.
    pub number: usize,
    /// Byte offset of the rule in the string.
    pub offset: usize,
    pub rule: String,
    pub reason: String,
}

/// What an identity may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    root: Selector,
    selectors: Vec<Selector>,
    /// The forwarding lane's answers, worked out from the selectors when they are set.
    lane: lane::LaneGate,
}

/// The selectors of an [`Acl`] while its rules are applied.
struct Selectors {
    root: Selector,
    selectors: Vec<Selector>,
}

/// What a refused request was refused for, in Redis's order of relevance (a command no
/// selector allows is reported only when no selector got further).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Denial {
    Command,
    Key,
    Channel,
    /// A command Redis refuses before it looks at ACLs unless its config enables it
    /// (`DEBUG`, `MODULE LOAD`), refused with Redis's text for that, not logged.
    Protected,
}

/// Commands Redis marks `PROTECTED` (`enable-debug-command`, `enable-module-command`, both
/// `no` by default): with that default Redis refuses them before its ACL check, so a client
/// whose ACL refuses them too gets that reply, as from Redis.
const PROTECTED: &[(&str, &str)] = &[
    ("debug", "enable-debug-command"),
    ("module|load", "enable-module-command"),
    ("module|loadex", "enable-module-command"),
    ("module|unload", "enable-module-command"),
];

/// A refusal: why, and of what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub kind: Denial,
    /// The argument refused (a key or channel); 0 for the command itself.
    pub arg: usize,
    /// The command's full name (`config|set`), as Redis names it in its reply.
    pub command: String,
}

/// Where a refusal happened, for `ACL LOG`'s `context`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Toplevel,
    Multi,
}

impl Context {
    pub fn name(self) -> &'static str {
        match self {
            Context::Toplevel => "toplevel",
            Context::Multi => "multi",
        }
    }
}

/// The texts of the Redis version rekey talks to: 7.2 reworded every `-NOPERM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Texts {
    /// Up to 7.0: `this user has no permissions to …`.
    V70,
    /// From 7.2: `User <name> has no permissions to …`, `No permissions to access a key`.
    V72,
}

impl Texts {
    /// The texts of Redis `version` (`7.0.15`); 7.0's for an unknown version.
    pub fn of(version: &str) -> Texts {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) >= (7, 2) {
            Texts::V72
        } else {
            Texts::V70
        }
    }
}

impl Denied {
    /// The error reply Redis gives for this refusal, without the leading `-`.
    pub fn error(&self, user: &str, texts: Texts) -> String {
        match (texts, self.kind) {
            (_, Denial::Protected) => {
                let option = PROTECTED
                    .iter()
                    .find(|(n, _)| *n == self.command)
                    .map_or("", |p| p.1);
                let name = self.command.split('|').next().unwrap_or_default();
                format!(
                    "ERR {} command not allowed. If the {option} option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.",
                    name.to_ascii_uppercase()
                )
            }
            (Texts::V70, Denial::Command) => format!(
                "NOPERM this user has no permissions to run the '{}' command",
                self.command
            ),
            (Texts::V70, Denial::Key) => {
                "NOPERM this user has no permissions to access one of the keys used as arguments"
                    .into()
            }
            (Texts::V70, Denial::Channel) => {
                "NOPERM this user has no permissions to access one of the channels used as arguments"
                    .into()
            }
            (Texts::V72, Denial::Command) => format!(
                "NOPERM User {user} has no permissions to run the '{}' command",
                self.command
            ),
            (Texts::V72, Denial::Key) => "NOPERM No permissions to access a key".into(),
            (Texts::V72, Denial::Channel) => "NOPERM No permissions to access a channel".into(),
        }
    }

    /// The refused key or channel as sent.
    fn object(&self, req: &Request) -> String {
        String::from_utf8_lossy(req.arg(self.arg).unwrap_or_default()).into_owned()
    }

    /// `ACL DRYRUN`'s answer for this refusal of `req`.
    pub fn dryrun(&self, req: &Request, user: &str, texts: Texts) -> String {
        let arg = || self.object(req);
        match (texts, self.kind) {
            (Texts::V70, Denial::Command | Denial::Protected) => format!(
                "This user has no permissions to run the '{}' command",
                self.command
            ),
            (Texts::V70, Denial::Key) => {
                format!("This user has no permissions to access the '{}' key", arg())
            }
            (Texts::V70, Denial::Channel) => format!(
                "This user has no permissions to access the '{}' channel",
                arg()
            ),
            (Texts::V72, Denial::Command | Denial::Protected) => format!(
                "User {user} has no permissions to run the '{}' command",
                self.command
            ),
            (Texts::V72, Denial::Key) => format!("No permissions to access the '{}' key", arg()),
            (Texts::V72, Denial::Channel) => {
                format!("No permissions to access the '{}' channel", arg())
            }
        }
    }

    /// `ACL LOG`'s `reason` and `object` for this refusal of `req`.
    pub fn log_fields(&self, req: &Request) -> (&'static str, String) {
        let arg = || self.object(req);
        match self.kind {
            Denial::Command | Denial::Protected => ("command", self.command.clone()),
            Denial::Key => ("key", arg()),
            Denial::Channel => ("channel", arg()),
        }
    }
}

/// Rules that set a Redis user's login, which rekey takes from the identity's `password`.
const LOGIN_RULES: &[&str] = &[
    "on",
    "off",
    "nopass",
    "resetpass",
    "sanitize-payload",
    "skip-sanitize-payload",
];

impl Selectors {
    /// A new Redis user's: nothing allowed.
    fn empty() -> Selectors {
        Selectors {
            root: Selector::empty(),
            selectors: Vec::new(),
        }
    }

    /// Applies one rule (a `(…)` selector counts as one).
    fn apply(&mut self, rule: &str) -> Result<(), String> {
        if let Some(inner) = rule.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
            let mut sel = Selector::empty();
            for op in inner.split_ascii_whitespace() {
                sel.apply(op).map_err(str::to_string)?;
            }
            self.selectors.push(sel);
            return Ok(());
        }
        let lower = rule.to_ascii_lowercase();
        if lower == "reset" {
            *self = Selectors::empty();
            return Ok(());
        }
        if lower == "clearselectors" {
            self.selectors.clear();
            return Ok(());
        }
        if LOGIN_RULES.contains(&lower.as_str()) || rule.starts_with(['>', '<', '#', '!']) {
            return Err(
                "passwords and on/off are the identity's own (`password`), not part of `acl`"
                    .into(),
            );
        }
        self.root.apply(rule).map_err(str::to_string)
    }
}

impl Acl {
    /// Everything: `+@all ~* &*`, what an identity without `acl` may do.
    pub fn unrestricted() -> Acl {
        Acl::of(Selectors {
            root: Selector::unrestricted(),
            selectors: Vec::new(),
        })
    }

    /// Parses an `acl` string as `ACL SETUSER` would apply its rules to a new user (which
    /// may do nothing): rules separated by spaces, `(…)` selectors kept together.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut sels = Selectors::empty();
        for (number, (offset, rule)) in merged_rules(text)?.into_iter().enumerate() {
            sels.apply(rule).map_err(|reason| AclError {
                number: number + 1,
                offset,
                rule: rule.to_string(),
                reason: reason.to_string(),
            })?;
        }
        Ok(Acl::of(sels))
    }

    fn of(sels: Selectors) -> Acl {
        Acl {
            lane: lane::LaneGate::of(&sels.root, &sels.selectors),
            root: sels.root,
            selectors: sels.selectors,
        }
    }

    /// The root selector, then the `(…)` selectors.
    pub fn selectors(&self) -> impl Iterator<Item = &Selector> {
        std::iter::once(&self.root).chain(&self.selectors)
    }

    /// Whether one selector allows all of `req` (whose table entry is `spec`); the refusal
    /// Redis would give, else. A command Redis does not know, a wrong number of arguments:
    /// allowed here, since Redis answers those errors before it looks at ACLs.
    pub fn check(&self, spec: &CommandSpec, req: &Request) -> Result<(), Denied> {
        let name = req.arg(0).unwrap_or_default();
        let id = if spec.acl != NO_ACL {
            spec.acl
        } else {
            match commands::acl_command(name, req.arg(1)) {
                Some(id) => id,
                None => return self.check_unknown(name, req),
            }
        };
        let cmd = &ACL_COMMANDS[id as usize];
        if !arity_fits(cmd, req.len()) {
            return Ok(());
        }
        if cmd.no_auth {
            return Ok(());
        }
        let targets = Targets::of(spec, id as usize, req);
        let mut worst: Option<Denied> = None;
        for sel in self.selectors() {
            let Err((kind, arg)) = check_selector(sel, id as usize, cmd.container, req, &targets)
            else {
                return Ok(());
            };
            let better = worst
                .as_ref()
                .is_none_or(|w| kind > w.kind || (kind == w.kind && arg > w.arg));
            if better {
                worst = Some(Denied {
                    kind,
                    arg,
                    command: cmd.name.to_string(),
                });
            }
        }
        let mut worst = worst.expect("at least the root selector");
        if PROTECTED.iter().any(|(n, _)| *n == cmd.name) {
            worst.kind = Denial::Protected;
        }
        Err(worst)
    }

    /// A command rekey's table does not know: one Redis added after the table was made (a
    /// selector with `+@all` allows it, as Redis allows commands added after the rules), or
    /// an unknown subcommand of a known container (Redis answers that error itself).
    fn check_unknown(&self, name: &[u8], req: &Request) -> Result<(), Denied> {
        if commands::acl_command(name, None).is_some() && req.len() > 1 {
            return Ok(());
        }
        if self.selectors().any(|s| s.all_commands) {
            return Ok(());
        }
        Err(Denied {
            kind: Denial::Command,
            arg: 0,
            command: String::from_utf8_lossy(name).to_ascii_lowercase(),
        })
    }
}

/// Whether `argc` arguments (the name included) fit the command's arity, as Redis checks
/// before anything else.
pub fn arity_fits(cmd: &AclCommand, argc: usize) -> bool {
    let (argc, arity) = (argc as i64, cmd.arity as i64);
    if arity > 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// The keys and channels of a request, found once for every selector.
struct Targets {
    /// Argument index and need ([`KEY_READ`] | [`KEY_WRITE`]) of each key.
    keys: SmallVec<[(usize, u8); 8]>,
    /// Argument index of each channel, and whether it is a pattern (`PSUBSCRIBE`).
    channels: SmallVec<[(usize, bool); 4]>,
}

impl Targets {
    fn of(spec: &CommandSpec, id: usize, req: &Request) -> Targets {
        let cmd = &ACL_COMMANDS[id];
        let keys = if spec.name == cmd.name {
            key_targets(spec, cmd, req)
        } else {
            SmallVec::new()
        };
        let acl_name = cmd.name;
        let mut channels = SmallVec::new();
        let (from, pattern) = match acl_name {
            "publish" | "spublish" => (Some(1..2.min(req.len())), false),
            "subscribe" | "ssubscribe" => (Some(1..req.len()), false),
            "psubscribe" => (Some(1..req.len()), true),
            _ => (None, false),
        };
        if let Some(range) = from {
            channels.extend(range.map(|i| (i, pattern)));
        }
        Targets { keys, channels }
    }
}

/// The keys of `req` and what each is used for, found as Redis finds them for its ACL
/// check: by the key specs; when one does not fit the arguments, by the command's own finder
/// for movable keys (approximated by every spec that fits, and SORT's `STORE`), else none.
fn key_targets(spec: &CommandSpec, cmd: &AclCommand, req: &Request) -> SmallVec<[(usize, u8); 8]> {
    let mut keys = SmallVec::new();
    let variable = variable_need(cmd.name, req);
    let need_of = |i: usize| {
        variable
            .or_else(|| cmd.key_needs.get(i).copied())
            .unwrap_or(KEY_READ | KEY_WRITE)
    };
    let mut fits = true;
    for (i, ks) in spec.keys.iter().enumerate() {
        if cmd.key_needs.get(i) == Some(&NOT_KEY) {
            continue;
        }
        let mut at = Positions::new();
        fits &= keys::strict_positions(ks, req, &mut at).is_ok();
        keys.extend(at.into_iter().map(|p| (p, need_of(i))));
    }
    if fits {
        return keys;
    }
    keys.clear();
    // Redis's finders for movable keys find none when a key count does not fit.
    let count_unfit = spec.keys.iter().any(|ks| {
        matches!(ks.find, Find::Keynum { .. })
            && keys::strict_positions(ks, req, &mut Positions::new()).is_err()
    });
    if !cmd.movable || count_unfit {
        return keys;
    }
    for (i, ks) in spec.keys.iter().enumerate() {
        let mut at = Positions::new();
        if cmd.key_needs.get(i) != Some(&NOT_KEY)
            && keys::strict_positions(ks, req, &mut at).is_ok()
        {
            keys.extend(at.into_iter().map(|p| (p, need_of(i))));
        }
    }
    if spec.extra == Extra::Sort {
        let (mut store, mut patterns) = (Positions::new(), Positions::new());
        keys::sort_arguments(req, &mut store, &mut patterns);
        keys.extend(store.into_iter().map(|p| (p, KEY_WRITE)));
    }
    keys
}

/// The key need of the two commands whose key spec says `VARIABLE_FLAGS`, from their
/// arguments as Redis's `setGetKeys` and `bitfieldGetKeys` find it.
fn variable_need(name: &str, req: &Request) -> Option<u8> {
    match name {
        "set" => Some(
            if req.args().skip(3).any(|a| a.eq_ignore_ascii_case(b"GET")) {
                KEY_READ | KEY_WRITE
            } else {
                KEY_WRITE
            },
        ),
        "bitfield" => Some(if bitfield_reads_only(req) {
            KEY_READ
        } else {
            KEY_READ | KEY_WRITE
        }),
        _ => None,
    }
}

/// BITFIELD with nothing but `GET type offset` and `OVERFLOW how`.
fn bitfield_reads_only(req: &Request) -> bool {
    let argc = req.len();
    let mut i = 2;
    while i < argc {
        let rest = argc - i - 1;
        let arg = req.arg(i).unwrap_or_default();
        if arg.eq_ignore_ascii_case(b"GET") && rest >= 2 {
            i += 3;
        } else if arg.eq_ignore_ascii_case(b"OVERFLOW") && rest >= 1 {
            i += 2;
        } else {
            return false;
        }
    }
    true
}

/// One selector's verdict on a request: the first key or channel it refuses, if any.
fn check_selector(
    sel: &Selector,
    id: usize,
    container: bool,
    req: &Request,
    targets: &Targets,
) -> Result<(), (Denial, usize)> {
    let first_arg = if container { None } else { req.arg(1) };
    if !sel.allows_command(id, first_arg) {
        return Err((Denial::Command, 0));
    }
    if !sel.all_keys {
        for &(at, need) in &targets.keys {
            if !sel.allows_key(req.arg(at).unwrap_or_default(), need) {
                return Err((Denial::Key, at));
            }
        }
    }
    if !sel.all_channels {
        for &(at, pattern) in &targets.channels {
            if !sel.allows_channel(req.arg(at).unwrap_or_default(), pattern) {
                return Err((Denial::Channel, at));
            }
        }
    }
    Ok(())
}

/// The rules of an `acl` string with their byte offsets, `(…)` selectors merged into one
/// rule as Redis merges them (`ACLMergeSelectorArguments`).
fn merged_rules(text: &str) -> Result<Vec<(usize, &str)>, AclError> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    let mut number = 0;
    for (offset, word) in words(text) {
        if let Some(start) = open {
            if word.ends_with(')') {
                out.push((start, &text[start..offset + word.len()]));
                open = None;
            }
            continue;
        }
        number += 1;
        if word.starts_with('(') && !word.ends_with(')') {
            open = Some(offset);
            continue;
        }
        out.push((offset, word));
    }
    if let Some(start) = open {
        return Err(AclError {
            number,
            offset: start,
            rule: text[start..].to_string(),
            reason: format!(
                "Unmatched parenthesis in acl selector starting at '{}'.",
                words(&text[start..]).next().map_or("", |w| w.1)
            ),
        });
    }
    Ok(out)
}

/// The words of `text` and their byte offsets.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_ascii_whitespace()
        .map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(acl: &str, args: &[&str]) -> Result<(), Denied> {
        let acl = Acl::parse(acl).unwrap();
        let req = Request::from_args(args.iter().copied());
        acl.check(commands::lookup(&req), &req)
    }

    fn kind(acl: &str, args: &[&str]) -> Option<(Denial, usize)> {
        check(acl, args).err().map(|d| (d.kind, d.arg))
    }

    #[test]
    fn commands_keys_and_channels() {
        let acl = "+@all -@dangerous ~AppB_* &AppB_*";
        assert_eq!(kind(acl, &["GET", "AppB_x"]), None);
        assert_eq!(kind(acl, &["FLUSHALL"]), Some((Denial::Command, 0)));
        assert_eq!(kind(acl, &["GET", "other"]), Some((Denial::Key, 1)));
        assert_eq!(
            kind(acl, &["MSET", "AppB_a", "1", "x", "2"]),
            Some((Denial::Key, 3))
        );
        assert_eq!(kind(acl, &["PUBLISH", "AppB_c", "m"]), None);
        assert_eq!(
            kind(acl, &["PUBLISH", "c", "m"]),
            Some((Denial::Channel, 1))
        );
        assert_eq!(
            kind(acl, &["SUBSCRIBE", "AppB_c", "x"]),
            Some((Denial::Channel, 2))
        );
        assert_eq!(kind(acl, &["PSUBSCRIBE", "AppB_*"]), None);
        assert_eq!(
            kind(acl, &["PSUBSCRIBE", "AppB_c*"]),
            Some((Denial::Channel, 1))
        );
        assert_eq!(
            kind(acl, &["EVAL", "return 1", "2", "AppB_a", "b"]),
            Some((Denial::Key, 4))
        );
        let d = check(acl, &["CONFIG", "SET", "maxmemory", "1"]).unwrap_err();
        assert_eq!(d.command, "config|set");
        assert_eq!(
            d.error("u", Texts::V70),
            "NOPERM this user has no permissions to run the 'config|set' command"
        );
        assert_eq!(
            d.error("u", Texts::V72),
            "NOPERM User u has no permissions to run the 'config|set' command"
        );
    }

    #[test]
    fn read_and_write_patterns_follow_key_specs() {
        let acl = "+@all %R~r* %W~w*";
        assert_eq!(kind(acl, &["GET", "r1"]), None);
        assert_eq!(kind(acl, &["SET", "r1", "v"]), Some((Denial::Key, 1)));
        assert_eq!(kind(acl, &["SET", "w1", "v"]), None);
        assert_eq!(
            kind(acl, &["SET", "w1", "v", "GET"]),
            Some((Denial::Key, 1))
        );
        assert_eq!(kind(acl, &["BITFIELD", "r1", "GET", "u8", "0"]), None);
        assert_eq!(
            kind(acl, &["BITFIELD", "r1", "SET", "u8", "0", "1"]),
            Some((Denial::Key, 1))
        );
        assert_eq!(kind(acl, &["GET", "w1"]), Some((Denial::Key, 1)));
        assert_eq!(kind(acl, &["COPY", "r1", "w1"]), None);
        assert_eq!(kind(acl, &["SORT", "r1", "STORE", "w2"]), None);
        assert_eq!(
            kind(acl, &["SORT", "r1", "STORE", "r2"]),
            Some((Denial::Key, 3))
        );
    }

    #[test]
    fn any_selector_may_allow_and_the_most_relevant_refusal_is_reported() {
        let acl = "-@all +get ~a* (+set ~s*)";
        assert_eq!(kind(acl, &["GET", "a1"]), None);
        assert_eq!(kind(acl, &["SET", "s1", "v"]), None);
        assert_eq!(kind(acl, &["SET", "a1", "v"]), Some((Denial::Key, 1)));
        assert_eq!(kind(acl, &["DEL", "a1"]), Some((Denial::Command, 0)));
    }

    #[test]
    fn redis_answers_arity_and_unknown_commands_first() {
        assert_eq!(kind("-@all", &["GET"]), None);
        assert_eq!(kind("-@all", &["CONFIG", "NOSUCH"]), None);
        assert_eq!(kind("-@all", &["NOSUCHCMD"]), Some((Denial::Command, 0)));
        assert_eq!(kind("+@all", &["NOSUCHCMD"]), None);
        assert_eq!(kind("-@all", &["AUTH", "x"]), None);
    }

    #[test]
    fn parse_errors_say_where() {
        let e = Acl::parse("+@all ~a* +nosuch").unwrap_err();
        assert_eq!((e.number, e.offset, e.rule.as_str()), (3, 10, "+nosuch"));
        let e = Acl::parse("+get (~a +set").unwrap_err();
        assert_eq!(
            e.reason,
            "Unmatched parenthesis in acl selector starting at '(~a'."
        );
        assert!(Acl::parse("on +get").is_err());
        assert!(Acl::parse(">secret +get").is_err());
        let acl = Acl::parse("( +set ~s* ) +get").unwrap();
        assert_eq!(acl.selectors.len(), 1);
        assert_eq!(Acl::parse("+@all ~* &*").unwrap(), Acl::unrestricted());
    }

    #[test]
    fn the_lane_takes_only_what_it_can_tell() {
        let acl = Acl::parse("+@all -@dangerous ~AppB_*").unwrap();
        let get = commands::lookup(&Request::from_args(["GET", "k"]));
        assert!(acl.lane_permits(get, Some(b"AppB_1")));
        assert!(!acl.lane_permits(get, Some(b"other")));
        let mget = commands::lookup(&Request::from_args(["MGET", "k"]));
        assert!(!acl.lane_permits(mget, Some(b"AppB_1")));
        let dbsize = commands::lookup(&Request::from_args(["DBSIZE"]));
        assert!(acl.lane_permits(dbsize, None));
        assert!(Acl::unrestricted().lane_permits(mget, Some(b"x")));
    }
}
