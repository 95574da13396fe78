//! Event time: UTC instants with nanosecond precision.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

pub use chrono::FixedOffset;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant in UTC, as nanoseconds since the Unix epoch.
///
/// Chains are ordered by this event time, never by arrival. In JSON it is an RFC 3339 string
/// (`2021-03-14T01:40:15.340Z`), so alerts stay readable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A time string that no accepted layout could read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable timestamp {0:?}")]
pub struct TimeParseError(pub String);

impl Timestamp {
    /// The instant `nanos` nanoseconds after the Unix epoch.
    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    /// The instant `millis` milliseconds after the Unix epoch (saturating).
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch (rounded toward negative infinity).
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// This instant moved by `nanos` (saturating at the ends of the range).
    pub const fn add_nanos(self, nanos: i64) -> Self {
        Self(self.0.saturating_add(nanos))
    }

    /// `self - earlier` in nanoseconds (saturating).
    pub const fn nanos_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Reads a timestamp as telemetry writes them.
    ///
    /// Accepts RFC 3339 / ISO 8601 with `T` or a space between date and time, with or without
    /// fractional seconds, with `Z`, a numeric offset, or no zone at all. A string without a
    /// zone is read in `default_offset` (the source's configured zone, UTC by default): it is the
    /// caller's decision, made once per source, never guessed per record.
    pub fn parse_lenient(text: &str, default_offset: FixedOffset) -> Result<Self, TimeParseError> {
        let s = text.trim();
        let err = || TimeParseError(text.to_owned());
        if s.len() < 10 {
            return Err(err());
        }
        if let Some(t) = Self::parse_utc_z(s.as_bytes()) {
            return Ok(t);
        }
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Self::from_chrono(dt.with_timezone(&Utc)).ok_or_else(err);
        }
        // `2021-03-14 01:40:15.34+01:00`, `...Z` with a space separator, or zone-less forms.
        let normalized: String = s.replacen(' ', "T", 1);
        if let Ok(dt) = DateTime::parse_from_rfc3339(&normalized) {
            return Self::from_chrono(dt.with_timezone(&Utc)).ok_or_else(err);
        }
        for layout in [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%dT%H:%M",
        ] {
            if let Ok(naive) = NaiveDateTime::parse_from_str(&normalized, layout) {
                let local = default_offset
                    .from_local_datetime(&naive)
                    .single()
                    .ok_or_else(err)?;
                return Self::from_chrono(local.with_timezone(&Utc)).ok_or_else(err);
            }
        }
        Err(err())
    }

    /// `YYYY-MM-DDTHH:MM:SS[.f]Z` with one to nine fraction digits, the form most telemetry
    /// writes, read without chrono's general parser (a tenth of reading a record raw); `None`
    /// for anything else (other forms, leap seconds, impossible dates), which chrono reads.
    fn parse_utc_z(s: &[u8]) -> Option<Self> {
        let n = s.len();
        if !(20..=30).contains(&n)
            || s[4] != b'-'
            || s[7] != b'-'
            || s[10] != b'T'
            || s[13] != b':'
            || s[16] != b':'
            || s[n - 1] != b'Z'
        {
            return None;
        }
        let number = |digits: &[u8]| {
            digits.iter().try_fold(0u32, |v, &c| {
                c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
            })
        };
        let fraction = &s[19..n - 1];
        let nanos = match fraction {
            [] => 0,
            [b'.', digits @ ..] if !digits.is_empty() => {
                number(digits)? * 10u32.pow(9 - u32::try_from(digits.len()).ok()?)
            }
            _ => return None,
        };
        let date = chrono::NaiveDate::from_ymd_opt(
            i32::try_from(number(&s[0..4])?).ok()?,
            number(&s[5..7])?,
            number(&s[8..10])?,
        )?;
        let time = date.and_hms_nano_opt(
            number(&s[11..13])?,
            number(&s[14..16])?,
            number(&s[17..19])?,
            nanos,
        )?;
        Self::from_chrono(time.and_utc())
    }

    /// Reads an RFC 3339 timestamp (with a zone), as chainwatch itself writes them.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeParseError> {
        let dt = DateTime::parse_from_rfc3339(text.trim())
            .map_err(|_| TimeParseError(text.to_owned()))?;
        Self::from_chrono(dt.with_timezone(&Utc)).ok_or_else(|| TimeParseError(text.to_owned()))
    }

    fn from_chrono(dt: DateTime<Utc>) -> Option<Self> {
        dt.timestamp_nanos_opt().map(Self)
    }

    /// This instant as a chrono UTC date-time.
    pub fn to_chrono(self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.0)
    }
}

