//! Finding the key arguments of a request from Redis's key specs (begin search + find keys),
//! the same way Redis does (`getKeysUsingKeySpecs`), including movable keys (numkeys, STREAMS,
//! KEYS) — and SORT's BY/GET patterns, which key specs leave out.

use crate::protocol::scan::parse_int;
use crate::protocol::Request;
use smallvec::SmallVec;

/// Where the search for keys begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// At this argument index.
    Index(i32),
    /// After this keyword, searched from `startfrom` (negative: from the end, backwards).
    Keyword(&'static str, i32),
    /// Not describable by a spec (SORT's BY/GET/STORE): handled by special code.
    Unknown,
}

/// How many keys follow, and at what step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Find {
    Range { last: i32, step: i32, limit: i32 },
    Keynum { idx: i32, first: i32, step: i32 },
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: Begin,
    pub find: Find,
    pub incomplete: bool,
}

/// Argument indices of keys, in order, without duplicates.
pub type Positions = SmallVec<[usize; 8]>;

/// Adds the key positions that `specs` find in `req` to `out`.
pub fn positions(specs: &[KeySpec], req: &Request, out: &mut Positions) {
    let argc = req.len() as i64;
    for spec in specs {
        let Some(first) = begin_index(spec.begin, req) else {
            continue;
        };
        let Ok((first, last, step)) = span(spec.find, first, req) else {
            continue;
        };
        if step <= 0 {
            continue;
        }
        let mut i = first;
        while i <= last && i < argc {
            if i >= 1 && !out.contains(&(i as usize)) {
                out.push(i as usize);
            }
            i += step;
        }
    }
}

/// The key spec does not fit the request's arguments (a range out of bounds, a bad key
/// count): Redis then finds no keys from the specs at all (see [`strict_positions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfit;

/// The keys one spec finds in `req`, exactly as Redis 7.0's `getKeysUsingKeySpecs` finds
/// them for ACL checks: a keyword not found finds none; a spec that does not fit the
/// arguments makes the whole search fail ([`Unfit`]), and Redis falls back to the command's
/// own key finder (movable keys) or to no keys.
pub fn strict_positions(spec: &KeySpec, req: &Request, out: &mut Positions) -> Result<(), Unfit> {
    let argc = req.len() as i64;
    let first = match spec.begin {
        Begin::Index(i) => i as i64,
        Begin::Keyword(word, startfrom) => match keyword_exclusive(word, startfrom, req) {
            Some(first) => first,
            None => return Ok(()),
        },
        Begin::Unknown => return Err(Unfit),
    };
    let (first, last, step) = span(spec.find, first, req)?;
    if last >= argc || last < first || first >= argc || step <= 0 {
        return Err(Unfit);
    }
    let mut i = first;
    while i <= last {
        out.push(i as usize);
        i += step;
    }
    if spec.incomplete {
        return Err(Unfit);
    }
    Ok(())
}

/// Where a spec's keys are, from its first index: (first, last, step). A key count that is
/// not a number, or negative, does not fit.
fn span(find: Find, first: i64, req: &Request) -> Result<(i64, i64, i64), Unfit> {
    let argc = req.len() as i64;
    match find {
        Find::Range { last, step, limit } => {
            let last = if last >= 0 {
                first + last as i64
            } else if limit == 0 {
                argc + last as i64
            } else {
                first + ((argc - first) / limit as i64 + last as i64)
            };
            Ok((first, last, step as i64))
        }
        Find::Keynum {
            idx,
            first: firstkey,
            step,
        } => {
            let at = first + idx as i64;
            let n = (0..argc)
                .contains(&at)
                .then(|| req.arg(at as usize))
                .flatten()
                .and_then(parse_int)
                .filter(|n| *n >= 0)
                .ok_or(Unfit)?;
            let start = first + firstkey as i64;
            Ok((start, start + n - 1, step as i64))
        }
        Find::Unknown => Err(Unfit),
    }
}

/// Redis's keyword search for a key spec: from `startfrom` (negative: from the end,
/// backwards) up to but not including the last index it may look at.
fn keyword_exclusive(word: &str, startfrom: i32, req: &Request) -> Option<i64> {
    let argc = req.len() as i64;
    let (start, end, dir) = if startfrom > 0 {
        (startfrom as i64, argc - 1, 1)
    } else {
        (argc + startfrom as i64, 1, -1)
    };
    let mut i = start;
    while i != end {
        if i >= argc || i < 1 {
            return None;
        }
        if req
            .arg(i as usize)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
        {
            return Some(i + 1);
        }
        i += dir;
    }
    None
}

