//! A compiled detection: searches with their fields interned, and the condition over them.
//! `matches(&EventView) -> bool` evaluates each search at most once per event.
//!
//! It also answers two questions for the prefilter, from the condition's logic: which Windows
//! event ids the rule can match at all ([`CompiledDetection::event_ids`]), and which literal
//! texts must be present in which fields for it to match ([`CompiledDetection::need`]).

use std::collections::BTreeSet;

use chainwatch_config::sigma::{Condition, Detection, FieldItem, Pattern, SearchBody};

use super::fields::{EventView, FieldId};
use super::value::{CompileCtx, Matcher, StrTest, ValueSet};
use crate::prefilter::{Need, Proof};

/// One item of a map: a field's values, or keywords (no field: any field).
#[derive(Debug, Clone)]
struct FieldTest {
    field: Option<FieldId>,
    values: ValueSet,
}

impl FieldTest {
    fn matches(&self, view: &EventView<'_>) -> bool {
        match self.field {
            Some(id) => self.values.matches(view.get(id), view),
            None => self.values.matches_any_field(view),
        }
    }
}

#[derive(Debug, Clone)]
enum Cond {
    Search(usize),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    AnyOf(Vec<usize>),
    AllOf(Vec<usize>),
}

/// A compiled Sigma detection.
#[derive(Debug, Clone)]
pub(crate) struct CompiledDetection {
    /// Per search: any map matches when all its tests do.
    searches: Vec<Vec<Vec<FieldTest>>>,
    conditions: Vec<Cond>,
    /// The `EventID` field, when a rule reads it.
    event_id_field: Option<FieldId>,
}

fn compile_item(item: &FieldItem, ctx: &mut CompileCtx<'_>) -> Result<FieldTest, String> {
    match item.field.as_deref() {
        Some(name) => Ok(FieldTest {
            field: Some(ctx.fields.intern(name, ctx.tables)),
            values: ValueSet::compile(item, ctx).map_err(|e| format!("field '{name}': {e}"))?,
        }),
        // `'|all': [...]`: keywords in a map.
        None => Ok(FieldTest {
            field: None,
            values: ValueSet::keywords(item, ctx).map_err(|e| format!("keywords: {e}"))?,
        }),
    }
}

fn compile_cond(c: &Condition, names: &[&str]) -> Result<Cond, String> {
    let expand = |p: &Pattern| -> Vec<usize> {
        names
            .iter()
            .enumerate()
            // `them` leaves out identifiers starting with '_', as the specification says.
            .filter(|(_, n)| p.matches(n) && !(matches!(p, Pattern::Them) && n.starts_with('_')))
            .map(|(i, _)| i)
            .collect()
    };
    Ok(match c {
        Condition::Search(name) => Cond::Search(
            names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| format!("the condition names unknown search {name:?}"))?,
        ),
        Condition::Not(inner) => Cond::Not(Box::new(compile_cond(inner, names)?)),
        Condition::And(terms) => Cond::And(
            terms
                .iter()
                .map(|t| compile_cond(t, names))
                .collect::<Result<_, _>>()?,
        ),
        Condition::Or(terms) => Cond::Or(
            terms
                .iter()
                .map(|t| compile_cond(t, names))
                .collect::<Result<_, _>>()?,
        ),
        Condition::OneOf(p) => Cond::AnyOf(expand(p)),
        Condition::AllOf(p) => Cond::AllOf(expand(p)),
    })
}

/// Event ids: `None` is "any"; sets combine as the logic says.
fn union(sets: impl Iterator<Item = Option<BTreeSet<u32>>>) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for s in sets {
        out.extend(s?);
    }
    Some(out)
}

fn intersection(sets: impl Iterator<Item = Option<BTreeSet<u32>>>) -> Option<BTreeSet<u32>> {
    let mut out: Option<BTreeSet<u32>> = None;
    for s in sets.flatten() {
        out = Some(match out {
            None => s,
            Some(o) => o.intersection(&s).copied().collect(),
        });
    }
    out
}

