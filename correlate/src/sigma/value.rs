//! Compiled value matchers: one Sigma field item's values, with its modifiers applied once.
//!
//! Strings compare case-insensitively unless `cased`; wildcards `*` and `?` (escaped with `\`)
//! and the `contains`/`startswith`/`endswith` modifiers compile to plain prefix, suffix,
//! substring or equality tests where possible, and to an anchored regex only when a value has
//! inner wildcards.

use std::borrow::Cow;
use std::net::IpAddr;

use chainwatch_config::sigma::{FieldItem, Modifier, SigmaValue};
use chainwatch_model::FieldValue;
use regex::{Regex, RegexBuilder};

/// A piece of a Sigma string after escape processing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Star,
    One,
}

/// Reads Sigma's wildcard syntax: `*`, `?`, and `\` escaping `*`, `?` and `\`.
fn pieces(value: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    text.push(next);
                    chars.next();
                }
                _ => text.push('\\'),
            },
            '*' | '?' => {
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(if c == '*' { Piece::Star } else { Piece::One });
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    out
}

/// How one string value matches.
#[derive(Debug, Clone)]
enum StrTest {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// `*`: any value, even empty.
    Any,
    /// Inner wildcards: an anchored regex.
    Glob(Regex),
    /// `|re`: a regex search.
    Regex(Regex),
}

impl StrTest {
    /// `text` is already lower-cased when the test is case-insensitive (except regexes, which
    /// carry their own flags and see the original text).
    fn matches(&self, text: &str, original: &str) -> bool {
        match self {
            StrTest::Exact(s) => text == s,
            StrTest::Prefix(s) => text.starts_with(s.as_str()),
            StrTest::Suffix(s) => text.ends_with(s.as_str()),
            StrTest::Contains(s) => memchr::memmem::find(text.as_bytes(), s.as_bytes()).is_some(),
            StrTest::Any => true,
            StrTest::Glob(r) => r.is_match(text),
            StrTest::Regex(r) => r.is_match(original),
        }
    }
}

/// One compiled value.
#[derive(Debug, Clone)]
enum Matcher {
    Str(StrTest),
    Int(i64),
    Bool(bool),
    Null,
    Exists(bool),
    Cidr(IpAddr, u8),
    Compare(Modifier, f64),
    FieldRef(String),
}

/// The compiled values of one field item: any must match, or all with `|all`.
#[derive(Debug, Clone)]
pub(crate) struct ValueSet {
    matchers: Vec<Matcher>,
    all: bool,
    cased: bool,
}

/// A field's value as the matcher sees it.
#[derive(Debug, Clone)]
pub(crate) enum Resolved<'e> {
    /// An original field.
    Value(&'e FieldValue),
    /// A canonical field, as text.
    Text(Cow<'e, str>),
}

/// Compile-time error: what is unsupported or wrong.
pub(crate) type CompileError = String;

fn lower(s: &str, cased: bool) -> String {
    if cased {
        s.to_owned()
    } else {
        s.to_lowercase()
    }
}

fn compile_str(value: &str, modifiers: &[Modifier], cased: bool) -> Result<StrTest, CompileError> {
    if modifiers.contains(&Modifier::Re) {
        let r = RegexBuilder::new(value)
            .case_insensitive(modifiers.contains(&Modifier::ReIgnoreCase))
            .multi_line(modifiers.contains(&Modifier::ReMultiLine))
            .dot_matches_new_line(modifiers.contains(&Modifier::ReDotAll))
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("invalid regular expression {value:?}: {e}"))?;
        return Ok(StrTest::Regex(r));
    }
    let mut p = pieces(value);
    let contains = modifiers.contains(&Modifier::Contains);
    if contains || modifiers.contains(&Modifier::EndsWith) {
        p.insert(0, Piece::Star);
    }
    if contains || modifiers.contains(&Modifier::StartsWith) {
        p.push(Piece::Star);
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
        let text = lower(&text, cased);
        return Ok(match (lead, trail) {
            _ if text.is_empty() && (lead || trail) => StrTest::Any,
            (false, false) => StrTest::Exact(text),
            (false, true) => StrTest::Prefix(text),
            (true, false) => StrTest::Suffix(text),
            (true, true) => StrTest::Contains(text),
        });
    }
    let mut source = String::from("^");
    for x in &p {
        match x {
            Piece::Text(t) => source.push_str(&regex::escape(&lower(t, cased))),
            Piece::Star => source.push_str(".*"),
            Piece::One => source.push('.'),
        }
    }
    source.push('$');
    let r = RegexBuilder::new(&source)
        .dot_matches_new_line(true)
        .build()
        .map_err(|e| format!("cannot compile wildcard value {value:?}: {e}"))?;
    Ok(StrTest::Glob(r))
}

