//! The engine: `observe(&Event) -> alerts`. Pure: no I/O, no clock, no locks. One engine owns
//! the state of the partitions it is given; the rule set is shared and immutable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chainwatch_model::id::IdHasher;
use chainwatch_model::{Alert, AlertKind, Canonical, Event, Evidence, Stage, TechniqueId};

use crate::chain::{GroupKey, Hit, Limits, OrderedChains, Outcome};
use crate::ruleset::{CompiledCorrelation, RuleSet};
use crate::sigma::value::Resolved;

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
}

/// A correlation engine over one rule set.
#[derive(Debug)]
pub struct Engine {
    rules: Arc<RuleSet>,
    chains: Vec<OrderedChains>,
    config: EngineConfig,
    stats: EngineStats,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Engine {
    /// An engine with empty state.
    pub fn new(rules: Arc<RuleSet>, config: EngineConfig) -> Self {
        let chains = rules
            .correlations
            .iter()
            .map(|_| OrderedChains::default())
            .collect();
        Self {
            rules,
            chains,
            config,
            stats: EngineStats::default(),
        }
    }

    /// The rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.evicted = self.chains.iter().map(|c| c.evicted).sum();
        s
    }

    /// Partial chains currently held, over all correlations.
    pub fn partial_chains(&self) -> usize {
        self.chains.iter().map(OrderedChains::len).sum()
    }

    /// Feeds one event; returns the alerts it completes, in a deterministic order.
    pub fn observe(&mut self, event: &Event) -> Vec<Alert> {
        self.stats.events += 1;
        let mut alerts = Vec::new();
        let rules = Arc::clone(&self.rules);
        for ri in rules.candidates(event) {
            let rule = &rules.detections[ri];
            if !rule.matches(event) {
                continue;
            }
            self.stats.matches += 1;
            if rule.standalone {
                alerts.push(detection_alert(rule, event));
            }
            for &(ci, stage) in &rule.feeds {
                let corr = &rules.correlations[ci];
                let key = group_key(corr, stage, event);
                let hit = Hit {
                    time: event.time,
                    id: event.id,
                    host: event.host.clone(),
                    evidence: Box::new(Evidence::of(event, &rule.info.rule.id)),
                };
                let limits = Limits {
                    lateness_ns: nanos(self.config.allowed_lateness),
                    timespan_ns: nanos(corr.timespan),
                    max_groups: self.config.max_groups,
                    max_groups_per_tenant: self.config.max_groups_per_tenant,
                };
                match self.chains[ci].observe(key.clone(), stage, corr.stages.len(), hit, limits) {
                    Outcome::Stored => {}
                    Outcome::Duplicate => self.stats.duplicates += 1,
                    Outcome::Late => self.stats.late += 1,
                    Outcome::Complete(picks) => alerts.push(chain_alert(&rules, corr, &key, picks)),
                }
            }
        }
        self.stats.alerts += alerts.len() as u64;
        alerts
    }
}

/// The group-by values of an event for one stage. Host fields group by the normalized host key.
fn group_key(corr: &CompiledCorrelation, stage: usize, event: &Event) -> GroupKey {
    let values: Vec<Box<str>> = corr
        .group_by
        .iter()
        .map(|g| {
            let field = &g.per_stage[stage];
            if field.canonical() == Some(Canonical::Host) {
                return event.host.key().into();
            }
            match field.resolve(event) {
                Some(Resolved::Value(v)) => v
                    .as_text()
                    .map(|t| t.to_lowercase())
                    .unwrap_or_default()
                    .into(),
                Some(Resolved::Text(t)) => t.to_lowercase().into(),
                None => Box::from(""),
            }
        })
        .collect();
    (event.tenant.clone(), values.into_boxed_slice())
}

fn detection_alert(rule: &crate::ruleset::CompiledRule, event: &Event) -> Alert {
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

fn chain_alert(
    rules: &RuleSet,
    corr: &CompiledCorrelation,
    key: &GroupKey,
    picks: Vec<Hit>,
) -> Alert {
    let mut h = IdHasher::new();
    h.part(b"chain")
        .part(corr.info.rule.id.as_bytes())
        .part(key.0.as_str().as_bytes());
    for v in key.1.iter() {
        h.part(v.as_bytes());
    }
    for p in &picks {
        h.id(p.id.as_u128());
    }
    let mut techniques: Vec<TechniqueId> = Vec::new();
    let mut stages = Vec::with_capacity(picks.len());
    for (si, p) in picks.iter().enumerate() {
        let stage_rule = &rules.detections[corr.stages[si]];
        for t in &stage_rule.info.techniques {
            if !techniques.contains(t) {
                techniques.push(*t);
            }
        }
        stages.push(Stage {
            rule: stage_rule.info.rule.clone(),
            techniques: stage_rule.info.techniques.clone(),
            time: p.time,
            events: vec![p.id],
        });
    }
    for t in &corr.info.techniques {
        if !techniques.contains(t) {
            techniques.push(*t);
        }
    }
    let mut events: Vec<Evidence> = picks.iter().map(|p| (*p.evidence).clone()).collect();
    events.sort_by_key(|e| (e.time, e.id));
    let last = picks
        .last()
        .map(|p| p.host.clone())
        .unwrap_or_else(|| picks[0].host.clone());
    let user = picks.iter().rev().find_map(|p| p.evidence.user.clone());
    Alert {
        id: h.alert_id(),
        tenant: key.0.clone(),
        host: last,
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
        first_seen: picks.first().map_or(events[0].time, |p| p.time),
        last_seen: picks.last().map_or(events[0].time, |p| p.time),
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
