//! The gate: proves, from a record's raw text, that no rule can match it, so the record need
//! not be decoded at all. The fast path of `replay` and of the ingest stage.
//!
//! The prefilter ([`crate::prefilter`]) already knows, per route (channel and event id), which
//! rules an event may match and which literal each needs in which field. The gate asks the
//! same question of the record's JSON text instead of a decoded event:
//!
//! 1. The record's route selects the prefilter's buckets. No bucket: nothing can match.
//! 2. A bucket holding a rule without literal anchors (a regex, a number, a negation) needs the
//!    full path: the gate cannot reason about it.
//! 3. Otherwise the rules whose anchor literal occurs in the record are checked further: every
//!    literal their logic needs ([`Need`], the same analysis the prefilter's anchors come from:
//!    `a AND (b OR c)`) must occur too. Literals are searched for lower-cased and JSON-escaped
//!    (`\` is written `\\` in JSON) in the lower-cased text, all at once, and an occurrence
//!    counts only inside the value of a field the literal's rule field may be read from: the
//!    field of that name, the fields its canonical fallback copies, the fields a derivation
//!    copies (from ingest's [`FieldOrigins`]). Keyword literals count in any value.
//! 4. Values normalization may synthesize (a `DOMAIN\user` joined from two fields, a process
//!    id converted from hex) need not occur in the text: a literal on a rule field that may read
//!    one — the record lacks the field itself — counts as present.
//!
//! The gate is a superset like the prefilter: it answers "may match" whenever it cannot prove
//! otherwise, and the full path decides. The scanner in ingest only hands it records whose
//! text reads the same raw and decoded (no `\u` or `\/` escapes, integers only), and text whose
//! lower-casing changes its length is not searched. `chainwatch replay --verify` checks, on
//! every record the gate skips, that decoding it and testing every rule matches nothing.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind, packed};
use chainwatch_model::{EventClass, FieldOrigins, Origin, RawRecord};
use rustc_hash::FxHashMap;

use crate::prefilter::Need;
use crate::ruleset::RuleSet;
use crate::sigma::fields::FieldId;

/// Events a fast path must decode whatever the rules say: what the engine's other users need
/// to see (host role inference reads events no rule matches).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Channels (ignoring case), with one event id or any (`None`).
    pub routes: Vec<(String, Option<u32>)>,
    /// Literals (ignoring case): a record holding one in a field value is decoded.
    pub literals: Vec<String>,
}

/// What the gate decided so far (serialized without `checked`, for `replay --stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GateStats {
    /// Records asked about.
    #[serde(skip)]
    pub checked: u64,
    /// Records no rule can match (skipped).
    pub skipped: u64,
    /// Of those, skipped on their route alone (no rule for their channel and event id).
    pub by_route: u64,
    /// Passed because their route has a rule the gate cannot reason about (no literal anchor:
    /// a regex, a number, a negation), or a literal it cannot search raw.
    pub unanchored: u64,
    /// Passed because a rule field may read a value normalization synthesizes.
    pub synthetic: u64,
    /// Passed because their text changes length when lower-cased.
    pub lowering: u64,
    /// Passed because an anchor literal occurs in a field its rule may read (or an interest).
    pub literal: u64,
}

/// Where a rule field's value may come from in a record.
#[derive(Debug, Clone, Default)]
struct FieldSources {
    /// Lower-cased record fields whose values it may copy.
    keys: Vec<Box<str>>,
    /// When the record lacks the field itself, its value may be synthesized.
    synthetic: bool,
}

