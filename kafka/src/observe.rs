//! What Kafka clients tell about themselves, as metrics and as readiness.
//!
//! A client created with an observer ([`crate::client::consumer_with`]) reports its statistics
//! (consumer lag per partition, brokers up), its rebalances and its errors here. The metrics go
//! into the [`Registry`] the binary passes in; the readiness facts (an assignment received, a
//! broker reachable) are read by the binary's `/readyz`.
//!
//! Consumer lag is librdkafka's own `consumer_lag`: the partition's end as the broker last
//! reported it (high watermark) minus the group's committed offset. It is only as right as the
//! broker's watermark; a partition whose lag librdkafka does not know (nothing committed yet,
//! not assigned, or a watermark behind the committed offset) has no series rather than a guess.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::stats::Stats;

/// The Kafka client metrics, registered once per process in the registry given.
#[derive(Debug, Clone)]
pub struct KafkaMetrics {
    consumer_lag: IntGaugeVec,
    assigned_partitions: IntGaugeVec,
    rebalances: IntCounterVec,
    brokers_up: IntGaugeVec,
    client_errors: IntCounterVec,
    commit_failures: IntCounterVec,
    handoff: IntCounterVec,
}

impl KafkaMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Arc<Self>> {
        let m = Self {
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "chainwatch_kafka_consumer_lag",
                    "Records between a consumer group's committed offset and the partition's end, from librdkafka statistics (absent while unknown)",
                ),
                &["group", "topic", "partition"],
            )?,
            assigned_partitions: IntGaugeVec::new(
                Opts::new(
                    "chainwatch_kafka_assigned_partitions",
                    "Partitions currently assigned to this process's consumer in the group",
                ),
                &["group"],
            )?,
            rebalances: IntCounterVec::new(
                Opts::new(
                    "chainwatch_kafka_rebalances_total",
                    "Consumer group rebalance events, by kind (assign, revoke, error)",
                ),
                &["group", "event"],
            )?,
            brokers_up: IntGaugeVec::new(
                Opts::new(
                    "chainwatch_kafka_brokers_up",
                    "Broker connections in state UP, from librdkafka statistics",
                ),
                &["client"],
            )?,
            client_errors: IntCounterVec::new(
                Opts::new(
                    "chainwatch_kafka_client_errors_total",
                    "Errors librdkafka reported for a client, by error code",
                ),
                &["client", "error"],
            )?,
            commit_failures: IntCounterVec::new(
                Opts::new(
                    "chainwatch_kafka_commit_failures_total",
                    "Offset commits that failed",
                ),
                &["group"],
            )?,
            handoff: IntCounterVec::new(
                Opts::new(
                    "chainwatch_kafka_handoff_records_total",
                    "Records handed from a stage to a stage of this process that consumes their topic (ingest's events to the correlator), by outcome: handed, full (the channel was, the consumer brings them), taken (processed from the handoff), passed (dropped by the receiver: behind, or no room to wait for the consumer), stale (waited, and the consumer read them first), skipped (consumed after being taken)",
                ),
                &["topic", "outcome"],
            )?,
        };
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.assigned_partitions.clone()))?;
        registry.register(Box::new(m.rebalances.clone()))?;
        registry.register(Box::new(m.brokers_up.clone()))?;
        registry.register(Box::new(m.client_errors.clone()))?;
        registry.register(Box::new(m.commit_failures.clone()))?;
        registry.register(Box::new(m.handoff.clone()))?;
        Ok(Arc::new(m))
    }

    /// The counter of handed records of `topic` with `outcome` ([`crate::handoff`]).
    pub fn handoff_records(&self, topic: &str, outcome: &str) -> IntCounter {
        self.handoff.with_label_values(&[topic, outcome])
    }
}

const BROKER_UNKNOWN: u8 = 0;
const BROKER_UP: u8 = 1;
const BROKER_DOWN: u8 = 2;

/// One client's reports: its metrics series and what readiness needs to know.
#[derive(Debug)]
pub struct ClientObserver {
    name: String,
    metrics: Arc<KafkaMetrics>,
    /// Partitions assigned; -1 before the first assignment and while a rebalance has taken
    /// every partition away.
    assigned: AtomicI64,
    broker: AtomicU8,
    /// The lag series this client set, to remove those it no longer reports.
    lag_series: Mutex<HashSet<(String, i32)>>,
}

impl ClientObserver {
    /// An observer for the client called `name` (for a consumer: its group).
    pub fn new(name: impl Into<String>, metrics: Arc<KafkaMetrics>) -> Arc<Self> {
        let name = name.into();
        metrics
            .assigned_partitions
            .with_label_values(&[&name])
            .set(0);
        metrics.commit_failures.with_label_values(&[&name]);
        Arc::new(Self {
            name,
            metrics,
            assigned: AtomicI64::new(-1),
            broker: AtomicU8::new(BROKER_UNKNOWN),
            lag_series: Mutex::new(HashSet::new()),
        })
    }

    /// The client's name (a consumer's group).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Partitions assigned, or `None` before the group has given this consumer an assignment
    /// (an empty assignment is `Some(0)`: a standby member of a group with fewer partitions
    /// than members).
    pub fn assignment(&self) -> Option<usize> {
        usize::try_from(self.assigned.load(Ordering::Relaxed)).ok()
    }

    /// Whether a broker is reachable, by the latest sign: an assignment or statistics showing a
    /// broker up (yes), statistics showing none up or an all-brokers-down error (no). `None`
    /// before any sign.
    pub fn broker_reachable(&self) -> Option<bool> {
        match self.broker.load(Ordering::Relaxed) {
            BROKER_UP => Some(true),
            BROKER_DOWN => Some(false),
            _ => None,
        }
    }

