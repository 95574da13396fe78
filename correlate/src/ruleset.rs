//! A rule set: every detection and correlation rule compiled, with correlation references
//! resolved, and the prefilter that decides which rules an event is tested against. Immutable
//! once built, shared (`Arc`) by every engine; a reload builds a new one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chainwatch_config::sigma::{
    Comparison, CorrelationRule, CorrelationType, DetectionRule, RuleDoc, RuleMeta,
};
use chainwatch_config::{Diagnostic, Diagnostics, PlaybookSpec, TenantConfig};
use chainwatch_model::id::IdHasher;
use chainwatch_model::{Canonical, Event, RuleRef, Severity, TechniqueId};

use crate::correlation::Bounds;
use crate::correlation::chain::{AbsenceSpec, ChainSpec, Slot, StageSpec};
use crate::policy::Policies;
use crate::prefilter::{LONG_TEXT_FIELDS, Prefilter, RuleRoute};
use crate::sigma::Tables;
use crate::sigma::detection::CompiledDetection;
use crate::sigma::fields::{EventView, FieldId, FieldIndex};
use crate::sigma::tables::{LogsourceFilter, is_windows_format};
use crate::sigma::value::CompileCtx;

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
                id: meta.key().into(),
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
    /// (correlation index, input index) pairs this rule feeds.
    pub(crate) feeds: Vec<(usize, usize)>,
}

/// What a correlation refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A detection rule (index into [`RuleSet::detections`]).
    Detection(usize),
    /// Another correlation (index into [`RuleSet::correlations`]).
    Correlation(usize),
}

/// Where an input's value for a group-by (or counted) field comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A field of the matched event.
    Field(FieldId),
    /// The event's normalized host key (fields that map to the host).
    Host,
    /// The group-by value at this position of the referenced correlation's firing.
    Group(usize),
}

/// One group-by key of a correlation, resolved per input (aliases give one field per rule).
#[derive(Debug, Clone)]
pub(crate) struct GroupField {
    pub(crate) name: String,
    pub(crate) per_input: Vec<Source>,
}

/// One stage of an ordered chain, as alerts name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageInfo {
    /// The rule name (or id) from `correlation.rules`, or the playbook group's name.
    pub name: String,
    /// Its inputs (indices into the correlation's `inputs`): one, or a group's rules.
    pub inputs: Vec<usize>,
}

/// A compiled correlation rule.
#[derive(Debug, Clone)]
pub struct CompiledCorrelation {
    /// What alerts say of it.
    pub info: RuleInfo,
    /// Its type.
    pub kind: CorrelationType,
    /// The rules it refers to, in order.
    pub inputs: Vec<Input>,
    pub(crate) group_by: Vec<GroupField>,
    /// `value_count`: the counted field(s), per input.
    pub(crate) value_field: Option<Vec<Vec<Source>>>,
    pub(crate) bounds: Bounds,
    /// The timespan.
    pub timespan: Duration,
    /// The playbook it carries.
    pub playbook: Option<PlaybookSpec>,
    /// Severity of its findings: the playbook's priority, else its level.
    pub severity: Severity,
    /// Alerts on its own: not referenced by another correlation, or referenced with
    /// `generate: true`.
    pub standalone: bool,
    /// (correlation index, input index) pairs this correlation feeds.
    pub(crate) feeds: Vec<(usize, usize)>,
    /// `temporal_ordered`: its stages in order (a playbook group is one stage of several
    /// inputs). Its absent rules are the inputs after `correlation.rules`.
    pub stages: Vec<StageInfo>,
    /// `temporal_ordered`: where each input's hits go.
    pub(crate) slots: Vec<Slot>,
    /// `temporal_ordered`: the chain's shape.
    pub(crate) chain: Option<ChainSpec>,
    /// `temporal_ordered`: per input, the value its stage counts distinct (`distinct`).
    pub(crate) distinct: Vec<Option<Source>>,
    /// Host roles the playbook is scoped to (empty: every host).
    pub roles: Vec<String>,
    /// A hash of the correlation and the rules it refers to as written: equal across reloads
    /// when nothing changed, so the state of unchanged playbooks survives a reload.
    pub fingerprint: u128,
}

