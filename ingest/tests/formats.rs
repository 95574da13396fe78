//! Per-format fixture tests: the project's own small recordings of each format
//! (`tests/fixtures/`), read through the same path as files and Kafka messages (split, then
//! decode), including the pitfalls: a collector's host name, a second clock, channel case,
//! zone-less times, streaming envelopes, a W3C header change and a truncated line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::time::Duration;

use chainwatch_config::service::InputFormat;
use chainwatch_ingest::{
    DecodeError, Decoder, DecoderConfig, Piece, TenantSource, W3cState, split_payload,
};
use chainwatch_model::time::parse_offset;
use chainwatch_model::{
    Activity, Canonical, Event, EventClass, Provenance, SourceFormat, TenantId,
};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn tenant() -> TenantSource {
    TenantSource::Fixed(TenantId::new("acme").unwrap())
}

fn origin(name: &str) -> Provenance {
    Provenance::File {
        path: name.into(),
        line: None,
        record: None,
    }
}

/// Decodes a payload: events, and dead letters by reason with their provenance.
fn decode_with(
    config: DecoderConfig,
    name: &str,
    data: &[u8],
) -> (Vec<Event>, Vec<(String, &'static str)>) {
    let d = Decoder::new(config).unwrap();
    let mut events = Vec::new();
    let mut dead = Vec::new();
    for piece in split_payload(
        data,
        &origin(name),
        &d.split_options(),
        &mut W3cState::new(),
    ) {
        match piece {
            Piece::Record(r) => match d.decode_record(&r, &tenant(), None) {
                Ok(e) => events.push(e),
                Err(e) => dead.push((r.provenance.to_string(), e.reason())),
            },
            Piece::Bad {
                provenance, error, ..
            } => dead.push((provenance.to_string(), error.reason())),
        }
    }
    (events, dead)
}

fn decode(name: &str) -> (Vec<Event>, Vec<(String, &'static str)>) {
    decode_with(DecoderConfig::default(), name, &fixture(name))
}

fn canon(e: &Event, c: Canonical) -> Option<String> {
    e.canonical(c).map(|v| v.into_owned())
}

#[test]
fn winlogbeat_and_elastic_agent() {
    let (events, dead) = decode("ecs.jsonl");
    assert_eq!(dead, [("ecs.jsonl:5".to_owned(), "no_time")]);
    assert!(events.iter().all(|e| e.source.format == SourceFormat::Ecs));

    // Security 4688 forwarded through WEF: the origin, not the collector in host.name; the
    // event's own time, not the shipper's event.created.
    let sec = &events[0];
    assert_eq!(sec.host.key(), "exch01");
    assert_eq!(sec.time.to_string(), "2024-05-01T10:00:01.250Z");
    assert_eq!(sec.source.channel.as_deref(), Some("Security"));
    assert_eq!(sec.source.event_id, Some(4688));
    assert_eq!(
        (sec.class, sec.activity),
        (EventClass::ProcessActivity, Activity::Launch)
    );
    assert_eq!(
        sec.fields.get_str("NewProcessName"),
        Some("C:\\Windows\\System32\\cmd.exe")
    );
    assert_eq!(sec.process.as_ref().unwrap().pid, Some(0x1a2c));
    assert_eq!(sec.parent.as_ref().unwrap().name(), Some("w3wp.exe"));
    assert_eq!(sec.user.as_deref(), Some("CORP\\EXCH01$"));
    assert_eq!(
        sec.fields.get_str("host.name"),
        Some("wec01.corp.local"),
        "kept"
    );

    // Sysmon 1 in a lower-case channel: still Sysmon, and read by the envelope clock, not
    // Sysmon's UtcTime (5 h off).
    let sysmon = &events[1];
    assert_eq!(sysmon.time.to_string(), "2024-05-01T10:00:02.000Z");
    assert_eq!(
        (sysmon.class, sysmon.activity),
        (EventClass::ProcessActivity, Activity::Launch)
    );
    assert_eq!(
        canon(sysmon, Canonical::ProcessGuid).as_deref(),
        Some("{5b8d2b9c-0001-0000-0000-000000000000}")
    );
    assert!(sysmon.time < sec.time.add_nanos(2_000_000_000));

    // Elastic Defend, no Windows event: the ECS table.
    let file = &events[2];
    assert_eq!(
        (file.class, file.activity),
        (EventClass::FileActivity, Activity::Create)
    );
    assert!(
        file.target
            .file
            .as_deref()
            .unwrap()
            .ends_with("\\owa\\auth\\shell.aspx")
    );
    assert_eq!(file.process.as_ref().unwrap().name(), Some("w3wp.exe"));
    assert_eq!(file.user.as_deref(), Some("NT AUTHORITY\\SYSTEM"));

    // A web request, with Sigma's webserver names added.
    let web = &events[3];
    assert_eq!(
        (web.class, web.activity),
        (EventClass::HttpActivity, Activity::Request)
    );
    assert!(
        web.fields
            .get_str("c-uri")
            .unwrap()
            .contains("autodiscover.json?@evil.com")
    );
    assert_eq!(
        web.fields.get_str("c-useragent"),
        Some("python-requests/2.25.1")
    );
}

#[test]
fn defender_rows_streaming_records_and_batches() {
    let (events, dead) = decode("mde.jsonl");
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(events.len(), 6, "the Event Hub batch holds two records");
    assert!(events.iter().all(|e| e.source.format == SourceFormat::Mde));
    assert!(events.iter().all(|e| e.host.key() == "exch01"));

    let launch = &events[0];
    assert_eq!(
        (launch.class, launch.activity),
        (EventClass::ProcessActivity, Activity::Launch)
    );
    assert_eq!(
        canon(launch, Canonical::ProcessImage).as_deref(),
        Some("C:\\Windows\\System32\\cmd.exe")
    );
    assert_eq!(
        canon(launch, Canonical::ParentImage).as_deref(),
        Some("c:\\windows\\system32\\inetsrv\\w3wp.exe")
    );
    assert_eq!(
        canon(launch, Canonical::ProcessPid).as_deref(),
        Some("6700")
    );
    assert_eq!(launch.user.as_deref(), Some("nt authority\\system"));
    assert_eq!(
        launch.fields.get_str("OriginalFileName"),
        Some("Cmd.Exe"),
        "alias"
    );
    assert_eq!(launch.time.to_string(), "2024-05-01T10:00:01.250Z");

    let write = &events[1];
    assert_eq!(
        (write.class, write.activity),
        (EventClass::FileActivity, Activity::Create)
    );
    assert!(
        write
            .target
            .file
            .as_deref()
            .unwrap()
            .ends_with("shell.aspx")
    );

    let open = &events[2];
    assert_eq!(
        (open.class, open.activity),
        (EventClass::ProcessActivity, Activity::Open)
    );
    assert_eq!(
        canon(open, Canonical::TargetProcessImage).as_deref(),
        Some("c:\\windows\\system32\\lsass.exe")
    );
    assert_eq!(open.fields.get_str("GrantedAccess"), Some("2097151"));

    // Streaming API: the table is the channel; the envelope's publish time is not the clock.
    let logon = &events[3];
    assert_eq!(logon.source.channel.as_deref(), Some("DeviceLogonEvents"));
    assert_eq!(logon.time.to_string(), "2024-05-01T10:02:00.000Z");
    assert_eq!(
        (logon.class, logon.activity),
        (EventClass::Authentication, Activity::Logon)
    );
    assert_eq!(logon.target.account.as_deref(), Some("corp\\backdoor"));

    let ps = &events[4];
    assert_eq!(ps.class, EventClass::ScriptActivity);
    assert_eq!(
        ps.fields.get_str("ScriptBlockText"),
        Some("Get-WmiObject Win32_Shadowcopy")
    );
    assert_eq!(ps.provenance.to_string(), "mde.jsonl:5#0");
    assert_eq!(events[5].provenance.to_string(), "mde.jsonl:5#1");
    assert!(
        canon(&events[5], Canonical::ProcessCommandLine)
            .unwrap()
            .contains("delete shadows")
    );
}

#[test]
fn ocsf_events_keep_their_class() {
    let (events, dead) = decode("ocsf.jsonl");
    assert!(dead.is_empty(), "{dead:?}");
    assert!(events.iter().all(|e| e.source.format == SourceFormat::Ocsf));
    let launch = &events[0];
    assert_eq!(
        launch.time.to_string(),
        "2024-05-01T10:00:01.250Z",
        "epoch milliseconds"
    );
    assert_eq!(
        (launch.class, launch.activity),
        (EventClass::ProcessActivity, Activity::Launch)
    );
    assert_eq!(launch.host.key(), "exch01");
    assert_eq!(launch.source.provider.as_deref(), Some("Tenzir"));
    assert_eq!(
        canon(launch, Canonical::ProcessCommandLine).as_deref(),
        Some("cmd.exe /c whoami")
    );
    assert_eq!(launch.parent.as_ref().unwrap().name(), Some("w3wp.exe"));
    assert_eq!(launch.user.as_deref(), Some("NT AUTHORITY\\SYSTEM"));

    let file = &events[1];
    assert_eq!(
        (file.class, file.activity),
        (EventClass::FileActivity, Activity::Create)
    );
    assert_eq!(file.process.as_ref().unwrap().name(), Some("w3wp.exe"));
    assert!(file.target.file.as_deref().unwrap().ends_with("shell.aspx"));

    let logon = &events[2];
    assert_eq!(
        (logon.class, logon.activity),
        (EventClass::Authentication, Activity::Logon)
    );
    assert_eq!(logon.target.account.as_deref(), Some("CORP\\backdoor"));

    let web = &events[3];
    assert_eq!(
        (web.class, web.activity),
        (EventClass::HttpActivity, Activity::Request)
    );
    assert_eq!(web.fields.get_str("cs-method"), Some("GET"));
    assert!(
        web.target
            .url
            .as_deref()
            .unwrap()
            .starts_with("/autodiscover/autodiscover.json?@evil")
    );

    assert_eq!(
        (events[4].class, events[4].activity),
        (EventClass::ProcessActivity, Activity::Other)
    );
    assert_eq!(
        events[5].time.to_string(),
        "2024-05-01T10:05:00.000Z",
        "time_dt"
    );
    assert_eq!(events[5].activity, Activity::Delete);
}

#[test]
fn iis_logs_follow_their_headers() {
    let (events, dead) = decode("u_ex240501.log");
    assert_eq!(
        dead,
        [("u_ex240501.log:7".to_owned(), "w3c_field_count")],
        "the truncated line"
    );
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.source.format == SourceFormat::W3c));
    assert!(
        events
            .iter()
            .all(|e| (e.class, e.activity) == (EventClass::HttpActivity, Activity::Request))
    );
    let probe = &events[0];
    assert_eq!(probe.time.to_string(), "2024-05-01T09:59:58.000Z");
    assert_eq!(
        probe.host.key(),
        "10.0.0.5",
        "no s-computername: the server address"
    );
    assert_eq!(
        probe.source.provider.as_deref(),
        Some("Microsoft Internet Information Services 10.0")
    );
    assert!(
        probe
            .fields
            .get_str("c-uri")
            .unwrap()
            .contains("autodiscover.json?@evil.com/mapi/nspi")
    );
    assert_eq!(probe.fields.get_str("c-ip"), Some("203.0.113.7"));
    let shell = &events[1];
    assert_eq!(shell.fields.get_str("cs-method"), Some("POST"));
    assert_eq!(shell.fields.get_str("c-uri-extension"), Some("aspx"));
    assert_eq!(
        shell.target.url.as_deref(),
        Some("/owa/auth/shell.aspx"),
        "'-' query is empty"
    );
    assert_eq!(shell.provenance.to_string(), "u_ex240501.log:6");
    // After the second header: its columns, and the server's name.
    let ecp = &events[2];
    assert_eq!(ecp.host.key(), "exch01");
    assert_eq!(ecp.fields.get_str("cs-uri-stem"), Some("/ecp/default.flt"));
    assert_eq!(ecp.fields.get("cs(User-Agent)"), None);
}

