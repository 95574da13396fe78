//! The engine: `observe(&Event) -> alerts`. Pure: no I/O, no clock, no locks. One engine owns
//! the state of the partitions it is given; the rule set is shared and immutable.
//!
//! Per event: the prefilter picks the candidate detection rules, each is tested once; a match
//! alerts on its own (when the rule is standalone) and becomes a hit of every correlation that
//! refers to the rule. A correlation that fires alerts (when standalone) and becomes a hit of
//! the correlations that refer to it, and so on, in a deterministic order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chainwatch_config::sigma::CorrelationType;
use chainwatch_model::id::IdHasher;
use chainwatch_model::{
    Alert, AlertKind, Event, EventId, Evidence, HostName, Stage, TechniqueId, TenantId, Timestamp,
};

use crate::correlation::count::{Count, Measure};
use crate::correlation::temporal::{Search, Temporal};
use crate::correlation::{Firing, GroupKey, Hit, Limits, Outcome, State};
use crate::ruleset::{CompiledCorrelation, CompiledRule, RuleSet, Source};
use crate::sigma::fields::{EventView, ViewBuffers};

/// Limits and tolerances of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How far behind its group's newest event an event may be and still join a chain.
    pub allowed_lateness: Duration,
    /// Most groups tracked per correlation, over all tenants.
    pub max_groups: usize,
    /// Most groups tracked per correlation for one tenant.
    pub max_groups_per_tenant: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::from_secs(3600),
            max_groups: 1_000_000,
            max_groups_per_tenant: 100_000,
        }
    }
}

/// Counters an engine keeps; the shell turns them into metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events observed.
    pub events: u64,
    /// Detection rule matches.
    pub matches: u64,
    /// Hits dropped because the event was already held.
    pub duplicates: u64,
    /// Hits dropped as later than the allowed lateness.
    pub late: u64,
    /// Groups evicted by the limits.
    pub evicted: u64,
    /// Alerts produced.
    pub alerts: u64,
    /// Detection rules tested after the prefilter (over all events).
    pub candidates: u64,
}

/// A correlation engine over one rule set.
#[derive(Debug)]
pub struct Engine {
    rules: Arc<RuleSet>,
    states: Vec<State>,
    config: EngineConfig,
    stats: EngineStats,
    /// Per tenant, the newest event time seen: when windows with upper-bounded conditions
    /// close.
    clocks: HashMap<TenantId, Timestamp>,
    deferred: bool,
    scratch: Vec<u32>,
    matched: Vec<usize>,
    buffers: ViewBuffers,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A hit on its way to a correlation input.
struct Pending {
    correlation: usize,
    key: GroupKey,
    hit: Hit,
}

impl Engine {
    /// An engine with empty state.
    pub fn new(rules: Arc<RuleSet>, config: EngineConfig) -> Self {
        let states = rules.correlations.iter().map(new_state).collect();
        let deferred = rules.has_deferred();
        Self {
            rules,
            states,
            config,
            stats: EngineStats::default(),
            clocks: HashMap::new(),
            deferred,
            scratch: Vec::new(),
            matched: Vec::new(),
            buffers: ViewBuffers::default(),
        }
    }

    /// The rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.evicted = self.states.iter().map(State::evicted).sum();
        s
    }

    /// Partial correlations (groups with state) currently held, over all correlations.
    pub fn partial_chains(&self) -> usize {
        self.states.iter().map(State::len).sum()
    }

    fn limits(&self, corr: &CompiledCorrelation) -> Limits {
        Limits {
            lateness_ns: nanos(self.config.allowed_lateness),
            timespan_ns: nanos(corr.timespan),
            max_groups: self.config.max_groups,
            max_groups_per_tenant: self.config.max_groups_per_tenant,
        }
    }

