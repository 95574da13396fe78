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
    Alert, AlertId, AlertKind, Event, EventId, Evidence, HostName, RuleRef, Severity, SharedStr,
    Stage, TechniqueId, TenantId, Timestamp,
};

use crate::correlation::chain::{Chains, Emission};
use crate::correlation::count::{Count, Measure};
use crate::correlation::temporal::Temporal;
use crate::correlation::{Firing, GroupKey, Hit, Limits, Outcome, State};
use crate::lookback::{LookbackBuffer, LookbackConfig};
use crate::persist::{self, RestoreStats, StateChange};
use crate::roles::{HostRoles, RoleSignals, RoleTable};
use crate::ruleset::{CompiledCorrelation, CompiledRule, RuleInfo, RuleSet, Source};
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
    /// Most hits kept per stage of one group of an ordered chain (counting stages need many).
    pub max_hits_per_stage: usize,
    /// What alerts carry of their hosts' other notable events, and its bounds.
    pub lookback: LookbackConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::from_secs(3600),
            max_groups: 1_000_000,
            max_groups_per_tenant: 100_000,
            max_hits_per_stage: 1024,
            lookback: LookbackConfig::default(),
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
    /// Alerts produced.
    pub alerts: u64,
    /// Detection rules tested after the prefilter (over all events).
    pub candidates: u64,
    /// Notable events the look-back dropped by its bounds.
    pub lookback_evicted: u64,
}

