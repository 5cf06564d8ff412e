//! Hash slots as Redis Cluster defines them: CRC16 (XMODEM: polynomial 0x1021, initial 0) of
//! the key, or of its hash tag (the bytes between the first `{` and the next `}`, when not
//! empty), modulo 16384.

pub const SLOTS: usize = 16384;

/// CRC16-XMODEM, bit by bit: keys are short and this is only used in cluster mode.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of a key that is hashed: its hash tag, if it has a non-empty one.
pub fn hash_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The cluster slot of a key.
pub fn slot_of(key: &[u8]) -> u16 {
    crc16(hash_part(key)) % SLOTS as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_cluster_spec_check_value() {
        // The Redis Cluster specification gives CRC16("123456789") = 0x31C3.
        assert_eq!(crc16(b"123456789"), 0x31C3);
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