    /// Feeds one event; returns the alerts it completes, in a deterministic order.
    pub fn observe(&mut self, event: &Event) -> Vec<Alert> {
        self.stats.events += 1;
        let rules = Arc::clone(&self.rules);
        let mut alerts = Vec::new();
        let mut queue = VecDeque::new();
        {
            let buffers = std::mem::take(&mut self.buffers);
            let view = EventView::with_buffers(event, &rules.fields, buffers);
            let mut matched = std::mem::take(&mut self.matched);
            let tested = rules.match_view(&view, &mut self.scratch, &mut matched);
            self.stats.candidates += tested as u64;
            for &ri in &matched {
                let rule = &rules.detections[ri];
                self.stats.matches += 1;
                if rule.standalone {
                    alerts.push(detection_alert(rule, event));
                }
                if rule.feeds.is_empty() {
                    continue;
                }
                let evidence: Arc<[Evidence]> =
                    Arc::from([Evidence::of(event, &rule.info.rule.id)]);
                for &(ci, input) in &rule.feeds {
                    let corr = &rules.correlations[ci];
                    let key = (
                        event.tenant.clone(),
                        corr.group_by
                            .iter()
                            .map(|g| event_value(&view, g.per_input[input]).unwrap_or_default())
                            .collect(),
                    );
                    let value = corr
                        .value_field
                        .as_ref()
                        .and_then(|f| combined(f[input].iter().map(|s| event_value(&view, *s))));
                    queue.push_back(Pending {
                        correlation: ci,
                        key,
                        hit: Hit {
                            time: event.time,
                            id: event.id,
                            input,
                            host: event.host.clone(),
                            value,
                            evidence: Arc::clone(&evidence),
                        },
                    });
                }
            }
            self.matched = matched;
            self.buffers = view.into_buffers();
        }
        self.run(&rules, queue, &mut alerts);
        if self.deferred {
            let clock = self
                .clocks
                .entry(event.tenant.clone())
                .or_insert(event.time);
            *clock = (*clock).max(event.time);
            let watermark = clock.add_nanos(-nanos(self.config.allowed_lateness));
            let mut fired = Vec::new();
            for (ci, corr) in rules.correlations.iter().enumerate() {
                if corr.deferred() {
                    let limits = self.limits(corr);
                    for f in self.states[ci].advance(&event.tenant, watermark, limits) {
                        fired.push((ci, f));
                    }
                }
            }
            self.fire_all(&rules, fired, &mut alerts);
        }
        self.stats.alerts += alerts.len() as u64;
        alerts
    }

    /// Ends the input: decides every window still open (conditions with an upper bound) and
    /// returns the alerts that gives. For replays and tests; a streaming pipeline never ends.
    pub fn finish(&mut self) -> Vec<Alert> {
        let rules = Arc::clone(&self.rules);
        let mut alerts = Vec::new();
        // Correlations are in dependency order: an inner one's last firings reach the outer
        // ones before those are finished.
        for ci in 0..rules.correlations.len() {
            let limits = self.limits(&rules.correlations[ci]);
            let fired: Vec<(usize, Firing)> = self.states[ci]
                .finish(limits)
                .into_iter()
                .map(|f| (ci, f))
                .collect();
            self.fire_all(&rules, fired, &mut alerts);
        }
        self.stats.alerts += alerts.len() as u64;
        alerts
    }

    fn fire_all(&mut self, rules: &RuleSet, fired: Vec<(usize, Firing)>, alerts: &mut Vec<Alert>) {
        let mut queue = VecDeque::new();
        for (ci, firing) in fired {
            self.fired(rules, ci, firing, alerts, &mut queue);
        }
        self.run(rules, queue, alerts);
    }

    /// Delivers pending hits, and the hits of the firings they cause, until none is left.
    fn run(&mut self, rules: &RuleSet, mut queue: VecDeque<Pending>, alerts: &mut Vec<Alert>) {
        while let Some(p) = queue.pop_front() {
            let corr = &rules.correlations[p.correlation];
            let limits = self.limits(corr);
            match self.states[p.correlation].observe(p.key, p.hit, limits) {
                Outcome::Stored => {}
                Outcome::Duplicate => self.stats.duplicates += 1,
                Outcome::Late => self.stats.late += 1,
                Outcome::Fired(firing) => {
                    self.fired(rules, p.correlation, firing, alerts, &mut queue);
                }
            }
        }
    }

    /// A correlation fired: its alert, and its hits for the correlations that refer to it.
    fn fired(
        &mut self,
        rules: &RuleSet,
        ci: usize,
        firing: Firing,
        alerts: &mut Vec<Alert>,
        queue: &mut VecDeque<Pending>,
    ) {
        let corr = &rules.correlations[ci];
        let alert = correlation_alert(rules, corr, &firing);
        for &(outer, input) in &corr.feeds {
            let o = &rules.correlations[outer];
            let from_group = |s: Source| match s {
                Source::Group(i) => firing.key.1.get(i).cloned(),
                Source::Field(_) | Source::Host => None,
            };
            let key = (
                firing.key.0.clone(),
                o.group_by
                    .iter()
                    .map(|g| from_group(g.per_input[input]).unwrap_or_default())
                    .collect(),
            );
            let value = o
                .value_field
                .as_ref()
                .and_then(|f| combined(f[input].iter().map(|s| from_group(*s))));
            let evidence: Arc<[Evidence]> = alert.events.iter().cloned().collect();
            queue.push_back(Pending {
                correlation: outer,
                key,
                hit: Hit {
                    time: alert.last_seen,
                    id: EventId::from_u128(alert.id.as_u128()),
                    input,
                    host: alert.host.clone(),
                    value,
                    evidence,
                },
            });
        }
        if corr.standalone {
            alerts.push(alert);
        }
    }
}

