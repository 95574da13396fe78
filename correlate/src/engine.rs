//! The engine: `observe(&Event) -> alerts`. Pure: no I/O, no clock, no locks. One engine owns
//! the state of the partitions it is given; the rule set is shared and immutable, and can be
//! replaced ([`Engine::reload`]) with the partial chains of unchanged playbooks kept.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chainwatch_model::id::IdHasher;
use chainwatch_model::{
    Alert, AlertKind, Canonical, Event, Evidence, RuleRef, Severity, Stage, TechniqueId, Timestamp,
};

use crate::chain::{Emission, GroupKey, Hit, Limits, OrderedChains, Slot};
use crate::policy::Policies;
use crate::ruleset::{CompiledCorrelation, CompiledRule, RuleSet};
use crate::sigma::value::Resolved;

/// Limits and tolerances of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How far behind its group's newest event an event may be and still join a chain; also how
    /// far the event-time watermark trails the newest event seen (absence deadlines).
    pub allowed_lateness: Duration,
    /// Most groups tracked per correlation, over all tenants.
    pub max_groups: usize,
    /// Most groups tracked per correlation for one tenant.
    pub max_groups_per_tenant: usize,
    /// Most hits kept per stage of one group (counting stages need many).
    pub max_hits_per_stage: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::from_secs(3600),
            max_groups: 1_000_000,
            max_groups_per_tenant: 100_000,
            max_hits_per_stage: 1024,
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
    /// Matches dropped by a tenant's exclusions.
    pub excluded: u64,
    /// Hits dropped because the event was already held.
    pub duplicates: u64,
    /// Hits dropped as later than the allowed lateness.
    pub late: u64,
    /// Groups evicted by the limits.
    pub evicted: u64,
    /// Alerts produced (every revision counts).
    pub alerts: u64,
}

/// A correlation engine over one rule set.
#[derive(Debug)]
pub struct Engine {
    rules: Arc<RuleSet>,
    policies: Arc<Policies>,
    chains: Vec<OrderedChains>,
    config: EngineConfig,
    stats: EngineStats,
    newest: Option<Timestamp>,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Engine {
    /// An engine with empty state and default tenant policies.
    pub fn new(rules: Arc<RuleSet>, config: EngineConfig) -> Self {
        let chains = rules
            .correlations
            .iter()
            .map(|_| OrderedChains::default())
            .collect();
        Self {
            rules,
            policies: Arc::new(Policies::default()),
            chains,
            config,
            stats: EngineStats::default(),
            newest: None,
        }
    }

    /// Sets the tenant policies (compiled against this engine's rules).
    pub fn set_policies(&mut self, policies: Arc<Policies>) {
        self.policies = policies;
    }

    /// Replaces the rule set (a reload). The state of correlations whose fingerprint is
    /// unchanged moves to the new set; the others start empty. Tenant policies refer to rule
    /// indices and must be recompiled and set again after a reload.
    pub fn reload(&mut self, rules: Arc<RuleSet>) -> usize {
        let mut old: Vec<Option<(u128, OrderedChains)>> = self
            .rules
            .correlations
            .iter()
            .map(|c| c.fingerprint)
            .zip(std::mem::take(&mut self.chains))
            .map(Some)
            .collect();
        let mut kept = 0;
        self.chains = rules
            .correlations
            .iter()
            .map(|c| {
                match old
                    .iter_mut()
                    .find(|o| o.as_ref().is_some_and(|(f, _)| *f == c.fingerprint))
                    .and_then(Option::take)
                {
                    Some((_, state)) => {
                        kept += 1;
                        state
                    }
                    None => OrderedChains::default(),
                }
            })
            .collect();
        self.stats.evicted += old.iter().flatten().map(|(_, s)| s.evicted).sum::<u64>();
        self.rules = rules;
        self.policies = Arc::new(Policies::default());
        kept
    }

    /// The rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.evicted += self.chains.iter().map(|c| c.evicted).sum::<u64>();
        s
    }

    /// Partial chains currently held, over all correlations.
    pub fn partial_chains(&self) -> usize {
        self.chains.iter().map(OrderedChains::len).sum()
    }

    fn limits(&self) -> Limits {
        Limits {
            lateness_ns: nanos(self.config.allowed_lateness),
            max_groups: self.config.max_groups,
            max_groups_per_tenant: self.config.max_groups_per_tenant,
            max_hits: self.config.max_hits_per_stage,
        }
    }

