//! RFC 3339 timestamps to and from Unix milliseconds, without a clock.

use crate::Error;

/// Parses an RFC 3339 timestamp (`2026-08-22T09:29:57.123-07:00`, `...Z`, any number of fraction
/// digits) into milliseconds since the Unix epoch (UTC). Fractions beyond milliseconds are truncated.
///
/// # Errors
/// [`Error::Wire`] naming `field` when the text is not RFC 3339 or lies before 1970.
///
/// # Example
/// ```
/// use boo_fleet_core::time::parse_rfc3339_ms;
/// assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z", "ts").unwrap(), 1500);
/// assert_eq!(parse_rfc3339_ms("2026-08-22T09:29:57-07:00", "ts").unwrap(),
///            parse_rfc3339_ms("2026-08-22T16:29:57Z", "ts").unwrap());
/// ```
pub fn parse_rfc3339_ms(text: &str, field: &str) -> Result<u64, Error> {
    let bad = |problem: &str| Error::wire("timestamp", field, format!("{problem} in {text:?}"));
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err(bad("too short for RFC 3339"));
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, Error> {
        let s = text.get(range).ok_or_else(|| bad("not ASCII"))?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("expected digits"));
        }
        s.parse::<i64>().map_err(|_| bad("expected digits"))
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(bad("date out of range"));
    }
    if hour > 23 || min > 59 || sec > 60 {
        return Err(bad("time out of range"));
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad("empty fraction"));
        }
        let frac = text.get(start..i).ok_or_else(|| bad("not ASCII"))?;
        let mut digits: String = frac.chars().take(3).collect();
        while digits.len() < 3 {
            digits.push('0');
        }
        millis = digits.parse::<i64>().map_err(|_| bad("bad fraction"))?;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return Err(bad("offset out of range"));
            }
            let m = oh * 60 + om;
            if *sign == b'-' { -m } else { m }
        }
        _ => return Err(bad("expected `Z` or a ±HH:MM offset")),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    let ms = secs * 1000 + millis;
    u64::try_from(ms).map_err(|_| bad("before 1970"))
}

/// Formats Unix milliseconds as RFC 3339 in UTC with millisecond precision
/// (`2026-08-22T16:29:57.000Z`), e.g. for `/api/performance?after=`.
///
/// # Example
/// ```
/// use boo_fleet_core::time::format_rfc3339_ms;
/// assert_eq!(format_rfc3339_ms(1500), "1970-01-01T00:00:01.500Z");
/// ```
pub fn format_rfc3339_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests;
