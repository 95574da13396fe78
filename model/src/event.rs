//! The normalized event: what every decoder produces and every rule reads.

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{EventId, HostName, Provenance, TenantId, Timestamp};

/// One normalized telemetry record.
///
/// The typed part (class, activity, time, host, user, process, parent, target) is aligned with
/// OCSF and is what correlation keys and alerts use. `fields` keeps the record's original fields,
/// flattened, for evidence and for rules written against source field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Hash of tenant and raw record: equal for a redelivered record.
    pub id: EventId,
    /// The customer this event belongs to.
    pub tenant: TenantId,
    /// When it happened, by the source's one clock.
    pub time: Timestamp,
    /// OCSF-aligned event class.
    pub class: EventClass,
    /// What happened within the class.
    pub activity: Activity,
    /// The machine it happened on (the origin, not a collector).
    pub host: HostName,
    /// The acting user, `DOMAIN\name` where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The acting process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    /// The acting process's parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ProcessInfo>,
    /// What was acted on.
    #[serde(default, skip_serializing_if = "Target::is_empty")]
    pub target: Target,
    /// Source format, channel, provider and event id.
    pub source: SourceMeta,
    /// The record's original fields, flattened (`EventData` members at the top level).
    pub fields: Fields,
    /// Where the record came from.
    pub provenance: Provenance,
}

impl Event {
    /// An event that is only its identity: `id`, `tenant`, `time` and `host` as given, class
    /// and activity `Other`, no user, process, parent, target or fields, a flat Windows source
    /// with no channel, provider or event id, read from a file `t`. For events built by hand
    /// (tests, fixtures): set what differs with struct update syntax.
    pub fn bare(id: EventId, tenant: TenantId, time: Timestamp, host: HostName) -> Self {
        Self {
            id,
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
                format: SourceFormat::WindowsFlat,
                channel: None,
                provider: None,
                event_id: None,
            },
            fields: Fields::new(),
            provenance: Provenance::File {
                path: "t".into(),
                line: None,
                record: None,
            },
        }
    }
}

/// OCSF-aligned event classes. The number is OCSF's `class_uid` where OCSF has the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    /// OCSF File System Activity (1001).
    FileActivity,
    /// OCSF Module Activity (1005): image loads.
    ModuleActivity,
    /// OCSF Scheduled Job Activity (1006).
    ScheduledJobActivity,
    /// OCSF Process Activity (1007): launch, terminate, open (access), inject.
    ProcessActivity,
    /// OCSF Event Log Activity (1008): logs cleared.
    EventLogActivity,
    /// OCSF Script Activity (1009): PowerShell script blocks and modules.
    ScriptActivity,
    /// OCSF Account Change (3001).
    AccountChange,
    /// OCSF Authentication (3002).
    Authentication,
    /// OCSF Group Management (3006).
    GroupManagement,
    /// OCSF Network Activity (4001).
    NetworkActivity,
    /// OCSF HTTP Activity (4002): web server requests.
    HttpActivity,
    /// OCSF DNS Activity (4003).
    DnsActivity,
    /// OCSF API Activity (6003): management cmdlets such as Exchange's.
    ApiActivity,
    /// OCSF Windows Registry Key/Value Activity (201001/201002).
    RegistryActivity,
    /// OCSF Windows Service Activity (201004): service installs.
    ServiceActivity,
    /// OCSF Base Event (0): anything else.
    Other,
}

impl EventClass {
    /// OCSF `class_uid`.
    pub fn ocsf_uid(self) -> u32 {
        match self {
            EventClass::FileActivity => 1001,
            EventClass::ModuleActivity => 1005,
            EventClass::ScheduledJobActivity => 1006,
            EventClass::ProcessActivity => 1007,
            EventClass::EventLogActivity => 1008,
            EventClass::ScriptActivity => 1009,
            EventClass::AccountChange => 3001,
            EventClass::Authentication => 3002,
            EventClass::GroupManagement => 3006,
            EventClass::NetworkActivity => 4001,
            EventClass::HttpActivity => 4002,
            EventClass::DnsActivity => 4003,
            EventClass::ApiActivity => 6003,
            EventClass::RegistryActivity => 201002,
            EventClass::ServiceActivity => 201004,
            EventClass::Other => 0,
        }
    }
}

