//! Where a format keeps its event time and its host: one clock per source, the origin before
//! any collector.
//!
//! Each format lists its time fields and its host fields in the order they are tried. A source
//! writes the same fields on every record, so the first field present is the same on every
//! record: that is the source's one clock. Clocks a format carries besides its envelope (Sysmon's
//! `UtcTime`, ECS `event.created`, Defender's `TimeGenerated`) are never read: they disagree with
//! the envelope in real recordings (datasets README, "Clocks").

use chainwatch_model::time::FixedOffset;
use chainwatch_model::{FieldValue, Fields, HostName, Timestamp};

use crate::error::DecodeError;

/// A place an event time is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    /// One field holding a date and time (RFC 3339 / ISO 8601; zone-less strings are read in
    /// the source's zone).
    Text(&'static str),
    /// One field holding milliseconds since the Unix epoch (OCSF `time`), or a date-time string.
    EpochMillis(&'static str),
    /// A date field and a time-of-day field (W3C `date` and `time`).
    DateAndTime(&'static str, &'static str),
}

/// How one format names its event time and its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Time fields, in the order they are tried.
    pub time: &'static [TimeField],
    /// The time fields in words, for the `no_time` message.
    pub time_names: &'static str,
    /// Host fields, the origin first, collectors last.
    pub host: &'static [&'static str],
    /// The host fields in words, for the `no_host` message.
    pub host_names: &'static str,
}

fn present<'a>(fields: &'a Fields, name: &str) -> Option<&'a FieldValue> {
    match fields.get(name)? {
        FieldValue::Null => None,
        FieldValue::Str(s) if s.trim().is_empty() || &**s == "-" => None,
        v => Some(v),
    }
}

impl Layout {
    /// The event time by the first time field present.
    pub fn time(&self, fields: &Fields, zone: FixedOffset) -> Result<Timestamp, DecodeError> {
        for tf in self.time {
            match *tf {
                TimeField::Text(name) => {
                    let Some(v) = present(fields, name) else {
                        continue;
                    };
                    let text = v.as_str().ok_or(DecodeError::WrongType {
                        field: "event time",
                        expected: "a string",
                    })?;
                    return parse(text, zone);
                }
                TimeField::EpochMillis(name) => {
                    let Some(v) = present(fields, name) else {
                        continue;
                    };
                    return match v {
                        FieldValue::Int(ms) => Ok(Timestamp::from_millis(*ms)),
                        FieldValue::Float(ms) if ms.is_finite() => {
                            Ok(Timestamp::from_nanos((ms * 1e6) as i64))
                        }
                        FieldValue::Str(s) => match s.trim().parse::<i64>() {
                            Ok(ms) => Ok(Timestamp::from_millis(ms)),
                            Err(_) => parse(s, zone),
                        },
                        _ => Err(DecodeError::WrongType {
                            field: "event time",
                            expected: "epoch milliseconds or a date-time string",
                        }),
                    };
                }
                TimeField::DateAndTime(date, time) => {
                    let (Some(d), Some(t)) = (present(fields, date), present(fields, time)) else {
                        continue;
                    };
                    let (Some(d), Some(t)) = (d.as_str(), t.as_str()) else {
                        return Err(DecodeError::WrongType {
                            field: "event date and time",
                            expected: "strings",
                        });
                    };
                    return parse(&format!("{} {}", d.trim(), t.trim()), zone);
                }
            }
        }
        Err(DecodeError::NoTime(self.time_names))
    }

    /// The host by the first host field present and not empty. A host field of another type
    /// than a string is an error, not skipped: it would otherwise fall through to a collector.
    pub fn host(&self, fields: &Fields) -> Result<HostName, DecodeError> {
        for name in self.host {
            let Some(v) = present(fields, name) else {
                continue;
            };
            return match v {
                // A name that is all dots and spaces names no machine.
                FieldValue::Str(s) => match HostName::new(s) {
                    h if h.is_empty() => continue,
                    h => Ok(h),
                },
                _ => Err(DecodeError::WrongType {
                    field: "host",
                    expected: "a string",
                }),
            };
        }
        Err(DecodeError::NoHost(self.host_names))
    }
}

fn parse(text: &str, zone: FixedOffset) -> Result<Timestamp, DecodeError> {
    Timestamp::parse_lenient(text, zone).map_err(|_| DecodeError::BadTime(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chainwatch_model::time::utc_offset;

    const L: Layout = Layout {
        time: &[
            TimeField::Text("@timestamp"),
            TimeField::EpochMillis("time"),
            TimeField::DateAndTime("date", "time-of-day"),
        ],
        time_names: "@timestamp, time, date + time-of-day",
        host: &["origin", "collector"],
        host_names: "origin, collector",
    };

    fn fields(pairs: &[(&str, FieldValue)]) -> Fields {
        let mut f = Fields::new();
        for (k, v) in pairs {
            f.push(*k, v.clone());
        }
        f
    }

    #[test]
    fn the_first_present_clock_wins() {
        let f = fields(&[
            ("time", FieldValue::Int(1_615_686_015_338)),
            (
                "@timestamp",
                FieldValue::Str("2021-03-14T01:40:15.338Z".into()),
            ),
        ]);
        assert_eq!(
            L.time(&f, utc_offset()).unwrap().to_string(),
            "2021-03-14T01:40:15.338Z"
        );
        let f = fields(&[("time", FieldValue::Int(1_615_686_015_338))]);
        assert_eq!(
            L.time(&f, utc_offset()).unwrap().to_string(),
            "2021-03-14T01:40:15.338Z"
        );
        let f = fields(&[
            ("date", FieldValue::Str("2021-03-14".into())),
            ("time-of-day", FieldValue::Str("01:40:15".into())),
        ]);
        assert_eq!(
            L.time(&f, utc_offset()).unwrap().to_string(),
            "2021-03-14T01:40:15.000Z"
        );
    }

    #[test]
    fn missing_empty_and_mistyped_times() {
        let f = fields(&[("@timestamp", FieldValue::Str(" ".into()))]);
        assert_eq!(L.time(&f, utc_offset()).unwrap_err().reason(), "no_time");
        let f = fields(&[("@timestamp", FieldValue::Bool(true))]);
        assert_eq!(L.time(&f, utc_offset()).unwrap_err().reason(), "wrong_type");
        let f = fields(&[("time", FieldValue::List(vec![]))]);
        assert_eq!(L.time(&f, utc_offset()).unwrap_err().reason(), "wrong_type");
        let f = fields(&[("time", FieldValue::Str("soon".into()))]);
        assert_eq!(L.time(&f, utc_offset()).unwrap_err().reason(), "bad_time");
    }

    #[test]
    fn the_origin_host_before_the_collector() {
        let f = fields(&[
            ("collector", FieldValue::Str("wec.example".into())),
            ("origin", FieldValue::Str("WS6.corp.local".into())),
        ]);
        assert_eq!(L.host(&f).unwrap().key(), "ws6");
        let f = fields(&[
            ("origin", FieldValue::Str("".into())),
            ("collector", FieldValue::Str("wec.example".into())),
        ]);
        assert_eq!(L.host(&f).unwrap().key(), "wec");
        let f = fields(&[("origin", FieldValue::Int(5))]);
        assert_eq!(L.host(&f).unwrap_err().reason(), "wrong_type");
        assert_eq!(L.host(&Fields::new()).unwrap_err().reason(), "no_host");
    }
}
