//! A record read without decoding it, and where a normalized event's values come from: what the
//! fast path needs to prove that no rule can match a record before any [`Event`] is built.
//!
//! Ingest reads an ordinary record (a flat Windows event as JSON) into a [`RawRecord`]: the
//! record's text, its top-level fields as byte spans of that text, and the few facts the
//! decoder would have derived (channel, event id, time). The correlator's gate
//! (`chainwatch_correlate::Gate`) then searches the text for the rules' literals. Ingest also
//! says, in [`FieldOrigins`], which record fields each canonical or derived field may be read
//! from, and which may be synthesized (joined from several fields, converted), since a literal
//! can only be searched for in text the record holds.
//!
//! [`Event`]: crate::Event

use crate::Canonical;

/// The JSON type of a raw field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawKind {
    /// A string without escape sequences: its span is its text.
    Str,
    /// A string with escape sequences (`\\`, `\"`, `\n`, ...): its span is its escaped text.
    EscapedStr,
    /// An integer that fits an `i64`.
    Int,
    /// `true` or `false`.
    Bool,
    /// `null`.
    Null,
    /// An array of scalars: its span covers the brackets.
    List,
}

/// One top-level field of a record: spans into the record's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawField {
    /// Start of the key's text (without quotes; keys with escapes are not read raw).
    pub key_start: u32,
    /// End of the key's text.
    pub key_end: u32,
    /// Start of the value's text (for strings, without the quotes).
    pub value_start: u32,
    /// End of the value's text.
    pub value_end: u32,
    /// The value's type.
    pub kind: RawKind,
}

impl RawField {
    /// The key, in `text`.
    pub fn key<'a>(&self, text: &'a [u8]) -> &'a [u8] {
        text.get(self.key_start as usize..self.key_end as usize)
            .unwrap_or_default()
    }

    /// The value's text, in `text`.
    pub fn value<'a>(&self, text: &'a [u8]) -> &'a [u8] {
        text.get(self.value_start as usize..self.value_end as usize)
            .unwrap_or_default()
    }
}

/// A Windows event record read raw: its text, its fields, and its route.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// The record's text (one JSON object, valid UTF-8).
    pub text: &'a [u8],
    /// True when the text is all ASCII.
    pub ascii: bool,
    /// Its top-level fields in source order (their spans increase).
    pub fields: &'a [RawField],
    /// The Windows channel, as written.
    pub channel: &'a str,
    /// The provider name, as written.
    pub provider: Option<&'a str>,
    /// The Windows event id.
    pub event_id: u32,
}

impl RawRecord<'_> {
    /// True when the record has a field named `name`, ignoring ASCII case.
    pub fn has_key(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f.key(self.text).eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The field whose value span holds the bytes `start..end` of the text.
    pub fn field_at(&self, start: usize, end: usize) -> Option<&RawField> {
        let i = self.field_index_at(start, end)?;
        self.fields.get(i as usize)
    }

    /// The index of the field whose value span holds the bytes `start..end` of the text.
    pub fn field_index_at(&self, start: usize, end: usize) -> Option<u32> {
        let i = self
            .fields
            .partition_point(|f| (f.value_end as usize) < end);
        let f = self.fields.get(i)?;
        (f.value_start as usize <= start && end <= f.value_end as usize)
            .then(|| u32::try_from(i).ok())
            .flatten()
    }
}

/// Where a field's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Copied from one of these record fields (names as written; compared ignoring ASCII case).
    Fields(Vec<String>),
    /// May be synthesized: joined from several fields, or converted (a hexadecimal process id
    /// written in decimal). Its text need not occur in the record.
    Synthetic,
}

impl Origin {
    /// Both origins: the union of their fields, synthetic when either is.
    pub fn merge(&mut self, other: &Origin) {
        match (&mut *self, other) {
            (Origin::Synthetic, _) => {}
            (_, Origin::Synthetic) => *self = Origin::Synthetic,
            (Origin::Fields(a), Origin::Fields(b)) => {
                for f in b {
                    if !a.iter().any(|x| x.eq_ignore_ascii_case(f)) {
                        a.push(f.clone());
                    }
                }
            }
        }
    }
}

/// What normalization adds to a record's own fields, and where from (for one family of
/// formats: Windows events).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldOrigins {
    /// Per canonical field, the record fields it may be filled from.
    pub canonical: Vec<(Canonical, Origin)>,
    /// Fields added under a name when the record lacks it (derivations, aliases).
    pub added: Vec<(String, Origin)>,
    /// Lower-cased channels and providers whose events may be given synthesized fields (a
    /// keyword search reads every field, added ones too).
    pub synthetic_scopes: Vec<String>,
}

impl FieldOrigins {
    /// The origin of a canonical field (`None`: never filled).
    pub fn of_canonical(&self, c: Canonical) -> Option<&Origin> {
        self.canonical.iter().find(|(x, _)| *x == c).map(|(_, o)| o)
    }

    /// The origin of a field added under `name` (ignoring ASCII case), if any is.
    pub fn of_added(&self, name: &str) -> Option<&Origin> {
        self.added
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, o)| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_found_by_position() {
        let text = br#"{"a":"xyz","b":12}"#;
        let fields = [
            RawField {
                key_start: 2,
                key_end: 3,
                value_start: 6,
                value_end: 9,
                kind: RawKind::Str,
            },
            RawField {
                key_start: 12,
                key_end: 13,
                value_start: 15,
                value_end: 17,
                kind: RawKind::Int,
            },
        ];
        let r = RawRecord {
            text,
            ascii: true,
            fields: &fields,
            channel: "c",
            provider: None,
            event_id: 1,
        };
        assert_eq!(r.field_at(6, 8).map(|f| f.key(text)), Some(&b"a"[..]));
        assert_eq!(r.field_at(15, 17).map(|f| f.value(text)), Some(&b"12"[..]));
        assert!(r.field_at(8, 12).is_none(), "across two fields");
        assert!(r.field_at(0, 2).is_none());
        assert!(r.has_key("B") && !r.has_key("c"));
    }

    #[test]
    fn origins_merge_into_a_union() {
        let mut o = Origin::Fields(vec!["Image".into()]);
        o.merge(&Origin::Fields(vec![
            "image".into(),
            "NewProcessName".into(),
        ]));
        assert_eq!(
            o,
            Origin::Fields(vec!["Image".into(), "NewProcessName".into()])
        );
        o.merge(&Origin::Synthetic);
        assert_eq!(o, Origin::Synthetic);
    }
}
