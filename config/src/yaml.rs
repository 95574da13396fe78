//! Small helpers over saphyr's marked YAML nodes: every node knows its line, so every problem
//! found while reading a rule can say where it is.

use saphyr::{MarkedYamlOwned, ScalarOwned, YamlDataOwned};

/// A YAML node with its position.
pub(crate) type Node = MarkedYamlOwned;

/// 1-based line of a node.
pub(crate) fn line(node: &Node) -> usize {
    node.span.start.line()
}

/// 1-based column of a node.
pub(crate) fn column(node: &Node) -> usize {
    node.span.start.col() + 1
}

/// The entries of a mapping node, in source order.
pub(crate) fn entries(node: &Node) -> Option<impl Iterator<Item = (&Node, &Node)>> {
    match &node.data {
        YamlDataOwned::Mapping(map) => Some(map.iter()),
        _ => None,
    }
}

/// The items of a sequence node.
pub(crate) fn items(node: &Node) -> Option<&[Node]> {
    match &node.data {
        YamlDataOwned::Sequence(seq) => Some(seq.as_slice()),
        _ => None,
    }
}

/// The scalar of a node, if it is one.
pub(crate) fn scalar(node: &Node) -> Option<&ScalarOwned> {
    match &node.data {
        YamlDataOwned::Value(v) => Some(v),
        _ => None,
    }
}

/// The node as a string: strings only.
pub(crate) fn as_str(node: &Node) -> Option<&str> {
    match scalar(node)? {
        ScalarOwned::String(s) => Some(s),
        _ => None,
    }
}

/// The node as text: strings, numbers and booleans written out (YAML reads `2023-06-16` or
/// `1.0` as something else than a string; for free-text attributes we want the text).
pub(crate) fn as_text(node: &Node) -> Option<String> {
    match scalar(node)? {
        ScalarOwned::String(s) => Some(s.clone()),
        ScalarOwned::Integer(i) => Some(i.to_string()),
        ScalarOwned::FloatingPoint(f) => Some(f.to_string()),
        ScalarOwned::Boolean(b) => Some(b.to_string()),
        ScalarOwned::Null => None,
    }
}

/// The value of `key` in a mapping node.
pub(crate) fn get<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    entries(node)?
        .find(|(k, _)| as_str(k) == Some(key))
        .map(|(_, v)| v)
}

/// A short name for the kind of a node, for error messages.
pub(crate) fn kind(node: &Node) -> &'static str {
    match &node.data {
        YamlDataOwned::Mapping(_) => "a mapping",
        YamlDataOwned::Sequence(_) => "a list",
        YamlDataOwned::Value(ScalarOwned::Null) => "null",
        YamlDataOwned::Value(ScalarOwned::String(_)) => "a string",
        YamlDataOwned::Value(ScalarOwned::Integer(_)) => "an integer",
        YamlDataOwned::Value(ScalarOwned::FloatingPoint(_)) => "a number",
        YamlDataOwned::Value(ScalarOwned::Boolean(_)) => "a boolean",
        YamlDataOwned::Tagged(..) => "a tagged value",
        YamlDataOwned::Alias(_) => "an alias",
        YamlDataOwned::Representation(..) | YamlDataOwned::BadValue => "an unreadable value",
    }
}