/// What happened within a class (OCSF `activity_id` semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// A process started.
    Launch,
    /// A process ended.
    Terminate,
    /// A process opened another (handle access, as in LSASS dumping).
    Open,
    /// Code injected into another process.
    Inject,
    /// Something was created (file, account, service, scheduled job, ...).
    Create,
    /// Read.
    Read,
    /// Modified, or a value set.
    Update,
    /// Deleted.
    Delete,
    /// Renamed.
    Rename,
    /// Loaded (module).
    Load,
    /// A logon.
    Logon,
    /// A logoff.
    Logoff,
    /// An account enabled.
    Enable,
    /// An account disabled.
    Disable,
    /// A password changed or reset.
    PasswordChange,
    /// A member added to a group.
    AddMember,
    /// A member removed from a group.
    RemoveMember,
    /// Code or a command executed (scripts, cmdlets).
    Execute,
    /// A connection opened.
    Connect,
    /// A request (HTTP, DNS).
    Request,
    /// A log cleared.
    Clear,
    /// Anything else.
    Other,
}

/// A process as telemetry describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Full path of the executable (`C:\Windows\System32\cmd.exe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    /// Process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u64>,
    /// Sysmon process GUID, where present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
}

impl ProcessInfo {
    /// The executable's file name (`cmd.exe`), from the image path.
    pub fn name(&self) -> Option<&str> {
        let image = self.image.as_deref()?;
        Some(image.rsplit(['\\', '/']).next().unwrap_or(image))
    }

    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.image.is_none() && self.command_line.is_none() && self.pid.is_none()
    }
}

/// What an event acted on. Several members can be set (a file written by a process).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// A file path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// A process (the opened process, as lsass.exe in a dump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    /// An account (created, logged on, changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// A group (membership changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A URL or URL path (web requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A registry key or value path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// An API operation called, with its parameters (an Exchange cmdlet line:
    /// `New-InboxRule -Mailbox ... -ForwardTo ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
}

impl Target {
    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == Target::default()
    }
}

/// The format a record arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceFormat {
    /// Windows events as flat JSON (EventData at the top level: NXLog, OTRF, WEF).
    WindowsFlat,
    /// Windows events as nested JSON (`Event.System` / `Event.EventData`, as evtx tools print).
    WindowsNested,
    /// Windows events read from a binary EVTX file.
    Evtx,
    /// Elastic Common Schema JSON: Winlogbeat (`winlog.*`) and Elastic Agent.
    Ecs,
    /// Microsoft Defender for Endpoint advanced-hunting rows and streaming-API records.
    Mde,
    /// W3C extended log lines (IIS access logs).
    W3c,
    /// OCSF JSON events (Security Lake, Tenzir, Vector).
    Ocsf,
}

impl SourceFormat {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::WindowsFlat => "windows-flat",
            SourceFormat::WindowsNested => "windows-nested",
            SourceFormat::Evtx => "evtx",
            SourceFormat::Ecs => "ecs",
            SourceFormat::Mde => "mde",
            SourceFormat::W3c => "w3c",
            SourceFormat::Ocsf => "ocsf",
        }
    }

    /// True for formats whose events are Windows event-log records, named by channel and event
    /// id (Sigma's Windows logsources select them that way). Other formats are selected by
    /// their OCSF-aligned class and activity.
    pub fn is_windows_event_log(self) -> bool {
        matches!(
            self,
            SourceFormat::WindowsFlat
                | SourceFormat::WindowsNested
                | SourceFormat::Evtx
                | SourceFormat::Ecs
        )
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the source's own taxonomy an event sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMeta {
    /// The format the record was decoded from.
    pub format: SourceFormat,
    /// Windows channel (`Security`, `Microsoft-Windows-Sysmon/Operational`), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Provider name (`Microsoft-Windows-Security-Auditing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Windows event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u32>,
}

/// A field value from the original record.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// A string.
    Str(Box<str>),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// JSON `null`.
    Null,
    /// An array of values.
    List(Vec<FieldValue>),
}

impl FieldValue {
    /// The value as text, where it is a scalar (numbers and booleans are written out).
    pub fn as_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match self {
            FieldValue::Str(s) => Some(Cow::Borrowed(s)),
            FieldValue::Int(i) => Some(Cow::Owned(i.to_string())),
            FieldValue::Float(x) => Some(Cow::Owned(x.to_string())),
            FieldValue::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            FieldValue::Null | FieldValue::List(_) => None,
        }
    }

    /// The value as a string slice, where it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an integer: integers, and strings holding a decimal or `0x` hex integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            FieldValue::Int(i) => Some(*i),
            FieldValue::Str(s) => {
                let s = s.trim();
                if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    i64::from_str_radix(hex, 16).ok()
                } else {
                    s.parse().ok()
                }
            }
            _ => None,
        }
    }

    /// Converts a JSON value; objects are not field values (decoders flatten them first).
    pub fn from_json(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => FieldValue::Null,
            serde_json::Value::Bool(b) => FieldValue::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => FieldValue::Int(i),
                None => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => FieldValue::Str(s.as_str().into()),
            serde_json::Value::Array(items) => {
                FieldValue::List(items.iter().map(FieldValue::from_json).collect())
            }
            serde_json::Value::Object(_) => FieldValue::Str(value.to_string().into()),
        }
    }
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Str(s) => serializer.serialize_str(s),
            FieldValue::Int(i) => serializer.serialize_i64(*i),
            FieldValue::Float(x) => serializer.serialize_f64(*x),
            FieldValue::Bool(b) => serializer.serialize_bool(*b),
            FieldValue::Null => serializer.serialize_unit(),
            FieldValue::List(items) => items.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    /// Reads a value straight from the deserializer, with what [`FieldValue::from_json`] gives
    /// for the same JSON (an object becomes its JSON text), but no `serde_json::Value` built
    /// first: the correlate stage and `hunt` read every event's fields this way.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldValueVisitor)
    }
}

