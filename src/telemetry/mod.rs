//! Operations telemetry of `chainwatch run`: what the people who run chainwatch watch and get
//! paged by.
//!
//! - [`metrics`]: every pipeline metric, in the [`prometheus::Registry`] of a [`Telemetry`];
//!   Kafka client metrics (lag, rebalances, brokers) come from `chainwatch_kafka::observe`.
//! - [`events`]: named events whose `emit` logs and counts one observable thing.
//! - [`tenants`]: bounded tenant label values.
//! - [`health`]: readiness facts for `/readyz`.
//! - [`http`]: the `/metrics`, `/healthz`, `/readyz` endpoint.
//! - [`logging`]: the log subscriber (text or JSON, filter directives).
//!
//! The cores (ingest, correlate, sink) know none of this: the stage wrappers in `src/stages/`
//! emit events from what the cores return.

pub mod events;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod tenants;

use std::sync::Arc;

use chainwatch_config::ops::MetricsConfig;
use chainwatch_kafka::{ClientObserver, KafkaMetrics};
use prometheus::Registry;

pub use health::Health;
pub use metrics::Metrics;

/// One process's registry, metrics and readiness facts.
#[derive(Debug)]
pub struct Telemetry {
    /// The registry `/metrics` serves.
    pub registry: Registry,
    /// The pipeline metrics.
    pub metrics: Arc<Metrics>,
    /// The Kafka client metrics.
    pub kafka: Arc<KafkaMetrics>,
    /// Readiness.
    pub health: Health,
}

impl Telemetry {
    /// A fresh registry with every metric in it.
    pub fn new(config: &MetricsConfig) -> prometheus::Result<Arc<Self>> {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry, config)?;
        let kafka = KafkaMetrics::new(&registry)?;
        Ok(Arc::new(Self {
            registry,
            metrics,
            kafka,
            health: Health::default(),
        }))
    }

    /// An observer for a stage's consumer in `group`; it counts towards readiness.
    pub fn consumer_observer(&self, stage: &'static str, group: &str) -> Arc<ClientObserver> {
        let o = ClientObserver::new(group, Arc::clone(&self.kafka));
        self.health.add_consumer(stage, Arc::clone(&o));
        o
    }
}
