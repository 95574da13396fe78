//! Field names the rules read, interned once per rule set, and an event prepared for matching:
//! each field is found once by name, and its lower-cased text is computed at most once, however
//! many rules and values look at it.
//!
//! A rule's field is the event's own field of that name (exact spelling first, else ASCII
//! case-insensitively, as [`chainwatch_model::Fields::get`] does), else the canonical field the
//! Sigma field-name table maps it to.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;

use chainwatch_model::{Canonical, Event, FieldValue};

use super::tables::Tables;

/// An interned field name.
pub(crate) type FieldId = u32;

const NONE: u32 = u32::MAX;

/// Every field name a rule set reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldIndex {
    names: Vec<Box<str>>,
    fallback: Vec<Option<Canonical>>,
    ids: HashMap<Box<str>, FieldId>,
    /// ASCII-lower-cased name to the ids of its spellings.
    by_lower: HashMap<Box<str>, Vec<FieldId>>,
}

impl FieldIndex {
    /// The id of `name`, interning it on first use.
    pub(crate) fn intern(&mut self, name: &str, tables: &Tables) -> FieldId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = FieldId::try_from(self.names.len()).unwrap_or(NONE - 1);
        self.names.push(name.into());
        self.fallback.push(tables.canonical(name));
        self.ids.insert(name.into(), id);
        self.by_lower
            .entry(name.to_ascii_lowercase().into())
            .or_default()
            .push(id);
        id
    }

    /// The name of an id.
    pub(crate) fn name(&self, id: FieldId) -> &str {
        &self.names[id as usize]
    }

    /// The canonical field a name falls back to.
    pub(crate) fn fallback(&self, id: FieldId) -> Option<Canonical> {
        self.fallback[id as usize]
    }

    /// Number of interned names.
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

/// Lower-cases for case-insensitive comparison, borrowing when nothing changes.
pub(crate) fn lower(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
        Cow::Owned(s.to_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// A field's value as a matcher sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FieldVal<'a> {
    /// An original field, with its text lower-cased when it is a scalar.
    Field(&'a FieldValue, Option<&'a str>),
    /// A canonical field's text and its lower-cased form.
    Text(&'a str, &'a str),
}

impl<'a> FieldVal<'a> {
    /// The text as written (numbers and booleans written out); `None` for null and lists.
    pub(crate) fn original(&self) -> Option<&'a str> {
        match *self {
            FieldVal::Field(FieldValue::Str(s), _) => Some(s),
            FieldVal::Field(_, lower) => lower,
            FieldVal::Text(t, _) => Some(t),
        }
    }

    /// The lower-cased text.
    pub(crate) fn lower(&self) -> Option<&'a str> {
        match *self {
            FieldVal::Field(_, lower) => lower,
            FieldVal::Text(_, lower) => Some(lower),
        }
    }

    /// The original value, for original fields.
    pub(crate) fn value(&self) -> Option<&'a FieldValue> {
        match *self {
            FieldVal::Field(v, _) => Some(v),
            FieldVal::Text(..) => None,
        }
    }
}

/// Text of a scalar field value, lower-cased.
fn scalar_lower(v: &FieldValue) -> Option<Cow<'_, str>> {
    match v {
        FieldValue::Str(s) => Some(lower(s)),
        FieldValue::Int(_) | FieldValue::Float(_) | FieldValue::Bool(_) => v.as_text(),
        FieldValue::Null | FieldValue::List(_) => None,
    }
}

#[derive(Debug)]
struct Texts<'e> {
    text: Cow<'e, str>,
    lower: String,
}

/// An event prepared for matching against one rule set.
#[derive(Debug)]
pub(crate) struct EventView<'e> {
    /// The event.
    pub(crate) event: &'e Event,
    index: &'e FieldIndex,
    values: Vec<&'e FieldValue>,
    /// Per field id: the index of the event field it reads, or `NONE`.
    slots: Vec<u32>,
    lower: Vec<OnceCell<Option<Cow<'e, str>>>>,
    canonical: [OnceCell<Option<Texts<'e>>>; Canonical::ALL.len()],
}

