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
//! - **Routes.** Every rule is filed under what its logsource and its `EventID` selections
//!   allow: Windows (channel, event id) pairs, a channel, an event id, or an event class for
//!   non-Windows formats (or nothing: any event). Rules with the same routes share a bucket; an
//!   event visits only the buckets of its routes, runs their automata, and takes their
//!   unanchored rules (only regexes, numbers, negations, ...) as candidates.
//!
//! Both are supersets: every candidate still checks its logsource and its whole detection.
//! Since the `EventID` of a selection narrows a rule's routes, a Security rule for 4688 is
//! never even scanned for on a 4624.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind, packed};
use chainwatch_model::{EventClass, FieldValue};
use rustc_hash::FxHashMap;

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
    /// The rule matches only if this condition is false (a `not` of the condition): a record
    /// where the gate proves it true cannot match. No literal is known.
    Unless(Proof),
}

/// How a [`Proof`] test compares a field's lower-cased value with its lower-cased text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compare {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

/// A condition of a rule made only of string comparisons that a record's raw text can prove
/// true (the negated filters of rules: `selection and not filter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Proof {
    /// The field's value, lower-cased, compares so with this lower-cased text.
    Test(FieldId, Compare, String),
    /// Every part.
    All(Vec<Proof>),
    /// At least one part.
    Any(Vec<Proof>),
}

impl Proof {
    /// All of `parts`; `None` (nothing provable) when one of them is `None`.
    pub(crate) fn all(parts: impl IntoIterator<Item = Option<Proof>>) -> Option<Proof> {
        let mut out: Vec<Proof> = parts.into_iter().collect::<Option<_>>()?;
        match out.len() {
            0 => None,
            1 => out.pop(),
            _ => Some(Proof::All(out)),
        }
    }

    /// Any of `parts` that can be proved; `None` when none can.
    pub(crate) fn any(parts: impl IntoIterator<Item = Option<Proof>>) -> Option<Proof> {
        let mut out: Vec<Proof> = parts.into_iter().flatten().collect();
        match out.len() {
            0 => None,
            1 => out.pop(),
            _ => Some(Proof::Any(out)),
        }
    }
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

    /// Literals at least one of which every match contains, chosen to be cheap and
    /// selective: of the parts of an `All`, preferably one on short fields (`long` says which
    /// fields hold long text, costly to scan), then the one whose shortest literal is longest.
    /// `None` when no such set exists.
    pub(crate) fn anchors(&self, long: &dyn Fn(Option<FieldId>) -> bool) -> Option<Vec<Anchor>> {
        match self {
            Need::Always | Need::Unless(_) => None,
            Need::Literal(field, text) => Some(vec![(*field, text.clone())]),
            Need::Any(items) => {
                let mut out = Vec::new();
                for i in items {
                    out.extend(i.anchors(long)?);
                }
                Some(out)
            }
            Need::All(items) => items
                .iter()
                .filter_map(|i| i.anchors(long))
                .max_by_key(|set| {
                    let shortest = set.iter().map(|(_, t)| t.len()).min().unwrap_or(0);
                    let selective = shortest >= 4;
                    let cheap = selective && !set.iter().any(|(f, _)| long(*f));
                    (
                        cheap,
                        selective,
                        shortest.min(12),
                        std::cmp::Reverse(set.len()),
                    )
                }),
        }
    }
}

/// Fields that hold long text (command lines, scripts, stacks, rendered messages): scanning
/// them costs more than scanning a path or a name, so anchors avoid them when another part
/// of the rule offers a literal. Any other field counts as short; keywords (any field) as long.
pub(crate) const LONG_TEXT_FIELDS: [&str; 10] = [
    "CommandLine",
    "ParentCommandLine",
    "CallTrace",
    "ScriptBlockText",
    "Payload",
    "ContextInfo",
    "Message",
    "Details",
    "Data",
    "HostApplication",
];

/// One automaton: the anchors of one field (or of any field, for keywords), matched in the
/// field's lower-cased text.
///
/// Most text holds none of the anchors, so a set small enough for the SIMD "packed" searcher
/// (Teddy) is first checked with it, which skips text many times faster than the automaton's
/// overlapping search; only text where some anchor occurs is searched for all of them.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    pub(crate) field: Option<FieldId>,
    automaton: AhoCorasick,
    gate: Option<packed::Searcher>,
    /// The anchor literals (lower-cased), by pattern id.
    pub(crate) literals: Vec<Box<str>>,
    /// Per pattern, the rules anchored on it.
    pub(crate) rules: Vec<Vec<u32>>,
}

/// The rules that share one set of routes: the anchored ones behind per-field automata, the
/// others in a plain list.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bucket {
    pub(crate) scans: Vec<Scan>,
    pub(crate) plain: Vec<u32>,
}

