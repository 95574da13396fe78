//! Normalization through mapping tables: which class and activity an event has, and which of
//! its fields fill the canonical fields. The tables are data (`ingest/mappings/*.toml`), read
//! once at start-up; this module only interprets them.

use std::collections::{BTreeMap, HashMap};

use chainwatch_model::{Activity, Canonical, Event, EventClass, Fields};
use serde::Deserialize;

/// The Windows event table, embedded at compile time.
pub const WINDOWS_TABLE: &str = include_str!("../mappings/windows.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    event: Vec<EntrySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    channels: Vec<String>,
    #[serde(default)]
    providers: Vec<String>,
    ids: Vec<u32>,
    #[serde(default)]
    when: BTreeMap<String, String>,
    class: EventClass,
    activity: Activity,
    #[serde(default)]
    fields: BTreeMap<String, Vec<String>>,
}

/// Where a canonical field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// One source field.
    Field(String),
    /// Fields joined with literal text: `{SubjectDomainName}\{SubjectUserName}`.
    Template(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

#[derive(Debug, Clone)]
struct Entry {
    when: Vec<(String, String)>,
    class: EventClass,
    activity: Activity,
    fields: Vec<(Canonical, Vec<Source>)>,
}

/// A parsed mapping table.
#[derive(Debug, Clone)]
pub struct MappingTable {
    entries: Vec<Entry>,
    by_channel: HashMap<(String, u32), Vec<usize>>,
    by_provider: HashMap<(String, u32), Vec<usize>>,
}

fn parse_source(text: &str) -> Result<Source, String> {
    if !text.contains('{') {
        return Ok(Source::Field(text.to_owned()));
    }
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {text:?}"))?;
        parts.push(Part::Field(rest[open + 1..open + close].to_owned()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(Source::Template(parts))
}

/// A field value usable for normalization: present, scalar, not empty and not `-`.
fn usable<'a>(fields: &'a Fields, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let v = fields.get(name)?.as_text()?;
    let t = v.trim();
    (!t.is_empty() && t != "-").then_some(v)
}

impl Source {
    fn resolve(&self, fields: &Fields) -> Option<String> {
        match self {
            Source::Field(name) => usable(fields, name).map(|v| v.into_owned()),
            Source::Template(parts) => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => out.push_str(t),
                        Part::Field(f) => out.push_str(&usable(fields, f)?),
                    }
                }
                Some(out)
            }
        }
    }
}

impl MappingTable {
    /// Parses a table; every problem is listed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TableFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut table = MappingTable {
            entries: Vec::new(),
            by_channel: HashMap::new(),
            by_provider: HashMap::new(),
        };
        let mut errors = Vec::new();
        for (i, spec) in file.event.into_iter().enumerate() {
            let mut fields = Vec::new();
            for (name, sources) in spec.fields {
                let Some(canonical) = Canonical::from_name(&name) else {
                    errors.push(format!("event[{i}]: unknown canonical field {name:?}"));
                    continue;
                };
                match sources.iter().map(|s| parse_source(s)).collect() {
                    Ok(sources) => fields.push((canonical, sources)),
                    Err(e) => errors.push(format!("event[{i}]: {e}")),
                }
            }
            let idx = table.entries.len();
            for id in &spec.ids {
                for c in &spec.channels {
                    table
                        .by_channel
                        .entry((c.to_ascii_lowercase(), *id))
                        .or_default()
                        .push(idx);
                }
                for p in &spec.providers {
                    table
                        .by_provider
                        .entry((p.to_ascii_lowercase(), *id))
                        .or_default()
                        .push(idx);
                }
            }
            table.entries.push(Entry {
                when: spec.when.into_iter().collect(),
                class: spec.class,
                activity: spec.activity,
                fields,
            });
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors.join("; "))
        }
    }

    /// The Windows table.
    pub fn windows() -> Result<Self, String> {
        Self::parse(WINDOWS_TABLE)
    }

    fn find(
        &self,
        channel: Option<&str>,
        provider: Option<&str>,
        id: u32,
        fields: &Fields,
    ) -> Option<&Entry> {
        let candidates = channel
            .and_then(|k| self.by_channel.get(&(k.to_ascii_lowercase(), id)))
            .or_else(|| {
                provider.and_then(|k| self.by_provider.get(&(k.to_ascii_lowercase(), id)))
            })?;
        candidates.iter().map(|&i| &self.entries[i]).find(|e| {
            e.when.iter().all(|(f, v)| {
                fields
                    .get(f)
                    .and_then(|x| x.as_text())
                    .is_some_and(|x| x.eq_ignore_ascii_case(v))
            })
        })
    }

    /// Sets class, activity and canonical fields of `event` from its source fields.
    pub fn apply(&self, event: &mut Event) {
        let Some(id) = event.source.event_id else {
            return;
        };
        let entry = self.find(
            event.source.channel.as_deref(),
            event.source.provider.as_deref(),
            id,
            &event.fields,
        );
        let Some(entry) = entry else {
            return;
        };
        event.class = entry.class;
        event.activity = entry.activity;
        for (canonical, sources) in &entry.fields {
            if let Some(v) = sources.iter().find_map(|s| s.resolve(&event.fields)) {
                event.set_canonical(*canonical, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_windows_table_parses() {
        let t = MappingTable::windows().unwrap();
        assert!(t.entries.len() > 20);
        assert!(t.by_channel.contains_key(&("security".into(), 4688)));
    }

    #[test]
    fn templates_need_every_field() {
        let mut f = Fields::new();
        f.push(
            "SubjectDomainName",
            chainwatch_model::FieldValue::Str("CORP".into()),
        );
        f.push(
            "SubjectUserName",
            chainwatch_model::FieldValue::Str("alice".into()),
        );
        let s = parse_source("{SubjectDomainName}\\{SubjectUserName}").unwrap();
        assert_eq!(s.resolve(&f).as_deref(), Some("CORP\\alice"));
        let missing = parse_source("{TargetDomainName}\\{SubjectUserName}").unwrap();
        assert_eq!(missing.resolve(&f), None);
        assert!(parse_source("{Unclosed").is_err());
    }

    #[test]
    fn bad_tables_are_refused() {
        let err = MappingTable::parse(
            "[[event]]\nchannels=[\"x\"]\nids=[1]\nclass=\"other\"\nactivity=\"other\"\nfields.\"process.imag\"=[\"Image\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("process.imag"), "{err}");
    }
}