impl CompiledCorrelation {
    /// The names it is known by: its `name` and its `id`.
    pub fn answers_to(&self, name: &str) -> bool {
        self.info.name.as_deref() == Some(name) || self.info.rule.id == name
    }

    /// True when windows are decided at their end rather than as soon as they satisfy the
    /// condition (an upper bound on a count).
    pub(crate) fn deferred(&self) -> bool {
        matches!(
            self.kind,
            CorrelationType::EventCount | CorrelationType::ValueCount
        ) && !self.bounds.is_monotone()
    }
}

/// Options for compiling rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// Values of `%placeholders%`, for values with the `expand` modifier: a placeholder name
    /// (without `%`) to the values it stands for (Sigma strings: wildcards allowed).
    pub placeholders: BTreeMap<String, Vec<String>>,
    /// Per-tenant overrides (playbooks, exclusions, priorities, host roles), compiled with the
    /// rules they name.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Where the tenant overrides come from, for problems found in them.
    pub tenants_source: std::path::PathBuf,
}

/// How the prefilter treats the rules of a set (for `rules check` and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefilterSummary {
    /// Rules reached through literal anchors.
    pub anchored: usize,
    /// Rules without anchors, reached through their logsource and event ids.
    pub routed: usize,
    /// Rules without anchors or routes: tested against every event.
    pub unrouted: usize,
    /// Distinct anchor literals.
    pub patterns: usize,
}

/// Every compiled rule.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Detection rules.
    pub detections: Vec<CompiledRule>,
    /// Correlation rules.
    pub correlations: Vec<CompiledCorrelation>,
    pub(crate) fields: FieldIndex,
    prefilter: Prefilter,
    summary: PrefilterSummary,
    /// Tenant policies, compiled against these rules.
    pub(crate) policies: Policies,
}

fn problem(meta: &RuleMeta, message: impl Into<String>) -> Diagnostic {
    Diagnostic::new(&meta.file, meta.line, 0, message).in_rule(meta.key())
}

impl RuleSet {
    /// Compiles rules with the built-in tables. Rules that cannot be compiled are reported and
    /// left out; the rest are usable.
    pub fn compile(docs: &[RuleDoc]) -> (RuleSet, Diagnostics) {
        Self::compile_with_options(docs, &CompileOptions::default())
    }

    /// Compiles rules with the built-in tables and `options`.
    pub fn compile_with_options(
        docs: &[RuleDoc],
        options: &CompileOptions,
    ) -> (RuleSet, Diagnostics) {
        match Tables::builtin() {
            Ok(t) => Self::compile_configured(docs, &t, options),
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
        Self::compile_configured(docs, tables, &CompileOptions::default())
    }

    /// Compiles rules with the given tables and options.
    pub fn compile_configured(
        docs: &[RuleDoc],
        tables: &Tables,
        options: &CompileOptions,
    ) -> (RuleSet, Diagnostics) {
        let mut diags = Diagnostics::default();
        let mut fields = FieldIndex::default();
        let mut detections = Vec::new();
        let mut detection_metas: Vec<&RuleMeta> = Vec::new();
        let mut detection_docs: Vec<&DetectionRule> = Vec::new();
        let mut failed_metas: Vec<&RuleMeta> = Vec::new();
        let mut seen_ids: HashMap<&str, &RuleMeta> = HashMap::new();
        let mut correlation_specs: Vec<&CorrelationRule> = Vec::new();
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
                RuleDoc::Detection(rule) => {
                    let mut ctx = CompileCtx {
                        tables,
                        fields: &mut fields,
                        placeholders: &options.placeholders,
                    };
                    match compile_detection(rule, &mut ctx) {
                        Ok(c) => {
                            detections.push(c);
                            detection_metas.push(meta);
                            detection_docs.push(rule);
                        }
                        Err(e) => {
                            diags.push(problem(meta, e));
                            failed_metas.push(meta);
                        }
                    }
                }
                RuleDoc::Correlation(c) => correlation_specs.push(c),
            }
        }

