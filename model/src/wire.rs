//! The events topic's record format: one encoder and one decoder for [`Event`].
//!
//! Ingest writes each normalized event in a compact binary form (`bin1`) and marks the record
//! with the header [`ENCODING_HEADER`]` = `[`BIN1`]. Every reader of the events topic (the
//! correlate stage, `chainwatch hunt`, the benchmark tools, the tests) goes through
//! [`decode_event`], which reads `bin1` when the header says so and JSON (the event's serde
//! form) when there is no header, so old topics and hand-produced events still read.
//!
//! # `bin1`, version 1
//!
//! The payload's first byte is the format version (1); a reader refuses versions it does not
//! know. Then, in this order, with no padding:
//!
//! - `varint`: LEB128, 7 bits per byte, least significant group first; signed integers are
//!   zigzag-encoded first. `str`: a `varint` byte length, then that many bytes of UTF-8.
//!   `opt<T>`: a byte 0 (absent) or 1 (present, then `T`).
//! - `id`: 16 bytes, the event id's 128 bits little-endian.
//! - `tenant`: `str`; `time`: 8 bytes, nanoseconds since the epoch, little-endian `i64`.
//! - `class`, `activity`: one byte each, the codes of [`class_code`] and [`activity_code`].
//! - `host`: `str` (the name as the source wrote it; its key is derived again on reading).
//! - `user`: `opt<str>`; `process`, `parent`: `opt<process>`, a process being `opt<str>` image,
//!   `opt<str>` command line, `opt<varint>` pid, `opt<str>` GUID.
//! - `target`: `opt<str>` file, `opt<process>`, then `opt<str>` account, group, service, url,
//!   registry, api.
//! - `source`: one byte format code ([`format_code`]), `opt<str>` channel, `opt<str>` provider,
//!   `opt<varint>` event id.
//! - `fields`: a `varint` count, then per field its name (`str`) and value: a tag byte, 0 string
//!   (`str`), 1 integer (signed `varint`), 2 float (8 bytes, IEEE 754 bits little-endian),
//!   3 false, 4 true, 5 null, 6 list (`varint` count, then the values, nested at most
//!   [`MAX_DEPTH`] deep).
//! - `provenance`: a tag byte, 0 Kafka (`str` topic, signed `varint` partition and offset,
//!   `opt<varint>` record), 1 file (`str` path, `opt<varint>` line, `opt<varint>` record).
//!
//! The record ends there: trailing bytes are an error, as is any truncation, unknown code or
//! invalid UTF-8. A corrupt record is never half-read into an event.
//!
//! Written by hand rather than with a serde format crate: the event's serde form is made for
//! JSON (optional members skipped, an internally tagged provenance, a field value read with
//! `deserialize_any`), which non-self-describing formats (postcard, bincode) cannot read back,
//! so a crate would need a second, parallel set of types or impls anyway; the format is small,
//! and by hand each string costs one allocation on decode and nothing is built twice.

use std::fmt;

use crate::event::{Activity, Event, EventClass, FieldValue, Fields, ProcessInfo, SourceFormat};
use crate::event::{SourceMeta, Target};
use crate::{EventId, HostName, Provenance, TenantId, Timestamp};

/// The record header that names the encoding of an events-topic payload.
pub const ENCODING_HEADER: &str = "chainwatch.encoding";

/// The value of [`ENCODING_HEADER`] for the binary encoding of this module.
pub const BIN1: &[u8] = b"bin1";

/// The version byte `bin1` payloads start with.
pub const VERSION: u8 = 1;

/// How deep field-value lists may nest (deeper is a decode error, not a stack overflow).
pub const MAX_DEPTH: usize = 32;

/// Why an events-topic payload is not an event.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// A payload without the encoding header that is not an event's JSON.
    #[error("not an event's JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// An encoding header naming no encoding this reader knows.
    #[error("unknown event encoding {0:?} (header {ENCODING_HEADER})")]
    UnknownEncoding(String),
    /// A `bin1` payload that is corrupt or truncated.
    #[error("corrupt bin1 event at byte {at}: {what}")]
    Bin {
        /// Offset in the payload where reading failed.
        at: usize,
        /// What was wrong there.
        what: String,
    },
}