#[test]
fn w3c_lines_without_a_header() {
    let line = b"2024-05-01 10:00:00 10.0.0.5 POST /owa/auth/shell.aspx";
    let (events, dead) = decode_with(DecoderConfig::default(), "x.log", line);
    assert!(events.is_empty());
    assert_eq!(dead, [("x.log:1".to_owned(), "no_w3c_header")]);
    let configured = DecoderConfig {
        w3c_fields: Some("date time s-ip cs-method cs-uri-stem".into()),
        ..DecoderConfig::default()
    };
    let (events, dead) = decode_with(configured.clone(), "x.log", line);
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(events[0].fields.get_str("cs-method"), Some("POST"));
    // The single-record API reads a line the same way.
    let d = Decoder::new(configured).unwrap();
    let e = d.decode(line, &tenant(), origin("k")).unwrap();
    assert_eq!(e.target.url.as_deref(), Some("/owa/auth/shell.aspx"));
}

#[test]
fn w3c_times_are_read_in_the_source_zone() {
    // IIS writes UTC; a source that writes local time says so with its zone.
    let log = b"#Fields: date time s-ip cs-uri-stem\n2024-05-01 12:00:00 10.0.0.5 /\n";
    let config = DecoderConfig {
        timezone: parse_offset("+02:00").unwrap(),
        ..DecoderConfig::default()
    };
    let (events, _) = decode_with(config, "x.log", log);
    assert_eq!(events[0].time.to_string(), "2024-05-01T10:00:00.000Z");
}

