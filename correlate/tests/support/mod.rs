//! Helpers shared by the engine tests: compiling rule text and building normalized events by
//! hand.
#![allow(dead_code)] // Each test file uses a part.

use std::path::Path;
use std::sync::Arc;

use chainwatch_config::sigma::parse_rule_text;
use chainwatch_correlate::{Engine, EngineConfig, RuleSet};
use chainwatch_model::{
    Activity, Event, EventClass, EventId, Fields, HostName, Provenance, SourceFormat, SourceMeta,
    TenantId, Timestamp,
};

/// Compiles rule text, or returns the diagnostics of parsing or compiling it.
pub fn compile(rules: &str) -> Result<RuleSet, String> {
    let (docs, diags) = parse_rule_text(Path::new("rules.yml"), rules);
    if !diags.is_empty() {
        return Err(diags.to_string());
    }
    let (set, diags) = RuleSet::compile(&docs);
    if diags.is_empty() {
        Ok(set)
    } else {
        Err(diags.to_string())
    }
}

/// Compiled rule text; the test fails on any diagnostic.
pub fn rule_set(rules: &str) -> Arc<RuleSet> {
    Arc::new(compile(rules).unwrap())
}

pub fn engine_with(rules: &str, config: EngineConfig) -> Engine {
    Engine::new(rule_set(rules), config)
}

/// What kind of Windows record a hand-built event stands for.
#[derive(Clone, Copy)]
pub struct Kind {
    pub class: EventClass,
    pub activity: Activity,
    pub channel: &'static str,
    pub event_id: u32,
}

/// Sysmon's process creation (event 1).
pub const PROCESS_CREATION: Kind = Kind {
    class: EventClass::ProcessActivity,
    activity: Activity::Launch,
    channel: "Microsoft-Windows-Sysmon/Operational",
    event_id: 1,
};

/// A Security log logon event (4624, 4625, ...).
pub fn logon(event_id: u32) -> Kind {
    Kind {
        class: EventClass::Authentication,
        activity: Activity::Logon,
        channel: "Security",
        event_id,
    }
}

/// An event of `kind` on `host` of `tenant` at `time`, carrying `fields`. Its id is derived
/// from `key` (events with the same key are the same record delivered twice) and its
/// provenance names line `line` of a file.
pub fn event(
    tenant: &str,
    host: &str,
    time: Timestamp,
    kind: Kind,
    fields: Fields,
    key: &str,
    line: u64,
) -> Event {
    Event {
        class: kind.class,
        activity: kind.activity,
        source: SourceMeta {
            format: SourceFormat::WindowsFlat,
            channel: Some(kind.channel.into()),
            provider: None,
            event_id: Some(kind.event_id),
        },
        fields,
        provenance: Provenance::File {
            path: "t".into(),
            line: Some(line),
            record: None,
        },
        ..Event::bare(
            EventId::of_record(tenant, key.as_bytes()),
            TenantId::new(tenant).unwrap(),
            time,
            HostName::new(host),
        )
    }
}