/// A rule's necessary literals, as the gate evaluates them.
#[derive(Debug)]
enum Tree {
    /// Satisfied whatever the record holds.
    True,
    /// This escaped, lower-cased text occurs where this rule field (`None`: any field) may
    /// read.
    Lit(Option<FieldId>, Box<memchr::memmem::Finder<'static>>),
    /// Every part.
    All(Vec<Tree>),
    /// At least one part.
    Any(Vec<Tree>),
}

/// The anchor literals one set of values is searched for.
#[derive(Debug)]
struct Search {
    automaton: AhoCorasick,
    /// A fast first check when the literal set is small enough.
    quick: Option<packed::Searcher>,
    /// Per pattern, the rules anchored on it (indices into `Combo::rules`).
    triggers: Vec<Vec<u32>>,
}

impl Search {
    fn build(anchors: Vec<(String, u32)>) -> Option<Search> {
        let mut patterns: FxHashMap<String, Vec<u32>> = FxHashMap::default();
        for (text, rule) in anchors {
            let rules = patterns.entry(text).or_default();
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        let mut patterns: Vec<(String, Vec<u32>)> = patterns.into_iter().collect();
        patterns.sort();
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(dfa_if_small(patterns.len()))
            .build(patterns.iter().map(|(t, _)| t.as_bytes()))
            .ok()?;
        let quick = packed::Searcher::new(patterns.iter().map(|(t, _)| t.as_bytes()));
        Some(Search {
            automaton,
            quick,
            triggers: patterns.into_iter().map(|(_, r)| r).collect(),
        })
    }

    /// Adds to `out` the rules whose anchors occur in `text` (at positions `within` accepts).
    fn run(&self, text: &[u8], out: &mut Vec<u32>, within: impl Fn(usize, usize) -> bool) {
        if self.quick.as_ref().is_some_and(|q| q.find(text).is_none()) {
            return;
        }
        for m in self.automaton.find_overlapping_iter(text) {
            if within(m.start(), m.end()) {
                out.extend_from_slice(&self.triggers[m.pattern().as_usize()]);
            }
        }
    }
}

/// What the gate checks for one combination of buckets.
#[derive(Debug)]
struct Combo {
    /// A rule the gate cannot reason about: decode.
    always: bool,
    /// Lower-cased record field names to the search of their values.
    keys: FxHashMap<Box<[u8]>, u32>,
    /// Bit `n` set: some name in `keys` is `n` bytes long (longer ones: bit 63).
    key_lengths: u64,
    searches: Vec<Search>,
    /// Keyword anchors, searched for in the whole text (an occurrence must lie in a value).
    keyword: Option<Search>,
    /// Per rule, its necessary literals.
    rules: Vec<Tree>,
    /// Rules checked on every record: an anchor may read a synthesized value.
    eager: Vec<u32>,
}

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// What is known of the record being checked.
struct Facts<'r, 'a> {
    record: &'r RawRecord<'a>,
    /// The record's text, lower-cased.
    lowered: &'r [u8],
    /// Normalization may add synthesized fields to this record (keyword literals are unknown).
    scoped: bool,
    /// Per rule field, resolved for this record once asked.
    resolved: &'r mut Resolved,
}

/// Per rule field, the record fields it may read: computed once per record, on first use.
#[derive(Debug, Default)]
struct Resolved {
    /// The record being resolved for (slots of other records are stale).
    generation: u32,
    /// Per field id: (generation, the record has the field itself, start and end in `at`).
    slots: Vec<(u32, bool, u32, u32)>,
    /// Indices of record fields.
    at: Vec<u32>,
}

/// Most bucket combinations remembered; beyond, combinations are built for each record.
const MAX_COMBOS: usize = 4096;

/// The gate of one rule set (rebuilt with it on reload).
#[derive(Debug)]
pub struct Gate {
    rules: Arc<RuleSet>,
    sources: Vec<FieldSources>,
    synthetic_scopes: Vec<String>,
    interest_routes: Vec<(String, Option<u32>)>,
    interest_literals: Vec<String>,
    combos: FxHashMap<Box<[u32]>, Arc<Combo>>,
    buckets: Vec<u32>,
    lowered: Vec<u8>,
    candidates: Vec<u32>,
    resolved: Resolved,
    stats: GateStats,
}

/// A DFA (fastest search, slow to build and large) for small literal sets; beyond, the
/// automaton's own choice.
fn dfa_if_small(patterns: usize) -> Option<AhoCorasickKind> {
    if std::env::var_os("GATE_NFA").is_some() {
        return Some(AhoCorasickKind::ContiguousNFA);
    }
    (patterns <= 2000).then_some(AhoCorasickKind::DFA)
}

/// A literal as it appears in JSON text: `\` and `"` escaped. `None` when it cannot be looked
/// for that way (empty, or holding control characters, which JSON may escape several ways).
fn escaped(literal: &str) -> Option<String> {
    if literal.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(literal.len() + 4);
    for c in literal.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Lower-cases `text` into `out` as the engine lower-cases field values, character by
/// character; `false` when some character's lower case has another length in UTF-8 (byte
/// offsets would shift, and field spans would no longer apply). `ascii` says the text is ASCII.
fn lower_same_length(text: &[u8], ascii: bool, out: &mut Vec<u8>) -> bool {
    out.clear();
    if ascii {
        out.extend_from_slice(text);
        out.make_ascii_lowercase();
        return true;
    }
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase() as u8);
            continue;
        }
        let at = out.len();
        for l in c.to_lowercase() {
            out.extend_from_slice(l.encode_utf8(&mut buf).as_bytes());
        }
        if out.len() - at != c.len_utf8() {
            return false;
        }
    }
    true
}