fn new_state(corr: &CompiledCorrelation) -> State {
    let n = corr.inputs.len();
    match corr.kind {
        CorrelationType::TemporalOrdered => State::Temporal(Temporal::new(n, Search::Ordered)),
        CorrelationType::Temporal => {
            let min = (0..=n as u64)
                .find(|k| corr.bounds.holds(*k))
                .map_or(n, |k| k as usize)
                .max(1);
            State::Temporal(Temporal::new(n, Search::Unordered { min }))
        }
        CorrelationType::EventCount => {
            State::Count(Count::new(Measure::Events, corr.bounds.clone()))
        }
        CorrelationType::ValueCount => {
            State::Count(Count::new(Measure::DistinctValues, corr.bounds.clone()))
        }
    }
}

/// The counted value of several fields: their values joined by a separator no text holds;
/// `None` when a field is missing.
fn combined(values: impl Iterator<Item = Option<Box<str>>>) -> Option<Box<str>> {
    let mut out = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push('\u{1f}');
        }
        out.push_str(&v?);
    }
    Some(out.into())
}

/// An event's value for a group-by or counted field: lower-cased; host fields give the
/// normalized host key.
fn event_value(view: &EventView<'_>, source: Source) -> Option<Box<str>> {
    match source {
        Source::Host => Some(view.event.host.key().into()),
        Source::Field(id) => view.get(id).and_then(|v| v.lower()).map(Box::from),
        Source::Group(_) => None,
    }
}

fn detection_alert(rule: &CompiledRule, event: &Event) -> Alert {
    let id = IdHasher::new()
        .part(b"detection")
        .part(rule.info.rule.id.as_bytes())
        .part(event.tenant.as_str().as_bytes())
        .id(event.id.as_u128())
        .alert_id();
    Alert {
        id,
        tenant: event.tenant.clone(),
        host: event.host.clone(),
        user: event.user.clone(),
        kind: AlertKind::Detection,
        rule: rule.info.rule.clone(),
        severity: rule.info.rule.level,
        playbook: None,
        techniques: rule.info.techniques.clone(),
        first_seen: event.time,
        last_seen: event.time,
        group: BTreeMap::new(),
        stages: Vec::new(),
        events: vec![Evidence::of(event, &rule.info.rule.id)],
        response: Vec::new(),
        description: rule.info.description.clone(),
    }
}

fn correlation_alert(rules: &RuleSet, corr: &CompiledCorrelation, firing: &Firing) -> Alert {
    let key = &firing.key;
    let hits = &firing.hits;
    let mut h = IdHasher::new();
    h.part(b"chain")
        .part(corr.info.rule.id.as_bytes())
        .part(key.0.as_str().as_bytes());
    for v in key.1.iter() {
        h.part(v.as_bytes());
    }
    for p in hits {
        h.id(p.id.as_u128());
    }

    // Stages: one per hit for temporal kinds (in input order); for counts, one per input that
    // contributed, with all its events.
    let mut stages: Vec<Stage> = Vec::new();
    let temporal = matches!(
        corr.kind,
        CorrelationType::Temporal | CorrelationType::TemporalOrdered
    );
    for p in hits {
        let info = rules.input_info(corr.inputs[p.input]);
        let ids = p.evidence.iter().map(|e| e.id);
        match stages
            .iter_mut()
            .find(|s| !temporal && s.rule.id == info.rule.id)
        {
            Some(stage) => stage.events.extend(ids),
            None => stages.push(Stage {
                rule: info.rule.clone(),
                techniques: info.techniques.clone(),
                time: p.time,
                events: ids.collect(),
            }),
        }
    }
    let mut techniques: Vec<TechniqueId> = Vec::new();
    for t in stages
        .iter()
        .flat_map(|s| s.techniques.iter())
        .chain(&corr.info.techniques)
    {
        if !techniques.contains(t) {
            techniques.push(*t);
        }
    }
    let mut events: Vec<Evidence> = hits
        .iter()
        .flat_map(|p| p.evidence.iter().cloned())
        .collect();
    events.sort_by_key(|e| (e.time, e.id));
    // One event can be behind several hits (a chained correlation's events).
    events.dedup_by_key(|e| e.id);
    let last = hits.iter().max_by_key(|p| p.time);
    let first_seen = events.first().map_or(Timestamp::from_nanos(0), |e| e.time);
    let last_seen = events.last().map_or(first_seen, |e| e.time);
    let user = events.iter().rev().find_map(|e| e.user.clone());
    Alert {
        id: h.alert_id(),
        tenant: key.0.clone(),
        host: last.map_or_else(|| HostName::new(""), |p| p.host.clone()),
        user,
        kind: AlertKind::Chain,
        rule: corr.info.rule.clone(),
        severity: corr.severity,
        playbook: corr
            .info
            .name
            .clone()
            .or_else(|| Some(corr.info.rule.title.clone())),
        techniques,
        first_seen,
        last_seen,
        group: corr
            .group_by
            .iter()
            .zip(key.1.iter())
            .map(|(g, v)| (g.name.clone(), v.to_string()))
            .collect(),
        stages,
        events,
        response: corr
            .playbook
            .as_ref()
            .map(|p| p.response.clone())
            .unwrap_or_default(),
        description: corr.info.description.clone(),
    }
}