/// A correlation engine over one rule set.
#[derive(Debug)]
pub struct Engine {
    rules: Arc<RuleSet>,
    states: Vec<State>,
    config: EngineConfig,
    stats: EngineStats,
    /// Per tenant, the newest event time seen: when windows with upper-bounded conditions
    /// close, and when absence deadlines pass.
    clocks: HashMap<TenantId, Timestamp>,
    /// Some correlation decides on the tenant's clock (deferred counts, absences).
    clocked: bool,
    scratch: Vec<u32>,
    matched: Vec<usize>,
    buffers: ViewBuffers,
    /// Per host, recent notable events: what alerts carry as their look-back.
    lookback: LookbackBuffer,
    /// Host roles inferred from every event seen (scope of role-scoped playbooks).
    roles: RoleTable,
    signals: &'static RoleSignals,
    /// Changes are tracked for the changelog ([`Engine::track_changes`]).
    tracking: bool,
    /// Tombstones of groups whose correlation a reload removed, not yet taken.
    dropped: Vec<StateChange>,
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
        let clocked = clocked(&rules);
        let lookback = LookbackBuffer::new(config.lookback, retention(&rules, &config));
        Self {
            rules,
            states,
            config,
            stats: EngineStats::default(),
            clocks: HashMap::new(),
            clocked,
            scratch: Vec::new(),
            matched: Vec::new(),
            buffers: ViewBuffers::default(),
            lookback,
            roles: RoleTable::default(),
            signals: RoleSignals::builtin(),
            tracking: false,
            dropped: Vec::new(),
        }
    }

    /// The host roles inferred so far.
    pub fn roles(&self) -> &RoleTable {
        &self.roles
    }

    /// Hosts that gained a role (or whose role was seen again a day later) since the last
    /// call: the records the shell writes to the roles topic.
    pub fn take_role_changes(&mut self) -> Vec<HostRoles> {
        self.roles.take_changes()
    }

    /// Stops keeping role changes for [`Engine::take_role_changes`]: for a caller that never
    /// takes them (a replay), where they would only pile up.
    pub fn discard_role_changes(&mut self) {
        self.roles.discard_changes();
    }

    /// Per tenant and role, the hosts this engine observed with the role, when that may have
    /// changed since the last call (for the role gauge); `None` otherwise.
    pub fn role_counts_if_changed(&mut self) -> Option<BTreeMap<(TenantId, String), usize>> {
        self.roles.counts_changed().then(|| self.roles.counts())
    }

    /// True once when the role counts may have changed since this (or
    /// [`Engine::role_counts_if_changed`]) was last asked, without counting: counting walks
    /// every host with a role, too much to do for each event.
    pub fn role_counts_changed(&mut self) -> bool {
        self.roles.counts_changed()
    }

    /// Merges host roles read back from the roles topic (at start-up).
    pub fn restore_roles(&mut self, records: impl IntoIterator<Item = HostRoles>) {
        for r in records {
            self.roles.restore(r);
        }
    }

    /// The look-back buffer (its size, its snapshot).
    pub fn lookback(&self) -> &LookbackBuffer {
        &self.lookback
    }

    /// Replaces the look-back buffer (with one restored from a snapshot).
    pub fn set_lookback(&mut self, lookback: LookbackBuffer) {
        self.lookback = lookback;
        self.lookback
            .set_retention(retention(&self.rules, &self.config));
    }

    /// Remembers every change of the state from now on, for [`Engine::take_changes`]: a
    /// streaming shell writes them to its changelog so the state survives a restart.
    pub fn track_changes(&mut self) {
        self.tracking = true;
        for s in &mut self.states {
            s.track_changes();
        }
    }

    /// The changelog records of every group changed since the last call (its state now, or a
    /// tombstone when it is gone), in a deterministic order. Empty unless
    /// [`Engine::track_changes`] was called.
    pub fn take_changes(&mut self) -> Vec<StateChange> {
        let mut out = std::mem::take(&mut self.dropped);
        for (corr, state) in self.rules.correlations.iter().zip(&mut self.states) {
            state.take_changes(corr.fingerprint, &mut out);
        }
        out
    }

    /// Puts back groups from changelog values (the latest value of each key, oldest first).
    /// Records of correlations the rule set does not have, or that cannot be read, are skipped
    /// and counted. The tenants' event-time clocks resume from the newest event of their
    /// groups.
    pub fn restore<'a>(&mut self, values: impl IntoIterator<Item = &'a [u8]>) -> RestoreStats {
        let mut stats = RestoreStats::default();
        let rules = Arc::clone(&self.rules);
        for value in values {
            let Some(record) = persist::decode(value) else {
                stats.unreadable += 1;
                continue;
            };
            let Some(ci) = rules
                .correlations
                .iter()
                .position(|c| persist::fingerprint_text(c.fingerprint) == record.correlation)
            else {
                stats.unknown += 1;
                continue;
            };
            let limits = self.limits(&rules.correlations[ci]);
            let key: GroupKey = (record.tenant.clone(), record.group.into());
            match self.states[ci].restore(key, record.state, limits) {
                Some(newest) => {
                    stats.groups += 1;
                    if self.clocked
                        && let Some(t) = newest
                    {
                        let clock = self.clocks.entry(record.tenant).or_insert(t);
                        *clock = (*clock).max(t);
                    }
                }
                None => stats.unknown += 1,
            }
        }
        stats
    }

    /// Each tenant's event-time clock (its newest event time), for the correlations that
    /// decide on it; empty when none does ([`Engine::is_clocked`]).
    pub fn tenant_clocks(&self) -> impl Iterator<Item = (&TenantId, Timestamp)> {
        self.clocks.iter().map(|(t, c)| (t, *c))
    }

    /// True when some correlation decides on the tenants' event-time clocks (absences, counts
    /// with an upper bound): only then does moving a clock ([`Engine::advance_tenant`]) matter.
    pub fn is_clocked(&self) -> bool {
        self.clocked
    }

    /// Moves `tenant`'s clock (its newest event time) to at least `newest`, as if an event of
    /// that time had arrived, and decides what its watermark then closes. The shell calls it
    /// when the tenant's input is idle; a clock never moves back, and a tenant this engine has
    /// not seen has nothing to decide.
    pub fn advance_tenant(&mut self, tenant: &TenantId, newest: Timestamp) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if !self.clocked {
            return alerts;
        }
        let Some(clock) = self.clocks.get_mut(tenant) else {
            return alerts;
        };
        if newest <= *clock {
            return alerts;
        }
        *clock = newest;
        let rules = Arc::clone(&self.rules);
        self.tick(&rules, Some(tenant), &mut alerts);
        self.stats.alerts += alerts.len() as u64;
        alerts
    }

    /// The rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Replaces the rule set (a reload). The state of correlations whose fingerprint is
    /// unchanged moves to the new set; the others start empty. Returns how many kept theirs.
    pub fn reload(&mut self, rules: Arc<RuleSet>) -> usize {
        let mut old: Vec<Option<(u128, State)>> = self
            .rules
            .correlations
            .iter()
            .map(|c| c.fingerprint)
            .zip(std::mem::take(&mut self.states))
            .map(Some)
            .collect();
        let mut kept = 0;
        self.states = rules
            .correlations
            .iter()
            .map(|c| {
                let same = old
                    .iter_mut()
                    .find(|o| o.as_ref().is_some_and(|(f, _)| *f == c.fingerprint))
                    .and_then(Option::take);
                match same {
                    Some((_, state)) => {
                        kept += 1;
                        state
                    }
                    None => {
                        let mut state = new_state(c);
                        if self.tracking {
                            state.track_changes();
                        }
                        state
                    }
                }
            })
            .collect();
        self.stats.evicted += old.iter().flatten().map(|(_, s)| s.evicted()).sum::<u64>();
        if self.tracking {
            // The state of a correlation that changed or went away is dropped: so are its
            // changelog records.
            for (fingerprint, state) in old.iter_mut().flatten() {
                let mut pending = Vec::new();
                state.take_changes(*fingerprint, &mut pending);
                self.dropped
                    .extend(pending.into_iter().map(|c| StateChange {
                        key: c.key,
                        value: None,
                    }));
                state.tombstones(*fingerprint, &mut self.dropped);
            }
        }
        self.clocked = clocked(&rules);
        self.lookback.set_retention(retention(&rules, &self.config));
        self.rules = rules;
        kept
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        s.evicted += self.states.iter().map(State::evicted).sum::<u64>();
        s.lookback_evicted = self.lookback.evicted();
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
            max_hits_per_stage: self.config.max_hits_per_stage,
        }
    }

    /// The event-time watermark of `tenant`: its newest event, less the allowed lateness.
    fn watermark(&self, tenant: &TenantId) -> Option<Timestamp> {
        self.clocks
            .get(tenant)
            .map(|c| c.add_nanos(-nanos(self.config.allowed_lateness)))
    }

    /// Feeds one event; returns the alerts it completes, in a deterministic order.
    pub fn observe(&mut self, event: &Event) -> Vec<Alert> {
        self.stats.events += 1;
        let rules = Arc::clone(&self.rules);
        let mut alerts = Vec::new();
        let mut queue = VecDeque::new();
        // Roles first: an event that shows its host is an Exchange server puts the host in
        // the scope of Exchange playbooks for its own matches too.
        self.roles.observe(self.signals, event);
        let mut notable: Vec<&RuleInfo> = Vec::new();
        // The evidence made for hits, shared with the look-back's entry of the event.
        let mut made: Vec<Arc<[Evidence]>> = Vec::new();
        {
            let buffers = std::mem::take(&mut self.buffers);
            let view = EventView::with_buffers(event, &rules.fields, buffers);
            let mut matched = std::mem::take(&mut self.matched);
            let tested = rules.match_view(&view, &mut self.scratch, &mut matched);
            self.stats.candidates += tested as u64;
            let policies = rules.policies();
            for &ri in &matched {
                let rule = &rules.detections[ri];
                if policies.excluded(ri, &view) {
                    self.stats.excluded += 1;
                    continue;
                }
                self.stats.matches += 1;
                notable.push(&rule.info);
                if rule.standalone {
                    alerts.push(detection_alert(rule, event));
                }
                if rule.feeds.is_empty() {
                    continue;
                }
                let evidence: Arc<[Evidence]> =
                    Arc::from([Evidence::of(event, &rule.info.rule.id)]);
                made.push(Arc::clone(&evidence));
                for &(ci, input) in &rule.feeds {
                    let corr = &rules.correlations[ci];
                    if !policies.applies(ci, corr, event, &self.roles) {
                        continue;
                    }
                    let key = (
                        event.tenant.clone(),
                        corr.group_by
                            .iter()
                            .map(|g| group_value(&view, g.per_input[input]).unwrap_or_default())
                            .collect(),
                    );
                    let value = match corr.distinct.get(input) {
                        Some(Some(source)) => event_value(&view, *source),
                        _ => corr.value_field.as_ref().and_then(|f| {
                            combined(f[input].iter().map(|s| event_value(&view, *s)))
                        }),
                    };
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
        self.lookback.record_sharing(event, &notable, &made);
        if self.clocked {
            let clock = self
                .clocks
                .entry(event.tenant.clone())
                .or_insert(event.time);
            *clock = (*clock).max(event.time);
        }
        self.run(&rules, queue, &mut alerts);
        if self.clocked {
            self.tick(&rules, Some(&event.tenant), &mut alerts);
        }
        self.finish_alerts(&mut alerts);
        alerts
    }

    /// Feeds an event that no rule can match (the gate said so, without decoding it): the same
    /// effect as [`Engine::observe`] on it, which is to count it and, when some correlation
    /// decides on the tenant's clock, to move that clock to `time` and decide what it closes.
    /// (The gate also lets through every record a host-role signal may read, so role
    /// inference sees all it would see in a full decode.)
    pub fn observe_unmatched(&mut self, tenant: &TenantId, time: Timestamp) -> Vec<Alert> {
        self.stats.events += 1;
        let mut alerts = Vec::new();
        if self.clocked {
            let rules = Arc::clone(&self.rules);
            let clock = self.clocks.entry(tenant.clone()).or_insert(time);
            *clock = (*clock).max(time);
            self.tick(&rules, Some(tenant), &mut alerts);
            self.finish_alerts(&mut alerts);
        }
        alerts
    }

    /// Counts alerts and gives each its look-back.
    fn finish_alerts(&mut self, alerts: &mut [Alert]) {
        self.stats.alerts += alerts.len() as u64;
        for a in alerts {
            self.lookback.attach(a);
        }
    }

    /// Moves every tenant's event-time watermark to at least `watermark` and decides what it
    /// closes (absence deadlines, count windows with upper bounds). The shell calls it when
    /// input is idle; it never moves a watermark back.
    pub fn advance(&mut self, watermark: Timestamp) -> Vec<Alert> {
        let rules = Arc::clone(&self.rules);
        let as_newest = watermark.add_nanos(nanos(self.config.allowed_lateness));
        for clock in self.clocks.values_mut() {
            *clock = (*clock).max(as_newest);
        }
        let mut alerts = Vec::new();
        self.tick(&rules, None, &mut alerts);
        self.finish_alerts(&mut alerts);
        alerts
    }

    /// Decides, for `tenant` (or every tenant with a clock), what its watermark has closed.
    fn tick(&mut self, rules: &RuleSet, tenant: Option<&TenantId>, alerts: &mut Vec<Alert>) {
        let tenants: Vec<TenantId> = match tenant {
            Some(t) => vec![t.clone()],
            None => self.clocks.keys().cloned().collect(),
        };
        for t in tenants {
            let Some(watermark) = self.watermark(&t) else {
                continue;
            };
            let mut fired = Vec::new();
            for (ci, corr) in rules.correlations.iter().enumerate() {
                let limits = self.limits(corr);
                if let (State::Chain(chains), Some(spec)) = (&mut self.states[ci], &corr.chain) {
                    if spec.absences.is_empty() {
                        continue;
                    }
                    let raised = chains.advance(Some(&t), spec, watermark);
                    let mut queue = VecDeque::new();
                    for (key, e) in raised {
                        self.raised(rules, ci, &key, e, alerts, &mut queue);
                    }
                    self.run(rules, queue, alerts);
                } else if corr.deferred() {
                    for f in self.states[ci].advance(&t, watermark, limits) {
                        fired.push((ci, f));
                    }
                }
            }
            self.fire_all(rules, fired, alerts);
        }
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
        self.finish_alerts(&mut alerts);
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
            if let (State::Chain(chains), Some(spec)) =
                (&mut self.states[p.correlation], &corr.chain)
            {
                let slot = corr.slots[p.hit.input];
                let watermark = self
                    .clocks
                    .get(&p.key.0)
                    .map_or(p.hit.time, |c| c.add_nanos(-limits.lateness_ns));
                let key = p.key.clone();
                let out = chains.observe(p.key, slot, p.hit, spec, limits, watermark);
                self.stats.duplicates += u64::from(out.duplicate);
                self.stats.late += u64::from(out.late);
                for e in out.emissions {
                    self.raised(rules, p.correlation, &key, e, alerts, &mut queue);
                }
                continue;
            }
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

    /// An ordered chain raised a version of its finding: its alert, and, when complete, a hit
    /// for the correlations that refer to it.
    fn raised(
        &mut self,
        rules: &RuleSet,
        ci: usize,
        key: &GroupKey,
        e: Emission,
        alerts: &mut Vec<Alert>,
        queue: &mut VecDeque<Pending>,
    ) {
        let corr = &rules.correlations[ci];
        let priority = rules.policies().priority(ci, &key.0);
        let alert = chain_alert(rules, corr, key, &e, priority);
        if !e.partial {
            feed_outer(rules, ci, key, &alert, queue);
        }
        if corr.standalone {
            alerts.push(alert);
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
        feed_outer(rules, ci, &firing.key, &alert, queue);
        if corr.standalone {
            alerts.push(alert);
        }
    }
}

/// The hits a correlation's finding gives the correlations that refer to it.
fn feed_outer(
    rules: &RuleSet,
    ci: usize,
    key: &GroupKey,
    alert: &Alert,
    queue: &mut VecDeque<Pending>,
) {
    let corr = &rules.correlations[ci];
    for &(outer, input) in &corr.feeds {
        let o = &rules.correlations[outer];
        let from_group = |s: Source| match s {
            Source::Group(i) => key.1.get(i).cloned(),
            Source::Field(_) | Source::Host => None,
        };
        let outer_key = (
            key.0.clone(),
            o.group_by
                .iter()
                .map(|g| from_group(g.per_input[input]).unwrap_or_default())
                .collect(),
        );
        let value = o.value_field.as_ref().and_then(|f| {
            combined(
                f[input]
                    .iter()
                    .map(|s| from_group(*s).map(|v| Box::from(v.as_str()))),
            )
        });
        let evidence: Arc<[Evidence]> = alert.events.iter().cloned().collect();
        queue.push_back(Pending {
            correlation: outer,
            key: outer_key,
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
}

/// How far behind a host's newest notable event the look-back must keep entries: an alert's
/// first evidence can be the longest timespan and the allowed lateness behind it, and its
/// look-back reaches the period before that.
fn retention(rules: &RuleSet, config: &EngineConfig) -> Duration {
    let longest = rules
        .correlations
        .iter()
        .map(|c| c.timespan)
        .max()
        .unwrap_or_default();
    config.lookback.period + longest + config.allowed_lateness
}

/// True when some correlation decides on the tenant's clock: a count with an upper bound, or
/// a chain that waits for an absence.
fn clocked(rules: &RuleSet) -> bool {
    rules.correlations.iter().any(|c| {
        c.deferred()
            || c.chain
                .as_ref()
                .is_some_and(|spec| !spec.absences.is_empty())
    })
}

fn new_state(corr: &CompiledCorrelation) -> State {
    let n = corr.inputs.len();
    match corr.kind {
        CorrelationType::TemporalOrdered => State::Chain(Chains::default()),
        CorrelationType::Temporal => {
            let min = (0..=n as u64)
                .find(|k| corr.bounds.holds(*k))
                .map_or(n, |k| k as usize)
                .max(1);
            State::Temporal(Temporal::new(n, min))
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

/// An event's value for a group-by field: as [`event_value`], shared; a host field gives the
/// host name's own key (no copy: a million groups by host keep a million keys).
fn group_value(view: &EventView<'_>, source: Source) -> Option<SharedStr> {
    match source {
        Source::Host => Some(view.event.host.shared_key()),
        Source::Field(id) => view.get(id).and_then(|v| v.lower()).map(SharedStr::from),
        Source::Group(_) => None,
    }
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
        lookback: None,
    }
}

fn correlation_alert(rules: &RuleSet, corr: &CompiledCorrelation, firing: &Firing) -> Alert {
    let key = &firing.key;
    let hits = &firing.hits;
    let mut h = group_hasher(corr, key);
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
                name: info
                    .name
                    .clone()
                    .unwrap_or_else(|| info.rule.id.to_string()),
                rule: info.rule.clone(),
                techniques: info.techniques.clone(),
                time: p.time,
                events: ids.collect(),
            }),
        }
    }
    let mut techniques: Vec<TechniqueId> = Vec::new();
    for s in &stages {
        push_unique(&mut techniques, &s.techniques);
    }
    push_unique(&mut techniques, &corr.info.techniques);
    let events: Vec<Evidence> = hits
        .iter()
        .flat_map(|p| p.evidence.iter().cloned())
        .collect();
    let host = hits
        .iter()
        .max_by_key(|p| p.time)
        .map_or_else(|| HostName::new(""), |p| p.host.clone());
    correlation_finding(
        corr,
        key,
        Found {
            id: h.alert_id(),
            host,
            revision: 0,
            partial: false,
            severity: corr.severity,
            techniques,
            stages,
            events,
        },
    )
}

/// The alert of one version of an ordered chain's finding.
fn chain_alert(
    rules: &RuleSet,
    corr: &CompiledCorrelation,
    key: &GroupKey,
    e: &Emission,
    priority: Option<Severity>,
) -> Alert {
    let mut h = group_hasher(corr, key);
    h.id(e.seed.as_u128());
    let mut techniques: Vec<TechniqueId> = Vec::new();
    let mut stages = Vec::with_capacity(e.picks.len());
    let mut events: Vec<Evidence> = Vec::new();
    for p in &e.picks {
        let info = &corr.stages[p.stage];
        let mut matched: Vec<usize> = p.hits.iter().map(|h| h.input).collect();
        matched.sort_unstable();
        matched.dedup();
        let mut stage_techniques = Vec::new();
        for &input in &matched {
            push_unique(
                &mut stage_techniques,
                &rules.input_info(corr.inputs[input]).techniques,
            );
        }
        push_unique(&mut techniques, &stage_techniques);
        let rule = if let [only] = info.inputs[..] {
            rules.input_info(corr.inputs[only]).rule.clone()
        } else {
            let infos: Vec<_> = matched
                .iter()
                .map(|&i| rules.input_info(corr.inputs[i]))
                .collect();
            RuleRef {
                id: info.name.clone().into(),
                title: infos
                    .iter()
                    .map(|i| i.rule.title.as_str())
                    .collect::<Vec<_>>()
                    .join(" + "),
                level: infos
                    .iter()
                    .map(|i| i.rule.level)
                    .max()
                    .unwrap_or(Severity::Medium),
            }
        };
        stages.push(Stage {
            name: info.name.clone(),
            rule,
            techniques: stage_techniques,
            time: p.time,
            events: p
                .hits
                .iter()
                .flat_map(|h| h.evidence.iter().map(|x| x.id))
                .collect(),
        });
        events.extend(p.hits.iter().flat_map(|h| h.evidence.iter().cloned()));
    }
    push_unique(&mut techniques, &corr.info.techniques);
    let host = e
        .picks
        .last()
        .and_then(|p| p.hits.last())
        .map_or_else(|| HostName::new(""), |h| h.host.clone());
    correlation_finding(
        corr,
        key,
        Found {
            id: h.alert_id(),
            host,
            revision: e.revision,
            partial: e.partial,
            severity: priority.or(e.priority).unwrap_or(corr.severity),
            techniques,
            stages,
            events,
        },
    )
}

/// Starts the id of a finding of `corr` for group `key` (the solver adds what it picked).
fn group_hasher(corr: &CompiledCorrelation, key: &GroupKey) -> IdHasher {
    let mut h = IdHasher::new();
    h.part(b"chain")
        .part(corr.info.rule.id.as_bytes())
        .part(key.0.as_str().as_bytes());
    for v in key.1.iter() {
        h.part(v.as_bytes());
    }
    h
}

/// What a correlation's solver found, for [`correlation_finding`].
struct Found {
    id: AlertId,
    host: HostName,
    revision: u32,
    partial: bool,
    severity: Severity,
    techniques: Vec<TechniqueId>,
    stages: Vec<Stage>,
    /// Every contributing event, in any order and possibly repeated (one event can be behind
    /// several hits).
    events: Vec<Evidence>,
}

/// The finding of `corr` for group `key`: what every correlation kind fills in the same way,
/// around what its solver `found`.
fn correlation_finding(corr: &CompiledCorrelation, key: &GroupKey, found: Found) -> Alert {
    let mut events = found.events;
    events.sort_by_key(|x| (x.time, x.id));
    events.dedup_by_key(|x| x.id);
    let user = events.iter().rev().find_map(|x| x.user.clone());
    let first_seen = events.first().map_or(Timestamp::from_nanos(0), |x| x.time);
    let last_seen = events.last().map_or(first_seen, |x| x.time);
    Alert {
        id: found.id,
        tenant: key.0.clone(),
        host: found.host,
        user,
        kind: AlertKind::Chain,
        revision: found.revision,
        partial: found.partial,
        rule: corr.info.rule.clone(),
        severity: found.severity,
        playbook: corr
            .info
            .name
            .clone()
            .or_else(|| Some(corr.info.rule.title.clone())),
        techniques: found.techniques,
        first_seen,
        last_seen,
        group: corr
            .group_by
            .iter()
            .zip(key.1.iter())
            .map(|(g, v)| (g.name.clone(), v.to_string()))
            .collect(),
        stages: found.stages,
        events,
        response: corr
            .playbook
            .as_ref()
            .map(|p| p.response.clone())
            .unwrap_or_default(),
        description: corr.info.description.clone(),
        lookback: None,
    }
}

fn push_unique(into: &mut Vec<TechniqueId>, from: &[TechniqueId]) {
    for t in from {
        if !into.contains(t) {
            into.push(*t);
        }
    }
}
