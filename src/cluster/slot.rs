//! Hash slots as Redis Cluster defines them: CRC16 (XMODEM) of the key, or of its hash tag
//! (the bytes between the first `{` and the next `}`, when not empty), modulo 16384 — as
//! `redis_protocol::redis_keyslot` computes it.

pub const SLOTS: usize = 16384;

/// The cluster slot of a key (`redis_protocol`'s CRC16 with hash tags).
pub fn slot_of(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key that is hashed, by the spec's words: its hash tag, if it has a
    /// non-empty one. The tests check `redis_keyslot` against it.
    fn hash_part(key: &[u8]) -> &[u8] {
        if let Some(open) = key.iter().position(|&b| b == b'{') {
            if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
                if len > 0 {
                    return &key[open + 1..open + 1 + len];
                }
            }
        }
        key
    }

    #[test]
    fn slots_match_the_cluster_spec() {
        // The specification's check value: CRC16("123456789") = 0x31C3, so slot 12739.
        assert_eq!(slot_of(b"123456789"), 0x31C3 % SLOTS as u16);
        assert_eq!(slot_of(b"{123456789}.x"), slot_of(b"123456789"));
        for key in [
            &b"foo{}{bar}"[..],
            b"foo{{bar}}zap",
            b"foo{bar}{zap}",
            b"plain",
        ] {
            assert_eq!(slot_of(key), slot_of(hash_part(key)), "{key:?}");
        }
    }

    #[test]
    fn hash_tags_pick_the_hashed_part() {
        assert_eq!(hash_part(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_part(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_part(b"foo{bar}{zap}"), b"bar");
        assert_eq!(
            slot_of(b"{shared_abc}_Data"),
            slot_of(b"{shared_abc}_Internal")
        );
    }
}
