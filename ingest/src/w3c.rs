//! W3C extended log format, as IIS writes its access logs.
//!
//! A W3C log is stateful: directive lines (`#Software:`, `#Version:`, `#Date:`, `#Fields:`)
//! describe the data lines after them, and `#Fields:` names their space-separated columns. IIS
//! writes a new directive block whenever it starts a file or restarts, and the columns may
//! change between blocks. So each data line is decoded against the `#Fields:` header in force
//! where it sits:
//!
//! - in a file, the last header above the line ([`W3cState`] is fed the file's lines in order);
//! - on Kafka, the last header of the same stream (topic, partition and message key: a shipper
//!   tailing one log sends its lines in order to one partition), including headers in the same
//!   message; before any header (after a restart, or from a shipper that drops comment lines)
//!   the source's configured `w3c_fields`, else the line is dead-lettered as `no_w3c_header`.
//!
//! A line whose value count differs from its header is dead-lettered as `w3c_field_count` (a
//! truncated line, or a header that is not its own). Values are kept as IIS wrote them: `-` for
//! empty, `+` for spaces in `cs(User-Agent)`, URLs percent-encoded.
//!
//! Time is `date` + `time`, which IIS always writes in UTC (zone-less strings are read in the
//! source's zone, UTC by default: leave it). The host is `s-computername` where logged (enable
//! it to join web requests with the server's Windows events), else the server address `s-ip`.

use std::sync::Arc;

use chainwatch_model::{FieldValue, Fields};

use crate::error::DecodeError;
use crate::layout::{Layout, TimeField};

/// Where W3C lines keep time and host. `Hostname` and `host.name` are for W3C lines shipped as
/// JSON by an agent on the server itself (NXLog's `xm_w3c`, for example).
pub const LAYOUT: Layout = Layout {
    time: &[
        TimeField::DateAndTime("date", "time"),
        TimeField::Text("@timestamp"),
        TimeField::Text("EventTime"),
    ],
    time_names: "date + time",
    host: &["s-computername", "Hostname", "host.name", "s-ip"],
    host_names: "s-computername, s-ip",
};

/// The column names of W3C data lines, and what the directives before them said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct W3cHeader {
    /// Column names, in order.
    pub fields: Vec<Box<str>>,
    /// The `#Date:` directive's date (`2021-03-14`), for logs without a `date` column.
    pub date: Option<Box<str>>,
    /// The `#Software:` directive (`Microsoft Internet Information Services 10.0`).
    pub software: Option<Box<str>>,
}

impl W3cHeader {
    /// A header from a `#Fields:` value (`date time s-ip cs-method ...`), or `None` when it
    /// names no column or a column twice.
    pub fn from_names(names: &str) -> Option<Self> {
        let fields: Vec<Box<str>> = names.split_whitespace().map(Box::from).collect();
        let unique = fields
            .iter()
            .enumerate()
            .all(|(i, f)| !fields[..i].contains(f));
        (!fields.is_empty() && unique).then_some(Self {
            fields,
            date: None,
            software: None,
        })
    }
}

/// The directives seen so far in one W3C stream (a file, or a Kafka stream).
#[derive(Debug, Clone, Default)]
pub struct W3cState {
    header: Option<Arc<W3cHeader>>,
    date: Option<Box<str>>,
    software: Option<Box<str>>,
}

impl W3cState {
    /// A stream with no directive seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The header in force, if any.
    pub fn header(&self) -> Option<Arc<W3cHeader>> {
        self.header.clone()
    }