        let mut linker = Linker {
            specs: &correlation_specs,
            detections: &detection_metas,
            docs: &detection_docs,
            failed: &failed_metas,
            tables,
            fields: &mut fields,
            state: vec![LinkState::Pending; correlation_specs.len()],
            compiled: Vec::new(),
            errors: vec![None; correlation_specs.len()],
        };
        for i in 0..correlation_specs.len() {
            linker.link(i);
        }
        let Linker {
            compiled: mut correlations,
            errors,
            ..
        } = linker;
        for (spec, error) in correlation_specs.iter().zip(errors) {
            if let Some(e) = error {
                diags.push(problem(&spec.meta, e));
            }
        }

        // Wire the inputs, and Sigma's rule: a rule a correlation refers to alerts only
        // through it, unless that correlation says `generate: true`.
        let generate: Vec<bool> = correlations.iter().map(|(_, g)| *g).collect();
        let mut feeds_det: Vec<Vec<(usize, usize)>> = vec![Vec::new(); detections.len()];
        let mut feeds_corr: Vec<Vec<(usize, usize)>> = vec![Vec::new(); correlations.len()];
        for (ci, (c, _)) in correlations.iter().enumerate() {
            for (k, input) in c.inputs.iter().enumerate() {
                match *input {
                    Input::Detection(d) => feeds_det[d].push((ci, k)),
                    Input::Correlation(o) => feeds_corr[o].push((ci, k)),
                }
            }
        }
        for (d, feeds) in detections.iter_mut().zip(feeds_det) {
            d.standalone = feeds.is_empty() || feeds.iter().any(|(ci, _)| generate[*ci]);
            d.feeds = feeds;
        }
        for ((c, _), feeds) in correlations.iter_mut().zip(feeds_corr) {
            c.standalone = feeds.is_empty() || feeds.iter().any(|(ci, _)| generate[*ci]);
            c.feeds = feeds;
        }
        let correlations: Vec<CompiledCorrelation> =
            correlations.into_iter().map(|(c, _)| c).collect();

