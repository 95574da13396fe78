//! The decoder: raw record bytes to a normalized [`Event`], or a [`DecodeError`] that says why
//! not. Pure: no I/O, no clock.

use std::sync::Arc;

use chainwatch_config::service::InputFormat;
use chainwatch_model::time::{FixedOffset, utc_offset};
use chainwatch_model::{
    Activity, Event, EventClass, EventId, HostName, Provenance, SourceFormat, SourceMeta, Target,
    TenantId, Timestamp,
};

use crate::error::DecodeError;
use crate::json::flatten;
use crate::normalize::MappingTable;
use crate::windows::{self, Shape};

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
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            format: InputFormat::Auto,
            timezone: utc_offset(),
            max_record_bytes: 1 << 20,
            max_depth: 32,
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
    windows: Arc<MappingTable>,
}

impl Decoder {
    /// A decoder with the built-in mapping tables.
    pub fn new(config: DecoderConfig) -> Result<Self, String> {
        Ok(Self {
            config,
            windows: Arc::new(MappingTable::windows()?),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Decodes one record.
    pub fn decode(
        &self,
        raw: &[u8],
        tenant: &TenantSource,
        provenance: Provenance,
    ) -> Result<Event, DecodeError> {
        if raw.len() > self.config.max_record_bytes {
            return Err(DecodeError::TooLarge {
                size: raw.len(),
                limit: self.config.max_record_bytes,
            });
        }
        let text = std::str::from_utf8(raw).map_err(|e| DecodeError::InvalidUtf8 {
            at: e.valid_up_to(),
        })?;
        let leaves = flatten(text, self.config.max_depth)?;
        let shape = match self.config.format {
            InputFormat::WindowsFlat => Shape::Flat,
            InputFormat::WindowsNested => Shape::Nested,
            InputFormat::Windows | InputFormat::Auto => windows::detect_shape(&leaves),
        };
        let fields = windows::to_fields(leaves, shape);
        if self.config.format == InputFormat::Auto
            && shape == Shape::Flat
            && windows::event_id(&fields).is_none()
        {
            return Err(DecodeError::UnknownFormat(
                "neither a nested Windows event (Event.System) nor a flat one (EventID)".into(),
            ));
        }

        let tenant = match tenant {
            TenantSource::Fixed(t) => t.clone(),
            TenantSource::Field(name) => {
                let value = fields
                    .get_str(name)
                    .ok_or_else(|| DecodeError::NoTenant(format!("field {name:?} is missing")))?;
                TenantId::new(value).map_err(|e| DecodeError::NoTenant(e.to_string()))?
            }
        };

        let time_names = windows::time_fields(shape);
        let time_text =
            time_names
                .iter()
                .find_map(|f| fields.get(f))
                .ok_or(DecodeError::NoTime(match shape {
                    Shape::Flat => "@timestamp, TimeCreated, EventTime",
                    Shape::Nested => "Event.System.TimeCreated",
                }))?;
        let time_text = time_text.as_str().ok_or(DecodeError::WrongType {
            field: "event time",
            expected: "a string",
        })?;
        let time = Timestamp::parse_lenient(time_text, self.config.timezone)
            .map_err(|_| DecodeError::BadTime(time_text.to_owned()))?;

        let host = windows::host_fields(shape)
            .iter()
            .find_map(|f| fields.get_str(f).filter(|h| !h.trim().is_empty()))
            .map(HostName::new)
            .ok_or(DecodeError::NoHost(match shape {
                Shape::Flat => "Hostname, Computer, host",
                Shape::Nested => "Event.System.Computer",
            }))?;

        let source = SourceMeta {
            format: match shape {
                Shape::Flat => SourceFormat::WindowsFlat,
                Shape::Nested => SourceFormat::WindowsNested,
            },
            channel: fields.get_str("Channel").map(str::to_owned),
            provider: windows::PROVIDER_FIELDS
                .iter()
                .find_map(|f| fields.get_str(f))
                .map(str::to_owned),
            event_id: windows::event_id(&fields),
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
            source,
            fields,
            provenance,
        };
        self.windows.apply(&mut event);
        Ok(event)
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
