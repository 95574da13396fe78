//! Compiled value matchers: one Sigma field item (`Field|mod1|mod2: values`) with its modifiers
//! applied once, at compile time.
//!
//! Modifiers, by role (the specification's appendix):
//!
//! - transformations, applied in the order written: `expand` (placeholders, always first: its
//!   values are what the others transform), `windash`, `utf16le`/`wide`, `utf16be`, `utf16`,
//!   `base64`, `base64offset`; one value may become several alternatives;
//! - position: `contains`, `startswith`, `endswith` add wildcards around the result;
//! - types: `re` (with `i`, `m`, `s`), `cidr`, `lt`/`lte`/`gt`/`gte`, the time parts
//!   (`minute` ... `year`, alone or with a comparison), `fieldref`, `exists`;
//! - generic: `all` (every value must match, instead of any), `cased` (case-sensitive),
//!   `neq` (the field is present and differs from every value).
//!
//! Strings compare case-insensitively unless `cased`; they compile to equality, prefix, suffix
//! or substring tests on the lower-cased text where possible, and to an anchored regex only
//! when a value has inner wildcards. Regexes are case-sensitive unless `i`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chainwatch_config::sigma::{FieldItem, Modifier, SigmaValue, TimePart};
use chainwatch_model::FieldValue;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike};
use memchr::memmem::Finder;
use regex::{Regex, RegexBuilder};

use super::fields::{EventView, FieldId, FieldIndex, FieldVal, lower};
use super::regex::{self as sigma_regex, Flags};
use super::string::{self, CompileError, Piece, SigmaString, Utf16};
use super::tables::Tables;
use crate::prefilter::Compare;

/// What compiling a value needs besides the value.
#[derive(Debug)]
pub(crate) struct CompileCtx<'a> {
    /// Field-name tables (for `fieldref` targets).
    pub(crate) tables: &'a Tables,
    /// Every field the rule set reads.
    pub(crate) fields: &'a mut FieldIndex,
    /// Values of `%placeholders%` for `expand`.
    pub(crate) placeholders: &'a BTreeMap<String, Vec<String>>,
}

/// How one string value matches.
#[derive(Debug, Clone)]
pub(crate) enum StrTest {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(Box<Finder<'static>>),
    /// `*`: any value, even empty.
    Any,
    /// Inner wildcards: an anchored regex, and the literal runs every match contains.
    Glob(Regex, Vec<String>),
    /// `|re`: a regex search on the original text.
    Regex(Regex),
}

impl StrTest {
    fn matches(&self, text: &str) -> bool {
        match self {
            StrTest::Exact(s) => text == s,
            StrTest::Prefix(s) => text.starts_with(s.as_str()),
            StrTest::Suffix(s) => text.ends_with(s.as_str()),
            StrTest::Contains(f) => f.find(text.as_bytes()).is_some(),
            StrTest::Any => true,
            StrTest::Glob(r, _) | StrTest::Regex(r) => r.is_match(text),
        }
    }

    /// The test as a comparison of lower-cased text with a literal, for a case-insensitive
    /// test (whose texts are lower-cased): `None` for wildcards and regexes.
    pub(crate) fn comparison(&self) -> Option<(Compare, String)> {
        Some(match self {
            StrTest::Exact(s) => (Compare::Exact, lower(s).into_owned()),
            StrTest::Prefix(s) => (Compare::Prefix, lower(s).into_owned()),
            StrTest::Suffix(s) => (Compare::Suffix, lower(s).into_owned()),
            StrTest::Contains(f) => (
                Compare::Contains,
                lower(&String::from_utf8_lossy(f.needle())).into_owned(),
            ),
            StrTest::Any | StrTest::Glob(..) | StrTest::Regex(_) => return None,
        })
    }

    /// Literal texts every matching value contains, lower-cased (for the prefilter); empty
    /// when nothing is known.
    pub(crate) fn required_literals(&self) -> Vec<String> {
        let one = |s: &str| {
            if s.is_empty() {
                Vec::new()
            } else {
                vec![lower(s).into_owned()]
            }
        };
        match self {
            StrTest::Exact(s) | StrTest::Prefix(s) | StrTest::Suffix(s) => one(s),
            StrTest::Contains(f) => one(&String::from_utf8_lossy(f.needle())),
            StrTest::Glob(_, runs) => runs.iter().map(|r| lower(r).into_owned()).collect(),
            StrTest::Any | StrTest::Regex(_) => Vec::new(),
        }
    }
}

/// A comparison of a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Lte,
    Gt,
    Gte,
    Eq,
}

impl Cmp {
    fn of(m: Modifier) -> Option<Self> {
        Some(match m {
            Modifier::Lt => Cmp::Lt,
            Modifier::Lte => Cmp::Lte,
            Modifier::Gt => Cmp::Gt,
            Modifier::Gte => Cmp::Gte,
            _ => return None,
        })
    }

