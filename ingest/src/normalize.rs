//! Normalization through mapping tables: which class and activity an event has, which of its
//! fields fill the canonical fields, and which extra fields are derived for rules. The tables
//! are data (`ingest/mappings/*.toml`, one per format), read once at start-up; this module only
//! interprets them.
//!
//! A table has three parts, each optional:
//!
//! - `key`: for formats without Windows channels and event ids, the field whose value selects
//!   entries (`ActionType` for Defender, `class_uid` for OCSF).
//! - `[[derive]]`: fields added before an entry is chosen, when absent: names for the positions
//!   of an unnamed `<Data>` list (`data`), regex captures of another field (`from`, `pattern`,
//!   `names`), or templates (`set`).
//! - `[[event]]`: the first entry whose selector matches gives class, activity, canonical
//!   `fields` and `aliases` (extra fields under the names rules use, added when absent).
//!
//! A selector is `channels` / `providers` (case-insensitive), `ids` (event ids), `keys` (values
//! of the table's `key` field, case-insensitive) and `when` (field = value, case-insensitive; a
//! list field matches when any element does). Empty parts match anything.

use std::collections::{BTreeMap, HashMap};

use chainwatch_model::{
    Activity, Canonical, Event, EventClass, FieldOrigins, FieldValue, Fields, Origin,
};
use regex::Regex;
use serde::Deserialize;