impl CompiledDetection {
    pub(crate) fn compile(d: &Detection, ctx: &mut CompileCtx<'_>) -> Result<Self, String> {
        let mut searches = Vec::with_capacity(d.searches.len());
        for s in &d.searches {
            let maps = match &s.body {
                SearchBody::Maps(maps) => maps
                    .iter()
                    .map(|m| {
                        m.items
                            .iter()
                            .map(|i| compile_item(i, ctx))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>(),
                SearchBody::Keywords(item) => compile_item(item, ctx).map(|t| vec![vec![t]]),
            }
            .map_err(|e| format!("search '{}': {e}", s.name))?;
            searches.push(maps);
        }
        let names: Vec<&str> = d.searches.iter().map(|s| s.name.as_str()).collect();
        let conditions = d
            .conditions
            .iter()
            .map(|c| compile_cond(c, &names))
            .collect::<Result<_, _>>()?;
        let event_id_field = searches
            .iter()
            .flatten()
            .flatten()
            .filter_map(|t: &FieldTest| t.field)
            .find(|id| ctx.fields.name(*id).eq_ignore_ascii_case("EventID"));
        Ok(Self {
            searches,
            conditions,
            event_id_field,
        })
    }

    /// Whether the event matches any of the rule's conditions.
    pub(crate) fn matches(&self, view: &EventView<'_>) -> bool {
        let mut memo: Vec<Option<bool>> = vec![None; self.searches.len()];
        self.conditions
            .iter()
            .any(|c| self.eval(c, view, &mut memo))
    }

    fn eval(&self, c: &Cond, view: &EventView<'_>, memo: &mut [Option<bool>]) -> bool {
        match c {
            Cond::Search(i) => self.search(*i, view, memo),
            Cond::Not(inner) => !self.eval(inner, view, memo),
            Cond::And(terms) => terms.iter().all(|t| self.eval(t, view, memo)),
            Cond::Or(terms) => terms.iter().any(|t| self.eval(t, view, memo)),
            Cond::AnyOf(ids) => ids.iter().any(|i| self.search(*i, view, memo)),
            Cond::AllOf(ids) => ids.iter().all(|i| self.search(*i, view, memo)),
        }
    }

    fn search(&self, i: usize, view: &EventView<'_>, memo: &mut [Option<bool>]) -> bool {
        if let Some(v) = memo[i] {
            return v;
        }
        let hit = self.searches[i]
            .iter()
            .any(|tests| tests.iter().all(|t| t.matches(view)));
        memo[i] = Some(hit);
        hit
    }

    /// The Windows event ids the rule can match, when its logic pins them (`EventID: 4688` in
    /// a selection every match needs); `None` when it can match any id.
    pub(crate) fn event_ids(&self) -> Option<BTreeSet<u32>> {
        let eid = self.event_id_field?;
        let test_ids = |t: &FieldTest| -> Option<BTreeSet<u32>> {
            if t.field != Some(eid) || t.values.neq || (t.values.all && t.values.values.len() > 1) {
                return None;
            }
            union(t.values.values.iter().map(|alts| {
                union(alts.iter().map(|m| match m {
                    Matcher::Int(i) => u32::try_from(*i).ok().map(|i| BTreeSet::from([i])),
                    Matcher::Str(StrTest::Exact(s)) => {
                        s.parse::<u32>().ok().map(|i| BTreeSet::from([i]))
                    }
                    _ => None,
                }))
            }))
        };
        let search_ids = |i: usize| -> Option<BTreeSet<u32>> {
            union(
                self.searches[i]
                    .iter()
                    .map(|tests| intersection(tests.iter().map(test_ids))),
            )
        };
        fn walk(
            c: &Cond,
            search_ids: &dyn Fn(usize) -> Option<BTreeSet<u32>>,
        ) -> Option<BTreeSet<u32>> {
            match c {
                Cond::Search(i) => search_ids(*i),
                Cond::Not(_) => None,
                Cond::And(terms) => intersection(terms.iter().map(|t| walk(t, search_ids))),
                Cond::Or(terms) => union(terms.iter().map(|t| walk(t, search_ids))),
                Cond::AnyOf(ids) => union(ids.iter().map(|i| search_ids(*i))),
                Cond::AllOf(ids) => intersection(ids.iter().map(|i| search_ids(*i))),
            }
        }
        union(self.conditions.iter().map(|c| walk(c, &search_ids)))
    }

    /// The literal texts that must be present (lower-cased) for the rule to match.
    pub(crate) fn need(&self) -> Need {
        let test_need = |t: &FieldTest| -> Need {
            if t.values.neq {
                return Need::Always;
            }
            let per_value = t.values.values.iter().map(|alts| {
                Need::any(alts.iter().map(|m| {
                    match m {
                        Matcher::Str(test) => Need::all(
                            test.required_literals()
                                .into_iter()
                                .map(|lit| Need::Literal(t.field, lit)),
                        ),
                        // A number matches its decimal text, or a string that reads as it:
                        // with a sign, leading zeros or spaces, or in hexadecimal after `0x`.
                        // Each holds the digits of its magnitude in one of the two bases.
                        // (Not the event id: rules are routed by it already.)
                        Matcher::Int(i) if t.field != self.event_id_field => Need::any([
                            Need::Literal(t.field, i.unsigned_abs().to_string()),
                            Need::Literal(t.field, format!("{:x}", i.unsigned_abs())),
                        ]),
                        _ => Need::Always,
                    }
                }))
            });
            if t.values.all {
                Need::all(per_value)
            } else {
                Need::any(per_value)
            }
        };
        let search_need = |i: usize| -> Need {
            Need::any(
                self.searches[i]
                    .iter()
                    .map(|tests| Need::all(tests.iter().map(test_need))),
            )
        };
        let walk = |c: &Cond| self.walk_need(c, &search_need);
        Need::any(self.conditions.iter().map(walk))
    }

    fn walk_need(&self, c: &Cond, search_need: &dyn Fn(usize) -> Need) -> Need {
        match c {
            Cond::Search(i) => search_need(*i),
            Cond::Not(inner) => self.proof(inner).map_or(Need::Always, Need::Unless),
            Cond::And(terms) => Need::all(terms.iter().map(|t| self.walk_need(t, search_need))),
            Cond::Or(terms) => Need::any(terms.iter().map(|t| self.walk_need(t, search_need))),
            Cond::AnyOf(ids) => Need::any(ids.iter().map(|i| search_need(*i))),
            Cond::AllOf(ids) => Need::all(ids.iter().map(|i| search_need(*i))),
        }
    }

    /// The condition as string comparisons a record's raw text can prove true; `None` when
    /// it holds anything else (what cannot be proved is dropped from alternatives).
    fn proof(&self, c: &Cond) -> Option<Proof> {
        let test = |t: &FieldTest| -> Option<Proof> {
            let field = t.field?;
            if t.values.neq || t.values.cased() {
                return None;
            }
            let per_value = t.values.values.iter().map(|alts| {
                Proof::any(alts.iter().map(|m| {
                    match m {
                        Matcher::Str(test) => test
                            .comparison()
                            .map(|(how, text)| Proof::Test(field, how, text)),
                        _ => None,
                    }
                }))
            });
            if t.values.all {
                Proof::all(per_value)
            } else {
                Proof::any(per_value)
            }
        };
        let search = |i: usize| {
            Proof::any(
                self.searches[i]
                    .iter()
                    .map(|tests| Proof::all(tests.iter().map(test))),
            )
        };
        match c {
            Cond::Search(i) => search(*i),
            Cond::Not(_) => None,
            Cond::And(terms) => Proof::all(terms.iter().map(|t| self.proof(t))),
            Cond::Or(terms) => Proof::any(terms.iter().map(|t| self.proof(t))),
            Cond::AnyOf(ids) => Proof::any(ids.iter().map(|i| search(*i))),
            Cond::AllOf(ids) => Proof::all(ids.iter().map(|i| search(*i))),
        }
    }
}
