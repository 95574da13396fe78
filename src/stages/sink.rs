//! The sink stage: one consumer group per sink on `chainwatch.alerts`, so a destination that is
//! down stalls only its own sink while detection and the other sinks go on.
//!
//! For each record: read the finding (either form), keep it only if the sink's route takes it,
//! then attempt delivery until the destination confirms, retrying what may pass (with backoff,
//! jitter and `Retry-After`, for as long as the sink's `retry_for` allows). A finding that
//! cannot be delivered (a 4xx, retries given up, a record that is not a finding) becomes a
//! dead letter with the reason and the response; the loop stores the offset only once the
//! dead letter is acknowledged. Nothing is dropped silently.
//!
//! Everything a sink does passes through [`SinkCore::emit`]: one place that logs, and the one
//! place to count deliveries, retries, failures and latency per sink.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chainwatch_config::service::{RetryConfig, SinkConfig};
use chainwatch_kafka::{Deliver, Delivery, InMessage, OutRecord, StageError};
use chainwatch_model::Alert;
use chainwatch_sink::decode::{self, FORMAT_HEADER};
use chainwatch_sink::retry::Backoff;
use chainwatch_sink::{Deliverer, Outcome, Router};

use super::dead_letter;
use crate::telemetry::Metrics;
use crate::telemetry::events::{SinkDeadLettered, SinkDelivered, SinkRetry};

/// Something a sink did, for logs (and metrics).
#[derive(Debug)]
pub enum SinkEvent<'a> {
    /// The destination confirmed the finding.
    Delivered {
        /// The finding.
        alert: &'a Alert,
        /// From the first attempt to the confirmation, retries included.
        latency: Duration,
        /// Attempts it took.
        attempts: u32,
        /// The destination already had it.
        duplicate: bool,
    },
    /// An attempt failed in a way that may pass; the next one comes after `wait`.
    Retrying {
        /// The finding.
        alert: &'a Alert,
        /// Failed attempts so far.
        attempt: u32,
        /// Wait before the next attempt.
        wait: Duration,
        /// What went wrong.
        error: &'a str,
    },
    /// The record goes to the dead-letter topic.
    DeadLettered {
        /// The finding, when the record was one.
        alert: Option<&'a Alert>,
        /// `rejected`, `retries_exhausted` or `malformed_alert`.
        reason: &'static str,
        /// What went wrong.
        error: &'a str,
    },
    /// The sink's route does not take the finding.
    Skipped {
        /// The finding.
        alert: &'a Alert,
    },
}

/// The sink core for one destination.
pub struct SinkCore {
    deliverer: Deliverer,
    router: Arc<Router>,
    retry: RetryConfig,
    dead_letter_topic: String,
    metrics: Arc<Metrics>,
}

impl SinkCore {
    /// A core delivering to `deliverer` what `router` routes to it, under `config`'s retry
    /// settings (file and stdout sinks retry forever with the default pacing).
    pub fn new(
        deliverer: Deliverer,
        config: &SinkConfig,
        router: Arc<Router>,
        dead_letter_topic: &str,
    ) -> Self {
        let retry = match config {
            SinkConfig::Webhook(w) => w.retry.clone(),
            _ => RetryConfig::default(),
        };
        Self {
            deliverer,
            router,
            retry,
            dead_letter_topic: dead_letter_topic.to_owned(),
            metrics: Metrics::detached(),
        }
    }

