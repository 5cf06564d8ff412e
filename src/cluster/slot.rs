//! Hash slots as Redis Cluster defines them: CRC16 (XMODEM) of the key, or of its hash tag
//! (the bytes between the first `{` and the next `}`, when not empty), modulo 16384 — as
//! `redis_protocol::redis_keyslot` computes it (the tests check against it), here with
//! tables that take eight bytes a step while looking for a `{` in the same pass (`memchr`
//! finds the tag of the rare key that has one): every request through a cluster pays it.

pub const SLOTS: usize = 16384;

/// CRC16-XMODEM (polynomial 0x1021, no reflection, initial value 0): `CRC16[k][x]` is the
/// CRC of the byte `x` followed by `k` zero bytes. `CRC16[0]` takes one byte a step; all
/// eight take eight bytes a step, with lookups that do not wait for each other (the CRC is
/// linear: `T[x ^ y] = T[x] ^ T[y]`).
static CRC16: [[u16; 256]; 8] = crc16_tables();

const fn crc16_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev << 8) ^ tables[0][(prev >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

/// One byte of CRC.
#[inline(always)]
fn step(crc: u16, b: u8) -> u16 {
    (crc << 8) ^ CRC16[0][((crc >> 8) as u8 ^ b) as usize]
}

/// `crc` continued over `bytes`.
#[inline]
fn crc16(mut crc: u16, bytes: &[u8]) -> u16 {
    for &b in bytes {
        crc = step(crc, b);
    }
    crc
}

/// The cluster slot of a key.
#[inline]
pub fn slot_of(key: &[u8]) -> u16 {
    slot_of_parts(key, &[])
}

/// The cluster slot of the key `head ++ tail` (a key whose prefix a rule replaced, before it
/// is written out in one piece).
pub fn slot_of_parts(head: &[u8], tail: &[u8]) -> u16 {
    // The whole key's CRC, computed while looking for a `{` (a key with one is rare).
    match head_crc(head) {
        Some(crc) => slot_after(crc, head, tail),
        None => tagged_slot(head, tail),
    }
}

/// The CRC of the first part of keys, to go on from with [`slot_after`] for each of them (a
/// rule's new prefix); `None` when it holds a `{`.
#[inline]
pub fn head_crc(head: &[u8]) -> Option<u16> {
    untagged_crc(0, head)
}

/// [`slot_of_parts`] given `crc`, the [`head_crc`] of `head`.
#[inline]
pub fn slot_after(crc: u16, head: &[u8], tail: &[u8]) -> u16 {
    match untagged_crc(crc, tail) {
        Some(crc) => crc & (SLOTS as u16 - 1),
        None => tagged_slot(head, tail),
    }
}

/// `crc` continued over `bytes`, eight bytes a step; `None` at a `{`.
#[inline(always)]
fn untagged_crc(mut crc: u16, bytes: &[u8]) -> Option<u16> {
    const BRACES: u64 = u64::from_ne_bytes([b'{'; 8]);
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let t = &CRC16;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let word = u64::from_ne_bytes(w.try_into().expect("eight bytes"));
        let v = word ^ BRACES; // a zero byte where a `{` is
        if v.wrapping_sub(ONES) & !v & HIGHS != 0 {
            return None;
        }
        crc = t[7][((crc >> 8) as u8 ^ w[0]) as usize]
            ^ t[6][(crc as u8 ^ w[1]) as usize]
            ^ t[5][w[2] as usize]
            ^ t[4][w[3] as usize]
            ^ t[3][w[4] as usize]
            ^ t[2][w[5] as usize]
            ^ t[1][w[6] as usize]
            ^ t[0][w[7] as usize];
    }
    for &b in words.remainder() {
        if b == b'{' {
            return None;
        }
        crc = step(crc, b);
    }
    Some(crc)
}

/// [`slot_of_parts`] of a key with a `{`.
#[inline(never)]
fn tagged_slot(head: &[u8], tail: &[u8]) -> u16 {
    let crc = match hash_tag(head, tail) {
        Some((a, b)) => crc16(crc16(0, a), b),
        None => crc16(crc16(0, head), tail),
    };
    crc & (SLOTS as u16 - 1)
}

/// The non-empty hash tag of `head ++ tail`, in the pieces it lies in; `None`: the whole key
/// is hashed.
#[inline]
fn hash_tag<'a>(head: &'a [u8], tail: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    if let Some(open) = memchr::memchr(b'{', head) {
        let after = &head[open + 1..];
        return match memchr::memchr(b'}', after) {
            Some(0) => None,
            Some(len) => Some((&after[..len], &[])),
            None => match memchr::memchr(b'}', tail) {
                Some(len) if after.len() + len > 0 => Some((after, &tail[..len])),
                _ => None,
            },
        };
    }
    let open = memchr::memchr(b'{', tail)?;
    let after = &tail[open + 1..];
    match memchr::memchr(b'}', after) {
        Some(len) if len > 0 => Some((&after[..len], &[])),
        _ => None,
    }
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
    fn the_table_crc_is_redis_protocols() {
        let mut keys: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"{".to_vec(),
            b"}".to_vec(),
            b"{}".to_vec(),
            b"}{".to_vec(),
            b"{a".to_vec(),
            b"a}".to_vec(),
            b"ns:key:__rand_int__".to_vec(),
            b"ns:key:000000012345 and a longer tail, past a few words".to_vec(),
            b"ns:{user1000}.following".to_vec(),
            b"foo{}{bar}".to_vec(),
            b"foo{{bar}}zap".to_vec(),
            b"{}x{y}".to_vec(),
        ];
        // Every byte value, and pseudo-random keys over a small alphabet rich in braces.
        keys.push((0..=255u8).collect());
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let key = (0..len)
                .map(|i| b"ab{}7\xff:."[((x >> (3 * (i % 20))) % 8) as usize])
                .collect();
            keys.push(key);
        }
        for key in &keys {
            let want = redis_protocol::redis_keyslot(key);
            assert_eq!(slot_of(key), want, "{key:?}");
            for cut in 0..=key.len() {
                let (head, tail) = key.split_at(cut);
                assert_eq!(slot_of_parts(head, tail), want, "{head:?} ++ {tail:?}");
                if let Some(crc) = head_crc(head) {
                    assert_eq!(slot_after(crc, head, tail), want, "{head:?} ++ {tail:?}");
                }
            }
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