/// Reads an events-topic payload: `bin1` when `encoding` (the value of the record's
/// [`ENCODING_HEADER`], if any) says so, JSON when there is no header.
pub fn decode_event(payload: &[u8], encoding: Option<&[u8]>) -> Result<Event, EventDecodeError> {
    match encoding {
        None => Ok(serde_json::from_slice(payload)?),
        Some(BIN1) => decode_bin(payload),
        Some(other) => Err(EventDecodeError::UnknownEncoding(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

/// Appends `event` in `bin1` form to `out` (the payload of a record whose
/// [`ENCODING_HEADER`] is [`BIN1`]).
pub fn encode_bin(event: &Event, out: &mut Vec<u8>) {
    out.push(VERSION);
    out.extend_from_slice(&event.id.as_u128().to_le_bytes());
    put_str(out, event.tenant.as_str());
    out.extend_from_slice(&event.time.as_nanos().to_le_bytes());
    out.push(class_code(event.class));
    out.push(activity_code(event.activity));
    put_str(out, event.host.display());
    put_opt_str(out, event.user.as_deref());
    put_opt_process(out, event.process.as_ref());
    put_opt_process(out, event.parent.as_ref());
    let t = &event.target;
    put_opt_str(out, t.file.as_deref());
    put_opt_process(out, t.process.as_ref());
    for s in [
        &t.account,
        &t.group,
        &t.service,
        &t.url,
        &t.registry,
        &t.api,
    ] {
        put_opt_str(out, s.as_deref());
    }
    out.push(format_code(event.source.format));
    put_opt_str(out, event.source.channel.as_deref());
    put_opt_str(out, event.source.provider.as_deref());
    put_opt_varint(out, event.source.event_id.map(u64::from));
    put_varint(out, event.fields.len() as u64);
    for (name, value) in event.fields.iter() {
        put_str(out, name);
        put_value(out, value);
    }
    match &event.provenance {
        Provenance::Kafka {
            topic,
            partition,
            offset,
            record,
        } => {
            out.push(0);
            put_str(out, topic);
            put_varint(out, zigzag(i64::from(*partition)));
            put_varint(out, zigzag(*offset));
            put_opt_varint(out, *record);
        }
        Provenance::File { path, line, record } => {
            out.push(1);
            put_str(out, path);
            put_opt_varint(out, *line);
            put_opt_varint(out, *record);
        }
    }
}

/// `event` in `bin1` form, in a new buffer of `capacity` bytes (a guess of its size).
pub fn to_bin(event: &Event, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    encode_bin(event, &mut out);
    out
}

/// Reads a `bin1` payload.
pub fn decode_bin(payload: &[u8]) -> Result<Event, EventDecodeError> {
    let mut r = Reader {
        buf: payload,
        at: 0,
    };
    let version = r.byte("the version byte")?;
    if version != VERSION {
        return Err(r.error_at(0, format!("unknown bin1 version {version}")));
    }
    let id = EventId::from_u128(u128::from_le_bytes(r.array("the event id")?));
    let tenant_at = r.at;
    let tenant = TenantId::new(r.str("the tenant")?)
        .map_err(|e| r.error_at(tenant_at, format!("bad tenant: {e}")))?;
    let time = Timestamp::from_nanos(i64::from_le_bytes(r.array("the time")?));
    let code = r.byte("the class")?;
    let class = class_of(code).ok_or_else(|| r.error(format!("unknown class code {code}")))?;
    let code = r.byte("the activity")?;
    let activity =
        activity_of(code).ok_or_else(|| r.error(format!("unknown activity code {code}")))?;
    let host = HostName::new(r.str("the host")?);
    let user = r.opt_string("the user")?;
    let process = r.opt_process()?;
    let parent = r.opt_process()?;
    let target = Target {
        file: r.opt_string("the target file")?,
        process: r.opt_process()?,
        account: r.opt_string("the target account")?,
        group: r.opt_string("the target group")?,
        service: r.opt_string("the target service")?,
        url: r.opt_string("the target url")?,
        registry: r.opt_string("the target registry")?,
        api: r.opt_string("the target api")?,
    };
    let code = r.byte("the source format")?;
    let format =
        format_of(code).ok_or_else(|| r.error(format!("unknown source format code {code}")))?;
    let channel = r.opt_string("the channel")?;
    let provider = r.opt_string("the provider")?;
    let event_id = match r.opt_varint("the event id")? {
        None => None,
        Some(v) => {
            Some(u32::try_from(v).map_err(|_| r.error(format!("event id {v} exceeds u32")))?)
        }
    };
    let count = r.count("the field count")?;
    let mut fields = Fields::with_capacity(count);
    for _ in 0..count {
        let name: Box<str> = r.str("a field name")?.into();
        let value = r.value(0)?;
        fields.push(name, value);
    }
    let provenance = match r.byte("the provenance tag")? {
        0 => Provenance::Kafka {
            topic: r.str("the provenance topic")?.to_owned(),
            partition: {
                let v = unzigzag(r.varint("the partition")?);
                i32::try_from(v).map_err(|_| r.error(format!("partition {v} exceeds i32")))?
            },
            offset: unzigzag(r.varint("the offset")?),
            record: r.opt_varint("the record index")?,
        },
        1 => Provenance::File {
            path: r.str("the provenance path")?.into(),
            line: r.opt_varint("the line")?,
            record: r.opt_varint("the record index")?,
        },
        tag => return Err(r.error(format!("unknown provenance tag {tag}"))),
    };
    if r.at != payload.len() {
        return Err(r.error(format!("{} trailing bytes", payload.len() - r.at)));
    }
    Ok(Event {
        id,
        tenant,
        time,
        class,
        activity,
        host,
        user,
        process,
        parent,
        target,
        source: SourceMeta {
            format,
            channel,
            provider,
            event_id,
        },
        fields,
        provenance,
    })
}

/// Declares a one-byte code table for a fieldless enum, in both directions. The codes are
/// part of the format: never renumber, only add.
macro_rules! codes {
    ($(#[$doc:meta])* $to:ident, $(#[$doc_of:meta])* $of:ident, $ty:ident { $($variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$doc])*
        pub fn $to(v: $ty) -> u8 {
            match v {
                $($ty::$variant => $code,)+
            }
        }

        $(#[$doc_of])*
        pub fn $of(code: u8) -> Option<$ty> {
            match code {
                $($code => Some($ty::$variant),)+
                _ => None,
            }
        }
    };
}

codes!(
    /// The `bin1` code of an event class.
    class_code,
    /// The event class of a `bin1` code.
    class_of,
    EventClass {
        FileActivity = 0,
        ModuleActivity = 1,
        ScheduledJobActivity = 2,
        ProcessActivity = 3,
        EventLogActivity = 4,
        ScriptActivity = 5,
        AccountChange = 6,
        Authentication = 7,
        GroupManagement = 8,
        NetworkActivity = 9,
        HttpActivity = 10,
        DnsActivity = 11,
        ApiActivity = 12,
        RegistryActivity = 13,
        ServiceActivity = 14,
        Other = 15,
    }
);

codes!(
    /// The `bin1` code of an activity.
    activity_code,
    /// The activity of a `bin1` code.
    activity_of,
    Activity {
        Launch = 0,
        Terminate = 1,
        Open = 2,
        Inject = 3,
        Create = 4,
        Read = 5,
        Update = 6,
        Delete = 7,
        Rename = 8,
        Load = 9,
        Logon = 10,
        Logoff = 11,
        Enable = 12,
        Disable = 13,
        PasswordChange = 14,
        AddMember = 15,
        RemoveMember = 16,
        Execute = 17,
        Connect = 18,
        Request = 19,
        Clear = 20,
        Other = 21,
    }
);

codes!(
    /// The `bin1` code of a source format.
    format_code,
    /// The source format of a `bin1` code.
    format_of,
    SourceFormat {
        WindowsFlat = 0,
        WindowsNested = 1,
        Evtx = 2,
        Ecs = 3,
        Mde = 4,
        W3c = 5,
        Ocsf = 6,
    }
);

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_opt_varint(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_varint(out, v);
        }
    }
}

fn put_opt_process(out: &mut Vec<u8>, p: Option<&ProcessInfo>) {
    let Some(p) = p else {
        out.push(0);
        return;
    };
    out.push(1);
    put_opt_str(out, p.image.as_deref());
    put_opt_str(out, p.command_line.as_deref());
    put_opt_varint(out, p.pid);
    put_opt_str(out, p.guid.as_deref());
}

fn put_value(out: &mut Vec<u8>, v: &FieldValue) {
    match v {
        FieldValue::Str(s) => {
            out.push(0);
            put_str(out, s);
        }
        FieldValue::Int(i) => {
            out.push(1);
            put_varint(out, zigzag(*i));
        }
        FieldValue::Float(x) => {
            out.push(2);
            out.extend_from_slice(&x.to_bits().to_le_bytes());
        }
        FieldValue::Bool(false) => out.push(3),
        FieldValue::Bool(true) => out.push(4),
        FieldValue::Null => out.push(5),
        FieldValue::List(items) => {
            out.push(6);
            put_varint(out, items.len() as u64);
            for item in items {
                put_value(out, item);
            }
        }
    }
}

/// A cursor over a `bin1` payload.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, what: String) -> EventDecodeError {
        self.error_at(self.at, what)
    }

    fn error_at(&self, at: usize, what: String) -> EventDecodeError {
        EventDecodeError::Bin { at, what }
    }

    fn truncated(&self, what: &str) -> EventDecodeError {
        self.error(format!("truncated in {what}"))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], EventDecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.truncated(what))?;
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn byte(&mut self, what: &str) -> Result<u8, EventDecodeError> {
        let b = *self.buf.get(self.at).ok_or_else(|| self.truncated(what))?;
        self.at += 1;
        Ok(b)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], EventDecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn varint(&mut self, what: &str) -> Result<u64, EventDecodeError> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte(what)?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.error_at(start, format!("{what}: a varint longer than 64 bits")))
    }

    /// A count of items that each take at least one byte: never more than the bytes left, so
    /// a corrupt count cannot make the reader reserve memory the payload does not back.
    fn count(&mut self, what: &str) -> Result<usize, EventDecodeError> {
        let at = self.at;
        let n = self.varint(what)?;
        let left = self.buf.len() - self.at;
        match usize::try_from(n) {
            Ok(n) if n <= left => Ok(n),
            _ => Err(self.error_at(at, format!("{what} {n} exceeds the {left} bytes left"))),
        }
    }

    fn str(&mut self, what: &str) -> Result<&'a str, EventDecodeError> {
        let at = self.at;
        let n = self.count(what)?;
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes)
            .map_err(|e| self.error_at(at, format!("{what}: invalid UTF-8 ({e})")))
    }

    fn present(&mut self, what: &str) -> Result<bool, EventDecodeError> {
        match self.byte(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.error_at(self.at - 1, format!("{what}: presence byte {b}"))),
        }
    }

    fn opt_string(&mut self, what: &str) -> Result<Option<String>, EventDecodeError> {
        Ok(if self.present(what)? {
            Some(self.str(what)?.to_owned())
        } else {
            None
        })
    }

    fn opt_varint(&mut self, what: &str) -> Result<Option<u64>, EventDecodeError> {
        Ok(if self.present(what)? {
            Some(self.varint(what)?)
        } else {
            None
        })
    }

    fn opt_process(&mut self) -> Result<Option<ProcessInfo>, EventDecodeError> {
        if !self.present("a process")? {
            return Ok(None);
        }
        Ok(Some(ProcessInfo {
            image: self.opt_string("a process image")?,
            command_line: self.opt_string("a process command line")?,
            pid: self.opt_varint("a process id")?,
            guid: self.opt_string("a process GUID")?,
        }))
    }

    fn value(&mut self, depth: usize) -> Result<FieldValue, EventDecodeError> {
        Ok(match self.byte("a field value tag")? {
            0 => FieldValue::Str(self.str("a field value")?.into()),
            1 => FieldValue::Int(unzigzag(self.varint("an integer field value")?)),
            2 => FieldValue::Float(f64::from_bits(u64::from_le_bytes(
                self.array("a float field value")?,
            ))),
            3 => FieldValue::Bool(false),
            4 => FieldValue::Bool(true),
            5 => FieldValue::Null,
            6 => {
                if depth >= MAX_DEPTH {
                    return Err(self.error(format!("lists nested deeper than {MAX_DEPTH}")));
                }
                let n = self.count("a list length")?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                FieldValue::List(items)
            }
            tag => return Err(self.error_at(self.at - 1, format!("unknown field value tag {tag}"))),
        })
    }
}

