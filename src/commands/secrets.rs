//! Upstream credentials stay in the proxy. Every client shares rekey's upstream login, so a
//! client must not read it back (`CONFIG GET requirepass` answers with Redis's own password),
//! change it under every other client (`CONFIG SET requirepass`), or manage the upstream's users
//! (`ACL SETUSER`, `ACL LIST` shows password hashes). Everything else about CONFIG passes through:
//! session providers rely on `CONFIG GET/SET notify-keyspace-events`.

use crate::protocol::tree::Node;
use crate::protocol::Request;

/// Redis config parameters that hold a credential.
const SECRET_PARAMS: &[&str] = &[
    "requirepass",
    "masterauth",
    "masteruser",
    "tls-key-file-pass",
    "tls-client-key-file-pass",
];

/// What rekey does with a `CONFIG` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward; the reply needs no care.
    Forward,
    /// Forward, then blank the values of secret parameters in the reply (`CONFIG GET`).
    ForwardMasked,
    /// Refused with this error.
    Refuse(&'static str),
}

fn is_secret(name: &[u8]) -> bool {
    SECRET_PARAMS
        .iter()
        .any(|s| s.as_bytes().eq_ignore_ascii_case(name))
}

/// The verdict for a `CONFIG …` request.
pub fn config(req: &Request) -> Verdict {
    if req.arg_is(1, "GET") {
        return Verdict::ForwardMasked;
    }
    if req.arg_is(1, "SET")
        && (2..req.len())
            .step_by(2)
            .any(|i| req.arg(i).is_some_and(is_secret))
    {
        return Verdict::Refuse(
            "ERR rekey: CONFIG SET of upstream credentials is not allowed through the proxy",
        );
    }
    Verdict::Forward
}

/// Blanks the values of secret parameters in a `CONFIG GET` reply (a flat name/value array in
/// RESP2, a map in RESP3). Returns whether anything changed.
pub fn mask_config_reply(node: &mut Node) -> bool {
    let Some(items) = node.items_mut() else {
        return false;
    };
    let mut changed = false;
    for pair in items.chunks_mut(2) {
        if let [name, value] = pair {
            if name.as_str().is_some_and(|n| is_secret(n))
                && value.as_str().is_some_and(|v| !v.is_empty())
            {
                value.set_str(Vec::new());
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn config_set_of_a_credential_is_refused_anywhere_in_the_pairs() {
        let r = |a: &[&str]| config(&Request::from_args(a.iter().copied()));
        assert!(matches!(
            r(&["CONFIG", "SET", "requirepass", "x"]),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            r(&["config", "set", "maxmemory", "1mb", "MASTERAUTH", "x"]),
            Verdict::Refuse(_)
        ));
        assert_eq!(
            r(&["CONFIG", "SET", "notify-keyspace-events", "Egx"]),
            Verdict::Forward
        );
        assert_eq!(r(&["CONFIG", "GET", "*"]), Verdict::ForwardMasked);
    }

    #[test]
    fn config_get_reply_is_masked_in_both_protocols() {
        for frame in [
            &b"*4\r\n$11\r\nrequirepass\r\n$6\r\ns3cret\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"[..],
            b"%2\r\n$11\r\nrequirepass\r\n$6\r\ns3cret\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
        ] {
            let mut node = Node::decode(&Bytes::copy_from_slice(frame)).unwrap();
            assert!(mask_config_reply(&mut node));
            let out = node.to_bytes();
            assert!(!out.windows(6).any(|w| w == b"s3cret"));
            assert!(out.windows(9).any(|w| w == b"maxmemory"));
        }
    }
}