        // The prefilter: every rule under its routes, with literal anchors where the logic
        // gives them.
        let mut summary = PrefilterSummary::default();
        let long = |f: Option<FieldId>| {
            f.is_none_or(|id| {
                let name = fields.name(id);
                LONG_TEXT_FIELDS
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(name))
            })
        };
        let routes: Vec<RuleRoute> = detections
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let anchors = d.detection.need().anchors(&long).filter(|a| !a.is_empty());
                let keys = d.logsource.route_keys(d.detection.event_ids().as_ref());
                if anchors.is_some() {
                    summary.anchored += 1;
                } else if keys.is_some() {
                    summary.routed += 1;
                }
                RuleRoute {
                    rule: u32::try_from(i).unwrap_or(u32::MAX),
                    keys,
                    anchors,
                }
            })
            .collect();
        let prefilter = match Prefilter::build(&routes) {
            Ok(p) => p,
            Err(e) => {
                diags.push(Diagnostic::new(
                    std::path::Path::new("<prefilter>"),
                    0,
                    0,
                    e,
                ));
                // Without automata every rule is a candidate of its routes.
                let plain: Vec<RuleRoute> = routes
                    .into_iter()
                    .map(|r| RuleRoute { anchors: None, ..r })
                    .collect();
                Prefilter::build(&plain).unwrap_or_default()
            }
        };
        summary.unrouted = prefilter.unrouted();
        summary.patterns = prefilter.patterns();
        let mut set = RuleSet {
            detections,
            correlations,
            fields,
            prefilter,
            summary,
            policies: Policies::default(),
        };
        let mut ctx = CompileCtx {
            tables,
            fields: &mut set.fields,
            placeholders: &options.placeholders,
        };
        match Policies::compile(
            &options.tenants,
            &set.detections,
            &set.correlations,
            &mut ctx,
            &options.tenants_source,
        ) {
            Ok(p) => set.policies = p,
            Err(d) => diags.0.extend(d.0),
        }
        (set, diags)
    }

    /// The detection rules `event` matches, in rule order.
    pub fn matching(&self, event: &Event) -> Vec<usize> {
        let view = EventView::new(event, &self.fields);
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        self.match_view(&view, &mut scratch, &mut out);
        out
    }

    /// The detection rules `event` matches, every rule tested, without the prefilter: for
    /// checking that the prefilter never loses a match.
    pub fn matching_exhaustive(&self, event: &Event) -> Vec<usize> {
        let view = EventView::new(event, &self.fields);
        (0..self.detections.len())
            .filter(|&r| {
                let rule = &self.detections[r];
                rule.logsource.matches(event) && rule.detection.matches(&view)
            })
            .collect()
    }

    /// The detection rules the prepared event matches, in rule order, into `out`; `scratch`
    /// holds the candidates (reused between events). Returns the number of candidates tested.
    pub(crate) fn match_view(
        &self,
        view: &EventView<'_>,
        scratch: &mut Vec<u32>,
        out: &mut Vec<usize>,
    ) -> usize {
        scratch.clear();
        out.clear();
        let event = view.event;
        self.prefilter
            .candidates(view, is_windows_format(event), scratch);
        scratch.sort_unstable();
        scratch.dedup();
        for &r in scratch.iter() {
            let rule = &self.detections[r as usize];
            if rule.logsource.matches(event) && rule.detection.matches(view) {
                out.push(r as usize);
            }
        }
        scratch.len()
    }

    /// The prefilter.
    pub(crate) fn prefilter(&self) -> &Prefilter {
        &self.prefilter
    }

    /// How the prefilter reaches the rules.
    pub fn prefilter_summary(&self) -> PrefilterSummary {
        self.summary
    }

    /// The tenant policies compiled with these rules.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The rule behind an input.
    pub(crate) fn input_info(&self, input: Input) -> &RuleInfo {
        match input {
            Input::Detection(d) => &self.detections[d].info,
            Input::Correlation(c) => &self.correlations[c].info,
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

fn compile_detection(
    rule: &DetectionRule,
    ctx: &mut CompileCtx<'_>,
) -> Result<CompiledRule, String> {
    let logsource = ctx.tables.logsource(&rule.logsource)?;
    let detection = CompiledDetection::compile(&rule.detection, ctx)?;
    Ok(CompiledRule {
        info: RuleInfo::of(&rule.meta),
        logsource,
        detection,
        standalone: true,
        feeds: Vec::new(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Pending,
    InProgress,
    Done(usize),
    Failed,
}

/// Compiles correlations in dependency order: a correlation that refers to another is compiled
/// after it, cycles and references to rules that failed are errors.
struct Linker<'a, 'f> {
    specs: &'a [&'a CorrelationRule],
    detections: &'a [&'a RuleMeta],
    /// The detection rules as written (for fingerprints), aligned with `detections`.
    docs: &'a [&'a DetectionRule],
    /// Detection rules that did not compile.
    failed: &'a [&'a RuleMeta],
    tables: &'a Tables,
    fields: &'f mut FieldIndex,
    state: Vec<LinkState>,
    /// Compiled correlations and their `generate` flags, in dependency order.
    compiled: Vec<(CompiledCorrelation, bool)>,
    errors: Vec<Option<String>>,
}

fn names(meta: &RuleMeta, r: &str) -> bool {
    meta.id.as_deref() == Some(r) || meta.name.as_deref() == Some(r)
}

impl<'a> Linker<'a, '_> {
    fn link(&mut self, i: usize) -> Option<usize> {
        match self.state[i] {
            LinkState::Done(at) => return Some(at),
            LinkState::Failed => return None,
            LinkState::InProgress => return None,
            LinkState::Pending => {}
        }
        self.state[i] = LinkState::InProgress;
        match self.compile(i) {
            Ok(c) => {
                let at = self.compiled.len();
                self.compiled.push((c, self.specs[i].generate));
                self.state[i] = LinkState::Done(at);
                Some(at)
            }
            Err(e) => {
                self.state[i] = LinkState::Failed;
                self.errors[i] = Some(e);
                None
            }
        }
    }

    fn resolve(&mut self, i: usize, r: &str) -> Result<(Input, &'a RuleMeta), String> {
        let dets: Vec<usize> = self
            .detections
            .iter()
            .enumerate()
            .filter(|(_, m)| names(m, r))
            .map(|(i, _)| i)
            .collect();
        let corrs: Vec<usize> = self
            .specs
            .iter()
            .enumerate()
            .filter(|(_, c)| names(&c.meta, r))
            .map(|(i, _)| i)
            .collect();
        let cycle =
            || format!("refers to rule {r:?}, which refers back to it (a cycle of correlations)");
        match (dets.as_slice(), corrs.as_slice()) {
            ([d], []) => Ok((Input::Detection(*d), self.detections[*d])),
            ([], [c]) => {
                let c = *c;
                if c == i || self.state[c] == LinkState::InProgress {
                    return Err(cycle());
                }
                match self.link(c) {
                    Some(at) => Ok((Input::Correlation(at), &self.specs[c].meta)),
                    None if self.errors[c]
                        .as_deref()
                        .is_some_and(|e| e.contains("a cycle")) =>
                    {
                        Err(cycle())
                    }
                    None => Err(format!(
                        "refers to correlation {r:?}, which could not be loaded"
                    )),
                }
            }
            ([], []) if self.failed.iter().any(|m| names(m, r)) => Err(format!(
                "refers to rule {r:?}, which could not be loaded (see its own problem)"
            )),
            ([], []) => Err(format!(
                "refers to rule {r:?}, which is not loaded (no rule has that id or name)"
            )),
            _ => Err(format!(
                "refers to rule {r:?}, which more than one rule is named"
            )),
        }
    }

    fn compile(&mut self, i: usize) -> Result<CompiledCorrelation, String> {
        let corr = self.specs[i];
        let empty = PlaybookSpec::default();
        let pb = corr.playbook.as_deref().unwrap_or(&empty);
        // Inputs: the rules of `correlation.rules`, then the playbook's absent rules.
        let mut input_names: Vec<&str> = corr.rules.iter().map(String::as_str).collect();
        input_names.extend(pb.absent.iter().map(|a| a.rule.as_str()));
        if corr.kind != CorrelationType::TemporalOrdered && !pb.absent.is_empty() {
            return Err("a playbook with absent rules needs a temporal_ordered correlation".into());
        }
        let mut inputs = Vec::with_capacity(input_names.len());
        let mut metas: Vec<&RuleMeta> = Vec::with_capacity(input_names.len());
        for r in &input_names {
            let (input, meta) = self.resolve(i, r)?;
            inputs.push(input);
            metas.push(meta);
        }
        let n = corr.rules.len() as u64;
        let bounds = match corr.kind {
            CorrelationType::EventCount | CorrelationType::ValueCount => match &corr.condition {
                Some(c) if !c.bounds.is_empty() => Bounds(c.bounds.clone()),
                _ => {
                    return Err(format!(
                        "a {} correlation needs a 'condition' with a bound (gt, gte, lt, lte \
                         or eq)",
                        corr.kind.name()
                    ));
                }
            },
            kind => temporal_bounds(kind, corr.condition.as_ref().map(|c| &c.bounds), n)?,
        };

        // The field of input `k` standing for `name`: through an alias when `name` is one.
        let field_for = |name: &str, k: usize| -> Result<String, String> {
            match corr.aliases.iter().find(|a| a.name == name) {
                Some(a) => a
                    .fields
                    .iter()
                    .find(|(rule, _)| *rule == input_names[k] || names(metas[k], rule))
                    .map(|(_, f)| f.clone())
                    .ok_or_else(|| {
                        format!(
                            "alias {name:?} gives no field for rule {:?}",
                            input_names[k]
                        )
                    }),
                None => Ok(name.to_owned()),
            }
        };
        let mut group_by = Vec::with_capacity(corr.group_by.len());
        for g in &corr.group_by {
            let mut per_input = Vec::with_capacity(inputs.len());
            for (k, input) in inputs.iter().enumerate() {
                let field = field_for(g, k)?;
                per_input.push(self.source(*input, &field, input_names[k])?);
            }
            group_by.push(GroupField {
                name: g.clone(),
                per_input,
            });
        }
        let value_field = match corr.kind {
            CorrelationType::ValueCount => {
                let names = corr
                    .condition
                    .as_ref()
                    .map(|c| c.fields.as_slice())
                    .unwrap_or_default();
                if names.is_empty() {
                    return Err("a value_count correlation needs 'field' in its condition".into());
                }
                let mut per_input = Vec::with_capacity(inputs.len());
                for (k, input) in inputs.iter().enumerate() {
                    let mut sources = Vec::with_capacity(names.len());
                    for name in names {
                        let field = field_for(name, k)?;
                        sources.push(self.source(*input, &field, input_names[k])?);
                    }
                    per_input.push(sources);
                }
                Some(per_input)
            }
            _ => None,
        };
        let severity = pb.priority.or(corr.meta.level).unwrap_or(Severity::High);
        let (stages, slots, chain, distinct) = if corr.kind == CorrelationType::TemporalOrdered {
            self.chain(corr, pb, &inputs)?
        } else {
            (Vec::new(), Vec::new(), None, Vec::new())
        };
        let fingerprint = self.fingerprint(corr, &inputs);
        Ok(CompiledCorrelation {
            info: RuleInfo::of(&corr.meta),
            kind: corr.kind,
            inputs,
            group_by,
            value_field,
            bounds,
            timespan: corr.timespan,
            playbook: corr.playbook.as_deref().cloned(),
            severity,
            standalone: true,
            feeds: Vec::new(),
            stages,
            slots,
            chain,
            distinct,
            roles: pb.scope.roles.clone(),
            fingerprint,
        })
    }

    /// The shape of an ordered chain: each rule of `correlation.rules` a stage, except that a
    /// playbook group's rules form one stage; the playbook's per-stage settings, absences and
    /// milestones.
    #[allow(clippy::type_complexity)]
    fn chain(
        &mut self,
        corr: &CorrelationRule,
        pb: &PlaybookSpec,
        inputs: &[Input],
    ) -> Result<
        (
            Vec<StageInfo>,
            Vec<Slot>,
            Option<ChainSpec>,
            Vec<Option<Source>>,
        ),
        String,
    > {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let mut stages = Vec::new();
        let mut specs = Vec::new();
        let mut slots = vec![Slot::Stage(0); inputs.len()];
        let mut distinct = vec![None; inputs.len()];
        let mut k = 0;
        while k < corr.rules.len() {
            let name = &corr.rules[k];
            let (stage_name, members, min_rules) =
                match pb.groups.iter().find(|g| g.rules.contains(name)) {
                    Some(g) => (g.name.clone(), g.rules.len(), g.min),
                    None => (name.clone(), 1, 1),
                };
            let settings = pb.stages.get(&stage_name).cloned().unwrap_or_default();
            let si = stages.len();
            for m in k..k + members {
                slots[m] = Slot::Stage(si);
                if let Some(field) = &settings.distinct {
                    distinct[m] = Some(self.source(inputs[m], field, &corr.rules[m])?);
                }
            }
            stages.push(StageInfo {
                name: stage_name,
                inputs: (k..k + members).collect(),
            });
            specs.push(StageSpec {
                min_rules,
                min_count: settings.min_count as usize,
                within_ns: settings.within.map(nanos),
                max_gap_ns: settings.max_gap.map(nanos),
                optional: settings.optional,
            });
            k += members;
        }
        if specs.iter().all(|s| s.optional) {
            return Err("every stage of the chain is optional".into());
        }
        let stage_index = |name: &str| stages.iter().position(|s| s.name == name);
        let mut absences = Vec::new();
        for (ai, a) in pb.absent.iter().enumerate() {
            slots[corr.rules.len() + ai] = Slot::Absent(ai);
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
        let spec = ChainSpec {
            stages: specs,
            absences,
            milestones,
            suppress_ns: pb.suppress.map(nanos),
            timespan_ns: nanos(corr.timespan),
        };
        Ok((stages, slots, Some(spec), distinct))
    }

    /// A hash of the correlation and what it refers to, as written.
    fn fingerprint(&self, corr: &CorrelationRule, inputs: &[Input]) -> u128 {
        let mut h = IdHasher::new();
        h.part(
            format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
                corr.meta.id,
                corr.kind,
                corr.rules,
                corr.group_by,
                corr.timespan,
                corr.condition,
                corr.aliases,
                corr.playbook
            )
            .as_bytes(),
        );
        for input in inputs {
            match *input {
                Input::Detection(d) => {
                    let r = self.docs[d];
                    h.part(
                        format!(
                            "{:?}|{:?}|{:?}|{:?}|{:?}",
                            r.meta.id, r.meta.name, r.meta.tags, r.logsource, r.detection
                        )
                        .as_bytes(),
                    );
                }
                Input::Correlation(c) => {
                    h.id(self.compiled[c].0.fingerprint);
                }
            }
        }
        h.alert_id().as_u128()
    }

    /// Where input `input` gets the value of `field` from.
    fn source(&mut self, input: Input, field: &str, rule: &str) -> Result<Source, String> {
        match input {
            Input::Detection(_) => {
                let id = self.fields.intern(field, self.tables);
                Ok(if self.fields.fallback(id) == Some(Canonical::Host) {
                    Source::Host
                } else {
                    Source::Field(id)
                })
            }
            Input::Correlation(c) => self.compiled[c]
                .0
                .group_by
                .iter()
                .position(|g| g.name == field)
                .map(Source::Group)
                .ok_or_else(|| {
                    format!(
                        "the referenced correlation {rule:?} does not group by {field:?}, so \
                         its findings carry no such value"
                    )
                }),
        }
    }
}