impl fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reader(at {} of {})", self.at, self.buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(n: &str) -> ProcessInfo {
        ProcessInfo {
            image: Some(format!(r"C:\Windows\System32\{n}.exe")),
            command_line: Some(format!("{n}.exe /c \"ünïcødé ✓ 𝄞\"")),
            pid: Some(u64::MAX),
            guid: Some("{0b5c4e1a-0000-0000-0000-000000000000}".into()),
        }
    }

    /// An event with every optional member set, every field value kind, unicode and empty
    /// strings.
    fn full() -> Event {
        let mut fields = Fields::new();
        fields.push("EventID", FieldValue::Int(4688));
        fields.push("Negative", FieldValue::Int(i64::MIN));
        fields.push("Max", FieldValue::Int(i64::MAX));
        fields.push("Ratio", FieldValue::Float(-1.5e-300));
        fields.push("Inf", FieldValue::Float(f64::INFINITY));
        fields.push("Yes", FieldValue::Bool(true));
        fields.push("No", FieldValue::Bool(false));
        fields.push("Nothing", FieldValue::Null);
        fields.push("", FieldValue::Str("".into()));
        fields.push("Ünïcødé 名前", FieldValue::Str("値 ✓ 𝄞 \u{0}\n\"".into()));
        fields.push(
            "List",
            FieldValue::List(vec![
                FieldValue::Int(1),
                FieldValue::Str("x".into()),
                FieldValue::List(vec![FieldValue::Null, FieldValue::List(vec![])]),
            ]),
        );
        fields.push(
            "channel",
            FieldValue::Str("duplicate names keep their order".into()),
        );
        fields.push("Channel", FieldValue::Str("Security".into()));
        Event {
            class: EventClass::ProcessActivity,
            activity: Activity::Launch,
            user: Some(r"CORP\älice".into()),
            process: Some(process("cmd")),
            parent: Some(ProcessInfo {
                image: Some(String::new()),
                ..ProcessInfo::default()
            }),
            target: Target {
                file: Some(r"C:\temp\a.txt".into()),
                process: Some(process("lsass")),
                account: Some("bob".into()),
                group: Some("Administrators".into()),
                service: Some("svc".into()),
                url: Some("/owa/auth/x.aspx?a=1".into()),
                registry: Some(r"HKLM\Software\x".into()),
                api: Some("New-InboxRule -ForwardTo x@y".into()),
            },
            source: SourceMeta {
                format: SourceFormat::Evtx,
                channel: Some("Microsoft-Windows-Sysmon/Operational".into()),
                provider: Some("Microsoft-Windows-Sysmon".into()),
                event_id: Some(u32::MAX),
            },
            fields,
            provenance: Provenance::Kafka {
                topic: "telemetry.acme.windows".into(),
                partition: i32::MIN,
                offset: i64::MAX,
                record: Some(7),
            },
            ..Event::bare(
                EventId::from_u128(u128::MAX - 5),
                TenantId::new("acme_corp-1").unwrap(),
                Timestamp::from_nanos(-1_234_567_891),
                HostName::new("WORKSTATION6.theshire.local"),
            )
        }
    }

    /// The same event with every optional member unset.
    fn bare() -> Event {
        Event::bare(
            EventId::from_u128(0),
            TenantId::new("t").unwrap(),
            Timestamp::from_nanos(0),
            HostName::new(""),
        )
    }

    fn round_trip(event: &Event) -> Event {
        let bytes = to_bin(event, 0);
        let back = decode_event(&bytes, Some(BIN1)).unwrap();
        assert_eq!(&back, event);
        // Equality of hosts is by key: the name as written must survive too.
        assert_eq!(back.host.display(), event.host.display());
        back
    }

    #[test]
    fn events_round_trip_with_every_member_set_and_unset() {
        round_trip(&full());
        round_trip(&bare());
        let mut file = full();
        file.provenance = Provenance::File {
            path: "logs/ä.jsonl".into(),
            line: Some(u64::MAX),
            record: None,
        };
        file.process = None;
        file.target = Target::default();
        file.source.event_id = Some(0);
        round_trip(&file);
        let mut kafka = bare();
        kafka.provenance = Provenance::Kafka {
            topic: String::new(),
            partition: -1,
            offset: -1,
            record: None,
        };
        round_trip(&kafka);
    }

    #[test]
    fn every_enum_code_round_trips_and_codes_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for code in 0..=u8::MAX {
            if let Some(c) = class_of(code) {
                assert_eq!(class_code(c), code);
                assert!(seen.insert(("class", format!("{c:?}"))));
                let mut e = bare();
                e.class = c;
                round_trip(&e);
            }
            if let Some(a) = activity_of(code) {
                assert_eq!(activity_code(a), code);
                assert!(seen.insert(("activity", format!("{a:?}"))));
                let mut e = bare();
                e.activity = a;
                round_trip(&e);
            }
            if let Some(f) = format_of(code) {
                assert_eq!(format_code(f), code);
                assert!(seen.insert(("format", format!("{f:?}"))));
                let mut e = bare();
                e.source.format = f;
                round_trip(&e);
            }
        }
        // 16 classes, 22 activities, 7 formats: the exhaustive matches of `codes!` fail to
        // compile when a variant is added without a code.
        assert_eq!(seen.len(), 16 + 22 + 7);
    }

    #[test]
    fn a_large_field_map_and_a_nan_round_trip() {
        let mut e = full();
        for i in 0..10_000 {
            e.fields.push(
                format!("Field{i}"),
                FieldValue::Str("x".repeat(i % 300).into()),
            );
        }
        e.fields
            .push("Long", FieldValue::Str("ß".repeat(100_000).into()));
        round_trip(&e);
        let mut nan = bare();
        nan.fields.push("NaN", FieldValue::Float(f64::NAN));
        let back = decode_bin(&to_bin(&nan, 0)).unwrap();
        assert!(matches!(back.fields.get("NaN"), Some(FieldValue::Float(x)) if x.is_nan()));
    }

    #[test]
    fn json_without_a_header_reads_as_the_same_event() {
        // JSON loses what bin1 keeps (infinities become null, the last bits of some floats):
        // compare on floats JSON writes exactly.
        let mut e = full();
        let mut fields = Fields::new();
        for (k, v) in e.fields.iter() {
            let v = match v {
                FieldValue::Float(_) => FieldValue::Float(1.5),
                v => v.clone(),
            };
            fields.push(k, v);
        }
        e.fields = fields;
        let json = serde_json::to_vec(&e).unwrap();
        assert_eq!(decode_event(&json, None).unwrap(), e);
        assert_eq!(decode_event(&to_bin(&e, 0), Some(BIN1)).unwrap(), e);
        // The binary form is what the header says: JSON under a bin1 header is corrupt, and
        // binary without the header is not JSON.
        assert!(matches!(
            decode_event(&json, Some(BIN1)),
            Err(EventDecodeError::Bin { at: 0, .. })
        ));
        assert!(matches!(
            decode_event(&to_bin(&e, 0), None),
            Err(EventDecodeError::Json(_))
        ));
        let err = decode_event(&json, Some(b"bin9")).unwrap_err();
        assert!(
            err.to_string().contains("unknown event encoding \"bin9\""),
            "{err}"
        );
    }

    #[test]
    fn every_truncation_is_an_error_that_names_the_byte() {
        let bytes = to_bin(&full(), 0);
        for len in 0..bytes.len() {
            match decode_bin(&bytes[..len]) {
                Err(EventDecodeError::Bin { at, what }) => {
                    assert!(at <= len, "{len}: at {at}");
                    assert!(!what.is_empty());
                }
                other => panic!(
                    "a payload cut at {len} of {} read as {other:?}",
                    bytes.len()
                ),
            }
        }
    }

    #[test]
    fn corrupt_payloads_are_errors_never_panics() {
        let bytes = to_bin(&full(), 0);
        let mut extra = bytes.clone();
        extra.push(0);
        let err = decode_bin(&extra).unwrap_err();
        assert!(err.to_string().contains("1 trailing bytes"), "{err}");
        let mut version = bytes.clone();
        version[0] = 2;
        let err = decode_bin(&version).unwrap_err();
        assert!(err.to_string().contains("unknown bin1 version 2"), "{err}");
        // A huge string length, an unknown class, bad UTF-8 in the tenant.
        let tenant_at = 1 + 16;
        let mut long = bytes.clone();
        long.splice(tenant_at..tenant_at + 1, [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(
            decode_bin(&long)
                .unwrap_err()
                .to_string()
                .contains("exceeds")
        );
        let class_at = tenant_at + 1 + "acme_corp-1".len() + 8;
        let mut class = bytes.clone();
        class[class_at] = 200;
        let err = decode_bin(&class).unwrap_err();
        assert!(err.to_string().contains("unknown class code 200"), "{err}");
        let mut utf8 = bytes.clone();
        utf8[tenant_at + 1] = 0xff;
        let err = decode_bin(&utf8).unwrap_err();
        assert!(err.to_string().contains("invalid UTF-8"), "{err}");
        // Every single byte flipped: an error or some event, never a panic.
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = decode_bin(&b);
            }
        }
        // Lists nested beyond the limit.
        let mut nested = FieldValue::Null;
        for _ in 0..=MAX_DEPTH {
            nested = FieldValue::List(vec![nested]);
        }
        let mut e = bare();
        e.fields.push("deep", nested);
        let err = decode_bin(&to_bin(&e, 0)).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn bin1_is_smaller_than_json() {
        let e = full();
        let bin = to_bin(&e, 0).len();
        let json = serde_json::to_vec(&e).unwrap().len();
        assert!(bin < json, "bin1 {bin} bytes, JSON {json}");
    }
}
