//! A rule set: every detection and correlation rule compiled, with correlation references
//! resolved. Immutable once built, shared (`Arc`) by every engine; a reload builds a new one.

use std::collections::HashMap;
use std::time::Duration;

use chainwatch_config::sigma::{
    CorrelationRule, CorrelationType, DetectionRule, RuleDoc, RuleMeta,
};
use chainwatch_config::{Diagnostic, Diagnostics, PlaybookSpec};
use chainwatch_model::id::IdHasher;
use chainwatch_model::{Event, RuleRef, Severity, TechniqueId};

use crate::chain::{AbsenceSpec, ChainSpec, Slot, StageSpec};

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
    /// Where its matches go: (correlation index, slot, position among the stage's rules).
    pub(crate) feeds: Vec<Feed>,
}

/// One place a detection rule's matches go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Feed {
    pub(crate) correlation: usize,
    pub(crate) slot: Slot,
    /// Position of the rule among its stage's rules (0 for plain stages and absent rules).
    pub(crate) position: usize,
}

impl CompiledRule {
    /// Whether an event matches this rule.
    pub fn matches(&self, event: &Event) -> bool {
        self.logsource.matches(event) && self.detection.matches(event)
    }
}

/// One group-by key of a correlation: the field it is read from, per detection rule (aliases
/// give one field per rule), and the field for rules the aliases do not name.
#[derive(Debug, Clone)]
pub(crate) struct GroupField {
    pub(crate) name: String,
    pub(crate) default: FieldRef,
    pub(crate) per_rule: HashMap<usize, FieldRef>,
}

impl GroupField {
    pub(crate) fn field_for(&self, rule: usize) -> &FieldRef {
        self.per_rule.get(&rule).unwrap_or(&self.default)
    }
}

/// One stage of a compiled chain, as alerts name it.
#[derive(Debug, Clone)]
pub struct StageInfo {
    /// The rule name (or id) from `correlation.rules`, or the group's name.
    pub name: String,
    /// The detection rules of the stage (indices into the rule set's detections).
    pub rules: Vec<usize>,
    /// The field counted for `distinct`.
    pub(crate) distinct: Option<FieldRef>,
}

/// A compiled correlation rule (with its playbook, when it carries one).
#[derive(Debug, Clone)]
pub struct CompiledCorrelation {
    /// What alerts say of it.
    pub info: RuleInfo,
    /// Its type.
    pub kind: CorrelationType,
    /// Its stages, in order.
    pub stages: Vec<StageInfo>,
    /// Absent rules (indices into the detections).
    pub absent_rules: Vec<usize>,
    pub(crate) chain: ChainSpec,
    pub(crate) group_by: Vec<GroupField>,
    /// The timespan.
    pub timespan: Duration,
    /// The playbook it carries.
    pub playbook: Option<PlaybookSpec>,
    /// Severity of complete findings: the playbook's priority, else its level.
    pub severity: Severity,
    /// Host roles the playbook is scoped to (empty: every host).
    pub roles: Vec<String>,
    /// A hash of the correlation and its rules as written: equal across reloads when nothing
    /// changed, so partial chains survive.
    pub fingerprint: u128,
}

impl CompiledCorrelation {
    /// The names it is known by: its `name` and its `id`.
    pub fn answers_to(&self, name: &str) -> bool {
        self.info.name.as_deref() == Some(name) || self.info.rule.id == name
    }
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
    /// The tables the rules were compiled with (exclusions compile against them too).
    pub(crate) tables: Option<Tables>,
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
        let mut detection_docs: Vec<&DetectionRule> = Vec::new();
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
                        detection_docs.push(rule);
                    }
                    Err(e) => diags.push(problem(meta, e)),
                },
                RuleDoc::Correlation(c) => correlations_src.push(c),
            }
        }
        let mut correlations = Vec::new();
        let correlation_refs = correlations_by_ref(docs);
        for corr in correlations_src {
            match compile_correlation(
                corr,
                &detection_metas,
                &detection_docs,
                &correlation_refs,
                tables,
            ) {
                Ok(c) => {
                    let ci = correlations.len();
                    for (si, stage) in c.stages.iter().enumerate() {
                        for (pos, &di) in stage.rules.iter().enumerate() {
                            detections[di].feeds.push(Feed {
                                correlation: ci,
                                slot: Slot::Stage(si),
                                position: pos,
                            });
                        }
                    }
                    for (ai, &di) in c.absent_rules.iter().enumerate() {
                        detections[di].feeds.push(Feed {
                            correlation: ci,
                            slot: Slot::Absent(ai),
                            position: 0,
                        });
                    }
                    correlations.push((c, corr.generate));
                }
                Err(e) => diags.push(problem(&corr.meta, e)),
            }
        }
        // Sigma: a rule a correlation refers to alerts only through it, unless `generate`.
        for d in &mut detections {
            d.standalone =
                d.feeds.is_empty() || d.feeds.iter().any(|f| correlations[f.correlation].1);
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
                tables: Some(tables.clone()),
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

/// Finds a detection rule by the `id` or `name` a correlation uses.
fn find_rule(
    detections: &[&RuleMeta],
    name: &str,
    correlation_refs: &[&str],
) -> Result<usize, String> {
    let hits: Vec<usize> = detections
        .iter()
        .enumerate()
        .filter(|(_, m)| m.id.as_deref() == Some(name) || m.name.as_deref() == Some(name))
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [i] => Ok(*i),
        [] if correlation_refs.contains(&name) => Err(format!(
            "unsupported feature: a correlation of correlations (rule {name:?})"
        )),
        [] => Err(format!(
            "refers to rule {name:?}, which is not loaded (no rule has that id or name)"
        )),
        _ => Err(format!(
            "refers to rule {name:?}, which more than one rule is named"
        )),
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn fingerprint(corr: &CorrelationRule, rules: &[&DetectionRule]) -> u128 {
    let mut h = IdHasher::new();
    h.part(
        format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
            corr.meta.id,
            corr.kind,
            corr.rules,
            corr.group_by,
            corr.timespan,
            corr.aliases,
            corr.playbook
        )
        .as_bytes(),
    );
    for r in rules {
        h.part(
            format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}",
                r.meta.id, r.meta.name, r.meta.tags, r.logsource, r.detection
            )
            .as_bytes(),
        );
    }
    h.alert_id().as_u128()
}