impl Gate {
    /// The gate of `rules`, for records whose normalization adds fields as `origins` says,
    /// also passing whatever `interest` names.
    pub fn new(rules: Arc<RuleSet>, origins: &FieldOrigins, interest: &Interest) -> Self {
        let index = &rules.fields;
        let sources = (0..index.len())
            .map(|i| {
                let id = FieldId::try_from(i).unwrap_or(FieldId::MAX);
                let name = index.name(id);
                let mut s = FieldSources {
                    keys: vec![name.to_ascii_lowercase().into()],
                    synthetic: false,
                };
                let mut add = |o: &Origin| match o {
                    Origin::Synthetic => s.synthetic = true,
                    Origin::Fields(keys) => {
                        s.keys
                            .extend(keys.iter().map(|k| k.to_ascii_lowercase().into()));
                    }
                };
                if let Some(o) = origins.of_added(name) {
                    add(o);
                }
                if let Some(o) = index.fallback(id).and_then(|c| origins.of_canonical(c)) {
                    add(o);
                }
                s.keys.sort();
                s.keys.dedup();
                s
            })
            .collect();
        Self {
            rules,
            sources,
            synthetic_scopes: origins.synthetic_scopes.clone(),
            interest_routes: interest.routes.clone(),
            interest_literals: interest
                .literals
                .iter()
                .map(|l| crate::sigma::fields::lower(l).into_owned())
                .collect(),
            combos: FxHashMap::default(),
            buckets: Vec::new(),
            lowered: Vec::new(),
            candidates: Vec::new(),
            resolved: Resolved::default(),
            stats: GateStats::default(),
        }
    }

    /// The rule set it gates.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Counts so far.
    pub fn stats(&self) -> GateStats {
        self.stats
    }

    /// `false` when no rule can match the record (nor does the interest name it): it need not
    /// be decoded. `true` when it may: decode it and let the engine decide.
    pub fn may_match(&mut self, record: &RawRecord<'_>) -> bool {
        self.stats.checked += 1;
        let may = self.decide(record);
        if !may {
            self.stats.skipped += 1;
        }
        may
    }

    fn decide(&mut self, record: &RawRecord<'_>) -> bool {
        if self.interest_routes.iter().any(|(c, id)| {
            c.eq_ignore_ascii_case(record.channel) && id.is_none_or(|i| i == record.event_id)
        }) {
            self.stats.literal += 1;
            return true;
        }
        let mut buckets = std::mem::take(&mut self.buckets);
        self.rules.prefilter().route(
            Some(record.channel),
            Some(record.event_id),
            EventClass::Other,
            true,
            &mut buckets,
        );
        let empty = buckets.is_empty()
            || buckets.iter().all(|&b| {
                let bucket = self.rules.prefilter().bucket(b);
                bucket.plain.is_empty() && bucket.scans.is_empty()
            });
        if empty && self.interest_literals.is_empty() {
            self.buckets = buckets;
            self.stats.by_route += 1;
            return false;
        }
        let combo = match self.combos.get(buckets.as_slice()) {
            Some(c) => Arc::clone(c),
            None => {
                let c = Arc::new(self.combo(&buckets));
                if self.combos.len() < MAX_COMBOS {
                    self.combos
                        .insert(buckets.clone().into_boxed_slice(), Arc::clone(&c));
                }
                c
            }
        };
        self.buckets = buckets;
        self.check(&combo, record)
    }