/// `windash`: the dash of a command-line flag may also be written `/`, or as an en dash, em
/// dash or horizontal bar.
fn windash_variants(value: &str) -> Vec<String> {
    if !value.contains(['-', '/']) {
        return vec![value.to_owned()];
    }
    ["-", "/", "\u{2013}", "\u{2014}", "\u{2015}"]
        .iter()
        .map(|d| value.replace(['-', '/'], d))
        .collect()
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

const UNSUPPORTED: [Modifier; 7] = [
    Modifier::Base64,
    Modifier::Base64Offset,
    Modifier::Utf16Le,
    Modifier::Utf16Be,
    Modifier::Utf16,
    Modifier::Expand,
    Modifier::Neq,
];

impl ValueSet {
    /// Compiles one field item's values.
    pub(crate) fn compile(item: &FieldItem) -> Result<Self, CompileError> {
        let m = &item.modifiers;
        for modifier in m {
            if UNSUPPORTED.contains(modifier) || matches!(modifier, Modifier::TimePart(_)) {
                return Err(format!(
                    "unsupported feature: the '{}' modifier",
                    modifier.name()
                ));
            }
        }
        let cased = m.contains(&Modifier::Cased);
        let mut matchers = Vec::new();
        for v in &item.values {
            if m.contains(&Modifier::Exists) {
                match v {
                    SigmaValue::Bool(b) => matchers.push(Matcher::Exists(*b)),
                    _ => return Err("'exists' takes true or false".into()),
                }
                continue;
            }
            if m.contains(&Modifier::FieldRef) {
                match v {
                    SigmaValue::Str(name) => matchers.push(Matcher::FieldRef(name.clone())),
                    _ => return Err("'fieldref' takes a field name".into()),
                }
                continue;
            }
            if m.contains(&Modifier::Cidr) {
                let SigmaValue::Str(s) = v else {
                    return Err("'cidr' takes a network such as 10.0.0.0/8".into());
                };
                let (net, len) = parse_cidr(s)?;
                matchers.push(Matcher::Cidr(net, len));
                continue;
            }
            if let Some(cmp) = m.iter().find(|x| {
                matches!(
                    x,
                    Modifier::Lt | Modifier::Lte | Modifier::Gt | Modifier::Gte
                )
            }) {
                let n = match v {
                    SigmaValue::Int(i) => *i as f64,
                    SigmaValue::Float(f) => *f,
                    SigmaValue::Str(s) => s
                        .trim()
                        .parse()
                        .map_err(|_| format!("'{}' takes a number", cmp.name()))?,
                    _ => return Err(format!("'{}' takes a number", cmp.name())),
                };
                matchers.push(Matcher::Compare(*cmp, n));
                continue;
            }
            let text_mods = m.iter().any(|x| {
                matches!(
                    x,
                    Modifier::Contains
                        | Modifier::StartsWith
                        | Modifier::EndsWith
                        | Modifier::Re
                        | Modifier::Windash
                )
            });
            match v {
                SigmaValue::Null => matchers.push(Matcher::Null),
                SigmaValue::Bool(b) if !text_mods => matchers.push(Matcher::Bool(*b)),
                SigmaValue::Int(i) if !text_mods => matchers.push(Matcher::Int(*i)),
                other => {
                    let text = match other {
                        SigmaValue::Str(s) => s.clone(),
                        SigmaValue::Int(i) => i.to_string(),
                        SigmaValue::Float(f) => f.to_string(),
                        SigmaValue::Bool(b) => b.to_string(),
                        SigmaValue::Null => String::new(),
                    };
                    let variants = if m.contains(&Modifier::Windash) {
                        windash_variants(&text)
                    } else {
                        vec![text]
                    };
                    for t in variants {
                        matchers.push(Matcher::Str(compile_str(&t, m, cased)?));
                    }
                }
            }
        }
        if matchers.is_empty() {
            return Err("a field item needs at least one value".into());
        }
        Ok(Self {
            matchers,
            all: m.contains(&Modifier::All),
            cased,
        })
    }

    /// A keyword list: each value is searched anywhere in any field.
    pub(crate) fn keywords(item: &FieldItem) -> Result<Self, CompileError> {
        let mut with_contains = item.clone();
        if !with_contains.modifiers.contains(&Modifier::Re)
            && !with_contains.modifiers.contains(&Modifier::Contains)
        {
            with_contains.modifiers.push(Modifier::Contains);
        }
        Self::compile(&with_contains)
    }

    /// Whether the field's value matches. `other` reads another field (for `fieldref`).
    pub(crate) fn matches<'e>(
        &self,
        value: Option<Resolved<'e>>,
        other: &dyn Fn(&str) -> Option<Resolved<'e>>,
    ) -> bool {
        let test = |m: &Matcher| self.one(m, value.as_ref(), other);
        if self.all {
            self.matchers.iter().all(test)
        } else {
            self.matchers.iter().any(test)
        }
    }

    fn one<'e>(
        &self,
        m: &Matcher,
        value: Option<&Resolved<'e>>,
        other: &dyn Fn(&str) -> Option<Resolved<'e>>,
    ) -> bool {
        match (m, value) {
            (Matcher::Exists(want), v) => v.is_some_and(|v| !is_null(v)) == *want,
            (Matcher::Null, None) => true,
            (Matcher::Null, Some(v)) => is_null(v),
            (_, None) => false,
            (_, Some(Resolved::Value(FieldValue::List(items)))) => items
                .iter()
                .any(|i| self.one(m, Some(&Resolved::Value(i)), other)),
            (Matcher::FieldRef(name), Some(v)) => {
                match (text_of(v), other(name).as_ref().and_then(text_of)) {
                    (Some(a), Some(b)) => {
                        if self.cased {
                            a == b
                        } else {
                            a.to_lowercase() == b.to_lowercase()
                        }
                    }
                    _ => false,
                }
            }
            (Matcher::Int(i), Some(v)) => match v {
                Resolved::Value(FieldValue::Int(x)) => x == i,
                Resolved::Value(fv) => fv.as_i64() == Some(*i),
                Resolved::Text(t) => t.trim().parse::<i64>().ok() == Some(*i),
            },
            (Matcher::Bool(b), Some(v)) => match v {
                Resolved::Value(FieldValue::Bool(x)) => x == b,
                other => text_of(other)
                    .is_some_and(|t| t.eq_ignore_ascii_case(if *b { "true" } else { "false" })),
            },
            (Matcher::Compare(cmp, n), Some(v)) => {
                let x = match v {
                    Resolved::Value(FieldValue::Int(i)) => Some(*i as f64),
                    Resolved::Value(FieldValue::Float(f)) => Some(*f),
                    other => text_of(other).and_then(|t| t.trim().parse::<f64>().ok()),
                };
                x.is_some_and(|x| match cmp {
                    Modifier::Lt => x < *n,
                    Modifier::Lte => x <= *n,
                    Modifier::Gt => x > *n,
                    _ => x >= *n,
                })
            }
            (Matcher::Cidr(net, len), Some(v)) => text_of(v)
                .and_then(|t| t.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| in_cidr(ip, *net, *len)),
            (Matcher::Str(test), Some(v)) => match text_of(v) {
                Some(t) => {
                    if self.cased {
                        test.matches(&t, &t)
                    } else {
                        test.matches(&t.to_lowercase(), &t)
                    }
                }
                None => false,
            },
        }
    }
}