/// `value` as `out.len()` decimal digits, zero-padded (the value fits).
fn digits(out: &mut [u8], mut value: u32) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

impl Timestamp {
    /// `%Y-%m-%dT%H:%M:%S` then `.` and milliseconds, or nanoseconds when the instant is not
    /// a whole millisecond, then `Z`, written into `out`; returns the text's length. Written
    /// digit by digit: alerts carry a timestamp per look-back event, and chrono's `format`
    /// parses its pattern on every call (a tenth of rendering an alert). The years an `i64`
    /// of nanoseconds reaches (1677 to 2262) all have four digits.
    fn write_rfc3339(&self, out: &mut [u8; 30]) -> usize {
        use chrono::{Datelike, Timelike};
        let dt = self.to_chrono();
        *out = *b"0000-00-00T00:00:00.000000000Z";
        digits(&mut out[0..4], dt.year().unsigned_abs());
        digits(&mut out[5..7], dt.month());
        digits(&mut out[8..10], dt.day());
        digits(&mut out[11..13], dt.hour());
        digits(&mut out[14..16], dt.minute());
        digits(&mut out[17..19], dt.second());
        let nanos = dt.nanosecond();
        if self.0 % 1_000_000 == 0 {
            digits(&mut out[20..23], nanos / 1_000_000);
            out[23] = b'Z';
            24
        } else {
            digits(&mut out[20..29], nanos);
            30
        }
    }
}

