//! Times as RFC 3339 text, without a date-time crate: what the wire formats (Connect's
//! `Timestamp`, E2B's control-plane API) need is formatting UTC, nothing more.

/// `seconds` since the epoch plus `nanos` as RFC 3339 UTC (`2026-12-02T06:40:00Z`), with as
/// many fractional digits as the value needs (none, 3, 6 or 9), as Go and protobuf's JSON do.
pub fn rfc3339(seconds: i64, nanos: u32) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let n = nanos;
    if n == 0 {
    } else if n.is_multiple_of(1_000_000) {
        out.push_str(&format!(".{:03}", n / 1_000_000));
    } else if n.is_multiple_of(1_000) {
        out.push_str(&format!(".{:06}", n / 1_000));
    } else {
        out.push_str(&format!(".{n:09}"));
    }
    out.push('Z');
    out
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339_millis(millis: i64) -> String {
    rfc3339(
        millis.div_euclid(1000),
        (millis.rem_euclid(1000) as u32) * 1_000_000,
    )
}

/// Now, in milliseconds since the epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A date as kernels and clients write it (RFC 3339 and its relatives: `Z`, no offset,
/// `±HH:MM`, `±HHMM`, `±HH`, a space for the `T`, no seconds, any number of fractional
/// digits) as (seconds since the epoch, microseconds); `None` if it is not one.
pub fn parse_rfc3339(date: &str) -> Option<(i64, i64)> {
    let b = date.trim().as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(b.get(r)?).ok()?.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let s = if b.get(16) == Some(&b':') {
        num(17..19)?
    } else {
        0
    };
    let mut i = if b.get(16) == Some(&b':') { 19 } else { 16 };
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let mut digits = 0;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if digits < 6 {
                micros = micros * 10 + i64::from(c - b'0');
                digits += 1;
            }
            i += 1;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    // Offset: Z, none, ±HH:MM, ±HHMM or ±HH.
    let offset_secs = match b.get(i) {
        None | Some(b'Z') | Some(b'z') => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let rest: Vec<u8> = b[i + 1..].iter().copied().filter(|c| *c != b':').collect();
            let oh: i64 = std::str::from_utf8(rest.get(0..2)?).ok()?.parse().ok()?;
            let om: i64 = match rest.get(2..4) {
                Some(m) => std::str::from_utf8(m).ok()?.parse().ok()?,
                None => 0,
            };
            let off = oh * 3600 + om * 60;
            if sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let epoch = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset_secs;
    Some((epoch, micros))
}

/// (year, month, day) of the proleptic Gregorian calendar to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day): Howard Hinnant's
/// `civil_from_days`, which is exact for every `i64` day count a file time can have.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_the_fraction_it_needs() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_millis(1_796_193_600_250),
            "2026-12-02T06:40:00.250Z"
        );
        assert_eq!(rfc3339(-1, 500), "1969-12-31T23:59:59.000000500Z");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        assert_eq!(
            parse_rfc3339("2026-12-02T06:40:00.250Z"),
            Some((1_796_193_600, 250_000))
        );
        assert_eq!(
            parse_rfc3339("2026-12-02T07:40:00+01:00"),
            Some((1_796_193_600, 0))
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
