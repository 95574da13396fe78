//! The gate: proves, from a record's raw text, that no rule can match it, so the record need
//! not be decoded at all. The fast path of `replay` and of the ingest stage.
//!
//! The prefilter (`crate::prefilter`) already knows, per route (channel and event id), which
//! rules an event may match and which literal each needs in which field. The gate asks the
//! same question of the record's JSON text instead of a decoded event:
//!
//! 1. The record's route selects the prefilter's buckets. No bucket: nothing can match.
//! 2. A rule of which nothing is known (a regex or a comparison only) needs the full path: the
//!    gate cannot reason about it. A rule without a literal anchor whose logic still says
//!    something (a negated filter, below) is checked on every record of the route.
//! 3. Otherwise the rules whose anchor literal occurs in the record are checked further: every
//!    literal their logic needs (`Need`, the same analysis the prefilter's anchors come from:
//!    `a AND (b OR c)`) must occur too. Literals are searched for lower-cased and JSON-escaped
//!    (`\` is written `\\` in JSON) in the lower-cased text, and an occurrence counts only
//!    inside the value of a field the literal's rule field may be read from: the field of that
//!    name, the fields its canonical fallback copies, the fields a derivation copies (from
//!    ingest's [`FieldOrigins`]). Keyword literals count in any value. Anchors are searched for
//!    in every record; the other literals of a field (its "facts") are searched for together,
//!    once per record and field, the first time a candidate rule asks about one of them.
//!    A number compared with a field needs the digits of its magnitude, in decimal or in
//!    hexadecimal (a string `0x24AD` reads as 9389).
//! 4. Values normalization may synthesize (a `DOMAIN\user` joined from two fields, a process
//!    id converted from hex) need not occur in the text: a literal on a rule field that may read
//!    one — the record lacks the field itself — counts as present.
//! 5. A `not` of string comparisons (`selection and not filter`, `Proof`) rules the rule out
//!    when the record proves the comparisons true: the field is a string the record holds once
//!    under the rule field's own name (so it is the value the engine reads), it holds no
//!    escape but `\\` and `\"`, and the match is not split by an escape. Most image loads of
//!    `C:\Windows\System32\` are proved out this way by the side-loading rules' filters.
//!
//! The gate is a superset like the prefilter: it answers "may match" whenever it cannot prove
//! otherwise, and the full path decides. The scanner in ingest only hands it records whose
//! text reads the same raw and decoded (no `\u` or `\/` escapes, integers only), and text whose
//! lower-casing changes its length is not searched. `chainwatch replay --verify` checks, on
//! every record the gate skips, that decoding it and testing every rule matches nothing.

use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind, packed};
use chainwatch_model::{EventClass, FieldOrigins, Origin, RawKind, RawRecord};
use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use crate::prefilter::{Compare, Need, Proof};
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
    /// This escaped, lower-cased text occurs in some field's value (a keyword).
    Keyword(Box<memchr::memmem::Finder<'static>>),
    /// Fact `fact` holds: its literal occurs where the combo's rule field `field` may read.
    Fact { field: u32, fact: u32 },
    /// At least one of these facts of one rule field: (word, bits) of the fact bit set.
    AnyFact { field: u32, mask: Box<[(u32, u64)]> },
    /// Every part.
    All(Vec<Tree>),
    /// At least one part.
    Any(Vec<Tree>),
    /// Satisfied unless the record proves the condition true.
    Unless(Proven),
}

/// A [`Proof`] as the gate checks it on the record's text.
#[derive(Debug)]
enum Proven {
    /// The value of the combo's proof field `field` compares so with this escaped,
    /// lower-cased text.
    Test {
        field: u32,
        how: Compare,
        text: Box<[u8]>,
    },
    /// Every part.
    All(Vec<Proven>),
    /// At least one part.
    Any(Vec<Proven>),
}

/// The anchor literals one set of values is searched for.
#[derive(Debug)]
struct Search {
    /// The searchers of its literals, shared with every other search of the same literals.
    found: Arc<Searchers>,
    /// Per pattern, the rules anchored on it (indices into `Combo::rules`).
    triggers: Vec<Vec<u32>>,
}

/// The searchers of one set of literals (sorted, distinct): they depend on the literals
/// alone, not on the rules anchored on them.
#[derive(Debug)]
struct Searchers {
    automaton: AhoCorasick,
    /// A fast first check when the literal set is small enough.
    quick: Option<Quick>,
}

