//! Provider times to RFC 3339 with an offset. Recognized: RFC 3339 / ISO 8601 instants,
//! RFC 2822 dates, epoch seconds and epoch milliseconds (as numbers or digit strings), and zone-less local
//! times ("2021-04-09 16:27:39"), which are read in the source's configured time zone.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde_json::Value;

/// Epoch values above this are milliseconds (10^11 s is the year 5138).
const MILLIS_ABOVE: i64 = 100_000_000_000;

pub fn parse(value: &Value, tz: &TimeZone) -> Option<Timestamp> {
    match value {
        Value::Number(n) => epoch(&n.to_string()),
        Value::String(s) => parse_text(s.trim(), tz),
        _ => None,
    }
}

fn epoch(text: &str) -> Option<Timestamp> {
    let whole = text.split('.').next()?;
    let n: i64 = whole.parse().ok()?;
    if n.abs() > MILLIS_ABOVE { Timestamp::from_millisecond(n).ok() } else { Timestamp::from_second(n).ok() }
}

fn parse_text(s: &str, tz: &TimeZone) -> Option<Timestamp> {
    if s.is_empty() {
        return None;
    }
    // Digits alone (with an optional fraction) are epoch seconds or milliseconds.
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && let Some(ts) = epoch(s)
    {
        return Some(ts);
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts);
    }
    // Twilio's `Timestamp`: "Wed, 01 May 2024 10:00:05 +0000".
    if s.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && let Ok(zoned) = jiff::fmt::rfc2822::parse(s)
    {
        return Some(zoned.timestamp());
    }
    let local: DateTime = s.parse().ok()?;
    local.to_zoned_datetime(tz.clone()).ok().map(|z| z.timestamp())
}

/// A duration written `HH:MM:SS` (or `MM:SS`, or plain seconds), as Ozonetel and
/// MyOperator send them, in whole seconds.
pub fn clock(text: &str) -> Option<i64> {
    let mut seconds = 0i64;
    for part in text.trim().split(':') {
        seconds = seconds.checked_mul(60)?.checked_add(part.trim().parse::<i64>().ok()?)?;
    }
    Some(seconds)
}

/// RFC 3339 in the zone's offset at that instant, e.g. `2021-04-09T16:27:39+05:30`.
pub fn format(ts: Timestamp, tz: &TimeZone) -> String {
    ts.display_with_offset(tz.to_offset(ts)).to_string()
}

pub fn from_millis(ms: i64, tz: &TimeZone) -> String {
    format(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH), tz)
}

/// Reads back a time this module wrote (`…+05:30` or `…Z`), keeping its offset, for
/// template date filters.
pub fn read_back(s: &str) -> Option<jiff::ZonedDateTime> {
    let ts: Timestamp = s.parse().ok()?;
    let offset = match s.len().checked_sub(6).and_then(|i| s.get(i..)) {
        Some(tail) if !s.ends_with('Z') && matches!(tail.as_bytes()[0], b'+' | b'-') => {
            let hours: i32 = tail.get(1..3)?.parse().ok()?;
            let minutes: i32 = tail.get(4..6)?.parse().ok()?;
            let seconds = (hours * 3600 + minutes * 60) * if tail.starts_with('-') { -1 } else { 1 };
            jiff::tz::Offset::from_seconds(seconds).ok()?
        }
        _ => jiff::tz::Offset::UTC,
    };
    Some(ts.to_zoned_datetime(TimeZone::fixed(offset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kolkata() -> TimeZone {
        TimeZone::get("Asia/Kolkata").unwrap()
    }

    #[test]
    fn every_form_reads_to_the_same_instant() {
        let tz = TimeZone::UTC;
        let iso = parse(&Value::from("2019-10-16T08:12:01Z"), &tz).unwrap();
        let secs = parse(&serde_json::json!(1571213521), &tz).unwrap();
        let ms = parse(&serde_json::json!(1571213521000i64), &tz).unwrap();
        let ms_text = parse(&Value::from("1571213521000"), &tz).unwrap();
        assert_eq!(iso, secs);
        assert_eq!(iso, ms);
        assert_eq!(iso, ms_text);
        assert_eq!(iso, parse(&Value::from("Wed, 16 Oct 2019 08:12:01 +0000"), &tz).unwrap());
        assert_eq!(format(iso, &tz), "2019-10-16T08:12:01+00:00");
    }

    #[test]
    fn local_times_use_the_source_zone() {
        let ts = parse(&Value::from("2021-04-09 16:27:39"), &kolkata()).unwrap();
        assert_eq!(format(ts, &kolkata()), "2021-04-09T16:27:39+05:30");
        assert_eq!(format(ts, &TimeZone::UTC), "2021-04-09T10:57:39+00:00");
        assert!(parse(&Value::from("not a time"), &kolkata()).is_none());
    }

    #[test]
    fn clock_durations_read_as_seconds() {
        assert_eq!(clock("00:02:06"), Some(126));
        assert_eq!(clock("1:00:00"), Some(3600));
        assert_eq!(clock("74"), Some(74));
        assert_eq!(clock("a:b"), None);
        assert_eq!(clock("3074457345618258602:59"), None, "overflow");
    }

    #[test]
    fn read_back_keeps_the_offset() {
        let z = read_back("2021-04-09T16:27:39+05:30").unwrap();
        assert_eq!(z.strftime("%Y-%m-%d %H:%M:%S").to_string(), "2021-04-09 16:27:39");
        assert_eq!(z.timestamp().as_second(), 1617965859);
    }
}
