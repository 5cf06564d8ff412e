//! The few scanning primitives every RESP reader in rekey shares: finding the end of a line
//! and reading a length or an integer the way Redis does. The request parser, the reply frame
//! scanner and the reply tree all use these, so there is one of each.

/// Where the next `\r` is.
pub fn find_cr(s: &[u8]) -> Option<usize> {
    memchr::memchr(b'\r', s)
}

/// Where the first `\r\n` at or after `from` starts (a lone `\r` is content).
pub fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let cr = at + find_cr(buf.get(at..)?)?;
        match buf.get(cr + 1) {
            Some(b'\n') => return Some(cr),
            Some(_) => at = cr + 1,
            None => return None,
        }
    }
}

/// The line that starts at `from`: its content and where the next one starts, `None` while its
/// `\r\n` has not arrived.
pub fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let cr = find_crlf(buf, from)?;
    Some((buf.get(from..cr)?, cr + 2))
}

/// The common case of the parser's header read in one pass: a complete, well-formed, non-negative
/// length (no sign, no leading zero, at most 18 digits) followed by CRLF. `None` leaves every
/// other case, incomplete or wrong, to the slower, exact read.
#[inline]
pub fn quick_len(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let bytes = buf.get(pos..)?;
    // One or two digits: nearly every header.
    match *bytes {
        [d @ b'0'..=b'9', b'\r', b'\n', ..] => return Some(((d - b'0') as usize, pos + 3)),
        [a @ b'1'..=b'9', b @ b'0'..=b'9', b'\r', b'\n', ..] => {
            return Some(((a - b'0') as usize * 10 + (b - b'0') as usize, pos + 4))
        }
        _ => {}
    }
    let mut v = 0usize;
    let mut i = 0;
    while i < bytes.len().min(18) {
        let d = bytes[i].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v * 10 + d as usize;
        i += 1;
    }
    let leading_zero = i > 1 && bytes[0] == b'0';
    if i == 0 || leading_zero || bytes.get(i..i + 2) != Some(b"\r\n") {
        return None;
    }
    Some((v, pos + i + 2))
}

/// Parses a decimal integer the way Redis's `string2ll` accepts it.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    // Like Redis: no leading zero, and no "-0".
    if digits.is_empty() || digits.len() > 19 || (digits[0] == b'0' && (neg || digits.len() > 1)) {
        return None;
    }
    // Accumulated negative: the range goes one further down (-9223372036854775808).
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub((d - b'0') as i64)?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_int_takes_what_string2ll_takes() {
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        for bad in [&b""[..], b"-", b"-0", b"01", b"+1", b"1 "] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }
}
