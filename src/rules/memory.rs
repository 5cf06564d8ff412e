//! What one client's keys were rewritten from: for each rule and upstream prefix `R`, the app
//! prefix `P` this connection last used. Replies whose keys the request did not name (KEYS,
//! SCAN, RANDOMKEY, notifications) are mapped back with it, so an app sees its own prefix.

use smallvec::SmallVec;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    rule: usize,
    upstream: Vec<u8>,
    app: Vec<u8>,
}

/// Byte equality without a libc call for the short prefixes compared here.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

#[derive(Debug, Default)]
pub struct PrefixMemory {
    entries: SmallVec<[Entry; 4]>,
    generation: u64,
}

/// Entries kept per client; the oldest is forgotten beyond this.
const MAX_ENTRIES: usize = 64;

impl PrefixMemory {
    /// Forgets everything when the rules changed (rule indices mean other rules now).
    pub fn sync_generation(&mut self, generation: u64) {
        if self.generation != generation {
            self.entries.clear();
            self.generation = generation;
        }
    }

    /// Records that `app_prefix` became `upstream_prefix` through `rule`. Allocates only when
    /// the pair is new.
    #[inline]
    pub fn remember(&mut self, rule: usize, upstream_prefix: &[u8], app_prefix: &[u8]) {
        // Most clients use one prefix: the last entry is the usual hit.
        if let Some(last) = self.entries.last() {
            if last.rule == rule
                && same(&last.upstream, upstream_prefix)
                && same(&last.app, app_prefix)
            {
                return;
            }
        }
        self.remember_new(rule, upstream_prefix, app_prefix);
    }

    /// [`PrefixMemory::remember`] of a pair that is not the last one remembered.
    fn remember_new(&mut self, rule: usize, upstream_prefix: &[u8], app_prefix: &[u8]) {
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.rule == rule && e.upstream == upstream_prefix)
        {
            if self.entries[i].app != app_prefix {
                self.entries[i].app = app_prefix.to_vec();
            }
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push(Entry {
            rule,
            upstream: upstream_prefix.to_vec(),
            app: app_prefix.to_vec(),
        });
    }

    /// Every upstream prefix remembered.
    pub fn upstream_prefixes(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for e in &self.entries {
            if !out.contains(&e.upstream) {
                out.push(e.upstream.clone());
            }
        }
        out
    }

    /// Maps `key` back through the longest remembered upstream prefix it starts with; also
    /// returns the rule that made that prefix.
    pub fn reverse(&self, key: &[u8]) -> Option<(usize, Vec<u8>)> {
        let e = self
            .entries
            .iter()
            .filter(|e| key.starts_with(&e.upstream))
            .max_by_key(|e| e.upstream.len())?;
        let mut out = Vec::with_capacity(e.app.len() + key.len() - e.upstream.len());
        out.extend_from_slice(&e.app);
        out.extend_from_slice(&key[e.upstream.len()..]);
        Some((e.rule, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut m = PrefixMemory::default();
        m.remember(0, b"shared_", b"AppA_");
        m.remember(0, b"{shared_", b"{AppA_");
        assert_eq!(m.reverse(b"{shared_1}_Data").unwrap().1, b"{AppA_1}_Data");
        assert_eq!(m.reverse(b"shared_2").unwrap().1, b"AppA_2");
        assert_eq!(m.reverse(b"other"), None);
        m.remember(0, b"shared_", b"AppB_");
        assert_eq!(m.reverse(b"shared_2").unwrap().1, b"AppB_2");
        m.sync_generation(7);
        assert_eq!(m.reverse(b"shared_2"), None);
    }
}