fn compile_correlation(
    corr: &CorrelationRule,
    detections: &[&RuleMeta],
    detection_docs: &[&DetectionRule],
    correlation_refs: &[&str],
    tables: &Tables,
) -> Result<CompiledCorrelation, String> {
    if corr.kind != CorrelationType::TemporalOrdered {
        return Err(format!(
            "unsupported feature: correlation type {} (temporal_ordered is supported)",
            corr.kind.name()
        ));
    }
    let empty = PlaybookSpec::default();
    let pb = corr.playbook.as_deref().unwrap_or(&empty);
    // Stages: each rule of `correlation.rules`, except that a group's rules form one stage.
    let mut stages: Vec<StageInfo> = Vec::new();
    let mut specs: Vec<StageSpec> = Vec::new();
    let mut i = 0;
    while i < corr.rules.len() {
        let name = &corr.rules[i];
        let (stage_name, rule_names, min_rules): (String, Vec<&String>, usize) =
            match pb.groups.iter().find(|g| g.rules.contains(name)) {
                Some(g) => (g.name.clone(), g.rules.iter().collect(), g.min),
                None => (name.clone(), vec![name], 1),
            };
        let mut rules = Vec::new();
        for r in &rule_names {
            rules.push(find_rule(detections, r, correlation_refs)?);
        }
        let settings = pb.stages.get(&stage_name).cloned().unwrap_or_default();
        stages.push(StageInfo {
            name: stage_name,
            rules,
            distinct: settings
                .distinct
                .as_deref()
                .map(|f| FieldRef::new(f, tables)),
        });
        specs.push(StageSpec {
            min_rules,
            min_count: settings.min_count as usize,
            within_ns: settings.within.map(nanos),
            max_gap_ns: settings.max_gap.map(nanos),
            optional: settings.optional,
        });
        i += rule_names.len();
    }
    if specs.iter().all(|s| s.optional) {
        return Err("every stage of the chain is optional".into());
    }
    let stage_index = |name: &str| stages.iter().position(|s| s.name == name);
    let mut absent_rules = Vec::new();
    let mut absences = Vec::new();
    for a in &pb.absent {
        absent_rules.push(find_rule(detections, &a.rule, correlation_refs)?);
        absences.push(AbsenceSpec {
            after: stage_index(&a.after)
                .ok_or_else(|| format!("absent: no stage named {:?}", a.after))?,
            within_ns: nanos(a.within),
        });
    }
    let mut milestones = Vec::new();
    for m in &pb.partial {
        let at = stage_index(&m.after)
            .ok_or_else(|| format!("partial: no stage named {:?}", m.after))?;
        milestones.push((at, m.priority));
    }
    milestones.sort_by_key(|(s, _)| *s);

    // Group-by fields, per rule when aliases say so.
    let every_rule: Vec<usize> = stages
        .iter()
        .flat_map(|s| s.rules.iter().copied())
        .chain(absent_rules.iter().copied())
        .collect();
    let mut group_by = Vec::new();
    for g in &corr.group_by {
        let mut per_rule = HashMap::new();
        if let Some(alias) = corr.aliases.iter().find(|a| &a.name == g) {
            for (rule, field) in &alias.fields {
                let di = find_rule(detections, rule, correlation_refs)
                    .map_err(|e| format!("alias {g:?}: {e}"))?;
                per_rule.insert(di, FieldRef::new(field, tables));
            }
            if let Some(missing) = every_rule.iter().find(|r| !per_rule.contains_key(r)) {
                return Err(format!(
                    "alias {g:?} gives no field for rule {:?}",
                    detections[*missing].key()
                ));
            }
        }
        group_by.push(GroupField {
            name: g.clone(),
            default: FieldRef::new(g, tables),
            per_rule,
        });
    }
    let info = RuleInfo::of(&corr.meta);
    let severity = pb.priority.or(corr.meta.level).unwrap_or(Severity::High);
    let docs: Vec<&DetectionRule> = every_rule.iter().map(|&i| detection_docs[i]).collect();
    Ok(CompiledCorrelation {
        info,
        kind: corr.kind,
        stages,
        absent_rules,
        chain: ChainSpec {
            stages: specs,
            absences,
            milestones,
            suppress_ns: pb.suppress.map(nanos),
            timespan_ns: nanos(corr.timespan),
        },
        group_by,
        timespan: corr.timespan,
        playbook: corr.playbook.as_deref().cloned(),
        severity,
        roles: pb.scope.roles.clone(),
        fingerprint: fingerprint(corr, &docs),
    })
}
