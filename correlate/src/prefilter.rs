//! The prefilter: which detection rules an event can possibly match, decided before any rule
//! runs, so an event is tested only against those.
//!
//! Two mechanisms, chosen per rule at compile time:
//!
//! - **Literal anchors.** From a rule's condition logic ([`Need`]) the compiler picks a set of
//!   lower-cased literal texts, each tied to a field, such that the rule cannot match unless at
//!   least one of them occurs in its field (`Image|endswith: '\cmd.exe'` needs `\cmd.exe` in
//!   `Image`). All anchors of all rules go into one Aho-Corasick automaton per field; an event's
//!   fields are scanned once, and only the rules whose anchors were found are candidates.
//! - **Routes.** A rule without anchors (only regexes, numbers, negations, ...) is indexed by
//!   what its logsource and its `EventID` selections allow: Windows (channel, event id) pairs, a
//!   channel, an event id, or an event class for non-Windows formats; the rest match anything.
//!
//! Both are supersets: every candidate still checks its logsource and its whole detection.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};
use chainwatch_model::{Event, EventClass};

use crate::sigma::fields::{EventView, FieldId, FieldVal, lower};

/// What must be present for a rule to match: literal texts in fields, combined by the logic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// Nothing known: the rule may match without any literal.
    Always,
    /// This lower-cased text occurs in this field (`None`: in any field).
    Literal(Option<FieldId>, String),
    /// Every part.
    All(Vec<Need>),
    /// At least one part.
    Any(Vec<Need>),
}

/// One anchor: a field (or any field) and a lower-cased literal.
pub(crate) type Anchor = (Option<FieldId>, String);

impl Need {
    /// All of `items`, simplified.
    pub(crate) fn all(items: impl IntoIterator<Item = Need>) -> Need {
        let mut out = Vec::new();
        for n in items {
            match n {
                Need::Always => {}
                Need::All(inner) => out.extend(inner),
                other => out.push(other),
            }
        }
        match out.len() {
            0 => Need::Always,
            1 => out.pop().unwrap_or(Need::Always),
            _ => Need::All(out),
        }
    }

    /// Any of `items`, simplified.
    pub(crate) fn any(items: impl IntoIterator<Item = Need>) -> Need {
        let mut out = Vec::new();
        for n in items {
            match n {
                Need::Always => return Need::Always,
                Need::Any(inner) => out.extend(inner),
                other => out.push(other),
            }
        }
        match out.len() {
            0 => Need::Always,
            1 => out.pop().unwrap_or(Need::Always),
            _ => Need::Any(out),
        }
    }

    /// Literals at least one of which every match contains, chosen to be selective: of the
    /// parts of an `All`, the one whose shortest literal is longest. `None` when no such set
    /// exists.
    pub(crate) fn anchors(&self) -> Option<Vec<Anchor>> {
        match self {
            Need::Always => None,
            Need::Literal(field, text) => Some(vec![(*field, text.clone())]),
            Need::Any(items) => {
                let mut out = Vec::new();
                for i in items {
                    out.extend(i.anchors()?);
                }
                Some(out)
            }
            Need::All(items) => items.iter().filter_map(Need::anchors).max_by_key(|set| {
                let shortest = set.iter().map(|(_, t)| t.len()).min().unwrap_or(0);
                (shortest.min(12), std::cmp::Reverse(set.len()))
            }),
        }
    }
}

/// One automaton: the anchors of one field (or of any field, for keywords).
#[derive(Debug, Clone)]
struct Scan {
    field: Option<FieldId>,
    automaton: AhoCorasick,
    /// Per pattern, the rules anchored on it.
    rules: Vec<Vec<u32>>,
}

/// Literal anchors of every anchored rule, one automaton per field.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prefilter {
    scans: Vec<Scan>,
}

impl Prefilter {
    /// Builds the automata from `(rule, anchors)` pairs.
    pub(crate) fn build(anchored: &[(u32, Vec<Anchor>)]) -> Result<Self, String> {
        let mut by_field: HashMap<Option<FieldId>, HashMap<&str, Vec<u32>>> = HashMap::new();
        for (rule, anchors) in anchored {
            for (field, text) in anchors {
                let rules = by_field
                    .entry(*field)
                    .or_default()
                    .entry(text.as_str())
                    .or_default();
                if rules.last() != Some(rule) {
                    rules.push(*rule);
                }
            }
        }
        let mut fields: Vec<_> = by_field.into_iter().collect();
        fields.sort_by_key(|(f, _)| *f);
        let mut scans = Vec::with_capacity(fields.len());
        for (field, patterns) in fields {
            let mut patterns: Vec<(&str, Vec<u32>)> = patterns.into_iter().collect();
            patterns.sort();
            let automaton = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(patterns.iter().map(|(p, _)| p.as_bytes()))
                .map_err(|e| format!("cannot build the literal prefilter: {e}"))?;
            scans.push(Scan {
                field,
                automaton,
                rules: patterns.into_iter().map(|(_, r)| r).collect(),
            });
        }
        Ok(Self { scans })
    }