    pub(crate) fn on_assign(&self, partitions: usize) {
        self.assigned.store(partitions as i64, Ordering::Relaxed);
        self.broker.store(BROKER_UP, Ordering::Relaxed);
        self.set_assigned_gauge(partitions);
        self.rebalance("assign");
    }

    pub(crate) fn on_revoke(&self, remaining: usize) {
        let state = if remaining == 0 { -1 } else { remaining as i64 };
        self.assigned.store(state, Ordering::Relaxed);
        self.set_assigned_gauge(remaining);
        self.rebalance("revoke");
    }

    pub(crate) fn on_rebalance_error(&self) {
        self.rebalance("error");
    }

    fn rebalance(&self, event: &str) {
        self.metrics
            .rebalances
            .with_label_values(&[&self.name, event])
            .inc();
    }

    fn set_assigned_gauge(&self, partitions: usize) {
        self.metrics
            .assigned_partitions
            .with_label_values(&[&self.name])
            .set(i64::try_from(partitions).unwrap_or(i64::MAX));
    }

    pub(crate) fn on_commit_failure(&self) {
        self.metrics
            .commit_failures
            .with_label_values(&[&self.name])
            .inc();
    }

    pub(crate) fn on_error(&self, error: &KafkaError) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.broker.store(BROKER_DOWN, Ordering::Relaxed);
        }
        // The error code is from librdkafka's closed set: a bounded label.
        let label = code.map_or_else(|| "other".to_owned(), |c| format!("{c:?}"));
        self.metrics
            .client_errors
            .with_label_values(&[&self.name, &label])
            .inc();
    }

    /// Reads one statistics document. Returns the parse error, for the caller to log.
    pub(crate) fn on_stats(&self, json: &[u8]) -> Result<(), serde_json::Error> {
        let stats = Stats::parse(json)?;
        let up = stats.brokers_up();
        self.broker.store(
            if up > 0 { BROKER_UP } else { BROKER_DOWN },
            Ordering::Relaxed,
        );
        self.metrics
            .brokers_up
            .with_label_values(&[&self.name])
            .set(i64::try_from(up).unwrap_or(i64::MAX));
        if stats.kind != "consumer" {
            return Ok(());
        }
        let mut now = HashSet::new();
        for (topic, partition, lag) in stats.known_lags() {
            self.metrics
                .consumer_lag
                .with_label_values(&[&self.name, topic, &partition.to_string()])
                .set(lag);
            now.insert((topic.to_owned(), partition));
        }
        let mut before = self
            .lag_series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (topic, partition) in before.difference(&now) {
            // Gone (revoked) or unknown again: no series, rather than a stale number.
            let _ = self.metrics.consumer_lag.remove_label_values(&[
                &self.name,
                topic,
                &partition.to_string(),
            ]);
        }
        *before = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(registry: &Registry, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        registry
            .gather()
            .into_iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| {
                        let labels = m
                            .get_label()
                            .iter()
                            .map(|l| (l.name().to_owned(), l.value().to_owned()))
                            .collect();
                        (labels, m.get_gauge().get_value())
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn doc(lags: &[(i32, i64)]) -> Vec<u8> {
        let parts: Vec<String> = lags
            .iter()
            .map(|(p, l)| format!(r#""{p}": {{"partition": {p}, "consumer_lag": {l}}}"#))
            .collect();
        format!(
            r#"{{"type": "consumer", "brokers": {{"b/1": {{"state": "UP", "source": "learned"}}}},
                "topics": {{"events": {{"partitions": {{{}}}}}}}}}"#,
            parts.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn lag_series_follow_the_latest_statistics() {
        let registry = Registry::new();
        let o = ClientObserver::new("cw-correlate", KafkaMetrics::new(&registry).unwrap());
        o.on_stats(&doc(&[(0, 5), (1, 7)])).unwrap();
        let lags = gather(&registry, "chainwatch_kafka_consumer_lag");
        assert_eq!(lags.len(), 2);
        assert!(
            lags.iter()
                .any(|(l, v)| l.contains(&("partition".into(), "1".into())) && *v == 7.0)
        );
        // Partition 1 revoked (unknown lag): its series goes; partition 0 is updated.
        o.on_stats(&doc(&[(0, 0), (1, -1)])).unwrap();
        let lags = gather(&registry, "chainwatch_kafka_consumer_lag");
        assert_eq!(lags.len(), 1, "{lags:?}");
        assert_eq!(lags[0].1, 0.0);
        assert_eq!(o.broker_reachable(), Some(true));
    }

    #[test]
    fn readiness_facts_follow_rebalances_and_errors() {
        let registry = Registry::new();
        let o = ClientObserver::new("g", KafkaMetrics::new(&registry).unwrap());
        assert_eq!(o.assignment(), None);
        assert_eq!(o.broker_reachable(), None);
        o.on_assign(0);
        assert_eq!(o.assignment(), Some(0));
        assert_eq!(o.broker_reachable(), Some(true));
        o.on_revoke(0);
        assert_eq!(o.assignment(), None);
        o.on_assign(3);
        assert_eq!(o.assignment(), Some(3));
        o.on_error(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown));
        assert_eq!(o.broker_reachable(), Some(false));
        let errors = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "chainwatch_kafka_client_errors_total")
            .unwrap();
        assert_eq!(errors.get_metric()[0].get_counter().get_value(), 1.0);
    }
}