/// What the prefilter knows of one rule.
#[derive(Debug, Clone)]
pub(crate) struct RuleRoute {
    /// The rule's index.
    pub(crate) rule: u32,
    /// Routes its logsource and event ids allow (`None`: any event).
    pub(crate) keys: Option<Vec<RouteKey>>,
    /// Literal anchors (`None`: none known).
    pub(crate) anchors: Option<Vec<Anchor>>,
}

/// A route with its channel interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    ChannelId(u32, u32),
    Channel(u32),
    Id(u32),
    Class(EventClass),
}

/// Rules bucketed by route, anchored rules behind automata.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prefilter {
    buckets: Vec<Bucket>,
    /// Lower-cased channel names the routes use.
    channels: FxHashMap<Box<str>, u32>,
    by_key: FxHashMap<Key, Vec<u32>>,
    /// Buckets of rules that may match any event.
    any: Vec<u32>,
    patterns: usize,
    unrouted: usize,
}

impl Prefilter {
    /// Builds the buckets and their automata.
    pub(crate) fn build(rules: &[RuleRoute]) -> Result<Self, String> {
        let mut bucket_of: HashMap<Option<Vec<RouteKey>>, usize> = HashMap::new();
        let mut members: Vec<Vec<&RuleRoute>> = Vec::new();
        let mut out = Prefilter::default();
        for r in rules {
            let keys = r.keys.as_ref().map(|k| {
                let mut k = k.clone();
                k.sort();
                k.dedup();
                k
            });
            let at = *bucket_of.entry(keys.clone()).or_insert_with(|| {
                members.push(Vec::new());
                members.len() - 1
            });
            if members[at].is_empty() {
                let id = u32::try_from(at).unwrap_or(u32::MAX);
                match &keys {
                    None => out.any.push(id),
                    Some(keys) => {
                        for k in keys {
                            let k = out.intern(k);
                            out.by_key.entry(k).or_default().push(id);
                        }
                    }
                }
            }
            members[at].push(r);
        }
        for rules in members {
            let mut bucket = Bucket::default();
            let mut by_field: HashMap<Option<FieldId>, HashMap<&str, Vec<u32>>> = HashMap::new();
            for r in &rules {
                match &r.anchors {
                    Some(anchors) if !anchors.is_empty() => {
                        for (field, text) in anchors {
                            let list = by_field
                                .entry(*field)
                                .or_default()
                                .entry(text.as_str())
                                .or_default();
                            if list.last() != Some(&r.rule) {
                                list.push(r.rule);
                            }
                        }
                    }
                    _ => bucket.plain.push(r.rule),
                }
            }
            if rules.iter().all(|r| r.keys.is_none()) {
                out.unrouted += bucket.plain.len();
            }
            let mut fields: Vec<_> = by_field.into_iter().collect();
            fields.sort_by_key(|(f, _)| *f);
            for (field, patterns) in fields {
                let mut patterns: Vec<(&str, Vec<u32>)> = patterns.into_iter().collect();
                patterns.sort();
                out.patterns += patterns.len();
                let automaton = AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(Some(AhoCorasickKind::DFA))
                    .prefilter(false)
                    .build(patterns.iter().map(|(p, _)| p.as_bytes()))
                    .map_err(|e| format!("cannot build the literal prefilter: {e}"))?;
                let gate = packed::Searcher::new(patterns.iter().map(|(p, _)| p.as_bytes()));
                bucket.scans.push(Scan {
                    field,
                    automaton,
                    gate,
                    literals: patterns.iter().map(|(p, _)| Box::from(*p)).collect(),
                    rules: patterns.into_iter().map(|(_, r)| r).collect(),
                });
            }
            out.buckets.push(bucket);
        }
        Ok(out)
    }

    fn intern(&mut self, key: &RouteKey) -> Key {
        let mut channel = |c: &str| {
            let n = u32::try_from(self.channels.len()).unwrap_or(u32::MAX);
            *self.channels.entry(c.into()).or_insert(n)
        };
        match key {
            RouteKey::ChannelId(c, i) => Key::ChannelId(channel(c), *i),
            RouteKey::Channel(c) => Key::Channel(channel(c)),
            RouteKey::Id(i) => Key::Id(*i),
            RouteKey::Class(c) => Key::Class(*c),
        }
    }

