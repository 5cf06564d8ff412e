//! Redis's glob matching (`KEYS`, `SCAN … MATCH`, `PUBSUB CHANNELS`), so that key names mapped
//! back to a client's prefix can be checked against the pattern the client itself sent: the
//! upstream matched the rewritten pattern against upstream names, and a name that matched
//! there need not match the client's own pattern once mapped back (`KEYS sh*` matches
//! `shared_k` upstream, but the client must not see `AppA_k`).
//!
//! The syntax is Redis's `stringmatchlen`: `*`, `?`, `[abc]`, `[^abc]`, `[a-z]`, and `\x` for a
//! literal `x`; matching is byte-wise and case-sensitive.

/// True when `name` matches the glob `pattern` as Redis matches it.
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    // Iterative matching with one backtrack point (the last `*`), linear in practice.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, n));
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {
                    if let Some((next, ok)) = single(pattern, p, name[n]) {
                        if ok {
                            p = next;
                            n += 1;
                            continue;
                        }
                    }
                }
            }
        }
        // Mismatch: let the last `*` swallow one more byte, or fail.
        match star {
            Some((sp, sn)) => {
                p = sp;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `text` as a glob that matches exactly it: the metacharacters `*?[]\` are escaped.
pub fn escape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 4);
    for &c in text {
        if matches!(c, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(c);
    }
    out
}

/// Matches one pattern element at `p` (a literal, `\x` or a `[...]` class) against byte `c`:
/// where the element ends, and whether it matched.
fn single(pattern: &[u8], p: usize, c: u8) -> Option<(usize, bool)> {
    match pattern[p] {
        b'\\' if p + 1 < pattern.len() => Some((p + 2, pattern[p + 1] == c)),
        b'[' => Some(class(pattern, p + 1, c)),
        lit => Some((p + 1, lit == c)),
    }
}

/// A `[...]` class starting after the `[` at `p`: where it ends and whether `c` is in it.
/// An unterminated class ends at the pattern's end, as in Redis.
fn class(pattern: &[u8], mut p: usize, c: u8) -> (usize, bool) {
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut hit = false;
    while p < pattern.len() && pattern[p] != b']' {
        if pattern[p] == b'\\' && p + 1 < pattern.len() {
            hit |= pattern[p + 1] == c;
            p += 2;
        } else if p + 2 < pattern.len() && pattern[p + 1] == b'-' && pattern[p + 2] != b']' {
            let (lo, hi) = (
                pattern[p].min(pattern[p + 2]),
                pattern[p].max(pattern[p + 2]),
            );
            hit |= (lo..=hi).contains(&c);
            p += 3;
        } else {
            hit |= pattern[p] == c;
            p += 1;
        }
    }
    let end = (p + 1).min(pattern.len());
    (end, hit != negate)
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn m(p: &str, n: &str) -> bool {
        matches(p.as_bytes(), n.as_bytes())
    }

    #[test]
    fn redis_glob_syntax() {
        assert!(m("*", ""));
        assert!(m("*", "abc"));
        assert!(m("AppA_*", "AppA_k"));
        assert!(!m("sh*", "AppA_k"));
        assert!(m("*red_*", "shared_x"));
        assert!(!m("*red_*", "AppA_x"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "reversed ranges work as in Redis");
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("**", "x"));
        assert!(!m("abc", "abcd"));
        assert!(!m("abcd", "abc"));
        for text in ["plain", "a*b", "q?[x]", "back\\slash", "{AppA_"] {
            let mut glob = super::escape(text.as_bytes());
            assert!(matches(&glob, text.as_bytes()), "{text}");
            assert!(!matches(&glob, b"other"), "{text}");
            glob.push(b'*');
            assert!(matches(&glob, format!("{text}:rest").as_bytes()), "{text}");
        }
        assert!(
            m("[ab", "a"),
            "an unterminated class ends at the pattern's end"
        );
    }
}