    fn holds(self, x: f64, n: f64) -> bool {
        match self {
            Cmp::Lt => x < n,
            Cmp::Lte => x <= n,
            Cmp::Gt => x > n,
            Cmp::Gte => x >= n,
            Cmp::Eq => x == n,
        }
    }
}

/// Where a `fieldref` value must be found in the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Whole,
    Prefix,
    Suffix,
    Contains,
}

/// One compiled alternative of a value.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    Str(StrTest),
    Int(i64),
    Bool(bool),
    Null,
    Exists(bool),
    Cidr(IpAddr, u8),
    Compare(Cmp, f64),
    TimePart(TimePart, Cmp, i64),
    FieldRef(FieldId, Position),
}

/// The compiled values of one field item: any must match, or all with `|all`. Each rule value
/// is a list of alternatives (a `windash` or `base64offset` value has several), any of which
/// may match, also under `|all`.
#[derive(Debug, Clone)]
pub(crate) struct ValueSet {
    pub(crate) values: Vec<Vec<Matcher>>,
    pub(crate) all: bool,
    pub(crate) neq: bool,
    cased: bool,
}

fn parse_cidr(text: &str) -> Result<(IpAddr, u8), CompileError> {
    let (addr, len) = text.split_once('/').unwrap_or((text, ""));
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("invalid CIDR {text:?}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if len.is_empty() {
        max
    } else {
        len.parse::<u8>()
            .map_err(|_| format!("invalid CIDR {text:?}"))?
    };
    if len > max {
        return Err(format!("invalid CIDR prefix length in {text:?}"));
    }
    Ok((ip, len))
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// A time part of a date written in a field, as written (no zone conversion: the specification
/// says these modifiers do not handle zones).
fn time_part(text: &str, part: TimePart) -> Option<i64> {
    let t = text.trim();
    let spaced = t.replacen(' ', "T", 1);
    let naive = DateTime::parse_from_rfc3339(t)
        .or_else(|_| DateTime::parse_from_rfc3339(&spaced))
        .map(|d| d.naive_local())
        .ok()
        .or_else(|| {
            [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%dT%H:%M",
            ]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(&spaced, f).ok())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    Some(i64::from(match part {
        TimePart::Minute => naive.minute(),
        TimePart::Hour => naive.hour(),
        TimePart::Day => naive.day(),
        TimePart::Week => naive.iso_week().week(),
        TimePart::Month => naive.month(),
        TimePart::Year => return Some(i64::from(naive.year())),
    }))
}

fn number_of(v: &SigmaValue, what: &str) -> Result<f64, CompileError> {
    match v {
        SigmaValue::Int(i) => Ok(*i as f64),
        SigmaValue::Float(f) => Ok(*f),
        SigmaValue::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("'{what}' takes a number, not {s:?}")),
        _ => Err(format!("'{what}' takes a number")),
    }
}

fn text_of(v: &SigmaValue) -> Option<String> {
    match v {
        SigmaValue::Str(s) => Some(s.clone()),
        SigmaValue::Int(i) => Some(i.to_string()),
        SigmaValue::Float(f) => Some(f.to_string()),
        SigmaValue::Bool(b) => Some(b.to_string()),
        SigmaValue::Null => None,
    }
}

/// Compiles pieces to a string test.
fn compile_str(s: &SigmaString, cased: bool) -> Result<StrTest, CompileError> {
    let case = |t: &str| {
        if cased {
            t.to_owned()
        } else {
            lower(t).into_owned()
        }
    };
    let p = &s.pieces;
    if p.is_empty() {
        return Ok(StrTest::Exact(String::new()));
    }
    let lead = p.first() == Some(&Piece::Star);
    let trail = p.len() > 1 && p.last() == Some(&Piece::Star);
    let inner = &p[usize::from(lead)..p.len() - usize::from(trail)];
    if inner.iter().all(|x| matches!(x, Piece::Text(_))) {
        let text: String = inner
            .iter()
            .map(|x| match x {
                Piece::Text(t) => t.as_str(),
                _ => "",
            })
            .collect();
        let text = case(&text);
        return Ok(match (lead, trail) {
            _ if text.is_empty() && (lead || trail) => StrTest::Any,
            (false, false) => StrTest::Exact(text),
            (false, true) => StrTest::Prefix(text),
            (true, false) => StrTest::Suffix(text),
            (true, true) => StrTest::Contains(Box::new(Finder::new(text.as_bytes()).into_owned())),
        });
    }
    let mut source = String::from("^");
    let mut runs = Vec::new();
    for x in p {
        match x {
            Piece::Text(t) => {
                let t = case(t);
                source.push_str(&regex::escape(&t));
                runs.push(t);
            }
            Piece::Star => source.push_str(".*"),
            Piece::One => source.push('.'),
        }
    }
    source.push('$');
    let r = RegexBuilder::new(&source)
        .dot_matches_new_line(true)
        .build()
        .map_err(|e| format!("cannot compile the wildcard value: {e}"))?;
    Ok(StrTest::Glob(r, runs))
}

const TRANSFORMS: [Modifier; 7] = [
    Modifier::Windash,
    Modifier::Base64,
    Modifier::Base64Offset,
    Modifier::Utf16Le,
    Modifier::Utf16Be,
    Modifier::Utf16,
    Modifier::Expand,
];
const POSITIONS: [Modifier; 3] = [Modifier::Contains, Modifier::StartsWith, Modifier::EndsWith];

/// The modifiers of one item, checked for combinations that make sense.
struct Mods<'a> {
    list: &'a [Modifier],
}