    /// Adds to `out` every rule one of whose anchors occurs in the event.
    pub(crate) fn triggered(&self, view: &EventView<'_>, out: &mut Vec<u32>) {
        let mut found: Vec<usize> = Vec::new();
        for scan in &self.scans {
            found.clear();
            match scan.field {
                Some(id) => {
                    if let Some(v) = view.get(id) {
                        scan_value(scan, v, &mut found);
                    }
                }
                None => {
                    for v in view.all() {
                        scan_value(scan, v, &mut found);
                    }
                }
            }
            found.sort_unstable();
            found.dedup();
            for &p in &found {
                out.extend_from_slice(&scan.rules[p]);
            }
        }
    }

    /// Number of anchor patterns (for stats and tests).
    pub(crate) fn patterns(&self) -> usize {
        self.scans.iter().map(|s| s.rules.len()).sum()
    }
}

fn scan_value(scan: &Scan, v: FieldVal<'_>, found: &mut Vec<usize>) {
    if let Some(text) = v.lower() {
        found.extend(
            scan.automaton
                .find_overlapping_iter(text)
                .map(|m| m.pattern().as_usize()),
        );
    } else if let Some(chainwatch_model::FieldValue::List(items)) = v.value() {
        for item in items {
            let text = match item {
                chainwatch_model::FieldValue::Str(s) => lower(s).into_owned(),
                other => match other.as_text() {
                    Some(t) => t.into_owned(),
                    None => continue,
                },
            };
            found.extend(
                scan.automaton
                    .find_overlapping_iter(&text)
                    .map(|m| m.pattern().as_usize()),
            );
        }
    }
}

/// What a rule's logsource and event-id selections route on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum RouteKey {
    /// A Windows channel (lower-cased) and event id.
    ChannelId(Box<str>, u32),
    /// Any event of a Windows channel (lower-cased).
    Channel(Box<str>),
    /// An event id, whatever the channel.
    Id(u32),
    /// An event class (formats without Windows channels and ids).
    Class(EventClass),
}

/// Rules without anchors, by route.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    keyed: HashMap<RouteKey, Vec<u32>>,
    any: Vec<u32>,
}

impl Routes {
    /// Adds a rule under its keys (`None`: it may match any event).
    pub(crate) fn add(&mut self, rule: u32, keys: Option<Vec<RouteKey>>) {
        match keys {
            None => self.any.push(rule),
            Some(keys) => {
                for k in keys {
                    let rules = self.keyed.entry(k).or_default();
                    if rules.last() != Some(&rule) {
                        rules.push(rule);
                    }
                }
            }
        }
    }

    /// Adds to `out` the rules routed to `event`. `windows` says whether the event's format
    /// carries Windows channels and ids (else its class decides, as in the logsource tables).
    pub(crate) fn candidates(&self, event: &Event, windows: bool, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.any);
        if self.keyed.is_empty() {
            return;
        }
        let channel = event
            .source
            .channel
            .as_deref()
            .map(|c| Box::<str>::from(c.to_ascii_lowercase()));
        let id = event.source.event_id;
        let mut look = |k: RouteKey| {
            if let Some(rules) = self.keyed.get(&k) {
                out.extend_from_slice(rules);
            }
        };
        if let Some(ch) = &channel {
            if let Some(id) = id {
                look(RouteKey::ChannelId(ch.clone(), id));
            }
            look(RouteKey::Channel(ch.clone()));
        }
        if let Some(id) = id {
            look(RouteKey::Id(id));
        }
        if !windows || channel.is_none() || id.is_none() {
            look(RouteKey::Class(event.class));
        }
    }

    /// Rules routed to every event.
    pub(crate) fn unrouted(&self) -> usize {
        self.any.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(f: u32, t: &str) -> Need {
        Need::Literal(Some(f), t.into())
    }

    #[test]
    fn needs_simplify() {
        assert_eq!(Need::all([Need::Always, lit(1, "a")]), lit(1, "a"));
        assert_eq!(Need::any([Need::Always, lit(1, "a")]), Need::Always);
        assert_eq!(
            Need::all([lit(1, "a"), Need::all([lit(2, "b"), lit(3, "c")])]),
            Need::All(vec![lit(1, "a"), lit(2, "b"), lit(3, "c")])
        );
    }

    #[test]
    fn anchors_pick_the_most_selective_part() {
        // Image ends with one of two names AND the command line contains "-s": the names.
        let need = Need::all([
            Need::any([lit(1, "\\cmd.exe"), lit(1, "\\powershell.exe")]),
            lit(2, "-s"),
        ]);
        assert_eq!(
            need.anchors(),
            Some(vec![
                (Some(1), "\\cmd.exe".to_owned()),
                (Some(1), "\\powershell.exe".to_owned())
            ])
        );
        // Any with an unanchored branch has no anchors.
        assert_eq!(Need::any([lit(1, "x"), Need::Always]).anchors(), None);
        // All with one anchored part: that part.
        assert_eq!(
            Need::All(vec![Need::Always, lit(1, "abc")]).anchors(),
            Some(vec![(Some(1), "abc".to_owned())])
        );
    }
}