impl fmt::Display for Timestamp {
    /// As `Timestamp::write_rfc3339` writes it (`%Y-%m-%dT%H:%M:%S`, milliseconds or
    /// nanoseconds, `Z`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 30];
        let len = self.write_rfc3339(&mut out);
        // Only ASCII digits and separators were written.
        f.write_str(std::str::from_utf8(&out[..len]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    /// As `Display` writes it, as one string (without `collect_str`'s formatting machinery).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = [0u8; 30];
        let len = self.write_rfc3339(&mut out);
        let text = std::str::from_utf8(&out[..len]).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// Reads a UTC offset written as `+05:00`, `-0330`, `+05`, `Z` or `UTC`.
pub fn parse_offset(text: &str) -> Option<FixedOffset> {
    let s = text.trim();
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Some(utc_offset());
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    if h > 14 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// UTC as a fixed offset, the default zone for zone-less time strings.
pub fn utc_offset() -> FixedOffset {
    FixedOffset::east_opt(0).expect("zero is a valid offset")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        Timestamp::parse_lenient(s, utc_offset()).unwrap()
    }

    #[test]
    fn reads_the_layouts_telemetry_uses() {
        let z = utc("2021-03-14T01:40:15.340Z");
        assert_eq!(z.to_string(), "2021-03-14T01:40:15.340Z");
        assert_eq!(utc("2021-03-14 01:40:15.340Z"), z);
        assert_eq!(utc("2021-03-14 01:40:15.34"), z);
        assert_eq!(utc("2021-03-14T02:40:15.340+01:00"), z);
        assert_eq!(
            utc("2025-10-24T23:41:48.497170Z").to_string(),
            "2025-10-24T23:41:48.497170000Z"
        );
    }

    #[test]
    fn writes_what_chrono_s_pattern_writes_over_the_whole_range() {
        let reference = |t: Timestamp| {
            let pattern = if t.0 % 1_000_000 == 0 {
                "%Y-%m-%dT%H:%M:%S%.3fZ"
            } else {
                "%Y-%m-%dT%H:%M:%S%.9fZ"
            };
            t.to_chrono().format(pattern).to_string()
        };
        let mut n: i64 = i64::MIN;
        let mut cases = vec![i64::MAX, 0, -1, 1, 999_999, -1_000_000, 1_000_000];
        // Steps that are not round, so every field takes many values; and the same instants
        // cut to whole milliseconds.
        while let Some(next) = n.checked_add(7_777_777_777_777_777) {
            cases.extend([n, n - n % 1_000_000]);
            n = next;
        }
        for nanos in cases {
            let t = Timestamp::from_nanos(nanos);
            assert_eq!(t.to_string(), reference(t), "{nanos}");
        }
    }

    #[test]
    fn the_common_form_reads_as_chrono_reads_it() {
        let chrono = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .and_then(|d| Timestamp::from_chrono(d.with_timezone(&Utc)))
        };
        let mut cases: Vec<String> = [
            "2021-03-14T01:40:15Z",
            "2021-03-14T01:40:15.3Z",
            "2021-03-14T01:40:15.340Z",
            "2021-03-14T01:40:15.123456789Z",
            "2020-02-29T23:59:59.999999999Z",
            "1970-01-01T00:00:00Z",
            "1677-09-21T00:12:43.145224192Z",
            "2262-04-11T23:47:16.854775807Z",
            "2262-04-11T23:47:16.854775808Z",
            "2021-02-29T00:00:00Z",
            "2021-13-01T00:00:00Z",
            "2021-03-14T24:00:00Z",
            "2016-12-31T23:59:60Z",
            "2021-03-14T01:40:15.Z",
            "2021-03-14T01:40:15.1234567890Z",
            "2021-03-14t01:40:15Z",
            "2021-03-14T01:40:15z",
            "2021-03-14 01:40:15Z",
            "+021-03-14T01:40:15Z",
            "2021-03-14T01:40:1xZ",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // A spread of instants, in every fraction length.
        let mut n: i64 = -9_000_000_000_000_000_000;
        while n < 9_000_000_000_000_000_000 {
            let text = Timestamp::from_nanos(n).to_string();
            for digits in [0usize, 1, 3, 6, 9] {
                let (head, frac) = text.split_at(19);
                let frac = &frac[1..frac.len() - 1];
                cases.push(match digits {
                    0 => format!("{head}Z"),
                    d => format!("{head}.{}Z", &format!("{frac:0<9}")[..d]),
                });
            }
            n += 123_456_789_012_345_677;
        }
        let mut fast_read = 0;
        for case in &cases {
            let fast = Timestamp::parse_utc_z(case.as_bytes());
            if let Some(t) = fast {
                assert_eq!(Some(t), chrono(case), "{case}");
                fast_read += 1;
            }
        }
        // Every generated instant is in the common form (five per instant), and so are the
        // first four fixed cases and the two at the ends of the range.
        assert!(
            fast_read >= cases.len() - 20 + 8,
            "{fast_read} of {}",
            cases.len()
        );
    }

    #[test]
    fn zone_less_strings_use_the_source_zone() {
        let plus5 = FixedOffset::east_opt(5 * 3600).unwrap();
        let t = Timestamp::parse_lenient("2020-10-18 12:49:39.776", plus5).unwrap();
        assert_eq!(t, utc("2020-10-18T07:49:39.776Z"));
    }

    #[test]
    fn reads_offsets() {
        assert_eq!(parse_offset("+05:00").unwrap().local_minus_utc(), 18000);
        assert_eq!(parse_offset("-0330").unwrap().local_minus_utc(), -12600);
        assert_eq!(parse_offset("Z").unwrap().local_minus_utc(), 0);
        assert!(parse_offset("5").is_none());
        assert!(parse_offset("+25:00").is_none());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Timestamp::parse_lenient("yesterday", utc_offset()).is_err());
        assert!(Timestamp::parse_lenient("2021-13-40 99:00:00", utc_offset()).is_err());
        assert!(Timestamp::parse_lenient("", utc_offset()).is_err());
    }

    #[test]
    fn json_round_trip() {
        let t = utc("2021-03-14T01:40:15.340Z");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2021-03-14T01:40:15.340Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
