//! The fast path's side of ingest: an ordinary record read without decoding it.
//!
//! [`Decoder::read_raw`] reads a flat Windows event (the shape of NXLog, WEF and the OTRF
//! recordings) with the validating scanner of [`crate::raw`], and derives what the full decoder
//! would: its format, channel, provider, event id, time and host, by the same rules
//! ([`crate::detect`], the flat [`Layout`](crate::layout::Layout), `Fields::get`'s exact-then-
//! case-insensitive lookup). It answers only when the full decoder would certainly produce an
//! event from the record; anything it does not read the same way (errors, other formats,
//! nested values, escapes in the fields it reads) is `None`, and the record takes the full
//! decoder, which reports it exactly as before. So a record never changes fate by taking the
//! fast path: an event stays an event, a dead letter stays a dead letter with its reason.

use chainwatch_config::service::InputFormat;
use chainwatch_model::time::Timestamp;
use chainwatch_model::{
    Canonical, Event, FieldOrigins, Origin, RawField, RawKind, RawRecord, TenantId,
};

use crate::decoder::{Decoder, TenantSource};
use crate::detect::{JsonKind, KindClues};
use crate::error::DecodeError;
use crate::json::leaves_of_raw;
use crate::layout::TimeField;
use crate::payload::{Framing, Record};
use crate::raw::scan;
use crate::windows;

/// A flat Windows event read raw: what the correlator's gate needs, and what the engine needs
/// when no rule can match it (its time, for the tenant's clock).
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    /// The record's text and fields, channel and event id.
    pub record: RawRecord<'a>,
    /// The event time, by the format's one clock.
    pub time: Timestamp,
    /// The host field's text, as written (the origin host; [`chainwatch_model::HostName::new`] normalizes it).
    pub host: &'a str,
    /// With a tenant field ([`TenantSource::Field`]): its value, a valid tenant id. `None`
    /// for a fixed tenant.
    pub tenant: Option<&'a str>,
}

/// The field names the fast path reads: the flat layout's time and host fields, channel,
/// event id and provider fields.
const NAMES: [&str; 13] = [
    "@timestamp",
    "TimeCreated",
    "EventTime",
    "Hostname",
    "Computer",
    "ComputerName",
    "host.name",
    "host",
    "Channel",
    "EventID",
    "Provider_Name",
    "SourceName",
    "ProviderName",
];
const CHANNEL: usize = 8;
const EVENT_ID: usize = 9;

/// Indices into [`NAMES`] of the names of each length (keys of other lengths are none of them).
fn names_of_length(len: usize) -> &'static [usize] {
    match len {
        4 => &[7],
        7 => &[8, 9],
        8 => &[3, 4],
        9 => &[2, 6],
        10 => &[0, 11],
        11 => &[1],
        12 => &[5, 12],
        13 => &[10],
        _ => &[],
    }
}

/// For each of [`NAMES`], the field `Fields::get` would find: the first of exactly that name,
/// else the first whose name equals it ignoring ASCII case. One pass over the fields.
struct Found<'f> {
    exact: [Option<&'f RawField>; NAMES.len()],
    folded: [Option<&'f RawField>; NAMES.len()],
}

impl<'f> Found<'f> {
    fn get(&self, i: usize) -> Option<&'f RawField> {
        self.exact[i].or(self.folded[i])
    }

    fn by_name(&self, name: &str) -> Option<&'f RawField> {
        let i = NAMES.iter().position(|n| *n == name)?;
        self.get(i)
    }
}

/// A plain string value (no escapes), or `None` for any other value.
fn plain_str<'t>(text: &'t [u8], f: &RawField) -> Option<&'t str> {
    if f.kind == RawKind::Str {
        std::str::from_utf8(f.value(text)).ok()
    } else {
        None
    }
}

/// What `Layout::present` makes of a field: absent (null, empty, `-`), a plain string, or
/// something the full decoder must judge (another type, or a string with escapes).
enum Present<'t> {
    Absent,
    Str(&'t str),
    Judge,
}

