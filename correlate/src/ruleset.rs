//! A rule set: every detection and correlation rule compiled, with correlation references
//! resolved. Immutable once built, shared (`Arc`) by every engine; a reload builds a new one.

use std::collections::HashMap;
use std::time::Duration;

use chainwatch_config::sigma::{
    CorrelationRule, CorrelationType, DetectionRule, RuleDoc, RuleMeta,
};
use chainwatch_config::{Diagnostic, Diagnostics, PlaybookSpec};
use chainwatch_model::{Event, RuleRef, Severity, TechniqueId};

use crate::sigma::Tables;
use crate::sigma::detection::{CompiledDetection, FieldRef};
use crate::sigma::tables::LogsourceFilter;

/// What alerts say of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    /// Id, title, level.
    pub rule: RuleRef,
    /// The Sigma `name`.
    pub name: Option<String>,
    /// The Sigma `description`.
    pub description: Option<String>,
    /// ATT&CK techniques from the tags, in tag order.
    pub techniques: Vec<TechniqueId>,
}

impl RuleInfo {
    fn of(meta: &RuleMeta) -> Self {
        let mut techniques = Vec::new();
        for t in &meta.tags {
            if let Ok(id) = TechniqueId::parse(t)
                && !techniques.contains(&id)
            {
                techniques.push(id);
            }
        }
        Self {
            rule: RuleRef {
                id: meta.key().to_owned(),
                title: meta.title.clone(),
                level: meta.level.unwrap_or(Severity::Medium),
            },
            name: meta.name.clone(),
            description: meta.description.clone(),
            techniques,
        }
    }
}

/// A compiled detection rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// What alerts say of it.
    pub info: RuleInfo,
    pub(crate) logsource: LogsourceFilter,
    pub(crate) detection: CompiledDetection,
    /// Alerts on its own: not referenced by a correlation, or referenced with `generate: true`.
    pub standalone: bool,
    /// (correlation index, stage index) pairs this rule feeds.
    pub(crate) feeds: Vec<(usize, usize)>,
}

impl CompiledRule {
    /// Whether an event matches this rule.
    pub fn matches(&self, event: &Event) -> bool {
        self.logsource.matches(event) && self.detection.matches(event)
    }
}

/// One group-by key of a correlation, resolved per stage (aliases give one field per rule).
#[derive(Debug, Clone)]
pub(crate) struct GroupField {
    pub(crate) name: String,
    pub(crate) per_stage: Vec<FieldRef>,
}

/// A compiled correlation rule.
#[derive(Debug, Clone)]
pub struct CompiledCorrelation {
    /// What alerts say of it.
    pub info: RuleInfo,
    /// Its type.
    pub kind: CorrelationType,
    /// The detection rules of its stages, in order (indices into the rule set's detections).
    pub stages: Vec<usize>,
    pub(crate) group_by: Vec<GroupField>,
    /// The timespan.
    pub timespan: Duration,
    /// The playbook it carries.
    pub playbook: Option<PlaybookSpec>,
    /// Severity of its findings: the playbook's priority, else its level.
    pub severity: Severity,
}

/// Every compiled rule.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Detection rules.
    pub detections: Vec<CompiledRule>,
    /// Correlation rules.
    pub correlations: Vec<CompiledCorrelation>,
    /// Rules that can only match given Windows (channel, event id) pairs, by pair.
    by_event: HashMap<(String, u32), Vec<usize>>,
    /// Rules that may match any event their logsource allows.
    general: Vec<usize>,
}

fn problem(meta: &RuleMeta, message: impl Into<String>) -> Diagnostic {
    Diagnostic::new(&meta.file, meta.line, 0, message).in_rule(meta.key())
}

impl RuleSet {
    /// Compiles rules with the built-in tables. Rules that cannot be compiled are reported and
    /// left out; the rest are usable.
    pub fn compile(docs: &[RuleDoc]) -> (RuleSet, Diagnostics) {
        match Tables::builtin() {
            Ok(t) => Self::compile_with(docs, &t),
            Err(e) => {
                let mut d = Diagnostics::default();
                d.push(Diagnostic::new(
                    std::path::Path::new("<built-in tables>"),
                    0,
                    0,
                    e,
                ));
                (RuleSet::default(), d)
            }
        }
    }

    /// Compiles rules with the given tables.
    pub fn compile_with(docs: &[RuleDoc], tables: &Tables) -> (RuleSet, Diagnostics) {
        let mut diags = Diagnostics::default();
        let mut detections = Vec::new();
        let mut detection_metas: Vec<&RuleMeta> = Vec::new();
        let mut seen_ids: HashMap<&str, &RuleMeta> = HashMap::new();
        let mut correlations_src: Vec<&CorrelationRule> = Vec::new();
        for doc in docs {
            let meta = doc.meta();
            if let Some(id) = &meta.id {
                if let Some(first) = seen_ids.get(id.as_str()) {
                    diags.push(problem(
                        meta,
                        format!(
                            "duplicate rule id {id} (first in {}:{})",
                            first.file.display(),
                            first.line
                        ),
                    ));
                    continue;
                }
                seen_ids.insert(id, meta);
            }
            match doc {
                RuleDoc::Detection(rule) => match compile_detection(rule, tables) {
                    Ok(c) => {
                        detections.push(c);
                        detection_metas.push(meta);
                    }
                    Err(e) => diags.push(problem(meta, e)),
                },
                RuleDoc::Correlation(c) => correlations_src.push(c),
            }
        }
        let mut correlations = Vec::new();
        let correlation_refs = correlations_by_ref(docs);
        for corr in correlations_src {
            match compile_correlation(corr, &detection_metas, &correlation_refs, tables) {
                Ok(c) => {
                    let ci = correlations.len();
                    for (si, &di) in c.stages.iter().enumerate() {
                        let d: &mut CompiledRule = &mut detections[di];
                        d.feeds.push((ci, si));
                    }
                    correlations.push((c, corr.generate));
                }
                Err(e) => diags.push(problem(&corr.meta, e)),
            }
        }
        // Sigma: a rule a correlation refers to alerts only through it, unless `generate`.
        for d in &mut detections {
            d.standalone = d.feeds.is_empty() || d.feeds.iter().any(|(ci, _)| correlations[*ci].1);
        }
        let mut by_event: HashMap<(String, u32), Vec<usize>> = HashMap::new();
        let mut general = Vec::new();
        for (i, d) in detections.iter().enumerate() {
            match d.logsource.event_keys() {
                Some(keys) => {
                    for k in keys {
                        by_event.entry(k).or_default().push(i);
                    }
                }
                None => general.push(i),
            }
        }
        (
            RuleSet {
                detections,
                correlations: correlations.into_iter().map(|(c, _)| c).collect(),
                by_event,
                general,
            },
            diags,
        )
    }

