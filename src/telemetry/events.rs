//! Named events: one per observable thing, whose `emit` logs it and counts it in one place, so
//! a log line and its metric never disagree.
//!
//! Log fields may carry detail (offsets, alert ids, error text); metric labels carry only
//! bounded values. No event logs a payload, a header value or a config value.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chainwatch_correlate::{EngineStats, RestoreStats};
use chainwatch_kafka::InMessage;
use chainwatch_model::{Alert, Timestamp};

use super::Metrics;
use super::tenants;

/// The playbook label of an alert: its playbook, or `(none)` for a standalone detection.
pub fn playbook_label(alert: &Alert) -> &str {
    alert.playbook.as_deref().unwrap_or("(none)")
}

/// A raw record taken from a telemetry topic by the ingest stage.
#[derive(Debug)]
pub struct RecordConsumed<'a> {
    /// Its tenant, when its topic names one.
    pub tenant: Option<&'a str>,
    /// The source (config `[[sources]] name`) whose pattern matched, or `(none)`.
    pub source: &'a str,
    /// The source's configured format.
    pub format: &'a str,
}

impl RecordConsumed<'_> {
    /// Counts it.
    pub fn emit(&self, m: &Metrics) {
        let tenant = self.tenant.map_or(tenants::NONE, |t| m.tenants.label(t));
        m.records_consumed
            .with_label_values(&[tenant, self.source, self.format])
            .inc();
    }
}

/// A record decoded and normalized into an event.
#[derive(Debug)]
pub struct EventNormalized<'a> {
    /// The event's tenant.
    pub tenant: &'a str,
    /// The format it was read as (`windows-flat`, ...).
    pub format: &'a str,
}

impl EventNormalized<'_> {
    /// Counts it.
    pub fn emit(&self, m: &Metrics) {
        m.events_normalized
            .with_label_values(&[m.tenants.label(self.tenant), self.format])
            .inc();
    }
}

/// A record sent to the dead-letter topic.
#[derive(Debug)]
pub struct DeadLettered<'a, 'm> {
    /// The stage that could not process it.
    pub stage: &'static str,
    /// The reason, from a closed set (`malformed_json`, `no_time`, ...).
    pub reason: &'static str,
    /// The record.
    pub msg: &'a InMessage<'m>,
    /// Which record of a message holding several (W3C lines, an EVTX file), if so.
    pub record: Option<u64>,
    /// What went wrong, for the log line.
    pub error: &'a str,
}

impl DeadLettered<'_, '_> {
    /// Logs it with its provenance and counts it.
    pub fn emit(&self, m: &Metrics) {
        tracing::warn!(
            stage = self.stage,
            topic = self.msg.topic,
            partition = self.msg.partition,
            offset = self.msg.offset,
            record = self.record,
            reason = self.reason,
            "dead-lettered: {}",
            self.error
        );
        m.dead_letters
            .with_label_values(&[self.stage, self.reason])
            .inc();
    }
}

/// A finding produced to the alerts topic.
#[derive(Debug)]
pub struct AlertRaised<'a> {
    /// The finding.
    pub alert: &'a Alert,
    /// The event time of the event that completed it.
    pub event_time: Timestamp,
    /// When the record that completed it arrived in Kafka (ms since the epoch), if known.
    pub arrival_ms: Option<i64>,
    /// Now.
    pub now: SystemTime,
}

fn since(now: SystemTime, then_ms: i64) -> Duration {
    let then = UNIX_EPOCH + Duration::from_millis(u64::try_from(then_ms).unwrap_or(0));
    // A clock behind the record's time (skew between hosts) counts as no delay, not as a
    // negative one.
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

impl AlertRaised<'_> {
    /// Logs it, counts it and observes its detection latency.
    pub fn emit(&self, m: &Metrics) {
        let a = self.alert;
        tracing::info!(
            alert = %a.id,
            tenant = %a.tenant,
            rule = %a.rule.title,
            playbook = a.playbook.as_deref(),
            priority = a.severity.as_str(),
            "alert"
        );
        m.alerts
            .with_label_values(&[
                playbook_label(a),
                a.severity.as_str(),
                m.tenants.label(a.tenant.as_str()),
            ])
            .inc();
        let event_ms = self.event_time.as_millis();
        m.latency_event_time
            .observe(since(self.now, event_ms).as_secs_f64());
        if let Some(arrival) = self.arrival_ms {
            m.latency_arrival
                .observe(since(self.now, arrival).as_secs_f64());
        }
    }
}

/// The correlator's counters and state after a message: turns the engine's running totals
/// into metric increments.
#[derive(Debug)]
pub struct CorrelatorState<'a> {
    /// Totals now.
    pub stats: &'a EngineStats,
    /// Totals at the previous report.
    pub previous: &'a EngineStats,
    /// Partial chains held now, over the partitions held.
    pub partial_chains: usize,
    /// Partitions whose state this process holds.
    pub partitions: usize,
}

