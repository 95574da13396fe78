//! The sink stage: one consumer group per sink on `chainwatch.alerts`, so a destination that is
//! down stalls only its own sink while detection goes on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chainwatch_kafka::{Deliver, InMessage, StageError};
use chainwatch_model::Alert;
use chainwatch_sink::Deliverer;

use crate::telemetry::Metrics;
use crate::telemetry::events::{SinkDelivered, SinkFailed, SinkRetry};

/// The sink core for one destination.
pub struct SinkCore {
    deliverer: Deliverer,
    metrics: Arc<Metrics>,
}

impl SinkCore {
    /// A core delivering to `deliverer`.
    pub fn new(deliverer: Deliverer) -> Self {
        Self {
            deliverer,
            metrics: Metrics::detached(),
        }
    }

    /// Reports to `metrics` (instead of a registry nothing serves).
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        metrics.register_sink(self.deliverer.name());
        Self { metrics, ..self }
    }
}

impl Deliver for SinkCore {
    async fn deliver(&mut self, msg: &InMessage<'_>) -> Result<(), StageError> {
        let alert: Alert = match serde_json::from_slice(msg.payload.unwrap_or_default()) {
            Ok(a) => a,
            Err(e) => {
                // Only chainwatch writes this topic; a record that is not an alert is a bug or a
                // foreign producer, and is not an alert to deliver.
                tracing::error!(
                    sink = self.deliverer.name(),
                    topic = msg.topic,
                    partition = msg.partition,
                    offset = msg.offset,
                    "skipping a record that is not an alert: {e}"
                );
                return Ok(());
            }
        };
        let mut backoff = Duration::from_millis(100);
        let started = Instant::now();
        let (sink, id) = (self.deliverer.name().to_owned(), alert.id.to_string());
        loop {
            match self.deliverer.deliver(&alert) {
                Ok(()) => {
                    SinkDelivered {
                        sink: &sink,
                        alert: &id,
                        elapsed: started.elapsed(),
                    }
                    .emit(&self.metrics);
                    return Ok(());
                }
                Err(e) if e.retryable() => {
                    SinkRetry {
                        sink: &sink,
                        alert: &id,
                        error: &e.to_string(),
                        backoff,
                    }
                    .emit(&self.metrics);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    SinkFailed {
                        sink: &sink,
                        alert: &id,
                        error: &e.to_string(),
                    }
                    .emit(&self.metrics);
                    return Err(StageError::Delivery(e.to_string()));
                }
            }
        }
    }
}
