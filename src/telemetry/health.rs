//! Readiness: whether this process is doing its job, for `/readyz` and orchestrators.
//!
//! Ready means: the rules are loaded, every stage's consumer has started and received its
//! partition assignment from its group, and a broker is reachable (by each consumer's latest
//! sign: its assignment, librdkafka's statistics, or an all-brokers-down error). An empty
//! assignment counts: a member of a group with more members than partitions is a healthy
//! standby. A process that is shutting down is not ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chainwatch_kafka::ClientObserver;
use serde::Serialize;

/// The readiness facts of one process.
#[derive(Debug, Default)]
pub struct Health {
    rules_loaded: AtomicBool,
    stages_started: AtomicBool,
    stopping: AtomicBool,
    consumers: Mutex<Vec<(&'static str, Arc<ClientObserver>)>>,
}

/// One consumer's part of the answer.
#[derive(Debug, Serialize)]
pub struct ConsumerReadiness {
    /// Its stage.
    pub stage: &'static str,
    /// Its consumer group.
    pub group: String,
    /// Partitions assigned; `null` before the group has assigned any (or during a rebalance).
    pub partitions: Option<usize>,
    /// Whether it can reach a broker; `null` before any sign either way.
    pub broker_reachable: Option<bool>,
}

/// The `/readyz` answer.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Everything below holds.
    pub ready: bool,
    /// The rule set is loaded.
    pub rules_loaded: bool,
    /// Every configured stage has created its consumers.
    pub stages_started: bool,
    /// Every consumer has its assignment.
    pub partitions_assigned: bool,
    /// Every consumer reaches a broker.
    pub broker_reachable: bool,
    /// Shutdown has begun.
    pub stopping: bool,
    /// Per consumer.
    pub consumers: Vec<ConsumerReadiness>,
}

impl Health {
    /// The rule set is loaded.
    pub fn set_rules_loaded(&self) {
        self.rules_loaded.store(true, Ordering::Relaxed);
    }

    /// A stage's consumer exists; it counts towards readiness from now on.
    pub fn add_consumer(&self, stage: &'static str, observer: Arc<ClientObserver>) {
        self.consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((stage, observer));
    }

    /// Every stage has its consumers.
    pub fn set_stages_started(&self) {
        self.stages_started.store(true, Ordering::Relaxed);
    }

    /// Shutdown has begun.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// The answer now.
    pub fn readiness(&self) -> Readiness {
        let consumers: Vec<ConsumerReadiness> = self
            .consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(stage, o)| ConsumerReadiness {
                stage,
                group: o.name().to_owned(),
                partitions: o.assignment(),
                broker_reachable: o.broker_reachable(),
            })
            .collect();
        let rules_loaded = self.rules_loaded.load(Ordering::Relaxed);
        let stages_started = self.stages_started.load(Ordering::Relaxed);
        let stopping = self.stopping.load(Ordering::Relaxed);
        let partitions_assigned =
            !consumers.is_empty() && consumers.iter().all(|c| c.partitions.is_some());
        let broker_reachable =
            !consumers.is_empty() && consumers.iter().all(|c| c.broker_reachable == Some(true));
        Readiness {
            ready: rules_loaded
                && stages_started
                && partitions_assigned
                && broker_reachable
                && !stopping,
            rules_loaded,
            stages_started,
            partitions_assigned,
            broker_reachable,
            stopping,
            consumers,
        }
    }
}

#[cfg(test)]
mod tests {
    use chainwatch_kafka::KafkaMetrics;
    use prometheus::Registry;

    use super::*;

    #[test]
    fn ready_only_when_every_fact_holds() {
        let h = Health::default();
        assert!(!h.readiness().ready);
        h.set_rules_loaded();
        let metrics = KafkaMetrics::new(&Registry::new()).unwrap();
        let o = ClientObserver::new("cw-ingest", metrics);
        h.add_consumer("ingest", Arc::clone(&o));
        h.set_stages_started();
        let r = h.readiness();
        assert!(
            !r.ready && !r.partitions_assigned && !r.broker_reachable,
            "{r:?}"
        );
        // No public way to fake an assignment from here: `ClientObserver` is fed by librdkafka.
        // The end-to-end test `tests/ops.rs` sees this turn ready against a real broker.
        h.set_stopping();
        assert!(h.readiness().stopping);
    }
}