#[test]
fn exchange_cmdlets_from_evtx_json_and_from_nxlog() {
    let (events, dead) = decode("msexchange.jsonl");
    assert!(dead.is_empty(), "{dead:?}");
    let [nested, flat] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(nested.source.format, SourceFormat::WindowsNested);
    assert_eq!(flat.source.format, SourceFormat::WindowsFlat);
    for e in [nested, flat] {
        assert_eq!(
            (e.class, e.activity),
            (EventClass::ApiActivity, Activity::Execute)
        );
        assert_eq!(e.fields.get_str("Cmdlet"), Some("New-MailboxExportRequest"));
        let params = e.fields.get_str("Parameters").unwrap();
        assert!(
            params.starts_with("-Mailbox \"alice@corp.local\" -FilePath"),
            "{params}"
        );
        assert!(params.ends_with("shell.aspx\""), "{params}");
        let message = e.fields.get_str("Message").unwrap();
        assert!(
            message.contains("Cmdlet New-MailboxExportRequest, parameters -Mailbox "),
            "{message}"
        );
        assert_eq!(e.host.key(), "exch01");
        assert_eq!(e.time.to_string(), "2024-05-01T10:01:00.000Z");
    }
    // Positional data beyond the names given stays in the original list.
    assert_eq!(nested.user.as_deref(), Some("corp.local/Users/attacker"));
    assert!(
        matches!(nested.fields.get("Data"), Some(chainwatch_model::FieldValue::List(l)) if l.len() == 13)
    );
}

