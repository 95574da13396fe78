//! Fuzz target: Sigma rule files (detection and correlation rules, playbooks) as
//! `chainwatch rules check` and the engine load them: parse, compile, then match one event
//! with whatever compiled.
//!
//! Invariants: no panic; every problem says what is wrong and points into the file (a line
//! within it, or 0 for the whole file); a rule set that compiled can match an event.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use chainwatch_config::sigma::parse_rule_text;
use chainwatch_correlate::sigma::Tables;
use chainwatch_correlate::{Engine, EngineConfig, RuleSet};
use chainwatch_model::{
    Activity, Event, EventClass, EventId, FieldValue, Fields, HostName, ProcessInfo, Provenance,
    SourceFormat, SourceMeta, Target, TenantId, Timestamp,
};

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables::builtin().expect("the built-in tables load"))
}

/// A normalized process launch (Sysmon 1), as the ingest stage writes them.
fn event() -> &'static Event {
    static EVENT: OnceLock<Event> = OnceLock::new();
    EVENT.get_or_init(|| {
        let mut fields = Fields::new();
        for (k, v) in [
            ("Image", "C:\\Windows\\System32\\cmd.exe"),
            ("CommandLine", "cmd.exe /c whoami /all"),
            ("ParentImage", "C:\\Windows\\System32\\inetsrv\\w3wp.exe"),
            ("User", "NT AUTHORITY\\SYSTEM"),
            ("Computer", "EXCH01.contoso.local"),
        ] {
            fields.push(k, FieldValue::Str(v.into()));
        }
        fields.push("EventID", FieldValue::Int(1));
        Event {
            id: EventId::of_record("fuzz", b"event"),
            tenant: TenantId::new("fuzz").expect("a tenant id"),
            time: Timestamp::from_millis(1_700_000_000_000),
            class: EventClass::ProcessActivity,
            activity: Activity::Launch,
            host: HostName::new("EXCH01.contoso.local"),
            user: Some("NT AUTHORITY\\SYSTEM".into()),
            process: Some(ProcessInfo {
                image: Some("C:\\Windows\\System32\\cmd.exe".into()),
                command_line: Some("cmd.exe /c whoami /all".into()),
                ..ProcessInfo::default()
            }),
            parent: None,
            target: Target::default(),
            source: SourceMeta {
                format: SourceFormat::WindowsFlat,
                channel: Some("Microsoft-Windows-Sysmon/Operational".into()),
                provider: Some("Microsoft-Windows-Sysmon".into()),
                event_id: Some(1),
            },
            fields,
            provenance: Provenance::File {
                path: "fuzz".into(),
                line: Some(1),
                record: None,
            },
        }
    })
}

/// Checks one input against the invariants above (panics when one breaks).
pub fn run(data: &[u8]) {
    // Rule files are read as UTF-8 text; other bytes are refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.yml");
    let (docs, diags) = parse_rule_text(file, text);
    // YAML breaks lines at LF, CRLF and a lone CR (YAML 1.2, 5.4): so do the problems' lines.
    let lines =
        text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count() + 1;
    for d in diags.iter() {
        assert!(!d.message.is_empty(), "a problem without a message");
        assert!(
            d.line <= lines,
            "line {} past the end ({lines}): {d}",
            d.line
        );
    }
    let (set, diags) = RuleSet::compile_with(&docs, tables());
    for d in diags.iter() {
        assert!(!d.message.is_empty(), "a problem without a message");
        let _ = d.to_string();
    }
    let mut engine = Engine::new(Arc::new(set), EngineConfig::default());
    let _ = engine.observe(event());
    let _ = engine.finish();
}