fn begin_index(begin: Begin, req: &Request) -> Option<i64> {
    match begin {
        Begin::Index(i) => Some(i as i64),
        // Redis's search: forwards, the last argument (nothing follows it) is left out;
        // backwards, argument 1 is (a `MIGRATE` host named `KEYS` is not the keyword).
        Begin::Keyword(word, startfrom) => keyword_exclusive(word, startfrom, req),
        Begin::Unknown => None,
    }
}

/// SORT/SORT_RO: `BY pattern`, `GET pattern` (not `#`), and `STORE key`. Patterns are
/// returned separately: they are rewritten as globs (the part before `*`).
pub fn sort_arguments(req: &Request, keys: &mut Positions, patterns: &mut Positions) {
    let mut i = 2;
    while i < req.len() {
        let word = req.arg(i).unwrap_or_default();
        if word.eq_ignore_ascii_case(b"LIMIT") {
            i += 3;
            continue;
        }
        if i + 1 < req.len() {
            if word.eq_ignore_ascii_case(b"BY")
                || (word.eq_ignore_ascii_case(b"GET") && req.arg(i + 1) != Some(b"#"))
            {
                patterns.push(i + 1);
                i += 2;
                continue;
            }
            if word.eq_ignore_ascii_case(b"STORE") {
                keys.push(i + 1);
                i += 2;
                continue;
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(specs: &[KeySpec], args: &[&str]) -> Vec<usize> {
        let mut out = Positions::new();
        positions(specs, &Request::from_args(args), &mut out);
        out.to_vec()
    }

    const IDX1: KeySpec = KeySpec {
        begin: Begin::Index(1),
        find: Find::Range {
            last: 0,
            step: 1,
            limit: 0,
        },
        incomplete: false,
    };

    #[test]
    fn ranges_keynums_and_keywords() {
        assert_eq!(pos(&[IDX1], &["GET", "k"]), vec![1]);
        let mset = KeySpec {
            begin: Begin::Index(1),
            find: Find::Range {
                last: -1,
                step: 2,
                limit: 0,
            },
            incomplete: false,
        };
        assert_eq!(pos(&[mset], &["MSET", "a", "1", "b", "2"]), vec![1, 3]);
        let blpop = KeySpec {
            begin: Begin::Index(1),
            find: Find::Range {
                last: -2,
                step: 1,
                limit: 0,
            },
            incomplete: false,
        };
        assert_eq!(pos(&[blpop], &["BLPOP", "a", "b", "0"]), vec![1, 2]);
        let eval = KeySpec {
            begin: Begin::Index(2),
            find: Find::Keynum {
                idx: 0,
                first: 1,
                step: 1,
            },
            incomplete: false,
        };
        assert_eq!(
            pos(&[eval], &["EVAL", "s", "2", "k1", "k2", "argv"]),
            vec![3, 4]
        );
        assert_eq!(pos(&[eval], &["EVAL", "s", "x", "k1"]), Vec::<usize>::new());
        let xread = KeySpec {
            begin: Begin::Keyword("STREAMS", 1),
            find: Find::Range {
                last: -1,
                step: 1,
                limit: 2,
            },
            incomplete: false,
        };
        assert_eq!(
            pos(
                &[xread],
                &["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"]
            ),
            vec![4, 5]
        );
        let migrate_keys = KeySpec {
            begin: Begin::Keyword("KEYS", -2),
            find: Find::Range {
                last: -1,
                step: 1,
                limit: 0,
            },
            incomplete: true,
        };
        assert_eq!(
            pos(
                &[migrate_keys],
                &["MIGRATE", "h", "p", "", "0", "5", "KEYS", "a", "b"]
            ),
            vec![7, 8]
        );
    }

    #[test]
    fn sort_patterns() {
        let mut keys = Positions::new();
        let mut pats = Positions::new();
        let req = Request::from_args([
            "SORT", "l", "BY", "w_*", "LIMIT", "0", "1", "GET", "#", "GET", "o_*->f", "STORE",
            "dst",
        ]);
        sort_arguments(&req, &mut keys, &mut pats);
        assert_eq!(keys.to_vec(), vec![12]);
        assert_eq!(pats.to_vec(), vec![3, 10]);
    }
}