/// The Windows event table (flat and nested JSON, EVTX, and the Windows part of ECS).
pub const WINDOWS_TABLE: &str = include_str!("../mappings/windows.toml");
/// The Elastic Common Schema table (events without a Windows channel and event id).
pub const ECS_TABLE: &str = include_str!("../mappings/ecs.toml");
/// The Microsoft Defender for Endpoint table.
pub const MDE_TABLE: &str = include_str!("../mappings/mde.toml");
/// The OCSF table.
pub const OCSF_TABLE: &str = include_str!("../mappings/ocsf.toml");
/// The W3C (IIS) access log table.
pub const W3C_TABLE: &str = include_str!("../mappings/w3c.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    derive: Vec<DeriveSpec>,
    #[serde(default)]
    event: Vec<EntrySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeriveSpec {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    ids: Vec<u32>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    when: BTreeMap<String, String>,
    #[serde(default)]
    data: Vec<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    set: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntrySpec {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    providers: Vec<String>,
    #[serde(default)]
    ids: Vec<u32>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    when: BTreeMap<String, String>,
    class: EventClass,
    activity: Activity,
    #[serde(default)]
    fields: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    aliases: BTreeMap<String, Vec<String>>,
}

/// Where a value comes from.
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

/// Which events an entry or a derivation applies to.
#[derive(Debug, Clone, Default)]
struct Selector {
    channels: Vec<String>,
    providers: Vec<String>,
    ids: Vec<u32>,
    keys: Vec<String>,
    when: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum DeriveAction {
    Data(Vec<String>),
    Extract {
        from: String,
        pattern: Regex,
        names: Vec<String>,
    },
    Set(Vec<(String, Source)>),
}

#[derive(Debug, Clone)]
struct Derive {
    selector: Selector,
    action: DeriveAction,
}

#[derive(Debug, Clone)]
struct Entry {
    selector: Selector,
    class: EventClass,
    activity: Activity,
    fields: Vec<(Canonical, Vec<Source>)>,
    aliases: Vec<(String, Vec<Source>)>,
}

/// A parsed mapping table.
#[derive(Debug, Clone)]
pub struct MappingTable {
    key: Option<String>,
    derives: Vec<Derive>,
    entries: Vec<Entry>,
    by_channel: HashMap<(String, u32), Vec<usize>>,
    by_provider: HashMap<(String, u32), Vec<usize>>,
    by_key: HashMap<String, Vec<usize>>,
    /// Entries not reachable through an index, tried in file order with the indexed ones.
    rest: Vec<usize>,
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
        let name = &rest[open + 1..open + close];
        if name.is_empty() {
            return Err(format!("empty field name in {text:?}"));
        }
        parts.push(Part::Field(name.to_owned()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(Source::Template(parts))
}

fn parse_sources(texts: &[String]) -> Result<Vec<Source>, String> {
    texts.iter().map(|s| parse_source(s)).collect()
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

/// True when a field's value (or, for a list, one of its elements) equals `want`, ignoring case.
fn value_is(value: Option<&FieldValue>, want: &str) -> bool {
    match value {
        Some(FieldValue::List(items)) => items
            .iter()
            .any(|i| i.as_text().is_some_and(|t| t.eq_ignore_ascii_case(want))),
        Some(v) => v.as_text().is_some_and(|t| t.eq_ignore_ascii_case(want)),
        None => false,
    }
}

fn contains_ci(list: &[String], value: Option<&str>) -> bool {
    value.is_some_and(|v| list.iter().any(|x| x.eq_ignore_ascii_case(v)))
}

impl Selector {
    fn matches(&self, event: &Event, key: Option<&str>) -> bool {
        let meta = &event.source;
        if (!self.channels.is_empty() || !self.providers.is_empty())
            && !contains_ci(&self.channels, meta.channel.as_deref())
            && !contains_ci(&self.providers, meta.provider.as_deref())
        {
            return false;
        }
        if !self.ids.is_empty() && !meta.event_id.is_some_and(|id| self.ids.contains(&id)) {
            return false;
        }
        if !self.keys.is_empty() {
            let Some(key) = key else { return false };
            if !self.keys.iter().any(|k| value_is(event.fields.get(key), k)) {
                return false;
            }
        }
        self.when
            .iter()
            .all(|(f, v)| value_is(event.fields.get(f), v))
    }
}

/// Adds a field unless the event already has one of that name.
fn add_absent(fields: &mut Fields, name: &str, value: String) {
    if fields.get(name).is_none() {
        fields.push(name, FieldValue::Str(value.into()));
    }
}

impl Derive {
    fn apply(&self, fields: &mut Fields) {
        match &self.action {
            DeriveAction::Data(names) => {
                let Some(FieldValue::List(items)) = fields.get("Data") else {
                    return;
                };
                let named: Vec<(String, String)> = names
                    .iter()
                    .zip(items)
                    .filter(|(n, _)| !n.is_empty())
                    .filter_map(|(n, v)| Some((n.clone(), v.as_text()?.into_owned())))
                    .collect();
                for (n, v) in named {
                    add_absent(fields, &n, v);
                }
            }
            DeriveAction::Extract {
                from,
                pattern,
                names,
            } => {
                let Some(text) = fields.get(from).and_then(FieldValue::as_text) else {
                    return;
                };
                let Some(caps) = pattern.captures(&text) else {
                    return;
                };
                let found: Vec<(String, String)> = names
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| Some((n.clone(), caps.get(i + 1)?.as_str().to_owned())))
                    .filter(|(_, v)| !v.is_empty())
                    .collect();
                for (n, v) in found {
                    add_absent(fields, &n, v);
                }
            }
            DeriveAction::Set(sets) => {
                for (name, source) in sets {
                    if let Some(v) = source.resolve(fields) {
                        add_absent(fields, name, v);
                    }
                }
            }
        }
    }
}

impl MappingTable {
    /// Parses a table; every problem is listed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: TableFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut table = MappingTable {
            key: file.key,
            derives: Vec::new(),
            entries: Vec::new(),
            by_channel: HashMap::new(),
            by_provider: HashMap::new(),
            by_key: HashMap::new(),
            rest: Vec::new(),
        };
        let mut errors = Vec::new();
        for (i, spec) in file.derive.into_iter().enumerate() {
            match derive_of(spec, table.key.is_some()) {
                Ok(d) => table.derives.push(d),
                Err(e) => errors.push(format!("derive[{i}]: {e}")),
            }
        }
        for (i, spec) in file.event.into_iter().enumerate() {
            if !spec.keys.is_empty() && table.key.is_none() {
                errors.push(format!(
                    "event[{i}]: 'keys' needs a top-level 'key' naming the field they are values of"
                ));
            }
            let mut fields = Vec::new();
            for (name, sources) in &spec.fields {
                let Some(canonical) = Canonical::from_name(name) else {
                    errors.push(format!("event[{i}]: unknown canonical field {name:?}"));
                    continue;
                };
                match parse_sources(sources) {
                    Ok(s) => fields.push((canonical, s)),
                    Err(e) => errors.push(format!("event[{i}]: {e}")),
                }
            }
            let mut aliases = Vec::new();
            for (name, sources) in &spec.aliases {
                match parse_sources(sources) {
                    Ok(s) => aliases.push((name.clone(), s)),
                    Err(e) => errors.push(format!("event[{i}]: {e}")),
                }
            }
            let idx = table.entries.len();
            let indexed = if !spec.ids.is_empty()
                && (!spec.channels.is_empty() || !spec.providers.is_empty())
            {
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
                true
            } else if !spec.keys.is_empty() {
                for k in &spec.keys {
                    table
                        .by_key
                        .entry(k.to_ascii_lowercase())
                        .or_default()
                        .push(idx);
                }
                true
            } else {
                false
            };
            if !indexed {
                table.rest.push(idx);
            }
            table.entries.push(Entry {
                selector: Selector {
                    channels: spec.channels,
                    providers: spec.providers,
                    ids: spec.ids,
                    keys: spec.keys,
                    when: spec.when.into_iter().collect(),
                },
                class: spec.class,
                activity: spec.activity,
                fields,
                aliases,
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
        Self::parse(WINDOWS_TABLE).map_err(|e| format!("mappings/windows.toml: {e}"))
    }

    /// The entries that may match `event`, in file order.
    fn candidates(&self, event: &Event) -> Vec<usize> {
        let mut out = self.rest.clone();
        if let Some(id) = event.source.event_id {
            if let Some(c) = &event.source.channel
                && let Some(v) = self.by_channel.get(&(c.to_ascii_lowercase(), id))
            {
                out.extend(v);
            }
            if let Some(p) = &event.source.provider
                && let Some(v) = self.by_provider.get(&(p.to_ascii_lowercase(), id))
            {
                out.extend(v);
            }
        }
        if let Some(key) = &self.key {
            match event.fields.get(key) {
                Some(FieldValue::List(items)) => {
                    for item in items {
                        if let Some(v) = item
                            .as_text()
                            .and_then(|t| self.by_key.get(&t.to_ascii_lowercase()))
                        {
                            out.extend(v);
                        }
                    }
                }
                Some(value) => {
                    if let Some(v) = value
                        .as_text()
                        .and_then(|t| self.by_key.get(&t.to_ascii_lowercase()))
                    {
                        out.extend(v);
                    }
                }
                None => {}
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Derives fields, then sets class, activity, canonical fields and aliases of `event` from
    /// the first matching entry. Returns whether an entry matched.
    pub fn apply(&self, event: &mut Event) -> bool {
        let key = self.key.as_deref();
        for d in &self.derives {
            if d.selector.matches(event, key) {
                d.apply(&mut event.fields);
            }
        }
        let Some(entry) = self
            .candidates(event)
            .into_iter()
            .map(|i| &self.entries[i])
            .find(|e| e.selector.matches(event, key))
        else {
            return false;
        };
        event.class = entry.class;
        event.activity = entry.activity;
        for (canonical, sources) in &entry.fields {
            if let Some(v) = sources.iter().find_map(|s| s.resolve(&event.fields)) {
                event.set_canonical(*canonical, v);
            }
        }
        for (name, sources) in &entry.aliases {
            if let Some(v) = sources.iter().find_map(|s| s.resolve(&event.fields)) {
                add_absent(&mut event.fields, name, v);
            }
        }
        true
    }
}

fn derive_of(spec: DeriveSpec, has_key: bool) -> Result<Derive, String> {
    if !spec.keys.is_empty() && !has_key {
        return Err("'keys' needs a top-level 'key'".into());
    }
    let mut actions = Vec::new();
    if !spec.data.is_empty() {
        actions.push(DeriveAction::Data(spec.data));
    }
    match (spec.from, spec.pattern) {
        (Some(from), Some(pattern)) => {
            let pattern = Regex::new(&pattern).map_err(|e| format!("pattern: {e}"))?;
            let groups = pattern.captures_len() - 1;
            if spec.names.len() != groups {
                return Err(format!(
                    "'names' lists {} names for {groups} capture groups",
                    spec.names.len()
                ));
            }
            actions.push(DeriveAction::Extract {
                from,
                pattern,
                names: spec.names,
            });
        }
        (None, None) => {
            if !spec.names.is_empty() {
                return Err("'names' needs 'from' and 'pattern'".into());
            }
        }
        _ => return Err("'from' and 'pattern' go together".into()),
    }
    if !spec.set.is_empty() {
        let sets = spec
            .set
            .iter()
            .map(|(k, v)| parse_source(v).map(|s| (k.clone(), s)))
            .collect::<Result<_, _>>()?;
        actions.push(DeriveAction::Set(sets));
    }
    if actions.len() != 1 {
        return Err(format!(
            "a derivation does one thing ('data', 'from'+'pattern' or 'set'); this one does {}",
            actions.len()
        ));
    }
    Ok(Derive {
        selector: Selector {
            channels: spec.channels,
            providers: spec.providers,
            ids: spec.ids,
            keys: spec.keys,
            when: spec.when.into_iter().collect(),
        },
        action: actions.remove(0),
    })
}

impl Source {
    /// Where this source's text comes from; `added` resolves fields the table itself adds.
    fn origin(&self, added: &[(String, Origin)]) -> Origin {
        match self {
            Source::Field(name) => {
                let mut o = Origin::Fields(vec![name.clone()]);
                if let Some((_, a)) = added.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    o.merge(a);
                }
                o
            }
            Source::Template(_) => Origin::Synthetic,
        }
    }
}

fn merge_into(list: &mut Vec<(String, Origin)>, name: &str, origin: &Origin) {
    match list.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some((_, o)) => o.merge(origin),
        None => list.push((name.to_owned(), origin.clone())),
    }
}

impl MappingTable {
    /// Where every field this table fills may come from: the canonical fields and the fields
    /// added by derivations and aliases, with the record fields they copy, or
    /// [`Origin::Synthetic`] when they may be joined from several fields (templates) or
    /// converted (process ids, read from hex and kept as numbers). Channels and providers
    /// whose events may be given synthesized fields are listed, lower-cased (`*`: any event).
    pub fn origins(&self) -> FieldOrigins {
        let mut added: Vec<(String, Origin)> = Vec::new();
        let mut scopes: Vec<String> = Vec::new();
        let mut scope = |sel: &Selector| {
            if sel.channels.is_empty() && sel.providers.is_empty() {
                scopes.push("*".into());
            }
            for s in sel.channels.iter().chain(&sel.providers) {
                scopes.push(s.to_ascii_lowercase());
            }
        };
        // Derivations run in file order, each seeing the fields added before it; then the
        // entry's canonical fields, then its aliases (`apply`).
        for d in &self.derives {
            let before = added.clone();
            match &d.action {
                DeriveAction::Data(names) => {
                    let o = Source::Field("Data".into()).origin(&before);
                    for n in names.iter().filter(|n| !n.is_empty()) {
                        merge_into(&mut added, n, &o);
                    }
                }
                DeriveAction::Extract { from, names, .. } => {
                    let o = Source::Field(from.clone()).origin(&before);
                    for n in names {
                        merge_into(&mut added, n, &o);
                    }
                }
                DeriveAction::Set(sets) => {
                    for (n, source) in sets {
                        let o = source.origin(&before);
                        if o == Origin::Synthetic {
                            scope(&d.selector);
                        }
                        merge_into(&mut added, n, &o);
                    }
                }
            }
        }
        let derived = added.clone();
        let mut canonical: Vec<(Canonical, Origin)> = Vec::new();
        for e in &self.entries {
            for (c, sources) in &e.fields {
                for source in sources {
                    // Process ids are parsed (hex or decimal) and kept as numbers.
                    let o = if matches!(
                        c,
                        Canonical::ProcessPid | Canonical::ParentPid | Canonical::TargetProcessPid
                    ) {
                        Origin::Synthetic
                    } else {
                        source.origin(&derived)
                    };
                    match canonical.iter_mut().find(|(x, _)| x == c) {
                        Some((_, have)) => have.merge(&o),
                        None => canonical.push((*c, o)),
                    }
                }
            }
        }
        for e in &self.entries {
            for (n, sources) in &e.aliases {
                for source in sources {
                    let o = source.origin(&added);
                    if o == Origin::Synthetic {
                        scope(&e.selector);
                    }
                    merge_into(&mut added, n, &o);
                }
            }
        }
        scopes.sort();
        scopes.dedup();
        FieldOrigins {
            canonical,
            added,
            synthetic_scopes: scopes,
        }
    }
}

/// Every format's table, parsed once and shared by decoders.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Windows events in any shape.
    pub windows: MappingTable,
    /// ECS events without a Windows channel and id.
    pub ecs: MappingTable,
    /// Defender for Endpoint.
    pub mde: MappingTable,
    /// OCSF.
    pub ocsf: MappingTable,
    /// W3C access logs.
    pub w3c: MappingTable,
}

impl Tables {
    /// The built-in tables; a broken one is named with its problems.
    pub fn builtin() -> Result<Self, String> {
        let load = |name: &str, text: &str| {
            MappingTable::parse(text).map_err(|e| format!("ingest/mappings/{name}.toml: {e}"))
        };
        Ok(Self {
            windows: load("windows", WINDOWS_TABLE)?,
            ecs: load("ecs", ECS_TABLE)?,
            mde: load("mde", MDE_TABLE)?,
            ocsf: load("ocsf", OCSF_TABLE)?,
            w3c: load("w3c", W3C_TABLE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_tables_parse() {
        let t = Tables::builtin().unwrap();
        assert!(t.windows.entries.len() > 20);
        assert!(
            t.windows
                .by_channel
                .contains_key(&("security".into(), 4688))
        );
        assert_eq!(t.mde.key.as_deref(), Some("ActionType"));
        assert!(t.mde.by_key.contains_key("processcreated"));
        assert_eq!(t.ocsf.key.as_deref(), Some("class_uid"));
        assert!(!t.w3c.rest.is_empty());
    }

    #[test]
    fn templates_need_every_field() {
        let mut f = Fields::new();
        f.push("SubjectDomainName", FieldValue::Str("CORP".into()));
        f.push("SubjectUserName", FieldValue::Str("alice".into()));
        let s = parse_source("{SubjectDomainName}\\{SubjectUserName}").unwrap();
        assert_eq!(s.resolve(&f).as_deref(), Some("CORP\\alice"));
        let missing = parse_source("{TargetDomainName}\\{SubjectUserName}").unwrap();
        assert_eq!(missing.resolve(&f), None);
        assert!(parse_source("{Unclosed").is_err());
        assert!(parse_source("x{}y").is_err());
    }

    #[test]
    fn bad_tables_are_refused_with_every_problem() {
        let err = MappingTable::parse(
            "[[event]]\nchannels=[\"x\"]\nids=[1]\nclass=\"other\"\nactivity=\"other\"\nfields.\"process.imag\"=[\"Image\"]\n\
             [[event]]\nkeys=[\"a\"]\nclass=\"other\"\nactivity=\"other\"\n\
             [[derive]]\nfrom=\"Message\"\npattern=\"(a)(b)\"\nnames=[\"A\"]\n\
             [[derive]]\ndata=[\"A\"]\nset.B=\"{A}\"\n",
        )
        .unwrap_err();
        assert!(err.contains("process.imag"), "{err}");
        assert!(err.contains("top-level 'key'"), "{err}");
        assert!(err.contains("2 capture groups"), "{err}");
        assert!(err.contains("does one thing"), "{err}");
    }

    #[test]
    fn derivations_add_only_absent_fields() {
        let mut f = Fields::new();
        f.push(
            "Data",
            FieldValue::List(vec![
                FieldValue::Str("Set-Mailbox".into()),
                FieldValue::Str("-Identity x".into()),
            ]),
        );
        f.push("Parameters", FieldValue::Str("kept".into()));
        let d = derive_of(
            DeriveSpec {
                channels: vec![],
                providers: vec![],
                ids: vec![],
                keys: vec![],
                when: BTreeMap::new(),
                data: vec!["Cmdlet".into(), "Parameters".into(), "Caller".into()],
                from: None,
                pattern: None,
                names: vec![],
                set: BTreeMap::new(),
            },
            false,
        )
        .unwrap();
        d.apply(&mut f);
        assert_eq!(f.get_str("Cmdlet"), Some("Set-Mailbox"));
        assert_eq!(f.get_str("Parameters"), Some("kept"));
        assert_eq!(f.get("Caller"), None);
    }
}