fn is_null(v: &Resolved<'_>) -> bool {
    matches!(v, Resolved::Value(FieldValue::Null))
}

fn text_of<'a>(v: &'a Resolved<'_>) -> Option<Cow<'a, str>> {
    match v {
        Resolved::Value(fv) => fv.as_text(),
        Resolved::Text(t) => Some(Cow::Borrowed(t.as_ref())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(mods: &[&str], values: &[SigmaValue]) -> FieldItem {
        FieldItem {
            field: Some("F".into()),
            modifiers: mods
                .iter()
                .map(|m| Modifier::from_name(m).unwrap())
                .collect(),
            values: values.to_vec(),
            line: 1,
        }
    }

    fn s(v: &str) -> SigmaValue {
        SigmaValue::Str(v.into())
    }

    fn check(mods: &[&str], values: &[SigmaValue], field: Option<FieldValue>) -> bool {
        let set = ValueSet::compile(&item(mods, values)).unwrap();
        let none = |_: &str| None;
        set.matches(field.as_ref().map(Resolved::Value), &none)
    }

    fn text(t: &str) -> Option<FieldValue> {
        Some(FieldValue::Str(t.into()))
    }

    #[test]
    fn plain_values_are_case_insensitive_equality() {
        assert!(check(
            &[],
            &[s("C:\\Windows\\cmd.exe")],
            text("c:\\windows\\CMD.EXE")
        ));
        assert!(!check(&[], &[s("cmd.exe")], text("C:\\Windows\\cmd.exe")));
        assert!(!check(&["cased"], &[s("CMD.exe")], text("cmd.exe")));
    }

    #[test]
    fn modifiers_and_wildcards() {
        assert!(check(
            &["endswith"],
            &[s("\\w3wp.exe")],
            text("C:\\Windows\\System32\\inetsrv\\W3WP.exe")
        ));
        assert!(check(
            &["startswith"],
            &[s("C:\\Windows")],
            text("c:\\windows\\x")
        ));
        assert!(check(
            &["contains"],
            &[s("MiniDump")],
            text("rundll32 comsvcs.dll, minidump 624")
        ));
        assert!(check(
            &[],
            &[s("*\\net?.exe")],
            text("C:\\Windows\\net1.exe")
        ));
        assert!(!check(
            &[],
            &[s("*\\net?.exe")],
            text("C:\\Windows\\net.exe")
        ));
        assert!(
            check(&[], &[s("a\\*b")], text("a*b")),
            "escaped star is literal"
        );
        assert!(!check(&[], &[s("a\\*b")], text("axxb")));
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
        assert!(check(
            &["contains", "windash"],
            &[s(" -enc ")],
            text("powershell /enc AAA")
        ));
        assert!(check(
            &["re"],
            &[s("comsvcs\\.dll,?\\s+MiniDump")],
            text("comsvcs.dll, MiniDump 1")
        ));
        assert!(
            !check(&["re"], &[s("minidump")], text("MiniDump")),
            "regexes are case-sensitive"
        );
        assert!(check(&["re", "i"], &[s("minidump")], text("MiniDump")));
    }

    #[test]
    fn numbers_nulls_and_lists() {
        assert!(check(
            &[],
            &[SigmaValue::Int(4688)],
            Some(FieldValue::Int(4688))
        ));
        assert!(check(&[], &[SigmaValue::Int(4688)], text("4688")));
        assert!(check(&[], &[SigmaValue::Null], None));
        assert!(!check(&[], &[SigmaValue::Null], text("x")));
        assert!(check(&[], &[s("")], text("")));
        assert!(!check(&[], &[s("x")], None));
        assert!(check(
            &[],
            &[s("b")],
            Some(FieldValue::List(vec![
                FieldValue::Str("a".into()),
                FieldValue::Str("B".into())
            ]))
        ));
        assert!(check(&["exists"], &[SigmaValue::Bool(false)], None));
        assert!(check(&["gte"], &[SigmaValue::Int(3)], text("3")));
        assert!(check(&["cidr"], &[s("10.0.0.0/8")], text("10.1.2.3")));
        assert!(!check(&["cidr"], &[s("10.0.0.0/8")], text("11.1.2.3")));
    }

    #[test]
    fn unsupported_modifiers_are_named() {
        let err = ValueSet::compile(&item(&["base64"], &[s("x")])).unwrap_err();
        assert!(err.contains("'base64'"), "{err}");
    }
}