    /// Reports to `metrics` (instead of a registry nothing serves).
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        metrics.register_sink(self.deliverer.name());
        Self { metrics, ..self }
    }

    fn name(&self) -> &str {
        self.deliverer.name()
    }

    /// The one place a sink's events are logged and counted.
    fn emit(&self, event: SinkEvent<'_>) {
        let sink = self.name();
        let m = &self.metrics;
        match event {
            SinkEvent::Delivered {
                alert,
                latency,
                attempts,
                duplicate,
            } => SinkDelivered {
                sink,
                alert: &alert.id.to_string(),
                tenant: alert.tenant.as_str(),
                attempts,
                duplicate,
                elapsed: latency,
            }
            .emit(m),
            SinkEvent::Retrying {
                alert,
                attempt,
                wait,
                error,
            } => SinkRetry {
                sink,
                alert: &alert.id.to_string(),
                attempt,
                error,
                backoff: wait,
            }
            .emit(m),
            SinkEvent::DeadLettered {
                alert,
                reason,
                error,
            } => SinkDeadLettered {
                sink,
                alert: alert.map(|a| a.id.to_string()).as_deref(),
                reason,
                error,
            }
            .emit(m),
            SinkEvent::Skipped { alert } => {
                tracing::debug!(sink, alert = %alert.id, "not routed to this sink")
            }
        }
    }

    fn dead_letter(
        &self,
        msg: &InMessage<'_>,
        alert: Option<&Alert>,
        reason: &'static str,
        error: &str,
        response: Option<(Option<u16>, &str)>,
    ) -> Delivery {
        self.emit(SinkEvent::DeadLettered {
            alert,
            reason,
            error,
        });
        let mut record: OutRecord =
            dead_letter::record(&self.dead_letter_topic, "sink", msg, reason, error);
        record
            .headers
            .push(("chainwatch.sink", self.name().as_bytes().to_vec()));
        if let Some(format) = msg.header(FORMAT_HEADER) {
            record
                .headers
                .push((FORMAT_HEADER, format.as_bytes().to_vec()));
        }
        if let Some(a) = alert {
            record
                .headers
                .push(("chainwatch.alert.id", a.id.to_string().into_bytes()));
        }
        if let Some((status, body)) = response {
            if let Some(s) = status {
                record
                    .headers
                    .push(("chainwatch.response.status", s.to_string().into_bytes()));
            }
            record
                .headers
                .push(("chainwatch.response.body", body.as_bytes().to_vec()));
        }
        Delivery::Produce(vec![record])
    }
}

impl Deliver for SinkCore {
    async fn deliver(&mut self, msg: &InMessage<'_>) -> Result<Delivery, StageError> {
        let payload = msg.payload.unwrap_or_default();
        let alert = match decode::decode(payload, msg.header(FORMAT_HEADER)) {
            Ok(a) => a,
            Err(e) => {
                return Ok(self.dead_letter(msg, None, "malformed_alert", &e.to_string(), None));
            }
        };
        if !self.router.accepts(self.name(), &alert) {
            self.emit(SinkEvent::Skipped { alert: &alert });
            return Ok(Delivery::Done);
        }
        let started = Instant::now();
        let mut backoff = Backoff::new(&self.retry);
        loop {
            match self.deliverer.attempt(&alert).await {
                Outcome::Delivered { duplicate } => {
                    self.emit(SinkEvent::Delivered {
                        alert: &alert,
                        latency: started.elapsed(),
                        attempts: backoff.attempts() + 1,
                        duplicate,
                    });
                    return Ok(Delivery::Done);
                }
                Outcome::Retry { after, error } => {
                    match backoff.next(started.elapsed(), after, fastrand::f64()) {
                        Some(wait) => {
                            self.emit(SinkEvent::Retrying {
                                alert: &alert,
                                attempt: backoff.attempts(),
                                wait,
                                error: &error,
                            });
                            tokio::time::sleep(wait).await;
                        }
                        None => {
                            let error =
                                format!("gave up after {} attempts: {error}", backoff.attempts());
                            return Ok(self.dead_letter(
                                msg,
                                Some(&alert),
                                "retries_exhausted",
                                &error,
                                None,
                            ));
                        }
                    }
                }
                Outcome::Reject {
                    status,
                    body,
                    error,
                } => {
                    return Ok(self.dead_letter(
                        msg,
                        Some(&alert),
                        "rejected",
                        &error,
                        Some((status, &body)),
                    ));
                }
            }
        }
    }
}