#[test]
fn formats_named_in_the_config_are_not_guessed() {
    // A Defender source: a row without a time is `no_time`, not an unknown format.
    let row = br#"{"DeviceName":"x","ActionType":"ProcessCreated"}"#;
    let mde = DecoderConfig {
        format: InputFormat::Mde,
        ..DecoderConfig::default()
    };
    let (_, dead) = decode_with(mde, "m", row);
    assert_eq!(dead[0].1, "no_time");
    let (_, dead) = decode_with(DecoderConfig::default(), "m", row);
    assert_eq!(dead[0].1, "unknown_format");
    // An EVTX source given JSON: not an EVTX file.
    let evtx = DecoderConfig {
        format: InputFormat::Evtx,
        ..DecoderConfig::default()
    };
    let (_, dead) = decode_with(evtx, "e", b"{}");
    assert_eq!(dead[0].1, "bad_evtx_file");
}

#[test]
fn gzip_of_any_format() {
    use std::io::Write;
    let mut total = BTreeMap::new();
    for name in [
        "ecs.jsonl",
        "mde.jsonl",
        "ocsf.jsonl",
        "u_ex240501.log",
        "msexchange.jsonl",
    ] {
        let plain = fixture(name);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let (a, da) = decode_with(DecoderConfig::default(), name, &plain);
        let (b, db) = decode_with(DecoderConfig::default(), name, &gz);
        assert_eq!(a, b, "{name}");
        assert_eq!(da, db, "{name}");
        total.insert(name, a.len());
    }
    assert_eq!(total.values().sum::<usize>(), 4 + 6 + 6 + 3 + 2);
}

