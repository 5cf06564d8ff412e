//! ACLs as text again, for `ACL LIST` and `ACL GETUSER`: Redis's layout (keys, channels,
//! then commands; `(…)` for each selector), with the command rules as they were written
//! (a later rule for the same name replacing an earlier one, as Redis 7.2 keeps them).

use super::selector::{KeyPattern, Selector};
use super::Acl;
use crate::commands::acl_table::{KEY_READ, KEY_WRITE};

/// One selector's `ACL GETUSER` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorText {
    pub commands: String,
    pub keys: String,
    pub channels: String,
}

impl Acl {
    /// The rules as `ACL LIST` prints them after the login part.
    pub fn describe(&self) -> String {
        let mut out = self.root.describe();
        for sel in &self.selectors {
            out.push_str(" (");
            out.push_str(&sel.describe());
            out.push(')');
        }
        out
    }

    /// `ACL GETUSER`'s fields of the root selector, then of each `(…)` selector.
    pub fn texts(&self) -> Vec<SelectorText> {
        self.selectors().map(Selector::text).collect()
    }
}

impl Selector {
    fn describe(&self) -> String {
        let keys = self.keys_text();
        let channels = if self.all_channels {
            "&*".to_string()
        } else {
            let mut s = "resetchannels".to_string();
            for c in &self.channels {
                s.push_str(" &");
                s.push_str(&String::from_utf8_lossy(c));
            }
            s
        };
        [keys, channels, self.commands_text()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn text(&self) -> SelectorText {
        let channels = if self.all_channels {
            "&*".to_string()
        } else {
            self.channels
                .iter()
                .map(|c| format!("&{}", String::from_utf8_lossy(c)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        SelectorText {
            commands: self.commands_text(),
            keys: self.keys_text(),
            channels,
        }
    }

    fn keys_text(&self) -> String {
        if self.all_keys {
            return "~*".to_string();
        }
        self.keys.iter().map(key_text).collect::<Vec<_>>().join(" ")
    }

    fn commands_text(&self) -> String {
        let mut out = if self.all_commands { "+@all" } else { "-@all" }.to_string();
        for rule in &self.command_rules {
            out.push(' ');
            out.push_str(rule);
        }
        out
    }
}

fn key_text(k: &KeyPattern) -> String {
    let perms = match k.perms {
        p if p == KEY_READ | KEY_WRITE => "",
        KEY_READ => "%R",
        KEY_WRITE => "%W",
        _ => "%",
    };
    format!("{perms}~{}", String::from_utf8_lossy(&k.pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn described_as_redis_lists_them() {
        let acl = Acl::parse("+@all -@dangerous ~AppB_* &AppB_*").unwrap();
        assert_eq!(
            acl.describe(),
            "~AppB_* resetchannels &AppB_* +@all -@dangerous"
        );
        let acl = Acl::parse("-@all +get +config|get -flushall +flushall %R~r* %W~w* (+set ~s*)")
            .unwrap();
        assert_eq!(
            acl.describe(),
            "%R~r* %W~w* resetchannels -@all +get +config|get +flushall (~s* resetchannels -@all +set)"
        );
        assert_eq!(Acl::unrestricted().describe(), "~* &* +@all");
        let texts = Acl::parse("~a &b +get").unwrap().texts();
        assert_eq!(
            texts[0],
            SelectorText {
                commands: "-@all +get".into(),
                keys: "~a".into(),
                channels: "&b".into()
            }
        );
    }
}
