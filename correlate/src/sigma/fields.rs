//! Field names the rules read, interned once per rule set, and an event prepared for matching:
//! each field is found once by name, and its lower-cased text is computed at most once, however
//! many rules and values look at it.
//!
//! A rule's field is the event's own field of that name (exact spelling first, else ASCII
//! case-insensitively, as [`chainwatch_model::Fields::get`] does), else the canonical field the
//! Sigma field-name table maps it to.

use std::borrow::Cow;
use std::cell::OnceCell;

use chainwatch_model::{Canonical, Event, FieldValue};
use rustc_hash::FxHashMap;

use super::tables::Tables;

/// An interned field name.
pub(crate) type FieldId = u32;

const NONE: u32 = u32::MAX;

/// Every field name a rule set reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldIndex {
    names: Vec<Box<str>>,
    fallback: Vec<Option<Canonical>>,
    ids: FxHashMap<Box<str>, FieldId>,
    /// ASCII-lower-cased name to the ids of its spellings.
    by_lower: FxHashMap<Box<str>, Vec<FieldId>>,
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
///
/// Every comparison in the engine (rule values, event text, prefilter anchors) goes through
/// this one function, so they always agree: character by character (`char::to_lowercase`,
/// without `str::to_lowercase`'s word-final sigma rule), with a fast path for ASCII.
pub(crate) fn lower(s: &str) -> Cow<'_, str> {
    let changes = if s.is_ascii() {
        s.bytes().any(|b| b.is_ascii_uppercase())
    } else {
        s.chars().any(|c| c.to_lowercase().ne(std::iter::once(c)))
    };
    if changes {
        let mut out = String::with_capacity(s.len());
        lower_into(s, &mut out);
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

/// Appends the lower-cased `s` to `out` (see [`lower`]).
pub(crate) fn lower_into(s: &str, out: &mut String) {
    if s.is_ascii() {
        let start = out.len();
        out.push_str(s);
        out[start..].make_ascii_lowercase();
    } else {
        for c in s.chars() {
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
        }
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

/// Buffers an [`EventView`] reuses from one event to the next, so preparing an event costs
/// no allocation proportional to the number of fields the rules read.
#[derive(Debug, Default)]
pub(crate) struct ViewBuffers {
    /// Per field id: `NONE`, between events.
    slots: Vec<u32>,
    /// The ids set for the current event, to reset.
    touched: Vec<FieldId>,
    key: String,
}

/// An event prepared for matching against one rule set.
#[derive(Debug)]
pub(crate) struct EventView<'e> {
    /// The event.
    pub(crate) event: &'e Event,
    index: &'e FieldIndex,
    fields: Vec<(&'e str, &'e FieldValue)>,
    buffers: ViewBuffers,
    lower: Vec<OnceCell<Option<Cow<'e, str>>>>,
    canonical: [OnceCell<Option<Texts<'e>>>; Canonical::ALL.len()],
}

impl<'e> EventView<'e> {
    /// Finds every interned field in `event`, once.
    pub(crate) fn new(event: &'e Event, index: &'e FieldIndex) -> Self {
        Self::with_buffers(event, index, ViewBuffers::default())
    }

    /// As [`EventView::new`], reusing buffers from an earlier view ([`EventView::into_buffers`]).
    pub(crate) fn with_buffers(
        event: &'e Event,
        index: &'e FieldIndex,
        mut buffers: ViewBuffers,
    ) -> Self {
        if buffers.slots.len() != index.len() {
            buffers.slots = vec![NONE; index.len()];
            buffers.touched.clear();
        }
        let fields: Vec<(&'e str, &'e FieldValue)> = event.fields.iter().collect();
        for (i, (name, _)) in fields.iter().enumerate() {
            buffers.key.clear();
            buffers.key.push_str(name);
            buffers.key.make_ascii_lowercase();
            let Some(ids) = index.by_lower.get(buffers.key.as_str()) else {
                continue;
            };
            let i = u32::try_from(i).unwrap_or(NONE);
            for &id in ids {
                let slot = &mut buffers.slots[id as usize];
                let wanted = index.name(id);
                if *slot == NONE {
                    *slot = i;
                    buffers.touched.push(id);
                } else if *name == wanted && fields[*slot as usize].0 != wanted {
                    // The first field of a name wins, but an exact spelling beats a case
                    // variant.
                    *slot = i;
                }
            }
        }
        let lower = (0..fields.len()).map(|_| OnceCell::new()).collect();
        Self {
            event,
            index,
            fields,
            buffers,
            lower,
            canonical: Default::default(),
        }
    }

    /// The buffers, reset, for the next event.
    pub(crate) fn into_buffers(self) -> ViewBuffers {
        let mut b = self.buffers;
        for id in b.touched.drain(..) {
            b.slots[id as usize] = NONE;
        }
        b
    }

    fn field_lower(&self, i: usize) -> Option<&str> {
        self.lower[i]
            .get_or_init(|| scalar_lower(self.fields[i].1))
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
        let slot = self.buffers.slots[id as usize];
        if slot != NONE {
            let i = slot as usize;
            return Some(FieldVal::Field(self.fields[i].1, self.field_lower(i)));
        }
        let t = self.canonical_texts(self.index.fallback(id)?)?;
        Some(FieldVal::Text(&t.text, &t.lower))
    }

    /// Calls `f` with the lower-cased text of every scalar original field (and of every item
    /// of list fields), for keyword scans: cached text where a rule already asked for it, else
    /// text lower-cased into one reused buffer.
    pub(crate) fn each_lower(&self, buf: &mut String, mut f: impl FnMut(&str)) {
        for (i, (_, value)) in self.fields.iter().enumerate() {
            if let Some(Some(cached)) = self.lower[i].get() {
                f(cached);
                continue;
            }
            let mut one = |v: &FieldValue| match v {
                FieldValue::Str(s) => {
                    buf.clear();
                    lower_into(s, buf);
                    f(buf);
                }
                other => {
                    if let Some(t) = other.as_text() {
                        f(&t);
                    }
                }
            };
            match value {
                FieldValue::List(items) => items.iter().for_each(&mut one),
                FieldValue::Null => {}
                scalar => one(scalar),
            }
        }
    }

    /// Every original field of the event, for keyword searches.
    pub(crate) fn all(&self) -> impl Iterator<Item = FieldVal<'_>> {
        (0..self.fields.len()).map(|i| FieldVal::Field(self.fields[i].1, self.field_lower(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chainwatch_model::{
        Activity, EventClass, EventId, Fields, HostName, ProcessInfo, TenantId, Timestamp,
    };

    fn event(fields: Fields) -> Event {
        Event {
            class: EventClass::ProcessActivity,
            activity: Activity::Launch,
            process: Some(ProcessInfo {
                image: Some(r"C:\Windows\CMD.exe".into()),
                ..ProcessInfo::default()
            }),
            fields,
            ..Event::bare(
                EventId::from_u128(1),
                TenantId::new("t").unwrap(),
                Timestamp::from_millis(0),
                HostName::new("h"),
            )
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

        // Reused buffers start clean: the next event's fields only.
        let mut f = Fields::new();
        f.push("Image", FieldValue::Str("x.exe".into()));
        let next = event(f);
        let v = EventView::with_buffers(&next, &index, v.into_buffers());
        assert!(v.get(channel).is_none());
        assert!(v.get(id).is_none());
        assert_eq!(v.get(image).unwrap().original(), Some("x.exe"));
    }
}