impl Mods<'_> {
    fn has(&self, m: Modifier) -> bool {
        self.list.contains(&m)
    }

    fn any(&self, set: &[Modifier]) -> bool {
        self.list.iter().any(|m| set.contains(m))
    }

    fn cmp(&self) -> Option<Cmp> {
        self.list.iter().find_map(|m| Cmp::of(*m))
    }

    fn time_part(&self) -> Option<TimePart> {
        self.list.iter().find_map(|m| match m {
            Modifier::TimePart(p) => Some(*p),
            _ => None,
        })
    }

    fn check(&self) -> Result<(), CompileError> {
        let names = || {
            self.list
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join("|")
        };
        let types = [
            self.has(Modifier::Re),
            self.has(Modifier::Cidr),
            self.cmp().is_some() && self.time_part().is_none(),
            self.time_part().is_some(),
            self.has(Modifier::FieldRef),
            self.has(Modifier::Exists),
        ];
        if types.iter().filter(|t| **t).count() > 1 {
            return Err(format!(
                "the modifiers '{}' give the value more than one type",
                names()
            ));
        }
        let cmps = self.list.iter().filter(|m| Cmp::of(**m).is_some()).count();
        if cmps > 1 {
            return Err(format!("'{}' has more than one comparison", names()));
        }
        if self.has(Modifier::Exists) && self.list.len() > 1 {
            return Err("'exists' cannot be combined with other modifiers".into());
        }
        let typed = self.has(Modifier::Cidr) || self.cmp().is_some() || self.time_part().is_some();
        if typed && (self.any(&TRANSFORMS) || self.any(&POSITIONS)) {
            return Err(format!(
                "'{}': cidr, comparisons and time parts take plain values, without \
                 transformations or contains/startswith/endswith",
                names()
            ));
        }
        if (self.has(Modifier::Re) || self.has(Modifier::FieldRef)) && self.any(&TRANSFORMS) {
            return Err(format!(
                "'{}': re and fieldref cannot be combined with encodings or expand",
                names()
            ));
        }
        let positions = self.list.iter().filter(|m| POSITIONS.contains(m)).count();
        if positions > 1 {
            return Err(format!(
                "'{}': contains, startswith and endswith exclude each other",
                names()
            ));
        }
        Ok(())
    }
}

impl ValueSet {
    /// Case-sensitive (`|cased`): its texts are not lower-cased.
    pub(crate) fn cased(&self) -> bool {
        self.cased
    }

    /// Compiles one field item's values.
    pub(crate) fn compile(
        item: &FieldItem,
        ctx: &mut CompileCtx<'_>,
    ) -> Result<Self, CompileError> {
        let mods = Mods {
            list: &item.modifiers,
        };
        mods.check()?;
        let cased = mods.has(Modifier::Cased);
        let position = if mods.has(Modifier::Contains) {
            Position::Contains
        } else if mods.has(Modifier::StartsWith) {
            Position::Prefix
        } else if mods.has(Modifier::EndsWith) {
            Position::Suffix
        } else {
            Position::Whole
        };
        let mut values = Vec::with_capacity(item.values.len());
        for v in &item.values {
            values.push(Self::compile_value(v, &mods, position, cased, ctx)?);
        }
        if values.is_empty() {
            return Err("a field item needs at least one value".into());
        }
        Ok(Self {
            values,
            all: mods.has(Modifier::All),
            neq: mods.has(Modifier::Neq),
            cased,
        })
    }

