//! The sink stage: one consumer group per sink on `chainwatch.alerts`, so a destination that is
//! down stalls only its own sink while detection goes on.

use std::time::Duration;

use chainwatch_kafka::{Deliver, InMessage, StageError};
use chainwatch_model::Alert;
use chainwatch_sink::Deliverer;

/// The sink core for one destination.
pub struct SinkCore {
    deliverer: Deliverer,
}

impl SinkCore {
    /// A core delivering to `deliverer`.
    pub fn new(deliverer: Deliverer) -> Self {
        Self { deliverer }
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
        loop {
            match self.deliverer.deliver(&alert) {
                Ok(()) => return Ok(()),
                Err(e) if e.retryable() => {
                    tracing::warn!(sink = self.deliverer.name(), alert = %alert.id, error = %e, "delivery failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(StageError::Delivery(e.to_string())),
            }
        }
    }
}