    /// The event-time watermark: the newest event seen, less the allowed lateness.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.newest
            .map(|n| n.add_nanos(-nanos(self.config.allowed_lateness)))
    }

    /// Feeds one event; returns the alerts it raises, in a deterministic order.
    pub fn observe(&mut self, event: &Event) -> Vec<Alert> {
        self.stats.events += 1;
        self.newest = Some(self.newest.map_or(event.time, |n| n.max(event.time)));
        let watermark = self.watermark().unwrap_or(event.time);
        let limits = self.limits();
        let mut alerts = Vec::new();
        let rules = Arc::clone(&self.rules);
        let policies = Arc::clone(&self.policies);
        for ri in rules.candidates(event) {
            let rule = &rules.detections[ri];
            if !rule.matches(event) {
                continue;
            }
            if policies.excluded(ri, event) {
                self.stats.excluded += 1;
                continue;
            }
            self.stats.matches += 1;
            if rule.standalone {
                alerts.push(detection_alert(rule, event));
            }
            for feed in &rule.feeds {
                let ci = feed.correlation;
                let corr = &rules.correlations[ci];
                if !policies.applies(ci, corr, event) {
                    continue;
                }
                let key = group_key(corr, ri, event);
                let value = match feed.slot {
                    Slot::Stage(s) => {
                        corr.stages[s]
                            .distinct
                            .as_ref()
                            .and_then(|f| match f.resolve(event) {
                                Some(Resolved::Value(v)) => {
                                    v.as_text().map(|t| t.to_lowercase().into())
                                }
                                Some(Resolved::Text(t)) => Some(t.to_lowercase().into()),
                                None => None,
                            })
                    }
                    Slot::Absent(_) => None,
                };
                let hit = Hit {
                    time: event.time,
                    id: event.id,
                    host: event.host.clone(),
                    rule: feed.position,
                    value,
                    evidence: Box::new(Evidence::of(event, &rule.info.rule.id)),
                };
                let out = self.chains[ci].observe(
                    key.clone(),
                    feed.slot,
                    hit,
                    &corr.chain,
                    limits,
                    watermark,
                );
                self.stats.duplicates += u64::from(out.duplicate);
                self.stats.late += u64::from(out.late);
                let priority = policies.priority(ci, &event.tenant);
                for e in out.emissions {
                    alerts.push(chain_alert(&rules, corr, &key, e, priority));
                }
            }
        }
        alerts.extend(self.advance_to(watermark));
        self.stats.alerts += alerts.len() as u64;
        alerts
    }

    /// Moves the event-time watermark to `watermark` (never backwards) and raises the chains
    /// whose absence deadlines it passes. The shell calls it when input is idle.
    pub fn advance(&mut self, watermark: Timestamp) -> Vec<Alert> {
        let lateness = nanos(self.config.allowed_lateness);
        let as_newest = watermark.add_nanos(lateness);
        self.newest = Some(self.newest.map_or(as_newest, |n| n.max(as_newest)));
        let alerts = self.advance_to(self.watermark().unwrap_or(watermark));
        self.stats.alerts += alerts.len() as u64;
        alerts
    }

    fn advance_to(&mut self, watermark: Timestamp) -> Vec<Alert> {
        let rules = Arc::clone(&self.rules);
        let mut alerts = Vec::new();
        for (ci, corr) in rules.correlations.iter().enumerate() {
            if corr.chain.absences.is_empty() {
                continue;
            }
            for (key, e) in self.chains[ci].advance(&corr.chain, watermark) {
                let priority = self.policies.priority(ci, &key.0);
                alerts.push(chain_alert(&rules, corr, &key, e, priority));
            }
        }
        alerts
    }
}

/// The group-by values of an event matched by detection rule `rule`. Host fields group by the
/// normalized host key.
fn group_key(corr: &CompiledCorrelation, rule: usize, event: &Event) -> GroupKey {
    let values: Vec<Box<str>> = corr
        .group_by
        .iter()
        .map(|g| {
            let field = g.field_for(rule);
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
        revision: 0,
        partial: false,
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

fn push_unique(list: &mut Vec<TechniqueId>, items: &[TechniqueId]) {
    for t in items {
        if !list.contains(t) {
            list.push(*t);
        }
    }
}

fn chain_alert(
    rules: &RuleSet,
    corr: &CompiledCorrelation,
    key: &GroupKey,
    e: Emission,
    priority: Option<Severity>,
) -> Alert {
    let mut h = IdHasher::new();
    h.part(b"chain")
        .part(corr.info.rule.id.as_bytes())
        .part(key.0.as_str().as_bytes());
    for v in key.1.iter() {
        h.part(v.as_bytes());
    }
    h.id(e.seed.as_u128());
    let mut techniques: Vec<TechniqueId> = Vec::new();
    let mut stages = Vec::with_capacity(e.picks.len());
    let mut events: Vec<Evidence> = Vec::new();
    for p in &e.picks {
        let info = &corr.stages[p.stage];
        let mut stage_techniques = Vec::new();
        let mut matched: Vec<usize> = p.hits.iter().map(|h| info.rules[h.rule]).collect();
        matched.sort_unstable();
        matched.dedup();
        for di in &matched {
            push_unique(
                &mut stage_techniques,
                &rules.detections[*di].info.techniques,
            );
        }
        push_unique(&mut techniques, &stage_techniques);
        let rule = if info.rules.len() == 1 {
            rules.detections[info.rules[0]].info.rule.clone()
        } else {
            let titles: Vec<&str> = matched
                .iter()
                .map(|d| rules.detections[*d].info.rule.title.as_str())
                .collect();
            RuleRef {
                id: info.name.clone(),
                title: titles.join(" + "),
                level: matched
                    .iter()
                    .map(|d| rules.detections[*d].info.rule.level)
                    .max()
                    .unwrap_or(Severity::Medium),
            }
        };
        stages.push(Stage {
            name: info.name.clone(),
            rule,
            techniques: stage_techniques,
            time: p.time,
            events: p.hits.iter().map(|h| h.id).collect(),
        });
        events.extend(p.hits.iter().map(|h| (*h.evidence).clone()));
    }
    push_unique(&mut techniques, &corr.info.techniques);
    events.sort_by_key(|x| (x.time, x.id));
    events.dedup_by_key(|x| x.id);
    let last = e.picks.last().and_then(|p| p.hits.last());
    let host = last
        .map(|h| h.host.clone())
        .unwrap_or_else(|| chainwatch_model::HostName::new(""));
    let user = events.iter().rev().find_map(|x| x.user.clone());
    let severity = priority.unwrap_or(match e.priority {
        Some(p) => p,
        None => corr.severity,
    });
    let (first_seen, last_seen) = (
        events.first().map_or(Timestamp::from_nanos(0), |x| x.time),
        events.last().map_or(Timestamp::from_nanos(0), |x| x.time),
    );
    Alert {
        id: h.alert_id(),
        tenant: key.0.clone(),
        host,
        user,
        kind: AlertKind::Chain,
        revision: e.revision,
        partial: e.partial,
        rule: corr.info.rule.clone(),
        severity,
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
