//! The decoder: one record's bytes to a normalized [`Event`], or a [`DecodeError`] that says
//! why not. Pure: no I/O, no clock (the ingest clock, for time bounds, is passed in).
//!
//! A record comes from [`crate::payload::split_payload`] with its framing (JSON, an EVTX
//! record, a W3C line with its header). JSON is flattened once; its format is the source's
//! configured one or, for `auto`, told by its fields ([`crate::detect`]). The format's module
//! names the fields; its [`Layout`] gives the one clock and the origin
//! host; its mapping table gives class, activity and canonical fields.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use chainwatch_config::service::InputFormat;
use chainwatch_model::time::{FixedOffset, utc_offset};
use chainwatch_model::{
    Activity, Event, EventClass, EventId, Fields, Provenance, SourceFormat, SourceMeta, Target,
    TenantId, Timestamp,
};

use crate::detect::{JsonKind, json_kind};
use crate::error::DecodeError;
use crate::json::{Leaf, flatten};
use crate::layout::Layout;
use crate::normalize::Tables;
use crate::payload::{Framing, Record, SplitOptions};
use crate::w3c::{self, W3cHeader};
use crate::windows::{self, Shape};
use crate::{ecs, mde, ocsf};

/// How a decoder reads records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderConfig {
    /// The record format.
    pub format: InputFormat,
    /// Zone for time strings without one.
    pub timezone: FixedOffset,
    /// Larger records are refused.
    pub max_record_bytes: usize,
    /// Deeper JSON is refused.
    pub max_depth: usize,
    /// Most bytes a gzip payload may decompress to.
    pub max_unpacked_bytes: usize,
    /// W3C columns for lines that arrive before any `#Fields:` header of their stream.
    pub w3c_fields: Option<String>,
    /// Events older than this, against the ingest clock, are refused.
    pub max_event_age: Option<Duration>,
    /// Events further ahead than this, against the ingest clock, are refused.
    pub max_event_ahead: Option<Duration>,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            format: InputFormat::Auto,
            timezone: utc_offset(),
            max_record_bytes: 1 << 20,
            max_depth: 32,
            max_unpacked_bytes: 1 << 30,
            w3c_fields: None,
            max_event_age: None,
            max_event_ahead: None,
        }
    }
}

/// Where an event's tenant comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    /// Decided by the source (the topic name, the command line).
    Fixed(TenantId),
    /// Read from a payload field: only for sources configured as trusted.
    Field(String),
}

/// Decodes and normalizes records of one source.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: DecoderConfig,
    tables: Arc<Tables>,
    w3c_fields: Option<Arc<W3cHeader>>,
}

/// A record's fields once its format is known, with what the event needs besides them.
pub(crate) struct Named {
    fields: Fields,
    format: SourceFormat,
    layout: &'static Layout,
    channel: Option<String>,
    provider: Option<String>,
}