impl CorrelatorState<'_> {
    /// Counts the differences and sets the state gauge. Not logged: it is state, not an event.
    pub fn emit(&self, m: &Metrics) {
        let (s, p) = (self.stats, self.previous);
        m.correlator_events
            .inc_by(s.events.saturating_sub(p.events));
        m.correlator_matches
            .inc_by(s.matches.saturating_sub(p.matches));
        m.correlator_duplicates
            .inc_by(s.duplicates.saturating_sub(p.duplicates));
        m.correlator_late.inc_by(s.late.saturating_sub(p.late));
        m.correlator_evictions
            .inc_by(s.evicted.saturating_sub(p.evicted));
        m.correlator_partial_chains
            .set(i64::try_from(self.partial_chains).unwrap_or(i64::MAX));
        m.correlator_partitions
            .set(i64::try_from(self.partitions).unwrap_or(i64::MAX));
    }
}

/// A partition's correlator state read back from the changelog (the partition was assigned to
/// this process).
#[derive(Debug)]
pub struct StateRestored<'a> {
    /// The events partition.
    pub partition: i32,
    /// The offset processing resumes from (changes tagged at or after it were left out).
    pub from: i64,
    /// What the engine did with the records.
    pub stats: &'a RestoreStats,
    /// How long rebuilding the engine took (reading the changelog not included).
    pub elapsed: Duration,
}

impl StateRestored<'_> {
    /// Logs and counts it.
    pub fn emit(&self, m: &Metrics) {
        tracing::info!(
            partition = self.partition,
            from = self.from,
            groups = self.stats.groups,
            unknown = self.stats.unknown,
            unreadable = self.stats.unreadable,
            elapsed_ms = u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            "partition state restored"
        );
        if self.stats.unreadable > 0 {
            tracing::warn!(
                partition = self.partition,
                unreadable = self.stats.unreadable,
                "state records that could not be read were skipped"
            );
        }
        m.state_restores.inc();
        m.state_restored_groups.inc_by(self.stats.groups as u64);
        m.state_skipped
            .with_label_values(&["unknown_correlation"])
            .inc_by(self.stats.unknown as u64);
        m.state_skipped
            .with_label_values(&["unreadable"])
            .inc_by(self.stats.unreadable as u64);
    }
}

/// The look-back buffers' size and evictions, reported with the correlator's state.
#[derive(Debug)]
pub struct LookbackState {
    /// Notable events held now.
    pub held: usize,
    /// Evictions so far, and at the previous report.
    pub evicted: u64,
    /// Evictions at the previous report.
    pub previous: u64,
}

impl LookbackState {
    /// Sets the gauge and counts new evictions. Not logged: it is state.
    pub fn emit(&self, m: &Metrics) {
        m.lookback_events
            .set(i64::try_from(self.held).unwrap_or(i64::MAX));
        m.lookback_evictions
            .inc_by(self.evicted.saturating_sub(self.previous));
    }
}

/// The hosts with each role, per tenant, as the correlator now counts them.
#[derive(Debug)]
pub struct HostRolesCounted<'a> {
    /// (tenant, role) to hosts.
    pub counts: &'a std::collections::BTreeMap<(chainwatch_model::TenantId, String), usize>,
}

impl HostRolesCounted<'_> {
    /// Sets the gauges (tenants beyond the label cap are summed in theirs); a tenant and role
    /// no longer counted (its partition moved away) goes. Not logged.
    pub fn emit(&self, m: &Metrics) {
        m.host_roles.reset();
        let mut by_label: std::collections::BTreeMap<(&str, &str), i64> =
            std::collections::BTreeMap::new();
        for ((tenant, role), n) in self.counts {
            let label = m.tenants.label(tenant.as_str());
            *by_label.entry((role.as_str(), label)).or_default() +=
                i64::try_from(*n).unwrap_or(i64::MAX);
        }
        for ((role, tenant), n) in by_label {
            m.host_roles.with_label_values(&[role, tenant]).set(n);
        }
    }
}

/// A host gained a role (or was seen with it again a day later): its record is written to
/// the roles topic, or dropped when there is none.
#[derive(Debug)]
pub struct HostRoleChanged<'a> {
    /// The record.
    pub host: &'a chainwatch_correlate::HostRoles,
    /// Written to the roles topic (else dropped: no topic).
    pub written: bool,
}

impl HostRoleChanged<'_> {
    /// Logs (at debug: a fleet seen for the first time changes the roles of every host it
    /// has, a million lines for a million hosts; the roles topic and `chainwatch hosts` hold
    /// them) and counts it.
    pub fn emit(&self, m: &Metrics) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let roles: Vec<&str> = self.host.roles.keys().map(String::as_str).collect();
            tracing::debug!(
                tenant = self.host.tenant.as_str(),
                host = %self.host.host,
                roles = %roles.join(","),
                "host roles inferred"
            );
        }
        m.role_records
            .with_label_values(&[if self.written { "written" } else { "dropped" }])
            .inc();
    }
}