/// Where the quick search of a set of literals finds a match, and how far before it an
/// occurrence of a literal may start.
#[derive(Debug)]
struct Quick {
    /// The packed (Teddy) search of the literals, or of factors of them (each literal holds
    /// one): no occurrence of a literal starts more than `back` bytes before the leftmost
    /// match, and a text without one holds no literal.
    packed: packed::Searcher,
    back: usize,
}

impl Quick {
    /// The quick search of `literals` themselves (none when there are too many).
    fn exact(literals: &[&[u8]]) -> Option<Quick> {
        packed::Searcher::new(literals.iter()).map(|packed| Quick { packed, back: 0 })
    }

    /// The quick search of selective factors of `literals`, when they are fewer than the
    /// literals (see [`factors`]); otherwise of the literals.
    fn factored(literals: &[&[u8]]) -> Option<Quick> {
        let (factors, back) = factors(literals);
        if factors.len() < literals.len()
            && let Some(packed) = packed::Searcher::new(factors.iter())
        {
            return Some(Quick { packed, back });
        }
        Self::exact(literals)
    }

    /// Where an occurrence of a literal in `text` may start at the earliest; `None` when
    /// `text` holds none.
    #[inline]
    fn earliest(&self, text: &[u8]) -> Option<usize> {
        let m = self.packed.find(text)?;
        Some(m.start().saturating_sub(self.back))
    }
}

/// Punctuation seldom seen in event text, two of which in a row (`::`) make a selective
/// factor; the common separators of paths, names and JSON are left out.
fn rare_punctuation(b: u8) -> bool {
    b.is_ascii_punctuation()
        && !matches!(
            b,
            b'\\' | b'"' | b'.' | b'-' | b'_' | b'/' | b',' | b'(' | b')' | b'\'' | b'%'
        )
}

/// Substrings that every literal holds one of (so a text holding no factor holds no
/// literal), and the largest offset of a literal's factor in it (so a literal occurs no
/// earlier than that many bytes before the leftmost factor). Pairs of rare punctuation shared
/// by several literals (`::` in `kerberos::ptt`, `lsadump::`) stand for them; the other
/// literals stand for themselves, less the escaped backslashes that begin or end them (the
/// most common bytes of Windows paths). Keyword literals are searched for in the whole text
/// of a record, so a few selective factors save much of the search.
fn factors(literals: &[&[u8]]) -> (Vec<Vec<u8>>, usize) {
    let mut left: Vec<&[u8]> = literals.to_vec();
    let mut factors: Vec<Vec<u8>> = Vec::new();
    let mut back = 0;
    loop {
        let mut counts: FxHashMap<[u8; 2], usize> = FxHashMap::default();
        for l in &left {
            let mut pairs: Vec<[u8; 2]> = l
                .windows(2)
                .filter(|w| rare_punctuation(w[0]) && rare_punctuation(w[1]))
                .map(|w| [w[0], w[1]])
                .collect();
            pairs.sort_unstable();
            pairs.dedup();
            for p in pairs {
                *counts.entry(p).or_default() += 1;
            }
        }
        // The pair most literals share (the smallest on ties, for a stable choice).
        let Some((pair, _)) = counts
            .into_iter()
            .filter(|&(_, n)| n >= 2)
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        else {
            break;
        };
        left.retain(|l| match memchr::memmem::find(l, &pair) {
            Some(at) => {
                back = back.max(at);
                false
            }
            None => true,
        });
        factors.push(pair.to_vec());
    }
    for l in left {
        let mut start = 0;
        let mut end = l.len();
        while end - start > 2 && l[start..].starts_with(b"\\\\") {
            start += 2;
        }
        while end - start > 2 && l[..end].ends_with(b"\\\\") {
            end -= 2;
        }
        back = back.max(start);
        factors.push(l[start..end].to_vec());
    }
    factors.sort();
    factors.dedup();
    (factors, back)
}

/// Searchers already built, by their literals. Bucket combinations overlap (every route of a
/// channel shares the channel's rules), so many combinations search one record field for the
/// same literals; building the automata once per literal set instead of once per combination
/// and field takes a large share of the gate's start-up off (DFAs are costly to build).
/// Filled while combinations are built, so bounded as they are ([`MAX_COMBOS`]).
type SearcherCache = FxHashMap<(bool, Box<[Box<str>]>), Option<Arc<Searchers>>>;