    fn compile_value(
        v: &SigmaValue,
        mods: &Mods<'_>,
        position: Position,
        cased: bool,
        ctx: &mut CompileCtx<'_>,
    ) -> Result<Vec<Matcher>, CompileError> {
        if mods.has(Modifier::Exists) {
            return match v {
                SigmaValue::Bool(b) => Ok(vec![Matcher::Exists(*b)]),
                _ => Err("'exists' takes true or false".into()),
            };
        }
        if mods.has(Modifier::FieldRef) {
            return match v {
                SigmaValue::Str(name) if !SigmaString::parse(name).has_wildcards() => {
                    Ok(vec![Matcher::FieldRef(
                        ctx.fields.intern(name, ctx.tables),
                        position,
                    )])
                }
                _ => Err("'fieldref' takes a field name without wildcards".into()),
            };
        }
        if mods.has(Modifier::Cidr) {
            let SigmaValue::Str(s) = v else {
                return Err("'cidr' takes a network such as 10.0.0.0/8".into());
            };
            let (net, len) = parse_cidr(s)?;
            return Ok(vec![Matcher::Cidr(net, len)]);
        }
        if let Some(part) = mods.time_part() {
            let n = number_of(v, part_name(part))?;
            if n.fract() != 0.0 {
                return Err(format!("'{}' takes a whole number", part_name(part)));
            }
            return Ok(vec![Matcher::TimePart(
                part,
                mods.cmp().unwrap_or(Cmp::Eq),
                n as i64,
            )]);
        }
        if let Some(cmp) = mods.cmp() {
            let name = mods
                .list
                .iter()
                .find(|m| Cmp::of(**m).is_some())
                .map_or("lt", |m| m.name());
            return Ok(vec![Matcher::Compare(cmp, number_of(v, name)?)]);
        }
        if mods.has(Modifier::Re) {
            let Some(pattern) = text_of(v) else {
                return Err("'re' takes a regular expression".into());
            };
            let flags = Flags {
                ignore_case: mods.has(Modifier::ReIgnoreCase),
                multi_line: mods.has(Modifier::ReMultiLine),
                dot_all: mods.has(Modifier::ReDotAll),
            };
            return Ok(vec![Matcher::Str(StrTest::Regex(sigma_regex::compile(
                &pattern, flags,
            )?))]);
        }
        let transformed = mods.any(&TRANSFORMS);
        match v {
            SigmaValue::Null if transformed || position != Position::Whole => {
                Err("null cannot be combined with string modifiers".into())
            }
            SigmaValue::Null => Ok(vec![Matcher::Null]),
            SigmaValue::Bool(b) if !transformed && position == Position::Whole => {
                Ok(vec![Matcher::Bool(*b)])
            }
            SigmaValue::Int(i) if !transformed && position == Position::Whole => {
                Ok(vec![Matcher::Int(*i)])
            }
            other => {
                let raw = text_of(other).unwrap_or_default();
                let raws = if mods.has(Modifier::Expand) {
                    string::expand(&raw, ctx.placeholders)?
                } else {
                    vec![raw]
                };
                let mut strings: Vec<SigmaString> =
                    raws.iter().map(|r| SigmaString::parse(r)).collect();
                for m in mods.list {
                    strings = match m {
                        Modifier::Windash => strings
                            .iter()
                            .map(string::windash)
                            .collect::<Result<Vec<_>, _>>()?
                            .into_iter()
                            .flatten()
                            .collect(),
                        Modifier::Utf16Le | Modifier::Utf16Be | Modifier::Utf16 => {
                            let enc = match m {
                                Modifier::Utf16Le => Utf16::Le,
                                Modifier::Utf16Be => Utf16::Be,
                                _ => Utf16::WithBom,
                            };
                            strings
                                .iter()
                                .map(|s| string::utf16(s, enc))
                                .collect::<Result<_, _>>()?
                        }
                        Modifier::Base64 => strings
                            .iter()
                            .map(string::base64)
                            .collect::<Result<_, _>>()?,
                        Modifier::Base64Offset => strings
                            .iter()
                            .map(string::base64offset)
                            .collect::<Result<Vec<_>, _>>()?
                            .into_iter()
                            .flatten()
                            .collect(),
                        _ => strings,
                    };
                }
                let mut out = Vec::with_capacity(strings.len());
                for mut s in strings {
                    if matches!(position, Position::Contains | Position::Suffix) {
                        s.star_before();
                    }
                    if matches!(position, Position::Contains | Position::Prefix) {
                        s.star_after();
                    }
                    out.push(Matcher::Str(compile_str(&s, cased)?));
                }
                Ok(out)
            }
        }
    }

    /// A keyword item: each value is searched anywhere in any field (`contains` unless the
    /// item says otherwise).
    pub(crate) fn keywords(
        item: &FieldItem,
        ctx: &mut CompileCtx<'_>,
    ) -> Result<Self, CompileError> {
        let mut with_contains = item.clone();
        let m = &with_contains.modifiers;
        if !m.contains(&Modifier::Re) && !POSITIONS.iter().any(|p| m.contains(p)) {
            with_contains.modifiers.push(Modifier::Contains);
        }
        Self::compile(&with_contains, ctx)
    }

    /// Whether the field's value matches.
    pub(crate) fn matches(&self, value: Option<FieldVal<'_>>, view: &EventView<'_>) -> bool {
        let any_of = |alts: &Vec<Matcher>| alts.iter().any(|m| self.one(m, value, view));
        if self.neq {
            return value.is_some_and(|v| v.value() != Some(&FieldValue::Null))
                && !self.values.iter().any(any_of);
        }
        if self.all {
            self.values.iter().all(any_of)
        } else {
            self.values.iter().any(any_of)
        }
    }