/// An alert delivered durably by a sink.
#[derive(Debug)]
pub struct SinkDelivered<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The alert.
    pub alert: &'a str,
    /// Its tenant.
    pub tenant: &'a str,
    /// Attempts it took.
    pub attempts: u32,
    /// The destination already had it (an idempotent repeat).
    pub duplicate: bool,
    /// From the first attempt to the confirmation, retries included.
    pub elapsed: Duration,
}

impl SinkDelivered<'_> {
    /// Logs and counts it.
    pub fn emit(&self, m: &Metrics) {
        tracing::info!(
            sink = self.sink,
            alert = self.alert,
            tenant = self.tenant,
            attempts = self.attempts,
            duplicate = self.duplicate,
            latency_ms = u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
            "delivered"
        );
        m.sink_deliveries.with_label_values(&[self.sink]).inc();
        m.sink_latency
            .with_label_values(&[self.sink])
            .observe(self.elapsed.as_secs_f64());
    }
}

/// A delivery attempt that failed and will be tried again.
#[derive(Debug)]
pub struct SinkRetry<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The alert.
    pub alert: &'a str,
    /// Failed attempts so far.
    pub attempt: u32,
    /// What failed.
    pub error: &'a str,
    /// The wait before the next attempt.
    pub backoff: Duration,
}

impl SinkRetry<'_> {
    /// Logs and counts it.
    pub fn emit(&self, m: &Metrics) {
        tracing::warn!(
            sink = self.sink,
            alert = self.alert,
            attempt = self.attempt,
            error = %self.error,
            wait_ms = u64::try_from(self.backoff.as_millis()).unwrap_or(u64::MAX),
            "delivery failed; retrying"
        );
        m.sink_retries.with_label_values(&[self.sink]).inc();
    }
}

/// A record a sink sends to the dead-letter topic instead of its destination: the destination
/// refused it, retries ran out, or it was not a finding.
#[derive(Debug)]
pub struct SinkDeadLettered<'a> {
    /// The sink.
    pub sink: &'a str,
    /// The alert, when the record was one.
    pub alert: Option<&'a str>,
    /// `rejected`, `retries_exhausted` or `malformed_alert`.
    pub reason: &'static str,
    /// What failed.
    pub error: &'a str,
}

impl SinkDeadLettered<'_> {
    /// Logs and counts it (as a sink failure).
    pub fn emit(&self, m: &Metrics) {
        tracing::error!(
            sink = self.sink,
            alert = self.alert,
            reason = self.reason,
            error = %self.error,
            "dead-lettered"
        );
        m.sink_failures.with_label_values(&[self.sink]).inc();
    }
}

/// A rule set loaded (at start-up, or by a reload).
#[derive(Debug)]
pub struct RulesLoaded {
    /// Detection rules.
    pub detections: usize,
    /// Correlation rules.
    pub correlations: usize,
    /// Why they were loaded: `start-up`, `SIGHUP`, `rule files changed`.
    pub reason: &'static str,
}

impl RulesLoaded {
    /// Logs and counts it, and sets the rule gauges.
    pub fn emit(&self, m: &Metrics) {
        let message = if self.reason == "start-up" {
            "rules loaded"
        } else {
            "rules reloaded"
        };
        tracing::info!(
            reason = self.reason,
            detections = self.detections,
            correlations = self.correlations,
            "{message}"
        );
        m.rule_reloads.with_label_values(&["ok"]).inc();
        m.rules
            .with_label_values(&["detection"])
            .set(i64::try_from(self.detections).unwrap_or(i64::MAX));
        m.rules
            .with_label_values(&["correlation"])
            .set(i64::try_from(self.correlations).unwrap_or(i64::MAX));
    }
}

/// A rule set refused: at start-up the process stops; on a reload the old rules keep running.
#[derive(Debug)]
pub struct RulesRejected<'a> {
    /// Every problem, as one message (possibly over several lines).
    pub error: &'a str,
    /// Why a load was tried: `start-up`, `SIGHUP`, `rule files changed`.
    pub reason: &'static str,
}

impl RulesRejected<'_> {
    /// Logs (on one line: every problem, joined, so log shippers keep them together) and
    /// counts it.
    pub fn emit(&self, m: &Metrics) {
        let problems = self
            .error
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if self.reason == "start-up" {
            tracing::error!(reason = self.reason, "rules refused: {problems}");
        } else {
            tracing::error!(
                reason = self.reason,
                "reload rejected, the running rules stay: {problems}"
            );
        }
        m.rule_reloads.with_label_values(&["error"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_never_negative() {
        let now = UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(since(now, 99_500), Duration::from_millis(500));
        assert_eq!(since(now, 200_000), Duration::ZERO);
    }
}