impl<'e> EventView<'e> {
    /// Finds every interned field in `event`, once.
    pub(crate) fn new(event: &'e Event, index: &'e FieldIndex) -> Self {
        let mut slots = vec![NONE; index.len()];
        let mut values = Vec::with_capacity(event.fields.len());
        let mut names: Vec<&'e str> = Vec::with_capacity(event.fields.len());
        let mut key = String::new();
        for (i, (name, value)) in event.fields.iter().enumerate() {
            values.push(value);
            names.push(name);
            key.clear();
            key.extend(name.chars().map(|c| c.to_ascii_lowercase()));
            let Some(ids) = index.by_lower.get(key.as_str()) else {
                continue;
            };
            let i = u32::try_from(i).unwrap_or(NONE);
            for &id in ids {
                let slot = &mut slots[id as usize];
                let wanted = index.name(id);
                // The first field of a name wins, but an exact spelling beats a case variant.
                if *slot == NONE || (name == wanted && names[*slot as usize] != wanted) {
                    *slot = i;
                }
            }
        }
        let lower = (0..values.len()).map(|_| OnceCell::new()).collect();
        Self {
            event,
            index,
            values,
            slots,
            lower,
            canonical: Default::default(),
        }
    }

    fn field_lower(&self, i: usize) -> Option<&str> {
        self.lower[i]
            .get_or_init(|| scalar_lower(self.values[i]))
            .as_deref()
    }

    fn canonical_texts(&self, c: Canonical) -> Option<&Texts<'e>> {
        let at = Canonical::ALL.iter().position(|x| *x == c)?;
        self.canonical[at]
            .get_or_init(|| {
                self.event.canonical(c).map(|text| {
                    let lower = lower(&text).into_owned();
                    Texts { text, lower }
                })
            })
            .as_ref()
    }

    /// The value of a field the rules read.
    pub(crate) fn get(&self, id: FieldId) -> Option<FieldVal<'_>> {
        let slot = self.slots[id as usize];
        if slot != NONE {
            let i = slot as usize;
            return Some(FieldVal::Field(self.values[i], self.field_lower(i)));
        }
        let t = self.canonical_texts(self.index.fallback(id)?)?;
        Some(FieldVal::Text(&t.text, &t.lower))
    }

    /// Every original field of the event, for keyword searches.
    pub(crate) fn all(&self) -> impl Iterator<Item = FieldVal<'_>> {
        (0..self.values.len()).map(|i| FieldVal::Field(self.values[i], self.field_lower(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chainwatch_model::{
        Activity, EventClass, EventId, Fields, HostName, ProcessInfo, Provenance, SourceFormat,
        SourceMeta, Target, TenantId, Timestamp,
    };

    fn event(fields: Fields) -> Event {
        Event {
            id: EventId::from_u128(1),
            tenant: TenantId::new("t").unwrap(),
            time: Timestamp::from_millis(0),
            class: EventClass::ProcessActivity,
            activity: Activity::Launch,
            host: HostName::new("h"),
            user: None,
            process: Some(ProcessInfo {
                image: Some(r"C:\Windows\CMD.exe".into()),
                ..ProcessInfo::default()
            }),
            parent: None,
            target: Target::default(),
            source: SourceMeta {
                format: SourceFormat::WindowsFlat,
                channel: None,
                provider: None,
                event_id: None,
            },
            fields,
            provenance: Provenance::File {
                path: "t".into(),
                line: None,
                record: None,
            },
        }
    }

    #[test]
    fn fields_resolve_by_name_case_and_canonical_fallback() {
        let tables = Tables::builtin().unwrap();
        let mut index = FieldIndex::default();
        let channel = index.intern("Channel", &tables);
        let image = index.intern("Image", &tables);
        let id = index.intern("EventID", &tables);
        let missing = index.intern("Nope", &tables);
        let mut f = Fields::new();
        f.push("channel", FieldValue::Str("security".into()));
        f.push("Channel", FieldValue::Str("Security".into()));
        f.push("EVENTID", FieldValue::Int(4688));
        let e = event(f);
        let v = EventView::new(&e, &index);
        assert_eq!(v.get(channel).unwrap().original(), Some("Security"));
        assert_eq!(v.get(channel).unwrap().lower(), Some("security"));
        assert_eq!(v.get(id).unwrap().lower(), Some("4688"));
        // No own `Image`: the canonical process image.
        let img = v.get(image).unwrap();
        assert_eq!(img.original(), Some(r"C:\Windows\CMD.exe"));
        assert_eq!(img.lower(), Some(r"c:\windows\cmd.exe"));
        assert!(v.get(missing).is_none());
        assert_eq!(v.all().count(), 3);
    }
}