/// The visitor of [`FieldValue`]'s `Deserialize`.
struct FieldValueVisitor;

impl<'de> serde::de::Visitor<'de> for FieldValueVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FieldValue, E> {
        Ok(FieldValue::Int(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FieldValue, E> {
        // As `from_json`: beyond `i64`, the nearest float.
        Ok(i64::try_from(v).map_or(FieldValue::Float(v as f64), FieldValue::Int))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<FieldValue, E> {
        Ok(FieldValue::Float(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::Str(v.into()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<FieldValue, E> {
        Ok(FieldValue::Str(v.into_boxed_str()))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<FieldValue, D::Error> {
        FieldValue::deserialize(d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<FieldValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element::<FieldValue>()? {
            items.push(item);
        }
        Ok(FieldValue::List(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<FieldValue, A::Error> {
        // Decoders flatten objects; one that reaches here is kept as its JSON text.
        let value =
            serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(FieldValue::from_json(&value))
    }
}

/// The original fields of a record, flattened, in source order.
///
/// Lookup is exact first, then ASCII case-insensitive: sources disagree on case (`Channel` and
/// `channel` occur in one file), rule authors should not have to care.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(Vec<(Box<str>, FieldValue)>);

impl Fields {
    /// An empty set of fields.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// An empty set with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Adds a field (a later field of the same name shadows nothing: the first one wins on
    /// lookup, as the source wrote it first).
    pub fn push(&mut self, name: impl Into<Box<str>>, value: FieldValue) {
        self.0.push((name.into(), value));
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| &**k == name)
            .or_else(|| self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v)
    }

    /// The value of `name` as a string slice, where it is a string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(FieldValue::as_str)
    }

    /// All fields in source order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(&**k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of field names to values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields, A::Error> {
                let mut fields = Fields::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<String, FieldValue>()? {
                    fields.push(k, v);
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lookup_is_exact_then_case_insensitive() {
        let mut f = Fields::new();
        f.push("channel", FieldValue::Str("security".into()));
        f.push("Channel", FieldValue::Str("Security".into()));
        assert_eq!(f.get_str("Channel"), Some("Security"));
        assert_eq!(f.get_str("CHANNEL"), Some("security"));
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn integers_read_from_hex_and_decimal_strings() {
        assert_eq!(FieldValue::Str("0x1fffff".into()).as_i64(), Some(0x1fffff));
        assert_eq!(FieldValue::Str("4688".into()).as_i64(), Some(4688));
        assert_eq!(FieldValue::Int(7).as_text().unwrap(), "7");
    }

    #[test]
    fn field_values_read_from_json_as_from_json_converts_them() {
        let text = r#"{"s":"a\"b","i":-7,"u":18446744073709551615,"f":1.5,"t":true,
            "n":null,"l":[1,"x",[null]],"o":{"k":[1,2],"v":"w"},"big":9223372036854775807}"#;
        let fields: Fields = serde_json::from_str(text).unwrap();
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(fields.len(), object.len());
        for (name, v) in object {
            assert_eq!(fields.get(name), Some(&FieldValue::from_json(v)), "{name}");
        }
        assert_eq!(fields.get_str("o"), Some(r#"{"k":[1,2],"v":"w"}"#));
        assert_eq!(fields.get("u"), Some(&FieldValue::Float(u64::MAX as f64)));
        assert_eq!(fields.get("big"), Some(&FieldValue::Int(i64::MAX)));
        // And back: what is written reads back the same.
        let again: Fields = serde_json::from_slice(&serde_json::to_vec(&fields).unwrap()).unwrap();
        assert_eq!(again, fields);
    }

    #[test]
    fn process_name_is_the_file_name() {
        let p = ProcessInfo {
            image: Some(r"C:\Windows\System32\inetsrv\w3wp.exe".into()),
            ..ProcessInfo::default()
        };
        assert_eq!(p.name(), Some("w3wp.exe"));
    }
}