fn present<'t>(text: &'t [u8], f: Option<&RawField>) -> Present<'t> {
    let Some(f) = f else {
        return Present::Absent;
    };
    match f.kind {
        RawKind::Null => Present::Absent,
        RawKind::Str => {
            let Some(v) = plain_str(text, f) else {
                return Present::Judge;
            };
            if v.trim().is_empty() || v == "-" {
                Present::Absent
            } else {
                Present::Str(v)
            }
        }
        _ => Present::Judge,
    }
}

/// True when `HostName::new(raw)` names a host: its key is empty exactly when the text is
/// nothing but dots and white space (checked against `HostName` in the tests), and this way
/// allocates nothing.
fn names_a_host(raw: &str) -> bool {
    raw.chars().any(|c| c != '.' && !c.is_whitespace())
}

/// The tenant the full decoder takes from field `name` (the field of that name, or else of
/// that name in another case): its text when it is a plain string and a valid tenant id, and
/// the record has no second field of that name; otherwise the full decoder decides.
fn tenant_field<'a>(text: &'a [u8], fields: &[RawField], name: &str) -> Option<&'a str> {
    let mut named = fields
        .iter()
        .filter(|f| f.key(text).eq_ignore_ascii_case(name.as_bytes()));
    let field = named.next()?;
    if named.next().is_some() || field.kind != RawKind::Str {
        return None;
    }
    let value = std::str::from_utf8(field.value(text)).ok()?;
    TenantId::check(value).ok()?;
    Some(value)
}