impl Decoder {
    /// A decoder with the built-in mapping tables.
    pub fn new(config: DecoderConfig) -> Result<Self, String> {
        let w3c_fields = match &config.w3c_fields {
            Some(names) => Some(Arc::new(W3cHeader::from_names(names).ok_or_else(|| {
                format!("w3c_fields {names:?} names no column, or one twice")
            })?)),
            None => None,
        };
        Ok(Self {
            config,
            tables: Arc::new(Tables::builtin()?),
            w3c_fields,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Its mapping tables.
    pub(crate) fn tables(&self) -> &Tables {
        &self.tables
    }

    /// How payloads of this source are split into records.
    pub fn split_options(&self) -> SplitOptions {
        SplitOptions {
            format: self.config.format,
            max_unpacked_bytes: self.config.max_unpacked_bytes,
        }
    }

    /// Decodes one self-contained record: a JSON object, or (for `w3c` sources, or a line that
    /// starts with a date) one W3C line read with the configured `w3c_fields`. Payloads that may
    /// hold several records (files, batches, EVTX) go through
    /// [`split_payload`](crate::payload::split_payload) and [`Decoder::decode_record`].
    pub fn decode(
        &self,
        raw: &[u8],
        tenant: &TenantSource,
        provenance: Provenance,
    ) -> Result<Event, DecodeError> {
        let start = raw.trim_ascii_start();
        let w3c_line = self.config.format == InputFormat::W3c
            || (self.config.format == InputFormat::Auto && w3c::looks_like_data_line(start));
        let record = Record {
            bytes: Cow::Borrowed(raw),
            provenance,
            framing: if w3c_line {
                Framing::W3c(None)
            } else {
                Framing::Json
            },
        };
        self.decode_record(&record, tenant, None)
    }

    /// Decodes one record of a payload. `received` is the ingest clock's reading, for the
    /// source's time bounds (`None`: no bounds are checked, as in replay).
    pub fn decode_record(
        &self,
        record: &Record<'_>,
        tenant: &TenantSource,
        received: Option<Timestamp>,
    ) -> Result<Event, DecodeError> {
        let raw: &[u8] = &record.bytes;
        if raw.len() > self.config.max_record_bytes {
            return Err(DecodeError::TooLarge {
                size: raw.len(),
                limit: self.config.max_record_bytes,
            });
        }
        let text = std::str::from_utf8(raw).map_err(|e| DecodeError::InvalidUtf8 {
            at: e.valid_up_to(),
        })?;
        let named = match &record.framing {
            Framing::Json => self.name_json(text, None)?,
            Framing::Evtx => self.name_json(text, Some(JsonKind::WindowsNested))?,
            Framing::W3c(header) => self.name_w3c(text, header.as_deref())?,
        };
        let named = if record.framing == Framing::Evtx {
            Named {
                format: SourceFormat::Evtx,
                ..named
            }
        } else {
            named
        };
        self.build(raw, named, tenant, record.provenance.clone(), received)
    }

    fn name_json(&self, text: &str, forced: Option<JsonKind>) -> Result<Named, DecodeError> {
        self.name_leaves(flatten(text, self.config.max_depth)?, forced)
    }

    /// Names the leaves of a JSON record: its format (`forced`, or as the config and the leaves
    /// say), fields, layout, channel and provider.
    pub(crate) fn name_leaves(
        &self,
        leaves: Vec<Leaf>,
        forced: Option<JsonKind>,
    ) -> Result<Named, DecodeError> {
        let kind = match (forced, self.config.format) {
            (Some(k), _) => k,
            (None, InputFormat::Auto) => json_kind(&leaves).ok_or_else(|| {
                DecodeError::UnknownFormat(
                    "a JSON object of no known format (Windows event, ECS, Defender, OCSF, W3C)"
                        .into(),
                )
            })?,
            (None, InputFormat::Windows) => match windows::detect_shape(&leaves) {
                Shape::Flat => JsonKind::WindowsFlat,
                Shape::Nested => JsonKind::WindowsNested,
            },
            (None, InputFormat::WindowsFlat) => JsonKind::WindowsFlat,
            (None, InputFormat::WindowsNested | InputFormat::Evtx) => JsonKind::WindowsNested,
            (None, InputFormat::Ecs) => JsonKind::Ecs,
            (None, InputFormat::Mde) => JsonKind::Mde,
            (None, InputFormat::Ocsf) => JsonKind::Ocsf,
            (None, InputFormat::W3c) => JsonKind::W3c,
        };
        let windows_meta = |fields: &Fields| {
            (
                fields.get_str("Channel").map(str::to_owned),
                windows::PROVIDER_FIELDS
                    .iter()
                    .find_map(|f| fields.get_str(f))
                    .map(str::to_owned),
            )
        };
        Ok(match kind {
            JsonKind::WindowsFlat | JsonKind::WindowsNested => {
                let shape = if kind == JsonKind::WindowsFlat {
                    Shape::Flat
                } else {
                    Shape::Nested
                };
                let fields = windows::to_fields(leaves, shape);
                let (channel, provider) = windows_meta(&fields);
                Named {
                    fields,
                    format: match shape {
                        Shape::Flat => SourceFormat::WindowsFlat,
                        Shape::Nested => SourceFormat::WindowsNested,
                    },
                    layout: windows::layout(shape),
                    channel,
                    provider,
                }
            }
            JsonKind::Ecs => {
                let fields = ecs::to_fields(leaves);
                let (channel, provider) = windows_meta(&fields);
                Named {
                    fields,
                    format: SourceFormat::Ecs,
                    layout: &ecs::LAYOUT,
                    channel,
                    provider,
                }
            }
            JsonKind::Mde => {
                let (fields, table) = mde::to_fields(leaves, self.config.max_depth);
                Named {
                    fields,
                    format: SourceFormat::Mde,
                    layout: &mde::LAYOUT,
                    channel: table,
                    provider: None,
                }
            }
            JsonKind::Ocsf => {
                let fields = ocsf::to_fields(leaves);
                let provider = fields.get_str(ocsf::PRODUCT_FIELD).map(str::to_owned);
                Named {
                    fields,
                    format: SourceFormat::Ocsf,
                    layout: &ocsf::LAYOUT,
                    channel: None,
                    provider,
                }
            }
            JsonKind::W3c => Named {
                fields: ocsf::to_fields(leaves),
                format: SourceFormat::W3c,
                layout: &w3c::LAYOUT,
                channel: None,
                provider: None,
            },
        })
    }

    fn name_w3c(&self, line: &str, header: Option<&W3cHeader>) -> Result<Named, DecodeError> {
        let header = header
            .or(self.w3c_fields.as_deref())
            .ok_or(DecodeError::NoW3cHeader)?;
        Ok(Named {
            fields: w3c::line_fields(line, header)?,
            format: SourceFormat::W3c,
            layout: &w3c::LAYOUT,
            channel: None,
            provider: header.software.as_deref().map(str::to_owned),
        })
    }

    pub(crate) fn build(
        &self,
        raw: &[u8],
        named: Named,
        tenant: &TenantSource,
        provenance: Provenance,
        received: Option<Timestamp>,
    ) -> Result<Event, DecodeError> {
        let Named {
            fields,
            format,
            layout,
            channel,
            provider,
        } = named;
        let tenant = match tenant {
            TenantSource::Fixed(t) => t.clone(),
            TenantSource::Field(name) => {
                let value = fields
                    .get_str(name)
                    .ok_or_else(|| DecodeError::NoTenant(format!("field {name:?} is missing")))?;
                TenantId::new(value).map_err(|e| DecodeError::NoTenant(e.to_string()))?
            }
        };
        let time = layout.time(&fields, self.config.timezone)?;
        if let Some(now) = received {
            self.check_bounds(time, now)?;
        }
        let host = layout.host(&fields)?;
        let event_id = if format.is_windows_event_log() {
            windows::event_id(&fields)
        } else {
            None
        };
        let mut event = Event {
            id: EventId::of_record(tenant.as_str(), raw),
            tenant,
            time,
            class: EventClass::Other,
            activity: Activity::Other,
            host,
            user: None,
            process: None,
            parent: None,
            target: Target::default(),
            source: SourceMeta {
                format,
                channel,
                provider,
                event_id,
            },
            fields,
            provenance,
        };
        let t = &self.tables;
        match format {
            SourceFormat::WindowsFlat | SourceFormat::WindowsNested | SourceFormat::Evtx => {
                t.windows.apply(&mut event);
            }
            SourceFormat::Ecs => {
                if !(ecs::is_windows_event(&event.fields) && t.windows.apply(&mut event)) {
                    t.ecs.apply(&mut event);
                }
            }
            SourceFormat::Mde => {
                t.mde.apply(&mut event);
            }
            SourceFormat::Ocsf => {
                t.ocsf.apply(&mut event);
            }
            SourceFormat::W3c => {
                t.w3c.apply(&mut event);
            }
        }
        Ok(event)
    }

    pub(crate) fn check_bounds(&self, time: Timestamp, now: Timestamp) -> Result<(), DecodeError> {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let behind = now.nanos_since(time);
        if let Some(age) = self.config.max_event_age
            && behind > nanos(age)
        {
            return Err(DecodeError::TimeOutOfRange {
                time: time.to_string(),
                by: format!("{} in the past", human(behind)),
            });
        }
        if let Some(ahead) = self.config.max_event_ahead
            && -behind > nanos(ahead)
        {
            return Err(DecodeError::TimeOutOfRange {
                time: time.to_string(),
                by: format!("{} in the future", human(-behind)),
            });
        }
        Ok(())
    }
}

/// A span of nanoseconds in its largest whole unit (`12d`, `3h`, `40s`).
fn human(nanos: i64) -> String {
    let s = nanos / 1_000_000_000;
    match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chainwatch_model::Canonical;

    fn decoder() -> Decoder {
        Decoder::new(DecoderConfig::default()).unwrap()
    }

    fn tenant() -> TenantSource {
        TenantSource::Fixed(TenantId::new("acme").unwrap())
    }

    fn prov() -> Provenance {
        Provenance::File {
            path: "t.json".into(),
            line: Some(1),
            record: None,
        }
    }

    #[test]
    fn flat_security_4688_normalizes_to_a_process_launch() {
        let raw = br#"{"SourceName":"Microsoft-Windows-Security-Auditing","Channel":"Security","Hostname":"MXS01.azsentinel.local","TimeCreated":"2021-03-14T01:40:15.338Z","@timestamp":"2021-03-14T01:40:15.338Z","EventID":4688,"SubjectUserName":"MXS01$","SubjectDomainName":"AZSENTINEL","NewProcessId":"0x5b60","NewProcessName":"C:\\Windows\\System32\\cmd.exe","ProcessId":"0x2a5c","CommandLine":"cmd /c whoami","TargetUserName":"-","ParentProcessName":"C:\\Windows\\System32\\inetsrv\\w3wp.exe"}"#;
        let e = decoder().decode(raw, &tenant(), prov()).unwrap();
        assert_eq!(e.class, EventClass::ProcessActivity);
        assert_eq!(e.activity, Activity::Launch);
        assert_eq!(e.host.key(), "mxs01");
        assert_eq!(e.time.to_string(), "2021-03-14T01:40:15.338Z");
        assert_eq!(e.user.as_deref(), Some("AZSENTINEL\\MXS01$"));
        let p = e.process.as_ref().unwrap();
        assert_eq!(p.name(), Some("cmd.exe"));
        assert_eq!(p.pid, Some(0x5b60));
        assert_eq!(e.parent.as_ref().unwrap().name(), Some("w3wp.exe"));
        assert_eq!(
            e.canonical(Canonical::ProcessCommandLine).as_deref(),
            Some("cmd /c whoami")
        );
        assert_eq!(e.source.format, SourceFormat::WindowsFlat);
        assert_eq!(
            e.fields.get_str("NewProcessName"),
            Some("C:\\Windows\\System32\\cmd.exe")
        );
    }

    #[test]
    fn nested_sysmon_event_normalizes_the_same_way() {
        let raw = br##"{"Event":{"#attributes":{"xmlns":"x"},"System":{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Sysmon"}},"EventID":11,"TimeCreated":{"#attributes":{"SystemTime":"2025-10-24T23:41:48.497170Z"}},"Channel":"Microsoft-Windows-Sysmon/Operational","Computer":"ar-win-dc.attackrange.local"},"EventData":{"Image":"C:\\Windows\\system32\\cmd.exe","TargetFilename":"C:\\bitsadmin.exe","User":"ATTACKRANGE\\Administrator","ProcessId":10048}}}"##;
        let e = decoder().decode(raw, &tenant(), prov()).unwrap();
        assert_eq!(e.source.format, SourceFormat::WindowsNested);
        assert_eq!(e.class, EventClass::FileActivity);
        assert_eq!(e.activity, Activity::Create);
        assert_eq!(e.host.key(), "ar-win-dc");
        assert_eq!(e.target.file.as_deref(), Some("C:\\bitsadmin.exe"));
        assert_eq!(
            e.fields.get_str("Provider_Name"),
            Some("Microsoft-Windows-Sysmon")
        );
        assert_eq!(e.source.event_id, Some(11));
        assert_eq!(e.user.as_deref(), Some("ATTACKRANGE\\Administrator"));
    }

    #[test]
    fn the_collector_is_not_the_host() {
        let raw = br#"{"EventID":4720,"Channel":"Security","SourceName":"Microsoft-Windows-Security-Auditing","host":"wec.internal.cloudapp.net","Hostname":"WORKSTATION6.theshire.local","@timestamp":"2020-09-14T12:06:03.907Z","EventTime":"2020-09-14 08:06:02","TargetUserName":"backdoor","TargetDomainName":"WORKSTATION6","SubjectUserName":"pgustavo","SubjectDomainName":"THESHIRE"}"#;
        let e = decoder().decode(raw, &tenant(), prov()).unwrap();
        assert_eq!(e.host.key(), "workstation6");
        // One clock: the envelope's @timestamp, not the collector's local EventTime.
        assert_eq!(e.time.to_string(), "2020-09-14T12:06:03.907Z");
        assert_eq!(e.class, EventClass::AccountChange);
        assert_eq!(e.target.account.as_deref(), Some("WORKSTATION6\\backdoor"));
    }

    #[test]
    fn zone_less_times_use_the_source_zone() {
        let d = Decoder::new(DecoderConfig {
            timezone: chainwatch_model::time::parse_offset("+05:00").unwrap(),
            ..DecoderConfig::default()
        })
        .unwrap();
        let raw = br#"{"EventID":1,"Channel":"Microsoft-Windows-Sysmon/Operational","Hostname":"WORKSTATION5","TimeCreated":"2020-10-18 07:49:39.776"}"#;
        let e = d.decode(raw, &tenant(), prov()).unwrap();
        assert_eq!(e.time.to_string(), "2020-10-18T02:49:39.776Z");
    }

    #[test]
    fn redelivery_keeps_the_id_and_tenants_do_not_share_it() {
        let raw =
            br#"{"EventID":1,"Channel":"x","Hostname":"h","@timestamp":"2021-01-01T00:00:00Z"}"#;
        let d = decoder();
        let a = d.decode(raw, &tenant(), prov()).unwrap();
        let b = d.decode(raw, &tenant(), prov()).unwrap();
        let other = TenantSource::Fixed(TenantId::new("globex").unwrap());
        let c = d.decode(raw, &other, prov()).unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn bad_records_say_why() {
        let d = decoder();
        let cases: [(&[u8], &str); 8] = [
            (b"{\"EventID\":1,\"Hostname\":\"h\"}", "no_time"),
            (
                b"{\"EventID\":1,\"@timestamp\":\"2021-01-01T00:00:00Z\"}",
                "no_host",
            ),
            (
                b"{\"EventID\":1,\"Hostname\":\"h\",\"@timestamp\":\"never\"}",
                "bad_time",
            ),
            (
                b"{\"EventID\":1,\"Hostname\":\"h\",\"@timestamp\":5}",
                "wrong_type",
            ),
            (b"{\"EventID\":1,", "malformed_json"),
            (b"[1]", "not_an_object"),
            (b"{\"a\":\"\xff\"}", "invalid_utf8"),
            (
                b"{\"Hostname\":\"h\",\"@timestamp\":\"2021-01-01T00:00:00Z\"}",
                "unknown_format",
            ),
        ];
        for (raw, reason) in cases {
            let err = d.decode(raw, &tenant(), prov()).unwrap_err();
            assert_eq!(
                err.reason(),
                reason,
                "{}: {err}",
                String::from_utf8_lossy(raw)
            );
        }
        let small = Decoder::new(DecoderConfig {
            max_record_bytes: 10,
            ..DecoderConfig::default()
        })
        .unwrap();
        assert_eq!(
            small
                .decode(&[b' '; 11], &tenant(), prov())
                .unwrap_err()
                .reason(),
            "too_large"
        );
    }

    #[test]
    fn tenant_from_a_trusted_field() {
        let raw = br#"{"EventID":1,"Hostname":"h","@timestamp":"2021-01-01T00:00:00Z","customer":"acme"}"#;
        let d = decoder();
        let e = d
            .decode(raw, &TenantSource::Field("customer".into()), prov())
            .unwrap();
        assert_eq!(e.tenant.as_str(), "acme");
        let err = d
            .decode(raw, &TenantSource::Field("org".into()), prov())
            .unwrap_err();
        assert_eq!(err.reason(), "no_tenant");
    }
}