    /// The buckets an event of this channel, event id and class visits, sorted, into `out`.
    /// `windows` says whether the event's format carries Windows channels and ids (else its
    /// class decides, as in the logsource tables).
    pub(crate) fn route(
        &self,
        channel: Option<&str>,
        id: Option<u32>,
        class: EventClass,
        windows: bool,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        out.extend_from_slice(&self.any);
        if self.by_key.is_empty() {
            return;
        }
        let interned = channel.and_then(|c| {
            let mut buf = [0u8; 96];
            let b = c.as_bytes();
            if b.len() <= buf.len() {
                buf[..b.len()].copy_from_slice(b);
                buf[..b.len()].make_ascii_lowercase();
                let lowered = std::str::from_utf8(&buf[..b.len()]).ok()?;
                self.channels.get(lowered).copied()
            } else {
                self.channels.get(c.to_ascii_lowercase().as_str()).copied()
            }
        });
        let mut look = |k: Key| {
            if let Some(b) = self.by_key.get(&k) {
                out.extend_from_slice(b);
            }
        };
        if let Some(ch) = interned {
            if let Some(id) = id {
                look(Key::ChannelId(ch, id));
            }
            look(Key::Channel(ch));
        }
        if let Some(id) = id {
            look(Key::Id(id));
        }
        if !windows || channel.is_none() || id.is_none() {
            look(Key::Class(class));
        }
        out.sort_unstable();
        out.dedup();
    }

    /// A bucket.
    pub(crate) fn bucket(&self, b: u32) -> &Bucket {
        &self.buckets[b as usize]
    }

    /// Adds to `out` every rule the event may match. `windows` says whether the event's format
    /// carries Windows channels and ids (else its class decides, as in the logsource tables).
    pub(crate) fn candidates(&self, view: &EventView<'_>, windows: bool, out: &mut Vec<u32>) {
        let mut buckets: Vec<u32> = Vec::with_capacity(self.any.len() + 8);
        let event = view.event;
        self.route(
            event.source.channel.as_deref(),
            event.source.event_id,
            event.class,
            windows,
            &mut buckets,
        );
        let mut found: Vec<usize> = Vec::new();
        let mut buf = String::new();
        for b in buckets {
            let bucket = &self.buckets[b as usize];
            out.extend_from_slice(&bucket.plain);
            for scan in &bucket.scans {
                found.clear();
                match scan.field {
                    Some(id) => {
                        if let Some(v) = view.get(id) {
                            scan_value(scan, v, &mut found);
                        }
                    }
                    None => view.each_lower(&mut buf, |text| scan_text(scan, text, &mut found)),
                }
                found.sort_unstable();
                found.dedup();
                for &p in &found {
                    out.extend_from_slice(&scan.rules[p]);
                }
            }
        }
    }

    /// Number of distinct anchor literals (per bucket and field).
    pub(crate) fn patterns(&self) -> usize {
        self.patterns
    }

    /// Rules tested against every event: no anchors and no routes.
    pub(crate) fn unrouted(&self) -> usize {
        self.unrouted
    }
}

fn scan_text(scan: &Scan, text: &str, found: &mut Vec<usize>) {
    let text = text.as_bytes();
    // The gate finds the leftmost match: no literal starts before it, so the automaton
    // starts there.
    let from = match &scan.gate {
        Some(g) => match g.find(text) {
            Some(m) => m.start(),
            None => return,
        },
        None => 0,
    };
    found.extend(
        scan.automaton
            .find_overlapping_iter(&text[from..])
            .map(|m| m.pattern().as_usize()),
    );
}

fn scan_value(scan: &Scan, v: FieldVal<'_>, found: &mut Vec<usize>) {
    if let Some(text) = v.lower() {
        scan_text(scan, text, found);
    } else if let Some(FieldValue::List(items)) = v.value() {
        for item in items {
            let text = match item {
                FieldValue::Str(s) => lower(s),
                other => match other.as_text() {
                    Some(t) => t,
                    None => continue,
                },
            };
            scan_text(scan, &text, found);
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

impl RouteKey {
    fn order(&self) -> (u8, &str, u32) {
        match self {
            RouteKey::ChannelId(c, i) => (0, c, *i),
            RouteKey::Channel(c) => (1, c, 0),
            RouteKey::Id(i) => (2, "", *i),
            RouteKey::Class(c) => (3, "", c.ocsf_uid()),
        }
    }
}

impl PartialOrd for RouteKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RouteKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
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
        let short = |_: Option<FieldId>| false;
        assert_eq!(
            need.anchors(&short),
            Some(vec![
                (Some(1), "\\cmd.exe".to_owned()),
                (Some(1), "\\powershell.exe".to_owned())
            ])
        );
        // Any with an unanchored branch has no anchors.
        assert_eq!(Need::any([lit(1, "x"), Need::Always]).anchors(&short), None);
        // All with one anchored part: that part.
        assert_eq!(
            Need::All(vec![Need::Always, lit(1, "abc")]).anchors(&short),
            Some(vec![(Some(1), "abc".to_owned())])
        );
        // A literal on a short field beats a longer one on a long field.
        let long = |f: Option<FieldId>| f == Some(2);
        let need = Need::all([lit(1, "\\lsass.exe"), lit(2, "dbghelp.dll")]);
        assert_eq!(
            need.anchors(&long),
            Some(vec![(Some(1), "\\lsass.exe".to_owned())])
        );
        assert_eq!(
            need.anchors(&short),
            Some(vec![(Some(2), "dbghelp.dll".to_owned())])
        );
    }
}
