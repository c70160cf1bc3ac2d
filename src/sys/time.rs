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
}