    /// Reads one directive line (starting with `#`). The W3C directives that carry nothing for
    /// decoding (`#Version:`, `#Remark:`, `#Start-Date:`, `#End-Date:`) are accepted and
    /// ignored. A `#Fields:` line naming no column, or one twice, and a line that is no W3C
    /// directive at all, are errors (the line is dead-lettered, not silently dropped); the
    /// previous header stays in force.
    pub fn directive(&mut self, line: &str) -> Result<(), DecodeError> {
        let body = line.trim_start_matches('#');
        let (name, value) = body.split_once(':').unwrap_or((body, ""));
        let value = value.trim();
        match name.trim() {
            n if n.eq_ignore_ascii_case("Fields") => {
                let mut header = W3cHeader::from_names(value).ok_or_else(|| {
                    DecodeError::BadW3cDirective(format!(
                        "#Fields: {value:?} names no column, or one twice"
                    ))
                })?;
                header.date = self.date.clone();
                header.software = self.software.clone();
                self.header = Some(Arc::new(header));
            }
            n if n.eq_ignore_ascii_case("Date") => {
                self.date = value.split_whitespace().next().map(Box::from);
            }
            n if n.eq_ignore_ascii_case("Software") => {
                self.software = (!value.is_empty()).then(|| value.into());
            }
            n if ["Version", "Remark", "Start-Date", "End-Date"]
                .iter()
                .any(|d| n.eq_ignore_ascii_case(d)) => {}
            n => {
                let n: String = n.chars().take(40).collect();
                return Err(DecodeError::BadW3cDirective(format!(
                    "#{n} is not a W3C directive"
                )));
            }
        }
        Ok(())
    }
}

/// True when a line looks like a W3C data line: it starts with a `YYYY-MM-DD` date.
pub fn looks_like_data_line(line: &[u8]) -> bool {
    line.len() > 11
        && line[..4].iter().all(u8::is_ascii_digit)
        && line[4] == b'-'
        && line[5..7].iter().all(u8::is_ascii_digit)
        && line[7] == b'-'
        && line[8..10].iter().all(u8::is_ascii_digit)
        && line[10] == b' '
}

/// The fields of one data line, named by `header`.
pub fn line_fields(line: &str, header: &W3cHeader) -> Result<Fields, DecodeError> {
    let values: Vec<&str> = line
        .trim_end_matches(['\r', '\n'])
        .split([' ', '\t'])
        .filter(|v| !v.is_empty())
        .collect();
    if values.len() != header.fields.len() {
        return Err(DecodeError::W3cFieldCount {
            expected: header.fields.len(),
            found: values.len(),
        });
    }
    let mut fields = Fields::with_capacity(values.len() + 12);
    for (name, value) in header.fields.iter().zip(values) {
        fields.push(&**name, FieldValue::Str(value.into()));
    }
    if fields.get("date").is_none()
        && let Some(date) = &header.date
    {
        fields.push("date", FieldValue::Str(date.clone()));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_define_the_columns_of_the_lines_after_them() {
        let mut s = W3cState::new();
        assert!(s.header().is_none());
        s.directive("#Software: Microsoft Internet Information Services 10.0")
            .unwrap();
        s.directive("#Date: 2021-03-14 01:00:00").unwrap();
        s.directive("#Fields: time cs-method cs-uri-stem").unwrap();
        let h = s.header().unwrap();
        assert_eq!(h.date.as_deref(), Some("2021-03-14"));
        let f = line_fields("01:40:12 POST /owa/auth/x.aspx\r\n", &h).unwrap();
        assert_eq!(f.get_str("cs-method"), Some("POST"));
        assert_eq!(f.get_str("date"), Some("2021-03-14"));
        assert_eq!(
            line_fields("01:40:12 POST", &h).unwrap_err(),
            DecodeError::W3cFieldCount {
                expected: 3,
                found: 2
            }
        );
        assert_eq!(
            s.directive("#Fields: a a").unwrap_err().reason(),
            "bad_w3c_directive"
        );
        assert_eq!(s.header().unwrap().fields.len(), 3, "the old header stays");
        s.directive("#Remark: anything").unwrap();
        s.directive("#Version: 1.0").unwrap();
        assert_eq!(
            s.directive("# just a comment").unwrap_err().reason(),
            "bad_w3c_directive"
        );
    }

    #[test]
    fn data_lines_start_with_a_date() {
        assert!(looks_like_data_line(b"2021-03-14 01:40:12 10.0.0.5 GET /"));
        assert!(!looks_like_data_line(b"#Fields: date"));
        assert!(!looks_like_data_line(b"{\"a\":1}"));
        assert!(!looks_like_data_line(b"2021-03-14"));
    }
}
