//! A compiled detection: searches with their field references resolved, and the condition over
//! them. `matches(&Event) -> bool`, evaluating each search at most once.

use chainwatch_config::sigma::{Condition, Detection, FieldItem, Pattern, SearchBody};
use chainwatch_model::{Canonical, Event};

use super::tables::Tables;
use super::value::{CompileError, Resolved, ValueSet};

/// Where a rule's field is read from.
#[derive(Debug, Clone)]
pub(crate) struct FieldRef {
    name: Box<str>,
    fallback: Option<Canonical>,
}

impl FieldRef {
    pub(crate) fn new(name: &str, tables: &Tables) -> Self {
        Self {
            name: name.into(),
            fallback: tables.canonical(name),
        }
    }

    /// The event's own field of this name, else the canonical field it maps to.
    pub(crate) fn resolve<'e>(&self, event: &'e Event) -> Option<Resolved<'e>> {
        if let Some(v) = event.fields.get(&self.name) {
            return Some(Resolved::Value(v));
        }
        self.fallback
            .and_then(|c| event.canonical(c))
            .map(Resolved::Text)
    }

    /// The canonical field this name falls back to.
    pub(crate) fn canonical(&self) -> Option<Canonical> {
        self.fallback
    }
}

#[derive(Debug, Clone)]
struct FieldTest {
    field: FieldRef,
    values: ValueSet,
}

#[derive(Debug, Clone)]
enum CompiledSearch {
    /// Any map matches when all its tests do.
    Maps(Vec<Vec<FieldTest>>),
    /// Values searched in every field.
    Keywords(ValueSet),
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
    searches: Vec<CompiledSearch>,
    conditions: Vec<Cond>,
}

fn compile_item(item: &FieldItem, tables: &Tables) -> Result<FieldTest, CompileError> {
    let name = item.field.as_deref().unwrap_or_default();
    Ok(FieldTest {
        field: FieldRef::new(name, tables),
        values: ValueSet::compile(item).map_err(|e| format!("field '{name}': {e}"))?,
    })
}

fn compile_cond(c: &Condition, names: &[&str]) -> Result<Cond, CompileError> {
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

impl CompiledDetection {
    pub(crate) fn compile(d: &Detection, tables: &Tables) -> Result<Self, CompileError> {
        let mut searches = Vec::with_capacity(d.searches.len());
        for s in &d.searches {
            let compiled = match &s.body {
                SearchBody::Maps(maps) => CompiledSearch::Maps(
                    maps.iter()
                        .map(|m| {
                            m.items
                                .iter()
                                .map(|i| compile_item(i, tables))
                                .collect::<Result<Vec<_>, _>>()
                        })
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("search '{}': {e}", s.name))?,
                ),
                SearchBody::Keywords(item) => CompiledSearch::Keywords(
                    ValueSet::keywords(item).map_err(|e| format!("search '{}': {e}", s.name))?,
                ),
            };
            searches.push(compiled);
        }
        let names: Vec<&str> = d.searches.iter().map(|s| s.name.as_str()).collect();
        let conditions = d
            .conditions
            .iter()
            .map(|c| compile_cond(c, &names))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            searches,
            conditions,
        })
    }

    /// Whether the event matches any of the rule's conditions.
    pub(crate) fn matches(&self, event: &Event) -> bool {
        let mut memo: Vec<Option<bool>> = vec![None; self.searches.len()];
        self.conditions
            .iter()
            .any(|c| self.eval(c, event, &mut memo))
    }

    fn eval(&self, c: &Cond, e: &Event, memo: &mut [Option<bool>]) -> bool {
        match c {
            Cond::Search(i) => self.search(*i, e, memo),
            Cond::Not(inner) => !self.eval(inner, e, memo),
            Cond::And(terms) => terms.iter().all(|t| self.eval(t, e, memo)),
            Cond::Or(terms) => terms.iter().any(|t| self.eval(t, e, memo)),
            Cond::AnyOf(ids) => ids.iter().any(|i| self.search(*i, e, memo)),
            Cond::AllOf(ids) => ids.iter().all(|i| self.search(*i, e, memo)),
        }
    }

    fn search(&self, i: usize, e: &Event, memo: &mut [Option<bool>]) -> bool {
        if let Some(v) = memo[i] {
            return v;
        }
        let other = |name: &str| {
            FieldRef {
                name: name.into(),
                fallback: None,
            }
            .resolve(e)
        };
        let hit = match &self.searches[i] {
            CompiledSearch::Maps(maps) => maps.iter().any(|tests| {
                tests
                    .iter()
                    .all(|t| t.values.matches(t.field.resolve(e), &other))
            }),
            CompiledSearch::Keywords(values) => e
                .fields
                .iter()
                .any(|(_, v)| values.matches(Some(Resolved::Value(v)), &other)),
        };
        memo[i] = Some(hit);
        hit
    }
}