    /// Keywords: whether the values are found in the event's fields (each value in any field;
    /// with `all`, every value somewhere).
    pub(crate) fn matches_any_field(&self, view: &EventView<'_>) -> bool {
        let found = |alts: &Vec<Matcher>| {
            view.all()
                .any(|f| alts.iter().any(|m| self.one(m, Some(f), view)))
        };
        if self.all {
            self.values.iter().all(found)
        } else {
            self.values.iter().any(found)
        }
    }

    fn one(&self, m: &Matcher, value: Option<FieldVal<'_>>, view: &EventView<'_>) -> bool {
        let v = match (m, value) {
            // The specification: `exists` checks presence only, "be it empty or null".
            (Matcher::Exists(want), v) => return v.is_some() == *want,
            (Matcher::Null, None) => return true,
            (Matcher::Null, Some(v)) => return v.value() == Some(&FieldValue::Null),
            (_, None) => return false,
            (_, Some(v)) => v,
        };
        if let Some(FieldValue::List(items)) = v.value() {
            return items.iter().any(|item| {
                let low = match item {
                    FieldValue::Str(s) => Some(lower(s).into_owned()),
                    other => other.as_text().map(|t| t.into_owned()),
                };
                self.one(m, Some(FieldVal::Field(item, low.as_deref())), view)
            });
        }
        match m {
            Matcher::Exists(_) | Matcher::Null => false,
            Matcher::Str(test) => {
                let text = if self.cased || matches!(test, StrTest::Regex(_)) {
                    v.original()
                } else {
                    v.lower()
                };
                text.is_some_and(|t| test.matches(t))
            }
            Matcher::Int(i) => match v.value() {
                Some(FieldValue::Int(x)) => x == i,
                Some(fv) => fv.as_i64() == Some(*i),
                None => v.original().and_then(|t| t.trim().parse::<i64>().ok()) == Some(*i),
            },
            Matcher::Bool(b) => match v.value() {
                Some(FieldValue::Bool(x)) => x == b,
                _ => v.lower() == Some(if *b { "true" } else { "false" }),
            },
            Matcher::Compare(cmp, n) => number(v).is_some_and(|x| cmp.holds(x, *n)),
            Matcher::TimePart(part, cmp, n) => v
                .original()
                .and_then(|t| time_part(t, *part))
                .is_some_and(|x| cmp.holds(x as f64, *n as f64)),
            Matcher::Cidr(net, len) => v
                .original()
                .and_then(|t| t.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| in_cidr(ip, *net, *len)),
            Matcher::FieldRef(other, position) => {
                let Some(o) = view.get(*other) else {
                    return false;
                };
                let (a, b) = if self.cased {
                    (v.original(), o.original())
                } else {
                    (v.lower(), o.lower())
                };
                match (a, b) {
                    (Some(a), Some(b)) => match position {
                        Position::Whole => a == b,
                        Position::Prefix => a.starts_with(b),
                        Position::Suffix => a.ends_with(b),
                        Position::Contains => a.contains(b),
                    },
                    _ => false,
                }
            }
        }
    }
}

