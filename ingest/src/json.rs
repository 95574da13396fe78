//! One pass over a JSON record into flat `(path, value)` leaves, without building a value tree.
//!
//! Nested objects become dotted paths (`Event.System.Computer`); arrays of scalars stay lists;
//! arrays holding objects are kept as their JSON text (no rule looks inside them). Depth is
//! bounded, so hostile nesting is an error, not a stack overflow. A record the raw scanner
//! already read gets the same leaves from the scanner's spans (`leaves_of_raw`).

use std::fmt;

use chainwatch_model::{FieldValue, RawField, RawKind};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::DecodeError;

/// A leaf of a flattened record.
pub type Leaf = (String, FieldValue);

/// Flattens a JSON object. `max_depth` bounds the nesting of objects and arrays.
pub fn flatten(text: &str, max_depth: usize) -> Result<Vec<Leaf>, DecodeError> {
    let mut out = Vec::with_capacity(48);
    let mut path = String::with_capacity(64);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Root {
        out: &mut out,
        path: &mut path,
        max_depth,
    };
    match seed.deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => Ok(out),
        Err(e) => Err(classify(e, max_depth)),
    }
}

/// The leaves [`flatten`] makes of a record the raw scanner read ([`crate::raw::scan`]: one
/// object of scalar fields, valid UTF-8, keys without escapes), made from the scanner's spans
/// instead of parsing the text again. `None` where the two could differ: `-0`, which
/// serde_json reads as a float.
pub(crate) fn leaves_of_raw(text: &[u8], fields: &[RawField]) -> Option<Vec<Leaf>> {
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let key = std::str::from_utf8(f.key(text)).ok()?;
        let value = f.value(text);
        let value = match f.kind {
            RawKind::List => FieldValue::List(
                crate::raw::list_items(value)?
                    .into_iter()
                    .map(|(start, end, kind)| scalar(&value[start..end], kind))
                    .collect::<Option<_>>()?,
            ),
            kind => scalar(value, kind)?,
        };
        out.push((key.to_owned(), value));
    }
    Some(out)
}

/// A scalar the scanner read (`text` its span: a string's content, escaped), as flatten makes
/// it; `None` for `-0`, a float to serde_json, and for a list.
fn scalar(text: &[u8], kind: RawKind) -> Option<FieldValue> {
    Some(match kind {
        RawKind::Str => FieldValue::Str(std::str::from_utf8(text).ok()?.into()),
        RawKind::EscapedStr => FieldValue::Str(unescape(text)?.into_boxed_str()),
        RawKind::Int if text.starts_with(b"-0") => return None,
        RawKind::Int => FieldValue::Int(std::str::from_utf8(text).ok()?.parse().ok()?),
        RawKind::Bool => FieldValue::Bool(text == b"true"),
        RawKind::Null => FieldValue::Null,
        RawKind::List => return None,
    })
}

/// The text of a JSON string's escaped content, with the escapes the raw scanner lets through
/// (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`) decoded; `None` for any other.
fn unescape(escaped: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = memchr::memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..at]);
        out.push(match rest.get(at + 1)? {
            b'"' => b'"',
            b'\\' => b'\\',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            _ => return None,
        });
        rest = &rest[at + 2..];
    }
    out.extend_from_slice(rest);
    String::from_utf8(out).ok()
}

fn classify(e: serde_json::Error, max_depth: usize) -> DecodeError {
    let msg = e.to_string();
    if msg.starts_with(TOO_DEEP) || msg.contains("recursion limit") {
        DecodeError::TooDeep(max_depth)
    } else if let Some(kind) = msg.strip_prefix(NOT_OBJECT) {
        DecodeError::NotAnObject(match kind.split(' ').next().unwrap_or("") {
            "array" => "an array",
            "string" => "a string",
            "number" => "a number",
            "boolean" => "a boolean",
            _ => "null",
        })
    } else {
        DecodeError::MalformedJson(msg)
    }
}

const TOO_DEEP: &str = "chainwatch: nesting limit";
const NOT_OBJECT: &str = "chainwatch: not an object: ";