#[test]
fn time_bounds_against_the_ingest_clock() {
    let d = Decoder::new(DecoderConfig {
        max_event_age: Some(Duration::from_secs(30 * 86_400)),
        max_event_ahead: Some(Duration::from_secs(3600)),
        ..DecoderConfig::default()
    })
    .unwrap();
    let record = |time: &str| {
        let raw = format!(r#"{{"EventID":1,"Hostname":"h","@timestamp":"{time}"}}"#);
        chainwatch_ingest::Record {
            bytes: raw.into_bytes().into(),
            provenance: origin("k"),
            framing: chainwatch_ingest::Framing::Json,
        }
    };
    let now = chainwatch_model::Timestamp::parse_rfc3339("2024-05-01T10:00:00Z").unwrap();
    let ok = d.decode_record(&record("2024-04-15T00:00:00Z"), &tenant(), Some(now));
    assert!(ok.is_ok());
    let old = d
        .decode_record(&record("2024-03-01T00:00:00Z"), &tenant(), Some(now))
        .unwrap_err();
    assert_eq!(old.reason(), "time_out_of_range");
    assert!(old.to_string().contains("61d in the past"), "{old}");
    let ahead = d
        .decode_record(&record("2024-05-01T12:00:00Z"), &tenant(), Some(now))
        .unwrap_err();
    assert!(ahead.to_string().contains("2h in the future"), "{ahead}");
    // Without an ingest clock (replay), no bounds apply.
    assert!(
        d.decode_record(&record("1999-01-01T00:00:00Z"), &tenant(), None)
            .is_ok()
    );
}

#[test]
fn every_error_has_a_listed_reason() {
    let errors = [
        DecodeError::TooLarge { size: 2, limit: 1 },
        DecodeError::InvalidUtf8 { at: 0 },
        DecodeError::MalformedJson(String::new()),
        DecodeError::TooDeep(1),
        DecodeError::NotAnObject("null"),
        DecodeError::WrongType {
            field: "f",
            expected: "x",
        },
        DecodeError::NoTime("t"),
        DecodeError::BadTime(String::new()),
        DecodeError::TimeOutOfRange {
            time: String::new(),
            by: String::new(),
        },
        DecodeError::NoHost("h"),
        DecodeError::UnknownFormat(String::new()),
        DecodeError::NoTenant(String::new()),
        DecodeError::NoW3cHeader,
        DecodeError::W3cFieldCount {
            expected: 1,
            found: 2,
        },
        DecodeError::BadW3cDirective(String::new()),
        DecodeError::BadEvtxFile(String::new()),
        DecodeError::CorruptEvtxChunk {
            chunk: 0,
            error: String::new(),
        },
        DecodeError::BadEvtxRecord(String::new()),
        DecodeError::BadGzip(String::new()),
    ];
    for e in &errors {
        assert!(DecodeError::REASONS.contains(&e.reason()), "{}", e.reason());
    }
}