impl Decoder {
    /// Reads `record` raw when it is an ordinary flat Windows event the full decoder would
    /// certainly decode; `fields` is scratch space (reused between records). `None`: decode it
    /// in full.
    pub fn read_raw<'a>(
        &self,
        record: &'a Record<'_>,
        tenant: &TenantSource,
        received: Option<Timestamp>,
        fields: &'a mut Vec<RawField>,
    ) -> Option<RawEvent<'a>> {
        let config = self.config();
        let raw: &'a [u8] = &record.bytes;
        if record.framing != Framing::Json
            || raw.len() > config.max_record_bytes
            || config.max_depth < 2
        {
            return None;
        }
        let text = raw;
        let ascii = scan(text, fields)?;
        let fields: &'a [RawField] = fields;
        let tenant = match tenant {
            TenantSource::Fixed(_) => None,
            TenantSource::Field(name) => Some(tenant_field(text, fields, name)?),
        };
        // One pass: the format's clues and the fields read below.
        let mut clues = KindClues::default();
        let mut found = Found {
            exact: [None; NAMES.len()],
            folded: [None; NAMES.len()],
        };
        let mut escaped_category = false;
        let mut nested_path = false;
        for f in fields {
            let key = f.key(text);
            let value = (f.kind == RawKind::Str).then(|| f.value(text));
            clues.note(key, value);
            escaped_category |= f.kind == RawKind::EscapedStr && key == b"category";
            nested_path |= key.starts_with(b"Event.System.");
            for &i in names_of_length(key.len()) {
                let n = NAMES[i].as_bytes();
                // Names equal ignoring ASCII case have equal first bytes with bit 5 set: a cheap
                // test that rules out most keys (the full comparison lower-cases every byte).
                // An exact match (the usual case) needs no case-folded comparison.
                if key[0] | 0x20 != n[0] | 0x20 {
                    continue;
                }
                let exact = key == n;
                if exact || key.eq_ignore_ascii_case(n) {
                    if found.folded[i].is_none() {
                        found.folded[i] = Some(f);
                    }
                    if exact && found.exact[i].is_none() {
                        found.exact[i] = Some(f);
                    }
                }
            }
        }
        // The format, as the full decoder tells it.
        let flat = match config.format {
            InputFormat::Auto => clues.kind() == Some(JsonKind::WindowsFlat) && !escaped_category,
            InputFormat::Windows => !nested_path,
            InputFormat::WindowsFlat => true,
            _ => false,
        };
        if !flat {
            return None;
        }
        let layout = windows::layout(windows::Shape::Flat);
        // The one clock: the first time field present; any problem is the full decoder's.
        let mut time = None;
        for tf in layout.time {
            let TimeField::Text(name) = *tf else {
                return None;
            };
            match present(text, found.by_name(name)) {
                Present::Absent => continue,
                Present::Judge => return None,
                Present::Str(v) => {
                    time = Some(Timestamp::parse_lenient(v, config.timezone).ok()?);
                    break;
                }
            }
        }
        let time = time?;
        if let Some(now) = received
            && self.check_bounds(time, now).is_err()
        {
            return None;
        }
        // The origin host: the first host field present with a name.
        let mut host = None;
        for name in layout.host {
            match present(text, found.by_name(name)) {
                Present::Absent => continue,
                Present::Judge => return None,
                Present::Str(v) => {
                    if !names_a_host(v) {
                        continue;
                    }
                    host = Some(v);
                    break;
                }
            }
        }
        let host = host?;
        // Channel and event id route the event; without them the full decoder classifies it.
        let channel = plain_str(text, found.get(CHANNEL)?)?;
        let id_field = found.get(EVENT_ID)?;
        let id_text = std::str::from_utf8(id_field.value(text)).ok()?;
        let event_id: u32 = match id_field.kind {
            RawKind::Int => id_text.parse().ok()?,
            RawKind::Str => id_text.trim().parse().ok()?,
            _ => return None,
        };
        let mut provider = None;
        for name in windows::PROVIDER_FIELDS {
            if let Some(f) = found.by_name(name) {
                match f.kind {
                    RawKind::Str => {
                        provider = plain_str(text, f);
                        break;
                    }
                    RawKind::EscapedStr => return None,
                    _ => {}
                }
            }
        }
        Some(RawEvent {
            record: RawRecord {
                text,
                ascii,
                fields,
                channel,
                provider,
                event_id,
            },
            time,
            host,
            tenant,
        })
    }

    /// The event [`Decoder::decode_record`] makes of a record [`Decoder::read_raw`] read
    /// (`raw`), built from the scanner's fields instead of parsing the text a second time: the
    /// same leaves (`json::leaves_of_raw`), then the same naming, checks and normalization. A
    /// record whose leaves the spans cannot give exactly (a `-0`) takes the full decoder.
    pub fn decode_raw(
        &self,
        record: &Record<'_>,
        raw: &RawEvent<'_>,
        tenant: &TenantSource,
        received: Option<Timestamp>,
    ) -> Result<Event, DecodeError> {
        let Some(leaves) = leaves_of_raw(raw.record.text, raw.record.fields) else {
            return self.decode_record(record, tenant, received);
        };
        let named = self.name_leaves(leaves, None)?;
        self.build(
            &record.bytes,
            named,
            tenant,
            record.provenance.clone(),
            received,
        )
    }

    /// Where the fields normalization adds to Windows events come from, for the correlator's
    /// gate: the mapping table's sources, and the flat layout's host fields for `host`.
    pub fn windows_origins(&self) -> FieldOrigins {
        let mut origins = self.tables().windows.origins();
        let host = Origin::Fields(
            windows::layout(windows::Shape::Flat)
                .host
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        );
        origins.canonical.retain(|(c, _)| *c != Canonical::Host);
        origins.canonical.push((Canonical::Host, host));
        origins
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DecoderConfig;
    use chainwatch_model::{HostName, Provenance, TenantId};
    use std::borrow::Cow;

    fn record(text: &str) -> Record<'_> {
        Record {
            bytes: Cow::Borrowed(text.as_bytes()),
            provenance: Provenance::File {
                path: "t".into(),
                line: Some(1),
                record: None,
            },
            framing: Framing::Json,
        }
    }

    fn tenant() -> TenantSource {
        TenantSource::Fixed(TenantId::new("acme").unwrap())
    }

    /// Every record either is read raw with the facts the full decoder finds, or is left to
    /// it; a record the full decoder refuses is never read raw.
    #[test]
    fn raw_reading_agrees_with_the_decoder() {
        let d = Decoder::new(DecoderConfig::default()).unwrap();
        let cases = [
            (
                true,
                r#"{"EventID":4688,"Channel":"Security","SourceName":"Microsoft-Windows-Security-Auditing","Hostname":"MXS01.azsentinel.local","@timestamp":"2021-03-14T01:40:15.338Z","NewProcessName":"C:\\Windows\\System32\\cmd.exe"}"#,
            ),
            (
                true,
                r#"{"EventID":"10","channel":"Microsoft-Windows-Sysmon/Operational","host":"wec","Hostname":"-","TimeCreated":"2020-10-18 07:49:39.776"}"#,
            ),
            (
                true,
                r#"{"EventID":1,"Channel":"x","Computer":"h","@timestamp":null,"EventTime":"2020-09-14 08:06:02"}"#,
            ),
            (false, r#"{"EventID":1,"Channel":"x","Hostname":"h"}"#),
            (
                false,
                r#"{"EventID":1,"Channel":"x","Hostname":"h","@timestamp":"never"}"#,
            ),
            (
                false,
                r#"{"EventID":1,"Channel":"x","Hostname":"h","@timestamp":5}"#,
            ),
            (
                false,
                r#"{"EventID":1,"Channel":"x","@timestamp":"2021-01-01T00:00:00Z"}"#,
            ),
            (
                false,
                r#"{"EventID":1,"Channel":"x","Hostname":"...","@timestamp":"2021-01-01T00:00:00Z"}"#,
            ),
            (
                false,
                r#"{"EventID":1,"Channel":"x","Hostname":true,"@timestamp":"2021-01-01T00:00:00Z"}"#,
            ),
            (
                false,
                r#"{"Channel":"x","Hostname":"h","@timestamp":"2021-01-01T00:00:00Z"}"#,
            ),
            (
                false,
                r#"{"EventID":-1,"Channel":"x","Hostname":"h","@timestamp":"2021-01-01T00:00:00Z"}"#,
            ),
            (
                false,
                r#"{"EventID":1,"Hostname":"h","@timestamp":"2021-01-01T00:00:00Z"}"#,
            ),
            (
                false,
                r#"{"EventID":1,"Channel":"x","Hostname":"h","@timestamp":"2021-01-01T00:00:00Z","winlog":{"a":1}}"#,
            ),
            (
                false,
                r#"{"EventID":1,"Channel":"x","Hostname":"h","@timestamp":"2021-01-01T00:00:00Z","ecs.version":"8"}"#,
            ),
            (
                false,
                r#"{"EventID":1,"Channel":"x","Hostname":"h","@timestamp":"2021-01-01T00:00:00Z","Event.System.X":1}"#,
            ),
            (
                false,
                r#"{"EventID":1,"Channel":"x\ty","Hostname":"h","@timestamp":"2021-01-01T00:00:00Z"}"#,
            ),
            (
                false,
                r#"{"EventID":1,"Channel":"x","Hostname":"h","@timestamp":"2021-01-01T00:00:00Z""#,
            ),
        ];
        let mut scratch = Vec::new();
        for (raw_read, text) in cases {
            let r = record(text);
            let full = d.decode_record(&r, &tenant(), None);
            let fast = d.read_raw(&r, &tenant(), None, &mut scratch);
            assert_eq!(fast.is_some(), raw_read, "{text}");
            if let Some(fast) = fast {
                let event = full.unwrap_or_else(|e| panic!("{text}: read raw, but {e}"));
                assert_eq!(event.time, fast.time, "{text}");
                assert_eq!(event.host, HostName::new(fast.host), "{text}");
                assert_eq!(event.source.channel.as_deref(), Some(fast.record.channel));
                assert_eq!(event.source.event_id, Some(fast.record.event_id));
                assert_eq!(event.source.provider.as_deref(), fast.record.provider);
            }
        }
    }

    #[test]
    fn names_are_found_by_their_length() {
        for (i, n) in NAMES.iter().enumerate() {
            assert!(names_of_length(n.len()).contains(&i), "{n}");
        }
        let listed: usize = (0..64).map(|l| names_of_length(l).len()).sum();
        assert_eq!(listed, NAMES.len());
        let layout = windows::layout(windows::Shape::Flat);
        for name in layout
            .host
            .iter()
            .chain(&windows::PROVIDER_FIELDS)
            .chain(&["Channel", "EventID"])
        {
            assert!(NAMES.contains(name), "{name} is read but not looked for");
        }
        for tf in layout.time {
            let TimeField::Text(name) = tf else {
                panic!("flat time fields are text")
            };
            assert!(NAMES.contains(name), "{name} is read but not looked for");
        }
    }

    #[test]
    fn host_names_are_judged_as_host_name_does() {
        for raw in [
            "",
            " ",
            ".",
            " . . ",
            "\u{a0}.\u{2003}",
            "a",
            ".a.",
            " x ",
            "10.0.0.1",
            "::1",
            "é",
            "..b",
        ] {
            assert_eq!(names_a_host(raw), !HostName::new(raw).is_empty(), "{raw:?}");
        }
    }

    #[test]
    fn time_bounds_and_tenant_fields_are_the_full_decoders() {
        let d = Decoder::new(DecoderConfig {
            max_event_age: Some(std::time::Duration::from_secs(60)),
            ..DecoderConfig::default()
        })
        .unwrap();
        let text =
            r#"{"EventID":1,"Channel":"x","Hostname":"h","@timestamp":"2021-01-01T00:00:00Z"}"#;
        let r = record(text);
        let mut scratch = Vec::new();
        let now = Timestamp::parse_rfc3339("2021-01-01T00:00:30Z").unwrap();
        assert!(d.read_raw(&r, &tenant(), Some(now), &mut scratch).is_some());
        let later = Timestamp::parse_rfc3339("2021-01-02T00:00:00Z").unwrap();
        assert!(
            d.read_raw(&r, &tenant(), Some(later), &mut scratch)
                .is_none()
        );
        let field = TenantSource::Field("customer".into());
        assert!(d.read_raw(&r, &field, None, &mut scratch).is_none());
        // A tenant field is read when it is a plain string and a valid id, as the full
        // decoder reads it; otherwise the full decoder decides.
        let with = |customer: &str| {
            format!(
                r#"{{"EventID":1,"Channel":"x","Hostname":"h","@timestamp":"2021-01-01T00:00:00Z",{customer}}}"#
            )
        };
        let read = |text: &str| {
            let r = record(text);
            let mut scratch = Vec::new();
            d.read_raw(&r, &field, None, &mut scratch)
                .map(|e| e.tenant.map(str::to_owned))
        };
        assert_eq!(
            read(&with(r#""customer":"acme-1""#)),
            Some(Some("acme-1".into()))
        );
        assert_eq!(
            read(&with(r#""Customer":"acme""#)),
            Some(Some("acme".into()))
        );
        for refused in [
            r#""customer":"a b""#,
            r#""customer":"""#,
            r#""customer":7"#,
            r#""customer":"a","CUSTOMER":"b""#,
            r#""customer":"a\b""#,
        ] {
            let text = with(refused);
            assert_eq!(read(&text), None, "{text}");
            if let Ok(event) = d.decode_record(&record(&text), &field, None) {
                // Refused raw but decodable: the full decoder reads it, nothing is lost.
                assert!(refused.contains("CUSTOMER"), "{text}: {:?}", event.tenant);
            }
        }
    }

    #[test]
    fn windows_origins_name_sources_and_synthesized_fields() {
        let d = Decoder::new(DecoderConfig::default()).unwrap();
        let o = d.windows_origins();
        assert_eq!(o.of_canonical(Canonical::User), Some(&Origin::Synthetic));
        assert_eq!(
            o.of_canonical(Canonical::ProcessPid),
            Some(&Origin::Synthetic)
        );
        let Some(Origin::Fields(image)) = o.of_canonical(Canonical::ProcessImage) else {
            panic!("process.image is copied from fields");
        };
        assert!(image.iter().any(|f| f == "NewProcessName") && image.iter().any(|f| f == "Image"));
        let Some(Origin::Fields(host)) = o.of_canonical(Canonical::Host) else {
            panic!("host is copied from fields");
        };
        assert_eq!(host[0], "Hostname");
        // MSExchange cmdlet fields come from the unnamed <Data> list or the rendered message;
        // the rendered message itself may be synthesized, for that channel only.
        let Some(Origin::Fields(cmdlet)) = o.of_added("cmdlet") else {
            panic!("Cmdlet is copied");
        };
        assert!(cmdlet.iter().any(|f| f == "Data") && cmdlet.iter().any(|f| f == "Message"));
        assert_eq!(o.of_added("Message"), Some(&Origin::Synthetic));
        assert!(
            o.synthetic_scopes
                .iter()
                .any(|s| s == "msexchange management")
        );
        assert!(!o.synthetic_scopes.iter().any(|s| s == "security"));
    }
}
