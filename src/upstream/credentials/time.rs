//! Expiry times as sources write them: RFC 3339 text (`2030-01-02T03:04:05Z`,
//! `…05.123+01:00`) or Unix seconds. Hand-written: the one date format rekey reads does not
//! need a date library.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An expiry from JSON: a number of Unix seconds, or RFC 3339 text (or digits as text).
pub fn parse_expiry(v: &serde_json::Value) -> Result<SystemTime, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| UNIX_EPOCH + Duration::from_secs_f64(s))
            .ok_or_else(|| format!("{n} is not a time")),
        serde_json::Value::String(s) => match s.parse::<u64>() {
            Ok(secs) => Ok(UNIX_EPOCH + Duration::from_secs(secs)),
            Err(_) => parse_rfc3339(s),
        },
        _ => Err("must be RFC 3339 text or Unix seconds".into()),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("{s:?} is not an RFC 3339 time");
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(r).and_then(|t| t.parse().ok()).ok_or_else(bad)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let text = &frac[..digits.min(9)];
        nanos = format!("{text:0<9}").parse().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") => {
            let part = |r: std::ops::Range<usize>| -> Result<i64, String> {
                rest.get(r).and_then(|t| t.parse().ok()).ok_or_else(bad)
            };
            let (h, m) = (part(1..3)?, part(4..6)?);
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return Err(bad()),
    };
    let secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec - offset;
    let secs = u64::try_from(secs).map_err(|_| bad())?;
    Ok(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Unix seconds of `t` (0 before the epoch).
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_rfc3339(s)
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn rfc3339() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), 0);
        assert_eq!(secs("2030-01-02T03:04:05Z"), 1_893_553_445);
        assert_eq!(secs("2030-01-02T04:04:05.5+01:00"), 1_893_553_445);
        assert_eq!(secs("2024-02-29T00:00:00Z"), 1_709_164_800);
        for bad in [
            "",
            "2030-01-02",
            "2030-13-02T03:04:05Z",
            "2030-01-02T03:04:05",
            "x030-01-02T03:04:05Z",
            "2030-01-02T03:04:05+0é00",
            "2030-01-02T03:04:05.é",
            "2030-01-02T03:04é05Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }
}
