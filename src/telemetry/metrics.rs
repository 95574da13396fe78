//! The pipeline's metrics, registered in an explicit [`Registry`] (never the global one, so
//! tests and several pipelines in one process stay apart).
//!
//! Nothing increments these directly: the named events of [`super::events`] do, each logging
//! and counting one observable thing in one place. Label values are bounded: tenant (capped,
//! [`super::tenants`]), source, format, stage, reason, playbook, priority, sink, result.

use std::sync::Arc;

use chainwatch_config::ops::MetricsConfig;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::tenants::TenantLabels;

/// Detection latency from event time: telemetry reaches us after seconds (agents that stream)
/// to hours (collectors that batch, laptops back online); backfills are days behind.
const EVENT_TIME_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
    604800.0,
];
/// Detection latency from arrival in Kafka: the pipeline's own delay, milliseconds when it
/// keeps up, minutes when it lags.
const ARRIVAL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Sink delivery: a file write to a webhook behind retries.
const DELIVERY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Every pipeline metric. Kafka client metrics are `chainwatch_kafka::KafkaMetrics`.
#[derive(Debug)]
pub struct Metrics {
    pub(super) tenants: TenantLabels,
    pub(super) records_consumed: IntCounterVec,
    pub(super) events_normalized: IntCounterVec,
    pub(super) dead_letters: IntCounterVec,
    pub(super) alerts: IntCounterVec,
    pub(super) latency_event_time: Histogram,
    pub(super) latency_arrival: Histogram,
    pub(super) correlator_partial_chains: IntGauge,
    pub(super) correlator_events: IntCounter,
    pub(super) correlator_matches: IntCounter,
    pub(super) correlator_duplicates: IntCounter,
    pub(super) correlator_late: IntCounter,
    pub(super) correlator_evictions: IntCounter,
    pub(super) correlator_partitions: IntGauge,
    pub(super) state_restores: IntCounter,
    pub(super) state_restored_groups: IntCounter,
    pub(super) state_skipped: IntCounterVec,
    pub(super) sink_deliveries: IntCounterVec,
    pub(super) sink_retries: IntCounterVec,
    pub(super) sink_failures: IntCounterVec,
    pub(super) sink_latency: HistogramVec,
    pub(super) rule_reloads: IntCounterVec,
    pub(super) rules: IntGaugeVec,
    pub(super) ready: IntGauge,
    pub(super) host_roles: IntGaugeVec,
    pub(super) lookback_events: IntGauge,
    pub(super) lookback_evictions: IntCounter,
    pub(super) role_records: IntCounterVec,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let m = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let m = IntCounter::new(name, help)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let m = IntGauge::new(name, help)?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> prometheus::Result<Histogram> {
    let m = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

impl Metrics {
    /// Creates every metric and registers it in `registry`.
    pub fn new(registry: &Registry, config: &MetricsConfig) -> prometheus::Result<Arc<Self>> {
        let r = registry;
        let sink_latency = HistogramVec::new(
            HistogramOpts::new(
                "chainwatch_sink_delivery_seconds",
                "Time to deliver one alert durably, retries included",
            )
            .buckets(DELIVERY_BUCKETS.to_vec()),
            &["sink"],
        )?;
        r.register(Box::new(sink_latency.clone()))?;
        let m = Self {
            tenants: TenantLabels::new(config),
            records_consumed: counter_vec(
                r,
                "chainwatch_records_consumed_total",
                "Raw telemetry records consumed by the ingest stage",
                &["tenant", "source", "format"],
            )?,
            events_normalized: counter_vec(
                r,
                "chainwatch_events_normalized_total",
                "Records decoded and normalized into events, by the format they were read as",
                &["tenant", "format"],
            )?,
            dead_letters: counter_vec(
                r,
                "chainwatch_dead_letters_total",
                "Records sent to the dead-letter topic, by stage and reason",
                &["stage", "reason"],
            )?,
            alerts: counter_vec(
                r,
                "chainwatch_alerts_total",
                "Findings produced to the alerts topic",
                &["playbook", "priority", "tenant"],
            )?,
            latency_event_time: histogram(
                r,
                "chainwatch_detection_latency_event_time_seconds",
                "From the event time of the event that completed a finding to the finding",
                EVENT_TIME_BUCKETS,
            )?,
            latency_arrival: histogram(
                r,
                "chainwatch_detection_latency_arrival_seconds",
                "From the arrival in Kafka of the record that completed a finding to the finding",
                ARRIVAL_BUCKETS,
            )?,
            correlator_partial_chains: gauge(
                r,
                "chainwatch_correlator_partial_chains",
                "Groups (tenant and group-by key per correlation) holding a partial chain",
            )?,
            correlator_events: counter(
                r,
                "chainwatch_correlator_events_total",
                "Events the correlator observed",
            )?,
            correlator_matches: counter(
                r,
                "chainwatch_correlator_matches_total",
                "Detection rule matches",
            )?,
            correlator_duplicates: counter(
                r,
                "chainwatch_correlator_duplicates_total",
                "Rule hits dropped because the event was already held (redelivery)",
            )?,
            correlator_late: counter(
                r,
                "chainwatch_correlator_late_total",
                "Rule hits dropped as later than the allowed lateness",
            )?,
            correlator_evictions: counter(
                r,
                "chainwatch_correlator_evictions_total",
                "Groups evicted by the state limits",
            )?,
            correlator_partitions: gauge(
                r,
                "chainwatch_correlator_partitions",
                "Partitions of the events topic whose correlator state this process holds",
            )?,
            state_restores: counter(
                r,
                "chainwatch_state_restores_total",
                "Partition states read back from the changelog (a partition assigned here)",
            )?,
            state_restored_groups: counter(
                r,
                "chainwatch_state_restored_groups_total",
                "Groups (partial chains, windows) restored from the changelog",
            )?,
            state_skipped: counter_vec(
                r,
                "chainwatch_state_skipped_total",
                "Changelog records skipped at restore, by reason (unknown_correlation: its playbook changed; unreadable)",
                &["reason"],
            )?,
            sink_deliveries: counter_vec(
                r,
                "chainwatch_sink_deliveries_total",
                "Alerts delivered durably, by sink",
                &["sink"],
            )?,
            sink_retries: counter_vec(
                r,
                "chainwatch_sink_retries_total",
                "Delivery attempts that failed and are tried again, by sink",
                &["sink"],
            )?,
            sink_failures: counter_vec(
                r,
                "chainwatch_sink_failures_total",
                "Deliveries that failed for good (the sink stops), by sink",
                &["sink"],
            )?,
            sink_latency,
            rule_reloads: counter_vec(
                r,
                "chainwatch_rule_reloads_total",
                "Loads of the rule set, the one at start-up included, by result",
                &["result"],
            )?,
            rules: {
                let m = IntGaugeVec::new(
                    Opts::new("chainwatch_rules", "Rules running, by kind"),
                    &["kind"],
                )?;
                r.register(Box::new(m.clone()))?;
                m
            },
            ready: gauge(
                r,
                "chainwatch_ready",
                "1 when /readyz reports ready: rules loaded, partitions assigned, a broker reachable",
            )?,
            host_roles: {
                let m = IntGaugeVec::new(
                    Opts::new(
                        "chainwatch_host_roles",
                        "Hosts inferred to have a role (exchange, domain_controller, iis), by tenant, as this process observed them",
                    ),
                    &["role", "tenant"],
                )?;
                r.register(Box::new(m.clone()))?;
                m
            },
            lookback_events: gauge(
                r,
                "chainwatch_lookback_events",
                "Notable events held in the per-host look-back buffers",
            )?,
            lookback_evictions: counter(
                r,
                "chainwatch_lookback_evictions_total",
                "Notable events the look-back dropped because a bound (host, tenant, global) was reached",
            )?,
            role_records: counter_vec(
                r,
                "chainwatch_role_records_total",
                "Host role records written to the roles topic (written) or not (no roles topic: dropped)",
                &["result"],
            )?,
        };
        let build = IntGaugeVec::new(
            Opts::new("chainwatch_build_info", "The running chainwatch's version"),
            &["version"],
        )?;
        r.register(Box::new(build.clone()))?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Series that exist from the start, so rates and "none so far" show as 0, not as no data.
        for result in ["ok", "error"] {
            m.rule_reloads.with_label_values(&[result]);
        }
        for result in ["written", "dropped"] {
            m.role_records.with_label_values(&[result]);
        }
        for reason in ["unknown_correlation", "unreadable"] {
            m.state_skipped.with_label_values(&[reason]);
        }
        Ok(Arc::new(m))
    }

    /// Metrics in a registry of their own, which nothing serves: for cores run without the
    /// HTTP endpoint (tests, tools).
    pub fn detached() -> Arc<Self> {
        match Self::new(&Registry::new(), &MetricsConfig::default()) {
            Ok(m) => m,
            // Registration only fails on a duplicate or malformed name, which a fresh registry
            // and the fixed names above rule out.
            Err(e) => unreachable!("metrics in a fresh registry: {e}"),
        }
    }

    /// Creates the series of a sink, so its counters read 0 before the first alert.
    pub fn register_sink(&self, sink: &str) {
        self.sink_deliveries.with_label_values(&[sink]);
        self.sink_retries.with_label_values(&[sink]);
        self.sink_failures.with_label_values(&[sink]);
        self.sink_latency.with_label_values(&[sink]);
    }

    /// Sets the readiness gauge.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }
}