struct Root<'a> {
    out: &'a mut Vec<Leaf>,
    path: &'a mut String,
    max_depth: usize,
}

impl<'de> DeserializeSeed<'de> for Root<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(RootVisitor(self))
    }
}

struct RootVisitor<'a>(Root<'a>);

macro_rules! not_object {
    ($name:ident, $t:ty, $what:literal) => {
        fn $name<E: serde::de::Error>(self, _v: $t) -> Result<(), E> {
            Err(E::custom(concat!("chainwatch: not an object: ", $what)))
        }
    };
}

impl<'de> Visitor<'de> for RootVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let Root {
            out,
            path,
            max_depth,
        } = self.0;
        Node {
            out,
            path,
            depth: 0,
            max_depth,
        }
        .visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom("chainwatch: not an object: array"))
    }
    not_object!(visit_str, &str, "string");
    not_object!(visit_i64, i64, "number");
    not_object!(visit_u64, u64, "number");
    not_object!(visit_f64, f64, "number");
    not_object!(visit_bool, bool, "boolean");

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom("chainwatch: not an object: null"))
    }
}

/// Visits one value at `path`, appending leaves.
struct Node<'a> {
    out: &'a mut Vec<Leaf>,
    path: &'a mut String,
    depth: usize,
    max_depth: usize,
}

impl Node<'_> {
    fn leaf(self, v: FieldValue) {
        self.out.push((self.path.clone(), v));
    }

    fn visit_map<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= self.max_depth {
            return Err(serde::de::Error::custom(TOO_DEEP));
        }
        let base = self.path.len();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if base > 0 {
                self.path.push('.');
            }
            self.path.push_str(&key);
            map.next_value_seed(Node {
                out: &mut *self.out,
                path: &mut *self.path,
                depth: self.depth + 1,
                max_depth: self.max_depth,
            })?;
            self.path.truncate(base);
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(FieldValue::Str(v.into()));
        Ok(())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<(), E> {
        self.leaf(FieldValue::Str(v.into_boxed_str()));
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(FieldValue::Int(v));
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(match i64::try_from(v) {
            Ok(i) => FieldValue::Int(i),
            Err(_) => FieldValue::Float(v as f64),
        });
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(FieldValue::Float(v));
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(FieldValue::Bool(v));
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.leaf(FieldValue::Null);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        Node::visit_map(self, map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= self.max_depth {
            return Err(serde::de::Error::custom(TOO_DEEP));
        }
        // Arrays of scalars are the common case (tags, unnamed <Data>); anything else is kept
        // as JSON text, bounded by the same depth limit.
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Item {
            depth: self.depth + 1,
            max_depth: self.max_depth,
        })? {
            items.push(item);
        }
        self.leaf(FieldValue::List(items));
        Ok(())
    }
}

/// One array element: scalars as themselves, containers as JSON text.
struct Item {
    depth: usize,
    max_depth: usize,
}

impl<'de> DeserializeSeed<'de> for Item {
    type Value = FieldValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FieldValue, D::Error> {
        d.deserialize_any(ItemVisitor(self))
    }
}