impl Search {
    /// The search of `anchors`; `factored`: its quick search may look for factors of them
    /// (for keyword literals, searched for in a record's whole text).
    fn build(
        anchors: Vec<(String, u32)>,
        factored: bool,
        cache: &mut SearcherCache,
    ) -> Option<Search> {
        let mut patterns: FxHashMap<String, Vec<u32>> = FxHashMap::default();
        for (text, rule) in anchors {
            let rules = patterns.entry(text).or_default();
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        let mut patterns: Vec<(String, Vec<u32>)> = patterns.into_iter().collect();
        patterns.sort();
        let texts: Box<[Box<str>]> = patterns.iter().map(|(t, _)| t.as_str().into()).collect();
        let found = cache
            .entry((factored, texts))
            .or_insert_with_key(|(factored, texts)| {
                let automaton = AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .kind(dfa_if_small(texts.len()))
                    .build(texts.iter().map(|t| t.as_bytes()))
                    .ok()?;
                let literals: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
                let quick = if *factored {
                    Quick::factored(&literals)
                } else {
                    Quick::exact(&literals)
                };
                Some(Arc::new(Searchers { automaton, quick }))
            })
            .clone()?;
        Some(Search {
            found,
            triggers: patterns.into_iter().map(|(_, r)| r).collect(),
        })
    }

    /// Adds to `out` the rules whose anchors occur in `text` (at positions `within` accepts).
    fn run(&self, text: &[u8], out: &mut Vec<u32>, within: impl Fn(usize, usize) -> bool) {
        // No occurrence starts before the quick search's earliest start, so the automaton
        // starts there.
        let from = match &self.found.quick {
            Some(q) => match q.earliest(text) {
                Some(at) => at,
                None => return,
            },
            None => 0,
        };
        for m in self.found.automaton.find_overlapping_iter(&text[from..]) {
            if within(from + m.start(), from + m.end()) {
                out.extend_from_slice(&self.triggers[m.pattern().as_usize()]);
            }
        }
    }
}

/// Every literal the combo's rules need in the values of one record field name, searched
/// for together the first time a candidate rule asks about one of them: one pass over the
/// values instead of a search per literal and rule. A contiguous NFA: quick to build, and
/// only records that reach a rule's literals are searched.
#[derive(Debug)]
struct FactSearch {
    automaton: AhoCorasick,
    /// A fast first check when the literal set is small enough (as for anchors): most values
    /// searched hold none of the literals.
    quick: Option<Quick>,
    /// Per pattern, the facts its occurrence proves.
    facts: Vec<Vec<u32>>,
}

impl FactSearch {
    fn build(literals: Vec<(String, u32)>) -> Option<FactSearch> {
        let mut patterns: FxHashMap<String, Vec<u32>> = FxHashMap::default();
        for (text, fact) in literals {
            patterns.entry(text).or_default().push(fact);
        }
        let mut patterns: Vec<(String, Vec<u32>)> = patterns.into_iter().collect();
        patterns.sort();
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .build(patterns.iter().map(|(t, _)| t.as_bytes()))
            .ok()?;
        let literals: Vec<&[u8]> = patterns.iter().map(|(t, _)| t.as_bytes()).collect();
        let quick = Quick::exact(&literals);
        Some(FactSearch {
            automaton,
            quick,
            facts: patterns.into_iter().map(|(_, f)| f).collect(),
        })
    }
}

/// What the gate does with the values of one record field name (lower-cased).
#[derive(Debug, Default)]
struct KeyPlan {
    /// The anchors searched for in every record.
    anchors: Option<Search>,
    /// The facts' literals, searched for when a candidate rule asks.
    facts: Vec<(String, u32)>,
    /// Their search, built the first time a record needs it: most keys of most combos never
    /// need one.
    fact_search: OnceLock<Option<FactSearch>>,
}

/// Where one rule field of the combo's literals reads.
#[derive(Debug)]
struct FieldPlan {
    /// The combo's keys (record field names) it may read.
    keys: Vec<u32>,
    /// The key of its own name.
    own: Option<u32>,
    /// When the record lacks the field itself, its value may be synthesized.
    synthetic: bool,
}

/// What the gate checks for one combination of buckets.
#[derive(Debug)]
struct Combo {
    /// A rule the gate cannot reason about: decode.
    always: bool,
    /// Lower-cased record field names to their plans (indices into `plans`).
    keys: FxHashMap<Box<[u8]>, u32>,
    plans: Vec<KeyPlan>,
    /// Bit `n` set: some name in `keys` is `n` bytes long (longer ones: bit 63).
    key_lengths: u64,
    /// Keyword anchors, searched for in the whole text (an occurrence must lie in a value).
    keyword: Option<Search>,
    /// Per rule, its necessary literals.
    rules: Vec<Tree>,
    /// The rule fields the rules' literals name.
    fields: Vec<FieldPlan>,
    /// Number of distinct (rule field, literal) facts.
    facts: usize,
    /// Per proof field, the key of its own name.
    proof_keys: Vec<Option<u32>>,
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
    found: &'r mut Found,
}

/// What one record was found to hold, filled as candidate rules ask.
#[derive(Debug, Default)]
struct Found {
    /// (key, record field index) of each record field whose name is a key of the combo.
    keyed: Vec<(u32, u32)>,
    /// Bit per fact: its literal occurs where its rule field reads.
    facts: Vec<u64>,
    /// Bit per key: its values were searched for facts.
    keys: Vec<u64>,
    /// Bit per rule field: the values of all its keys were searched.
    fields: Vec<u64>,
}

impl Found {
    fn reset(&mut self, combo: &Combo) {
        self.keyed.clear();
        reset_bits(&mut self.facts, combo.facts);
        reset_bits(&mut self.keys, combo.plans.len());
        reset_bits(&mut self.fields, combo.fields.len());
    }
}

fn bit(bits: &[u64], n: u32) -> bool {
    bits[n as usize / 64] & (1 << (n % 64)) != 0
}

fn set_bit(bits: &mut [u64], n: u32) {
    bits[n as usize / 64] |= 1 << (n % 64);
}

/// Clears `bits` to hold `n` bits.
fn reset_bits(bits: &mut Vec<u64>, n: usize) {
    bits.clear();
    bits.resize(n.div_ceil(64), 0);
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
    searchers: SearcherCache,
    buckets: Vec<u32>,
    lowered: Vec<u8>,
    key: Vec<u8>,
    candidates: Vec<u32>,
    found: Found,
    stats: GateStats,
}

/// A DFA (fastest search, slow to build and large) for small literal sets; beyond, the
/// automaton's own choice.
fn dfa_if_small(patterns: usize) -> Option<AhoCorasickKind> {
    (patterns <= 100).then_some(AhoCorasickKind::DFA)
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
/// ASCII text is lowered as it is copied; otherwise ASCII stretches are lower-cased in place,
/// eight bytes at a time found free of other characters, and only the other characters are
/// decoded one by one.
fn lower_same_length(text: &[u8], ascii: bool, out: &mut Vec<u8>) -> bool {
    out.clear();
    if ascii {
        // Copied and lowered in one pass.
        out.extend(text.iter().map(u8::to_ascii_lowercase));
        return true;
    }
    out.extend_from_slice(text);
    let mut at = 0;
    let mut buf = [0u8; 4];
    while let Some(off) = first_non_ascii(&out[at..]) {
        out[at..at + off].make_ascii_lowercase();
        at += off;
        let width = match out[at] {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        };
        let Some(c) = out
            .get(at..at + width)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.chars().next())
        else {
            return false;
        };
        let mut lowered = c.to_lowercase();
        let (Some(l), None) = (lowered.next(), lowered.next()) else {
            return false;
        };
        let l = l.encode_utf8(&mut buf).as_bytes();
        if l.len() != width {
            return false;
        }
        out[at..at + width].copy_from_slice(l);
        at += width;
    }
    out[at..].make_ascii_lowercase();
    true
}

/// The offset of the first byte of `bytes` that is not ASCII.
fn first_non_ascii(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for w in words.by_ref() {
        let word = u64::from_le_bytes(w.try_into().unwrap_or_default());
        if word & 0x8080_8080_8080_8080 != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|b| !b.is_ascii())
        .map(|i| at + i)
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
            searchers: SearcherCache::default(),
            buckets: Vec::new(),
            lowered: Vec::new(),
            candidates: Vec::new(),
            key: Vec::new(),
            found: Found::default(),
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
                let remembered = self.combos.len() < MAX_COMBOS;
                // A combination not remembered is built again for each record: it does not
                // add to the cache either.
                let mut searchers = if remembered {
                    std::mem::take(&mut self.searchers)
                } else {
                    SearcherCache::default()
                };
                let c = Arc::new(self.combo(&buckets, &mut searchers));
                if remembered {
                    self.searchers = searchers;
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
        let mut found = std::mem::take(&mut self.found);
        found.reset(combo);
        // The rules an anchor brings in, and those checked on every record.
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        candidates.extend_from_slice(&combo.eager);
        for (n, f) in record.fields.iter().enumerate() {
            let name = f.key(record.text);
            if combo.key_lengths & length_bit(name.len()) == 0 {
                continue;
            }
            // Keys hold no escapes, so an ASCII key's lower case is already in the lowered
            // text, at the same span (the combo's keys are lower-cased ASCII-wise).
            let lowered_name = if name.is_ascii() {
                &lowered[f.key_start as usize..f.key_end as usize]
            } else {
                self.key.clear();
                self.key.extend_from_slice(name);
                self.key.make_ascii_lowercase();
                self.key.as_slice()
            };
            if let Some(&key) = combo.keys.get(lowered_name) {
                found
                    .keyed
                    .push((key, u32::try_from(n).unwrap_or(u32::MAX)));
                if let Some(anchors) = &combo.plans[key as usize].anchors {
                    let value = &lowered[f.value_start as usize..f.value_end as usize];
                    anchors.run(value, &mut candidates, |_, _| true);
                }
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
        let mut facts = Facts {
            record,
            lowered: &lowered,
            scoped,
            found: &mut found,
        };
        let may = candidates
            .iter()
            .any(|&r| Self::holds(combo, &combo.rules[r as usize], &mut facts, &mut synthetic));
        if may {
            if synthetic {
                self.stats.synthetic += 1;
            } else {
                self.stats.literal += 1;
            }
        }
        self.found = found;
        self.candidates = candidates;
        self.lowered = lowered;
        may
    }

    /// True when the keyword literal may be present: it occurs in some field's value, or
    /// normalization may synthesize fields.
    fn keyword_present(
        facts: &Facts<'_, '_>,
        finder: &memchr::memmem::Finder<'_>,
        synthetic: &mut bool,
    ) -> bool {
        if facts.scoped {
            *synthetic = true;
            return true;
        }
        let len = finder.needle().len();
        finder
            .find_iter(facts.lowered)
            .any(|at| facts.record.field_index_at(at, at + len).is_some())
    }

    /// True when facts of rule field `field` may hold as `test` asks of the found facts: it
    /// may read a synthesized value, or the literals occur where it reads. The values of its
    /// keys are searched for all their facts the first time one is asked about.
    fn fact(
        combo: &Combo,
        facts: &mut Facts<'_, '_>,
        field: u32,
        test: impl Fn(&[u64]) -> bool,
        synthetic: &mut bool,
    ) -> bool {
        let plan = &combo.fields[field as usize];
        let found = &mut *facts.found;
        if plan.synthetic && !found.keyed.iter().any(|&(k, _)| Some(k) == plan.own) {
            *synthetic = true;
            return true;
        }
        if !bit(&found.fields, field) {
            set_bit(&mut found.fields, field);
            for &key in &plan.keys {
                if bit(&found.keys, key) {
                    continue;
                }
                set_bit(&mut found.keys, key);
                let plan = &combo.plans[key as usize];
                if plan.facts.is_empty() {
                    continue;
                }
                let built = plan
                    .fact_search
                    .get_or_init(|| FactSearch::build(plan.facts.clone()));
                let Some(search) = built else {
                    // Cannot search: every fact may hold.
                    for &(_, fact) in &plan.facts {
                        set_bit(&mut found.facts, fact);
                    }
                    continue;
                };
                for &(_, n) in found.keyed.iter().filter(|&&(k, _)| k == key) {
                    let f = &facts.record.fields[n as usize];
                    let value = &facts.lowered[f.value_start as usize..f.value_end as usize];
                    // No literal starts before the quick search's leftmost match.
                    let from = match &search.quick {
                        Some(q) => match q.earliest(value) {
                            Some(at) => at,
                            None => continue,
                        },
                        None => 0,
                    };
                    for m in search.automaton.find_overlapping_iter(&value[from..]) {
                        for &fact in &search.facts[m.pattern().as_usize()] {
                            set_bit(&mut found.facts, fact);
                        }
                    }
                }
            }
        }
        test(&found.facts)
    }

    fn holds(combo: &Combo, tree: &Tree, facts: &mut Facts<'_, '_>, synthetic: &mut bool) -> bool {
        match tree {
            Tree::True => true,
            Tree::Keyword(finder) => Self::keyword_present(facts, finder, synthetic),
            &Tree::Fact { field, fact } => {
                Self::fact(combo, facts, field, |f| bit(f, fact), synthetic)
            }
            Tree::AnyFact { field, mask } => {
                let any = |found: &[u64]| mask.iter().any(|&(w, b)| found[w as usize] & b != 0);
                Self::fact(combo, facts, *field, any, synthetic)
            }
            Tree::All(parts) => parts
                .iter()
                .all(|t| Self::holds(combo, t, facts, synthetic)),
            Tree::Any(parts) => parts
                .iter()
                .any(|t| Self::holds(combo, t, facts, synthetic)),
            Tree::Unless(proof) => !Self::proven(combo, proof, facts),
        }
    }

    /// True when the record's text proves the condition: each compared field is a string
    /// the record holds once under the rule field's own name, so it is the value the engine
    /// reads, and it holds no escapes but `\\` and `\"`, so its escaped, lower-cased text
    /// compares as the decoded value would (an occurrence counts only where an escape does not
    /// split it).
    fn proven(combo: &Combo, proof: &Proven, facts: &Facts<'_, '_>) -> bool {
        match proof {
            Proven::Test { field, how, text } => {
                let Some(key) = combo.proof_keys[*field as usize] else {
                    return false;
                };
                let mut named = facts.found.keyed.iter().filter(|&&(k, _)| k == key);
                let (Some(&(_, n)), None) = (named.next(), named.next()) else {
                    return false;
                };
                let f = &facts.record.fields[n as usize];
                let span = f.value_start as usize..f.value_end as usize;
                match f.kind {
                    RawKind::Str => {}
                    RawKind::EscapedStr if simple_escapes(&facts.record.text[span.clone()]) => {}
                    _ => return false,
                }
                let value = &facts.lowered[span];
                match how {
                    Compare::Exact => value == &**text,
                    Compare::Prefix => value.starts_with(text),
                    Compare::Suffix => {
                        value.ends_with(text) && unsplit(value, value.len() - text.len())
                    }
                    Compare::Contains => {
                        memchr::memmem::find_iter(value, &**text).any(|at| unsplit(value, at))
                    }
                }
            }
            Proven::All(parts) => parts.iter().all(|p| Self::proven(combo, p, facts)),
            Proven::Any(parts) => parts.iter().any(|p| Self::proven(combo, p, facts)),
        }
    }

    /// What to check for records visiting `buckets`.
    fn combo(&self, buckets: &[u32], searchers: &mut SearcherCache) -> Combo {
        let mut combo = Combo {
            always: false,
            keys: FxHashMap::default(),
            plans: Vec::new(),
            key_lengths: 0,
            keyword: None,
            rules: Vec::new(),
            fields: Vec::new(),
            facts: 0,
            proof_keys: Vec::new(),
            eager: Vec::new(),
        };
        let mut rule_index: FxHashMap<u32, u32> = FxHashMap::default();
        let mut known = Known::default();
        // Rules without anchors are checked on every record, unless nothing is known of them.
        for &b in buckets {
            for &r in &self.rules.prefilter().bucket(b).plain {
                let need = self.rules.detections[r as usize].detection.need();
                let tree = known.tree(&need);
                if matches!(tree, Tree::True) {
                    combo.always = true;
                    return combo;
                }
                combo.rules.push(tree);
                let at = u32::try_from(combo.rules.len() - 1).unwrap_or(u32::MAX);
                rule_index.insert(r, at);
                combo.eager.push(at);
            }
        }
        let mut anchors_by_key: FxHashMap<Box<str>, Vec<(String, u32)>> = FxHashMap::default();
        let mut keyword: Vec<(String, u32)> = Vec::new();
        for &b in buckets {
            for scan in &self.rules.prefilter().bucket(b).scans {
                for (literal, anchored) in scan.literals.iter().zip(&scan.rules) {
                    let text = escaped(literal);
                    for &r in anchored {
                        let at = *rule_index.entry(r).or_insert_with(|| {
                            let need = self.rules.detections[r as usize].detection.need();
                            combo.rules.push(known.tree(&need));
                            u32::try_from(combo.rules.len() - 1).unwrap_or(u32::MAX)
                        });
                        match (&text, scan.field) {
                            (Some(t), None) => keyword.push((t.clone(), at)),
                            (Some(t), Some(f)) if !self.sources[f as usize].synthetic => {
                                for k in &self.sources[f as usize].keys {
                                    anchors_by_key
                                        .entry(k.clone())
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
                        .push(known.tree(&Need::Literal(None, literal.clone())));
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
        combo.facts = known.count;
        // Every record field name a rule field of the facts or an anchor may read.
        let mut facts_by_key: FxHashMap<Box<str>, Vec<(String, u32)>> = FxHashMap::default();
        for (field, literals) in known.fields.iter().zip(&known.by_field) {
            for k in &self.sources[*field as usize].keys {
                facts_by_key
                    .entry(k.clone())
                    .or_default()
                    .extend(literals.iter().cloned());
            }
        }
        let own: Vec<Box<str>> = known
            .proof_fields
            .iter()
            .map(|&f| self.rules.fields.name(f).to_ascii_lowercase().into())
            .collect();
        let mut names: Vec<Box<str>> = anchors_by_key
            .keys()
            .chain(facts_by_key.keys())
            .chain(&own)
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let mut plan = KeyPlan::default();
            if let Some(anchors) = anchors_by_key.remove(&name) {
                let Some(search) = Search::build(anchors, false, searchers) else {
                    // Cannot search: decode everything of this route.
                    combo.always = true;
                    return combo;
                };
                plan.anchors = Some(search);
            }
            plan.facts = facts_by_key.remove(&name).unwrap_or_default();
            combo.key_lengths |= length_bit(name.len());
            let n = u32::try_from(combo.plans.len()).unwrap_or(u32::MAX);
            combo.keys.insert(Box::from(name.as_bytes()), n);
            combo.plans.push(plan);
        }
        let key_of = |k: &str| combo.keys.get(k.as_bytes()).copied();
        combo.proof_keys = own.iter().map(|k| key_of(k)).collect();
        combo.fields = known
            .fields
            .iter()
            .map(|&f| {
                let sources = &self.sources[f as usize];
                FieldPlan {
                    keys: sources.keys.iter().filter_map(|k| key_of(k)).collect(),
                    own: key_of(&self.rules.fields.name(f).to_ascii_lowercase()),
                    synthetic: sources.synthetic,
                }
            })
            .collect();
        if !keyword.is_empty() {
            match Search::build(keyword, true, searchers) {
                Some(s) => combo.keyword = Some(s),
                None => combo.always = true,
            }
        }
        combo
    }
}

/// True when every escape in the JSON string text is `\\` or `\"`.
fn simple_escapes(text: &[u8]) -> bool {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\\', &text[at..]) {
        match text.get(at + i + 1) {
            Some(b'\\' | b'"') => at += i + 2,
            _ => return false,
        }
    }
    true
}

/// True when position `at` of escaped text starts a character (an even number of
/// backslashes precedes it).
fn unsplit(text: &[u8], at: usize) -> bool {
    text[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
}

/// The facts of one combo's trees: each distinct (rule field, literal) once, numbered, and
/// grouped by rule field.
#[derive(Default)]
struct Known {
    /// Rule fields by combo field number.
    fields: Vec<FieldId>,
    numbers: FxHashMap<FieldId, u32>,
    facts: FxHashMap<(FieldId, String), u32>,
    /// Per combo field, its literals and their facts.
    by_field: Vec<Vec<(String, u32)>>,
    count: usize,
    /// Rule fields proofs compare, by proof field number.
    proof_fields: Vec<FieldId>,
}

impl Known {
    /// A rule's necessary literals as facts (keywords with their own searcher); a literal the
    /// text cannot show (empty, control characters) is always satisfied.
    fn tree(&mut self, need: &Need) -> Tree {
        match need {
            Need::Always => Tree::True,
            Need::Literal(field, text) => match (field, escaped(text)) {
                (_, None) => Tree::True,
                (None, Some(e)) => Tree::Keyword(Box::new(
                    memchr::memmem::Finder::new(e.as_bytes()).into_owned(),
                )),
                (&Some(id), Some(e)) => {
                    let next = u32::try_from(self.fields.len()).unwrap_or(u32::MAX);
                    let field = *self.numbers.entry(id).or_insert(next);
                    if field == next {
                        self.fields.push(id);
                        self.by_field.push(Vec::new());
                    }
                    let count = u32::try_from(self.count).unwrap_or(u32::MAX);
                    let fact = match self.facts.entry((id, e)) {
                        Entry::Occupied(o) => *o.get(),
                        Entry::Vacant(v) => {
                            self.by_field[field as usize].push((v.key().1.clone(), count));
                            self.count += 1;
                            *v.insert(count)
                        }
                    };
                    Tree::Fact { field, fact }
                }
            },
            Need::All(parts) => Tree::All(parts.iter().map(|p| self.tree(p)).collect()),
            Need::Unless(proof) => self.proven(proof).map_or(Tree::True, Tree::Unless),
            Need::Any(parts) => {
                let parts: Vec<Tree> = parts.iter().map(|p| self.tree(p)).collect();
                Self::any_fact(&parts).unwrap_or(Tree::Any(parts))
            }
        }
    }

    /// A proof as the gate checks it; `None` when nothing of it can be checked on the text.
    fn proven(&mut self, proof: &Proof) -> Option<Proven> {
        let some = |parts: Vec<Proven>, all: fn(Vec<Proven>) -> Proven| match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => Some(all(parts)),
        };
        match proof {
            Proof::Test(id, how, text) => {
                let text = escaped(text)?;
                let field = match self.proof_fields.iter().position(|f| f == id) {
                    Some(at) => at,
                    None => {
                        self.proof_fields.push(*id);
                        self.proof_fields.len() - 1
                    }
                };
                Some(Proven::Test {
                    field: u32::try_from(field).ok()?,
                    how: *how,
                    text: text.into_bytes().into_boxed_slice(),
                })
            }
            Proof::All(parts) => {
                let parts: Option<Vec<Proven>> = parts.iter().map(|p| self.proven(p)).collect();
                some(parts?, Proven::All)
            }
            Proof::Any(parts) => {
                let parts = parts.iter().filter_map(|p| self.proven(p)).collect();
                some(parts, Proven::Any)
            }
        }
    }

    /// Alternatives that are all facts of one rule field, as one mask test.
    fn any_fact(parts: &[Tree]) -> Option<Tree> {
        let mut one = None;
        let mut mask: Vec<(u32, u64)> = Vec::new();
        for p in parts {
            let &Tree::Fact { field, fact } = p else {
                return None;
            };
            if one.is_some_and(|o| o != field) {
                return None;
            }
            one = Some(field);
            let (word, b) = (fact / 64, 1u64 << (fact % 64));
            match mask.iter_mut().find(|(w, _)| *w == word) {
                Some((_, bits)) => *bits |= b,
                None => mask.push((word, b)),
            }
        }
        Some(Tree::AnyFact {
            field: one?,
            mask: mask.into_boxed_slice(),
        })
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

    /// A comparison proved on escaped text counts only where no escape other than `\\` and
    /// `\"` occurs, and only at positions an escape does not split.
    #[test]
    fn proofs_see_escapes_that_could_split_a_match() {
        assert!(simple_escapes(br#"C:\\Windows\\x \"q\""#));
        assert!(simple_escapes(b"plain"));
        assert!(!simple_escapes(br#"line\nnext"#));
        assert!(!simple_escapes(br#"ends\"#));
        // `a`, an escaped backslash, an escaped newline, `b`.
        let text = br#"a\\\nb"#;
        assert!(unsplit(text, 1));
        assert!(!unsplit(text, 2));
        assert!(unsplit(text, 3));
        assert!(!unsplit(text, 4));
    }

    /// The factors of keyword literals stand for them: every literal holds one, and no
    /// literal occurs before the earliest start the quick search gives.
    #[test]
    fn factors_stand_for_their_literals() {
        let literals: Vec<&[u8]> = vec![
            b"dpapi::masterkey",
            b"kerberos::ptt",
            b"lsadump::",
            b"eo.oe.kiwi",
            br"\\mimilib.dll",
            br"c:\\",
        ];
        let (factors, back) = factors(&literals);
        let factors: Vec<&[u8]> = factors.iter().map(Vec::as_slice).collect();
        assert_eq!(
            factors,
            vec![&b"::"[..], b"c:", b"eo.oe.kiwi", b"mimilib.dll"],
            "`::` for the three holding it; escaped backslashes trimmed"
        );
        assert_eq!(back, 8, "`kerberos::` holds its factor 8 bytes in");
        for l in &literals {
            assert!(factors.iter().any(|f| memchr::memmem::find(l, f).is_some()));
        }
        let quick = Quick::factored(&literals).expect("a quick search");
        for text in [
            &b"x kerberos::ptt y"[..],
            b"path \\\\mimilib.dll",
            b"lsadump:: and dpapi::masterkey",
            b"c:\\\\windows",
            b"nothing here: a : b",
        ] {
            let first = literals
                .iter()
                .filter_map(|l| memchr::memmem::find(text, l))
                .min();
            match (quick.earliest(text), first) {
                (None, None) => {}
                (Some(at), Some(first)) => assert!(at <= first, "{text:?}"),
                (None, Some(_)) => panic!("a literal missed in {text:?}"),
                (Some(_), None) => {}
            }
        }
        assert!(quick.earliest(b"nothing here: a : b").is_none());
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