fn number(v: FieldVal<'_>) -> Option<f64> {
    match v.value() {
        Some(FieldValue::Int(i)) => Some(*i as f64),
        Some(FieldValue::Float(f)) => Some(*f),
        Some(fv @ FieldValue::Str(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .or_else(|| fv.as_i64().map(|i| i as f64)),
        _ => v.original().and_then(|t| t.trim().parse::<f64>().ok()),
    }
}

fn part_name(p: TimePart) -> &'static str {
    Modifier::TimePart(p).name()
}

#[cfg(test)]
mod tests {
    //! One test per modifier and value form, from the specification's own examples where it
    //! gives them.
    use super::*;
    use chainwatch_model::{Event, EventId, Fields, HostName, TenantId, Timestamp};

    struct Fixture {
        tables: Tables,
        fields: FieldIndex,
        placeholders: BTreeMap<String, Vec<String>>,
    }

    impl Fixture {
        fn new() -> Self {
            let mut placeholders = BTreeMap::new();
            placeholders.insert(
                "Admins".to_owned(),
                vec!["root".to_owned(), "adm_*".to_owned()],
            );
            Self {
                tables: Tables::builtin().unwrap(),
                fields: FieldIndex::default(),
                placeholders,
            }
        }

        fn compile(&mut self, mods: &[&str], values: &[SigmaValue]) -> Result<ValueSet, String> {
            let item = FieldItem {
                field: Some("F".into()),
                modifiers: mods
                    .iter()
                    .map(|m| Modifier::from_name(m).unwrap())
                    .collect(),
                values: values.to_vec(),
                line: 1,
            };
            self.fields.intern("F", &self.tables);
            ValueSet::compile(
                &item,
                &mut CompileCtx {
                    tables: &self.tables,
                    fields: &mut self.fields,
                    placeholders: &self.placeholders,
                },
            )
        }
    }

    fn event(fields: &[(&str, FieldValue)]) -> Event {
        let mut f = Fields::new();
        for (k, v) in fields {
            f.push(*k, v.clone());
        }
        Event {
            fields: f,
            ..Event::bare(
                EventId::from_u128(1),
                TenantId::new("t").unwrap(),
                Timestamp::from_millis(0),
                HostName::new("h"),
            )
        }
    }

    /// Whether `F|mods: values` matches an event whose `F` is `field` (absent when `None`).
    fn check(mods: &[&str], values: &[SigmaValue], field: Option<FieldValue>) -> bool {
        check_with(
            mods,
            values,
            field.map(|f| vec![("F", f)]).unwrap_or_default(),
        )
    }

    fn check_with(mods: &[&str], values: &[SigmaValue], fields: Vec<(&str, FieldValue)>) -> bool {
        let mut fx = Fixture::new();
        let set = fx.compile(mods, values).unwrap();
        let id = fx.fields.intern("F", &fx.tables);
        let e = event(&fields);
        let view = EventView::new(&e, &fx.fields);
        set.matches(view.get(id), &view)
    }

    fn err(mods: &[&str], values: &[SigmaValue]) -> String {
        Fixture::new().compile(mods, values).unwrap_err()
    }

    fn s(v: &str) -> SigmaValue {
        SigmaValue::Str(v.into())
    }

    fn text(t: &str) -> Option<FieldValue> {
        Some(FieldValue::Str(t.into()))
    }

    #[test]
    fn plain_values_are_case_insensitive_equality() {
        assert!(check(
            &[],
            &[s(r"C:\Windows\cmd.exe")],
            text(r"c:\windows\CMD.EXE")
        ));
        assert!(!check(&[], &[s("cmd.exe")], text(r"C:\Windows\cmd.exe")));
        // A list of values: any.
        assert!(check(&[], &[s("a"), s("b")], text("B")));
    }

    #[test]
    fn wildcards_and_escapes() {
        assert!(check(
            &[],
            &[s(r"*\net?.exe")],
            text(r"C:\Windows\net1.exe")
        ));
        assert!(!check(
            &[],
            &[s(r"*\net?.exe")],
            text(r"C:\Windows\net.exe")
        ));
        assert!(check(&[], &[s("prog*.exe")], text("progA1.exe")));
        assert!(
            check(&[], &[s(r"a\*b")], text("a*b")),
            "escaped star is literal"
        );
        assert!(!check(&[], &[s(r"a\*b")], text("axxb")));
        assert!(check(&[], &[s(r"a\?")], text("a?")));
        assert!(!check(&[], &[s(r"a\?")], text("ab")));
        assert!(
            check(&[], &[s(r"C:\\Temp\\*")], text(r"C:\Temp\x")),
            "`\\\\*`: backslash, wildcard"
        );
        assert!(
            check(&[], &[s("*")], text("")),
            "a lone * matches the empty value"
        );
        assert!(check(&[], &[s("*")], text("anything")));
    }

    #[test]
    fn contains_startswith_endswith() {
        assert!(check(
            &["endswith"],
            &[s(r"\w3wp.exe")],
            text(r"C:\inetsrv\W3WP.exe")
        ));
        assert!(!check(
            &["endswith"],
            &[s(r"\w3wp.exe")],
            text(r"C:\w3wp.exe.bak")
        ));
        assert!(check(
            &["startswith"],
            &[s(r"C:\Windows")],
            text(r"c:\windows\x")
        ));
        assert!(!check(
            &["startswith"],
            &[s(r"C:\Windows")],
            text(r"D:\C:\Windows")
        ));
        assert!(check(
            &["contains"],
            &[s("MiniDump")],
            text("comsvcs.dll, minidump 624")
        ));
        assert!(
            check(&["contains"], &[s("a*c")], text("xxabbbcxx")),
            "inner wildcard"
        );
    }

    #[test]
    fn all_requires_every_value() {
        assert!(check(
            &["contains", "all"],
            &[s("user"), s("/add")],
            text("net user bob /add")
        ));
        assert!(!check(
            &["contains", "all"],
            &[s("user"), s("/add")],
            text("net user bob")
        ));
    }

    #[test]
    fn cased_is_case_sensitive() {
        assert!(!check(&["cased"], &[s("CMD.exe")], text("cmd.exe")));
        assert!(check(&["cased"], &[s("CMD.exe")], text("CMD.exe")));
        assert!(check(
            &["contains", "cased"],
            &[s("Dump")],
            text("MiniDump")
        ));
        assert!(!check(
            &["contains", "cased"],
            &[s("dump")],
            text("MiniDump")
        ));
    }

    #[test]
    fn windash_accepts_every_dash() {
        for written in [
            "powershell -enc AAA",
            "powershell /enc AAA",
            "powershell \u{2013}enc AAA",
        ] {
            assert!(
                check(&["contains", "windash"], &[s(" -enc ")], text(written)),
                "{written}"
            );
        }
        assert!(!check(
            &["contains", "windash"],
            &[s(" -enc ")],
            text("powershell enc AAA")
        ));
        // Under `all`, each value's variants are alternatives; the values are all required.
        let both = [s(" -a "), s(" -b ")];
        assert!(check(
            &["contains", "all", "windash"],
            &both,
            text("x /a /b ")
        ));
        assert!(!check(
            &["contains", "all", "windash"],
            &both,
            text("x /a ")
        ));
    }

    #[test]
    fn re_and_its_flags() {
        assert!(check(
            &["re"],
            &[s(r"comsvcs\.dll,?\s+MiniDump")],
            text("comsvcs.dll, MiniDump 1")
        ));
        assert!(
            !check(&["re"], &[s("minidump")], text("MiniDump")),
            "case-sensitive"
        );
        assert!(check(&["re", "i"], &[s("minidump")], text("MiniDump")));
        assert!(check(&["re", "m"], &[s("^b$")], text("a\nb")));
        assert!(!check(&["re"], &[s("^b$")], text("a\nb")));
        assert!(check(&["re", "s"], &[s("a.b")], text("a\nb")));
        assert!(
            check(&["re"], &[s("dump")], text("MiniDump dump")),
            "a search, not a full match"
        );
    }

    #[test]
    fn base64_and_base64offset() {
        // The specification's example: `/bin/bash` anywhere in base64 text.
        let whole = "L2Jpbi9iYXNo";
        assert!(check(&["base64"], &[s("/bin/bash")], text(whole)));
        assert!(check(
            &["base64offset", "contains"],
            &[s("/bin/bash")],
            text("xxL2Jpbi9iYXNoyy")
        ));
        assert!(check(
            &["base64offset", "contains"],
            &[s("/bin/bash")],
            text("eC9iaW4vYmFzaA==")
        ));
        assert!(check(
            &["base64offset", "contains"],
            &[s("/bin/bash")],
            text("eHgvYmluL2Jhc2g=")
        ));
        assert!(!check(
            &["base64offset", "contains"],
            &[s("/bin/bash")],
            text("L2Jpbi9zaA==")
        ));
        assert!(err(&["base64"], &[s("a*")]).contains("wildcards"));
    }

    #[test]
    fn utf16_encodings_then_base64() {
        // PowerShell -EncodedCommand is base64 of UTF-16LE.
        let encoded = "SQBFAFgA"; // "IEX" in UTF-16LE, base64
        assert!(check(&["utf16le", "base64"], &[s("IEX")], text(encoded)));
        assert!(check(&["wide", "base64"], &[s("IEX")], text(encoded)));
        assert!(check(&["utf16be", "base64"], &[s("IEX")], text("AEkARQBY")));
        assert!(check(
            &["utf16", "base64"],
            &[s("IEX")],
            text("//5JAEUAWAA=")
        ));
        assert!(check(
            &["utf16le", "base64offset", "contains"],
            &[s("IEX")],
            text("AAAASQBFAFgA")
        ));
        assert!(check(&["utf16le"], &[s("cmd")], text("c\0m\0d\0")));
    }

    #[test]
    fn expand_uses_configured_placeholders() {
        assert!(check(&["expand"], &[s("%Admins%")], text("root")));
        assert!(check(&["expand"], &[s("%Admins%")], text("ADM_bob")));
        assert!(!check(&["expand"], &[s("%Admins%")], text("bob")));
        assert!(
            check(&[], &[s("%Admins%")], text("%admins%")),
            "without expand, literal"
        );
        assert!(err(&["expand"], &[s("%Servers%")]).contains("%Servers%"));
    }

    #[test]
    fn neq_is_present_and_different() {
        assert!(check(&["neq"], &[s("a")], text("b")));
        assert!(!check(&["neq"], &[s("a")], text("A")));
        assert!(
            !check(&["neq"], &[s("a"), s("b")], text("b")),
            "different from every value"
        );
        assert!(
            !check(&["neq"], &[s("a")], None),
            "an absent field is not different"
        );
        assert!(check(
            &["neq"],
            &[SigmaValue::Int(5)],
            Some(FieldValue::Int(4))
        ));
        assert!(!check(
            &["neq"],
            &[SigmaValue::Int(5)],
            Some(FieldValue::Int(5))
        ));
    }

    #[test]
    fn numbers_compare() {
        assert!(check(
            &[],
            &[SigmaValue::Int(4688)],
            Some(FieldValue::Int(4688))
        ));
        assert!(check(&[], &[SigmaValue::Int(4688)], text("4688")));
        assert!(check(&["gte"], &[SigmaValue::Int(3)], text("3")));
        assert!(!check(&["gt"], &[SigmaValue::Int(3)], text("3")));
        assert!(check(
            &["lt"],
            &[SigmaValue::Int(3)],
            Some(FieldValue::Int(2))
        ));
        assert!(check(
            &["lte"],
            &[SigmaValue::Float(2.5)],
            Some(FieldValue::Float(2.5))
        ));
        assert!(
            check(&["gt"], &[SigmaValue::Int(16)], text("0x1F")),
            "hex text"
        );
        assert!(!check(&["gt"], &[SigmaValue::Int(3)], text("many")));
        assert!(err(&["gt", "contains"], &[SigmaValue::Int(3)]).contains("plain values"));
    }

    #[test]
    fn time_parts() {
        let t = || text("2025-10-24 23:41:00.589");
        assert!(check(&["hour"], &[SigmaValue::Int(23)], t()));
        assert!(check(&["minute"], &[SigmaValue::Int(41)], t()));
        assert!(check(&["day"], &[SigmaValue::Int(24)], t()));
        assert!(check(&["month"], &[SigmaValue::Int(10)], t()));
        assert!(check(&["year"], &[SigmaValue::Int(2025)], t()));
        assert!(check(&["week"], &[SigmaValue::Int(43)], t()));
        assert!(check(&["hour", "gte"], &[SigmaValue::Int(20)], t()));
        assert!(!check(&["hour", "lt"], &[SigmaValue::Int(20)], t()));
        // As written: no zone conversion.
        assert!(check(
            &["hour"],
            &[SigmaValue::Int(1)],
            text("2021-03-14T01:40:12+05:00")
        ));
        assert!(!check(
            &["hour"],
            &[SigmaValue::Int(23)],
            text("not a date")
        ));
    }

    #[test]
    fn cidr() {
        assert!(check(&["cidr"], &[s("10.0.0.0/8")], text("10.1.2.3")));
        assert!(!check(&["cidr"], &[s("10.0.0.0/8")], text("11.1.2.3")));
        assert!(check(&["cidr"], &[s("fe80::/10")], text("fe80::1")));
        assert!(!check(&["cidr"], &[s("10.0.0.0/8")], text("fe80::1")));
        assert!(err(&["cidr"], &[s("10.0.0.0/40")]).contains("CIDR"));
    }

    #[test]
    fn exists_checks_presence_only() {
        assert!(check(&["exists"], &[SigmaValue::Bool(true)], text("")));
        assert!(check(
            &["exists"],
            &[SigmaValue::Bool(true)],
            Some(FieldValue::Null)
        ));
        assert!(check(&["exists"], &[SigmaValue::Bool(false)], None));
        assert!(!check(&["exists"], &[SigmaValue::Bool(true)], None));
        assert!(err(&["exists", "contains"], &[SigmaValue::Bool(true)]).contains("exists"));
    }

    #[test]
    fn null_and_empty() {
        assert!(check(&[], &[SigmaValue::Null], None));
        assert!(check(&[], &[SigmaValue::Null], Some(FieldValue::Null)));
        assert!(!check(&[], &[SigmaValue::Null], text("x")));
        assert!(
            !check(&[], &[SigmaValue::Null], text("")),
            "empty is not null"
        );
        assert!(check(&[], &[s("")], text("")));
        assert!(!check(&[], &[s("")], None), "an absent field is not empty");
        assert!(!check(&[], &[s("x")], None));
    }

    #[test]
    fn fieldref_compares_two_fields() {
        let fields = |a: &str, b: &str| {
            vec![
                ("F", FieldValue::Str(a.into())),
                ("G", FieldValue::Str(b.into())),
            ]
        };
        assert!(check_with(
            &["fieldref"],
            &[s("G")],
            fields("x.exe", "X.EXE")
        ));
        assert!(!check_with(
            &["fieldref"],
            &[s("G")],
            fields("x.exe", "y.exe")
        ));
        assert!(check_with(
            &["fieldref", "endswith"],
            &[s("G")],
            fields(r"C:\x.exe", "x.exe")
        ));
        assert!(check_with(
            &["fieldref", "neq"],
            &[s("G")],
            fields("x.exe", "y.exe")
        ));
        assert!(!check_with(
            &["fieldref", "cased"],
            &[s("G")],
            fields("x.exe", "X.EXE")
        ));
        assert!(!check_with(
            &["fieldref"],
            &[s("Missing")],
            fields("x", "x")
        ));
    }

    #[test]
    fn lists_match_any_item() {
        assert!(check(
            &[],
            &[s("b")],
            Some(FieldValue::List(vec![
                FieldValue::Str("a".into()),
                FieldValue::Str("B".into())
            ]))
        ));
    }

    #[test]
    fn nonsense_combinations_are_refused() {
        assert!(err(&["re", "cidr"], &[s("x")]).contains("more than one type"));
        assert!(err(&["contains", "endswith"], &[s("x")]).contains("exclude"));
        assert!(err(&["re", "base64"], &[s("x")]).contains("re and fieldref"));
    }
}