struct ItemVisitor(Item);

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::Str(v.into()))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<FieldValue, E> {
        Ok(FieldValue::Int(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<FieldValue, E> {
        Ok(i64::try_from(v).map_or(FieldValue::Float(v as f64), FieldValue::Int))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<FieldValue, E> {
        Ok(FieldValue::Float(v))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Bool(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldValue, A::Error> {
        let mut leaves = Vec::new();
        let mut path = String::new();
        Node {
            out: &mut leaves,
            path: &mut path,
            depth: self.0.depth,
            max_depth: self.0.max_depth,
        }
        .visit_map(map)?;
        let obj: serde_json::Map<String, serde_json::Value> = leaves
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    serde_json::to_value(&v).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect();
        Ok(FieldValue::Str(
            serde_json::Value::Object(obj).to_string().into(),
        ))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldValue, A::Error> {
        if self.0.depth >= self.0.max_depth {
            return Err(serde::de::Error::custom(TOO_DEEP));
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Item {
            depth: self.0.depth + 1,
            max_depth: self.0.max_depth,
        })? {
            items.push(item);
        }
        Ok(FieldValue::List(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `leaves_of_raw` makes of `text` when the scanner reads it (`None`: it does not).
    fn from_raw(text: &str) -> Option<Option<Vec<Leaf>>> {
        let mut fields = Vec::new();
        crate::raw::scan(text.as_bytes(), &mut fields)?;
        Some(leaves_of_raw(text.as_bytes(), &fields))
    }

    #[test]
    fn leaves_from_the_raw_scan_equal_flattened_leaves() {
        let cases = [
            r#"{"a":"plain","b":"C:\\Windows\\System32\\cmd.exe","c":"say \"hi\"\n\tbye\r\b\f"}"#,
            r#"{"n":0,"m":-12,"big":9223372036854775807,"small":-9223372036854775808}"#,
            r#"{ "t" : true , "f":false,"z":null, "e":"" }"#,
            r#"{"dup":"1","dup":"2","Dup":3}"#,
            r#"{"u":"Zürich – 東京","k.dotted":"v"}"#,
            r#"{"l":[],"m":[ 1 , -2,"x\\y" ,true,false,null,"é"],"o":[ ]}"#,
            r#"{"l":["a\"b","c"],"n":["\t"]}"#,
        ];
        for text in cases {
            let raw = from_raw(text).unwrap_or_else(|| panic!("not scanned: {text}"));
            assert_eq!(raw, Some(flatten(text, 16).unwrap()), "{text}");
        }
        // serde_json reads `-0` as a float: left to the full decoder.
        for text in [r#"{"z":-0}"#, r#"{"l":[1,-0]}"#] {
            assert_eq!(from_raw(text), Some(None), "{text}");
            assert!(flatten(text, 16).is_ok(), "{text}");
        }
    }

    #[test]
    fn leaves_from_the_raw_scan_equal_flattened_leaves_on_the_sample() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                if let Some(raw) = from_raw(line) {
                    assert_eq!(raw, Some(flatten(line, 16).unwrap()), "{line}");
                    read += 1;
                }
            }
        }
        assert!(read > 10, "only {read} sample records read raw");
    }

    #[test]
    fn flattens_nested_objects_into_dotted_paths() {
        let leaves = flatten(
            r#"{"a":1,"b":{"c":"x","d":{"e":null}},"tags":["t1","t2"],"f":true}"#,
            16,
        )
        .unwrap();
        let names: Vec<&str> = leaves.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, vec!["a", "b.c", "b.d.e", "tags", "f"]);
        assert_eq!(leaves[0].1, FieldValue::Int(1));
        assert_eq!(
            leaves[3].1,
            FieldValue::List(vec![
                FieldValue::Str("t1".into()),
                FieldValue::Str("t2".into())
            ])
        );
    }

    #[test]
    fn bad_input_is_classified() {
        assert_eq!(
            flatten("[1,2]", 8).unwrap_err(),
            DecodeError::NotAnObject("an array")
        );
        assert_eq!(
            flatten("\"x\"", 8).unwrap_err(),
            DecodeError::NotAnObject("a string")
        );
        assert!(matches!(
            flatten("{\"a\":", 8).unwrap_err(),
            DecodeError::MalformedJson(_)
        ));
        assert!(matches!(
            flatten("{} {}", 8).unwrap_err(),
            DecodeError::MalformedJson(_)
        ));
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(40),
            "1".to_owned() + &"}".repeat(40)
        );
        assert_eq!(flatten(&deep, 32).unwrap_err(), DecodeError::TooDeep(32));
        let deep_array = format!("{{\"a\":{}{}}}", "[".repeat(500), "]".repeat(500));
        assert_eq!(
            flatten(&deep_array, 32).unwrap_err(),
            DecodeError::TooDeep(32)
        );
    }
}