    /// The detection rules that may match `event`, in rule order: the general ones and those
    /// indexed under the event's channel and id. Every rule returned still checks its
    /// logsource; the index only skips rules that cannot match.
    pub fn candidates(&self, event: &Event) -> Vec<usize> {
        let indexed = match (&event.source.channel, event.source.event_id) {
            (Some(ch), Some(id)) => self.by_event.get(&(ch.to_ascii_lowercase(), id)),
            _ => None,
        };
        match indexed {
            None => self.general.clone(),
            Some(list) => {
                let mut out = Vec::with_capacity(self.general.len() + list.len());
                let (mut a, mut b) = (self.general.iter().peekable(), list.iter().peekable());
                loop {
                    match (a.peek(), b.peek()) {
                        (Some(&&x), Some(&&y)) => {
                            if x < y {
                                out.push(x);
                                a.next();
                            } else {
                                out.push(y);
                                b.next();
                            }
                        }
                        (Some(&&x), None) => {
                            out.push(x);
                            a.next();
                        }
                        (None, Some(&&y)) => {
                            out.push(y);
                            b.next();
                        }
                        (None, None) => break,
                    }
                }
                out
            }
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.detections.len() + self.correlations.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn correlations_by_ref(docs: &[RuleDoc]) -> Vec<&str> {
    docs.iter()
        .filter_map(|d| match d {
            RuleDoc::Correlation(c) => Some(c),
            RuleDoc::Detection(_) => None,
        })
        .flat_map(|c| {
            c.meta
                .id
                .iter()
                .chain(c.meta.name.iter())
                .map(String::as_str)
        })
        .collect()
}

fn compile_detection(rule: &DetectionRule, tables: &Tables) -> Result<CompiledRule, String> {
    let logsource = tables.logsource(&rule.logsource)?;
    let detection = CompiledDetection::compile(&rule.detection, tables)?;
    Ok(CompiledRule {
        info: RuleInfo::of(&rule.meta),
        logsource,
        detection,
        standalone: true,
        feeds: Vec::new(),
    })
}

fn compile_correlation(
    corr: &CorrelationRule,
    detections: &[&RuleMeta],
    correlation_refs: &[&str],
    tables: &Tables,
) -> Result<CompiledCorrelation, String> {
    if corr.kind != CorrelationType::TemporalOrdered {
        return Err(format!(
            "unsupported feature: correlation type {} (temporal_ordered is supported)",
            corr.kind.name()
        ));
    }
    let mut stages = Vec::new();
    for r in &corr.rules {
        let hits: Vec<usize> = detections
            .iter()
            .enumerate()
            .filter(|(_, m)| m.id.as_deref() == Some(r) || m.name.as_deref() == Some(r))
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => stages.push(*i),
            [] if correlation_refs.contains(&r.as_str()) => {
                return Err(format!(
                    "unsupported feature: a correlation of correlations (rule {r:?})"
                ));
            }
            [] => {
                return Err(format!(
                    "refers to rule {r:?}, which is not loaded (no rule has that id or name)"
                ));
            }
            _ => {
                return Err(format!(
                    "refers to rule {r:?}, which more than one rule is named"
                ));
            }
        }
    }
    let mut group_by = Vec::new();
    for g in &corr.group_by {
        let alias = corr.aliases.iter().find(|a| &a.name == g);
        let mut per_stage = Vec::new();
        for (si, r) in corr.rules.iter().enumerate() {
            let field = match alias {
                Some(a) => {
                    let stage_meta = detections[stages[si]];
                    a.fields
                        .iter()
                        .find(|(rule, _)| {
                            Some(rule.as_str()) == stage_meta.name.as_deref()
                                || Some(rule.as_str()) == stage_meta.id.as_deref()
                                || rule == r
                        })
                        .map(|(_, f)| f.as_str())
                        .ok_or_else(|| format!("alias {g:?} gives no field for rule {r:?}"))?
                }
                None => g.as_str(),
            };
            per_stage.push(FieldRef::new(field, tables));
        }
        group_by.push(GroupField {
            name: g.clone(),
            per_stage,
        });
    }
    let info = RuleInfo::of(&corr.meta);
    let severity = corr
        .playbook
        .as_ref()
        .and_then(|p| p.priority)
        .or(corr.meta.level)
        .unwrap_or(Severity::High);
    Ok(CompiledCorrelation {
        info,
        kind: corr.kind,
        stages,
        group_by,
        timespan: corr.timespan,
        playbook: corr.playbook.clone(),
        severity,
    })
}