/// The bounds of a temporal correlation: the number of distinct rules seen. Without a
/// condition, all of them. Upper bounds are not supported (they would need windows decided at
/// their end, and the specification gives no example); bounds every window satisfies anyway
/// are dropped.
fn temporal_bounds(
    kind: CorrelationType,
    given: Option<&Vec<(Comparison, u64)>>,
    n: u64,
) -> Result<Bounds, String> {
    let Some(given) = given else {
        return Ok(Bounds(vec![(Comparison::Gte, n)]));
    };
    let mut out = Vec::new();
    for &(c, b) in given {
        match c {
            Comparison::Gt | Comparison::Gte => out.push((c, b)),
            Comparison::Eq if b == n => out.push((Comparison::Gte, b)),
            Comparison::Lte if b >= n => {}
            Comparison::Lt if b > n => {}
            _ => {
                return Err(format!(
                    "unsupported feature: an upper bound on the number of rules of a {} \
                     correlation",
                    kind.name()
                ));
            }
        }
    }
    if out.is_empty() {
        out.push((Comparison::Gte, n));
    }
    let b = Bounds(out);
    if !b.holds(n) {
        return Err(format!(
            "the condition can never hold: the correlation refers to {n} rules"
        ));
    }
    if kind == CorrelationType::TemporalOrdered && b.holds(n - 1) {
        return Err(
            "unsupported feature: a temporal_ordered condition that does not require every \
             rule (the order of a subset is not defined by the specification)"
                .into(),
        );
    }
    Ok(b)
}