    fn check(&mut self, combo: &Combo, record: &RawRecord<'_>) -> bool {
        if combo.always {
            self.stats.unanchored += 1;
            return true;
        }
        // Keyword literals read every field, added ones too: unknown where normalization may
        // synthesize a field.
        let scoped = self.synthetic_scopes.iter().any(|s| {
            s == "*"
                || s.eq_ignore_ascii_case(record.channel)
                || record.provider.is_some_and(|p| s.eq_ignore_ascii_case(p))
        });
        if scoped && combo.keyword.is_some() {
            self.stats.synthetic += 1;
            return true;
        }
        if !lower_same_length(record.text, record.ascii, &mut self.lowered) {
            self.stats.lowering += 1;
            return true;
        }
        let lowered = std::mem::take(&mut self.lowered);
        // The rules an anchor brings in, and those checked on every record.
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        candidates.extend_from_slice(&combo.eager);
        let mut key = [0u8; 64];
        for f in record.fields {
            let name = f.key(record.text);
            if combo.key_lengths & length_bit(name.len()) == 0 || name.len() > key.len() {
                continue;
            }
            let key = &mut key[..name.len()];
            key.copy_from_slice(name);
            key.make_ascii_lowercase();
            if let Some(&search) = combo.keys.get(&*key) {
                let value = &lowered[f.value_start as usize..f.value_end as usize];
                combo.searches[search as usize].run(value, &mut candidates, |_, _| true);
            }
        }
        if let Some(keyword) = &combo.keyword {
            keyword.run(&lowered, &mut candidates, |start, end| {
                record.field_index_at(start, end).is_some()
            });
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut synthetic = false;
        let mut resolved = std::mem::take(&mut self.resolved);
        resolved.generation = resolved.generation.wrapping_add(1);
        if resolved.generation == 0 {
            resolved.slots.clear();
            resolved.generation = 1;
        }
        resolved.at.clear();
        let mut facts = Facts {
            record,
            lowered: &lowered,
            scoped,
            resolved: &mut resolved,
        };
        let may = candidates
            .iter()
            .any(|&r| self.holds(&combo.rules[r as usize], &mut facts, &mut synthetic));
        self.resolved = resolved;
        if may {
            if synthetic {
                self.stats.synthetic += 1;
            } else {
                self.stats.literal += 1;
            }
        }
        self.candidates = candidates;
        self.lowered = lowered;
        may
    }

    /// The record fields rule field `id` may read, and whether the record has that field itself
    /// (as `(own, start, end)` into `facts.resolved.at`).
    fn resolve(&self, facts: &mut Facts<'_, '_>, id: FieldId) -> (bool, usize, usize) {
        let r = &mut *facts.resolved;
        let i = id as usize;
        if r.slots.len() <= i {
            r.slots
                .resize(self.sources.len().max(i + 1), (0, false, 0, 0));
        }
        let (generation, own, start, end) = r.slots[i];
        if generation == r.generation {
            return (own, start as usize, end as usize);
        }
        let record = facts.record;
        let name = self.rules.fields.name(id).as_bytes();
        let keys = &self.sources[i].keys;
        let start = r.at.len();
        let mut own = false;
        for (n, f) in record.fields.iter().enumerate() {
            let key = f.key(record.text);
            own |= key.eq_ignore_ascii_case(name);
            if keys
                .iter()
                .any(|k| k.len() == key.len() && k.as_bytes().eq_ignore_ascii_case(key))
            {
                r.at.push(u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
        let end = r.at.len();
        let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        r.slots[i] = (r.generation, own, n(start), n(end));
        (own, start, end)
    }

    /// True when the literal may be present: it occurs where its field reads, or its field may
    /// read a synthesized value.
    fn present(
        &self,
        facts: &mut Facts<'_, '_>,
        field: Option<FieldId>,
        finder: &memchr::memmem::Finder<'_>,
        synthetic: &mut bool,
    ) -> bool {
        let record = facts.record;
        match field {
            Some(id) => {
                let (own, start, end) = self.resolve(facts, id);
                if self.sources[id as usize].synthetic && !own {
                    *synthetic = true;
                    return true;
                }
                facts.resolved.at[start..end].iter().any(|&n| {
                    let f = &record.fields[n as usize];
                    finder
                        .find(&facts.lowered[f.value_start as usize..f.value_end as usize])
                        .is_some()
                })
            }
            None => {
                if facts.scoped {
                    *synthetic = true;
                    return true;
                }
                let len = finder.needle().len();
                finder
                    .find_iter(facts.lowered)
                    .any(|at| record.field_index_at(at, at + len).is_some())
            }
        }
    }

    fn holds(&self, tree: &Tree, facts: &mut Facts<'_, '_>, synthetic: &mut bool) -> bool {
        match tree {
            Tree::True => true,
            Tree::Lit(field, finder) => self.present(facts, *field, finder, synthetic),
            Tree::All(parts) => parts.iter().all(|t| self.holds(t, facts, synthetic)),
            Tree::Any(parts) => parts.iter().any(|t| self.holds(t, facts, synthetic)),
        }
    }

    /// What to check for records visiting `buckets`.
    fn combo(&self, buckets: &[u32]) -> Combo {
        let mut combo = Combo {
            always: false,
            keys: FxHashMap::default(),
            key_lengths: 0,
            searches: Vec::new(),
            keyword: None,
            rules: Vec::new(),
            eager: Vec::new(),
        };
        for &b in buckets {
            combo.always |= !self.rules.prefilter().bucket(b).plain.is_empty();
        }
        if combo.always {
            return combo;
        }
        let mut rule_index: FxHashMap<u32, u32> = FxHashMap::default();
        let mut by_key: FxHashMap<Box<[u8]>, Vec<(String, u32)>> = FxHashMap::default();
        let mut keyword: Vec<(String, u32)> = Vec::new();
        for &b in buckets {
            for scan in &self.rules.prefilter().bucket(b).scans {
                for (literal, anchored) in scan.literals.iter().zip(&scan.rules) {
                    let text = escaped(literal);
                    for &r in anchored {
                        let at = *rule_index.entry(r).or_insert_with(|| {
                            let need = self.rules.detections[r as usize].detection.need();
                            combo.rules.push(tree(&need));
                            u32::try_from(combo.rules.len() - 1).unwrap_or(u32::MAX)
                        });
                        match (&text, scan.field) {
                            (Some(t), None) => keyword.push((t.clone(), at)),
                            (Some(t), Some(f)) if !self.sources[f as usize].synthetic => {
                                for k in &self.sources[f as usize].keys {
                                    by_key
                                        .entry(Box::from(k.as_bytes()))
                                        .or_default()
                                        .push((t.clone(), at));
                                }
                            }
                            // An anchor the text cannot show: check the rule every time.
                            _ => combo.eager.push(at),
                        }
                    }
                }
            }
        }
        for literal in &self.interest_literals {
            match escaped(literal) {
                Some(t) => {
                    combo
                        .rules
                        .push(tree(&Need::Literal(None, literal.clone())));
                    let at = u32::try_from(combo.rules.len() - 1).unwrap_or(u32::MAX);
                    keyword.push((t, at));
                }
                None => {
                    combo.always = true;
                    return combo;
                }
            }
        }
        combo.eager.sort_unstable();
        combo.eager.dedup();
        let mut keys: Vec<_> = by_key.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, anchors) in keys {
            let Some(search) = Search::build(anchors) else {
                // Cannot search: decode everything of this route.
                combo.always = true;
                return combo;
            };
            combo.key_lengths |= length_bit(key.len());
            let n = u32::try_from(combo.searches.len()).unwrap_or(u32::MAX);
            combo.keys.insert(key, n);
            combo.searches.push(search);
        }
        if !keyword.is_empty() {
            match Search::build(keyword) {
                Some(s) => combo.keyword = Some(s),
                None => combo.always = true,
            }
        }
        combo
    }
}

/// A rule's necessary literals, each with its searcher; a literal the text cannot show (empty,
/// control characters) is always satisfied.
fn tree(need: &Need) -> Tree {
    match need {
        Need::Always => Tree::True,
        Need::Literal(field, text) => match escaped(text) {
            Some(e) => Tree::Lit(
                *field,
                Box::new(memchr::memmem::Finder::new(e.as_bytes()).into_owned()),
            ),
            None => Tree::True,
        },
        Need::All(parts) => Tree::All(parts.iter().map(tree).collect()),
        Need::Any(parts) => Tree::Any(parts.iter().map(tree).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped_as_json_writes_them() {
        assert_eq!(escaped(r"\cmd.exe").as_deref(), Some(r"\\cmd.exe"));
        assert_eq!(escaped(r#"a"b"#).as_deref(), Some(r#"a\"b"#));
        assert_eq!(escaped("a\nb"), None);
        assert_eq!(escaped(""), None);
    }

    /// Lower-casing the raw text must give, within each value, exactly what the engine's
    /// lower-casing gives the decoded value: only characters whose lower case keeps its length
    /// are searched.
    #[test]
    fn lowering_keeps_offsets_or_says_so() {
        let mut out = Vec::new();
        let lower = |t: &str, out: &mut Vec<u8>| lower_same_length(t.as_bytes(), t.is_ascii(), out);
        assert!(lower("C:\\Windows\\CMD.EXE", &mut out));
        assert_eq!(out, b"c:\\windows\\cmd.exe");
        assert!(lower("Microsoft® Windows® ÄÖ", &mut out));
        assert_eq!(out, "microsoft® windows® äö".as_bytes());
        // The Kelvin sign lower-cases to an ASCII k: a shorter text.
        assert!(!lower("\u{212a}erberos", &mut out));
        assert!(!lower("\u{130}", &mut out));
        // Every character either keeps its length in lower case, as the engine lower-cases it,
        // or is refused.
        for c in (0..=0x10ffffu32).filter_map(char::from_u32) {
            let text = c.to_string();
            if lower(&text, &mut out) {
                assert_eq!(out, crate::sigma::fields::lower(&text).as_bytes());
            }
        }
    }
}
