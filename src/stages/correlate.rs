//! The correlate stage: normalized events in, findings out to `chainwatch.alerts`, keyed by
//! tenant, in the configured form (`[topics] alerts_format`), named in the `chainwatch.format`
//! header.

use std::sync::Arc;

use chainwatch_config::service::FindingFormat;
use chainwatch_correlate::{Engine, EngineConfig, RuleSet};
use chainwatch_kafka::{InMessage, OutRecord, Transform};
use chainwatch_model::Event;
use chainwatch_sink::decode;

use super::dead_letter;

/// The correlate core.
pub struct CorrelateCore {
    engine: Engine,
    alerts_topic: String,
    alerts_format: FindingFormat,
    dead_letter_topic: String,
}

impl CorrelateCore {
    /// A core over `rules`.
    pub fn new(
        rules: Arc<RuleSet>,
        config: EngineConfig,
        alerts_topic: &str,
        alerts_format: FindingFormat,
        dead_letter_topic: &str,
    ) -> Self {
        Self {
            engine: Engine::new(rules, config),
            alerts_topic: alerts_topic.to_owned(),
            alerts_format,
            dead_letter_topic: dead_letter_topic.to_owned(),
        }
    }
}

impl Transform for CorrelateCore {
    fn process(&mut self, msg: &InMessage<'_>) -> Vec<OutRecord> {
        let event: Event = match serde_json::from_slice(msg.payload.unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(
                    stage = "correlate",
                    topic = msg.topic,
                    partition = msg.partition,
                    offset = msg.offset,
                    "dead-lettered: not an event: {e}"
                );
                return vec![dead_letter::record(
                    &self.dead_letter_topic,
                    "correlate",
                    msg,
                    "malformed_event",
                    &e.to_string(),
                )];
            }
        };
        self.engine
            .observe(&event)
            .into_iter()
            .map(|alert| {
                tracing::info!(alert = %alert.id, tenant = %alert.tenant, rule = %alert.rule.title, "alert");
                OutRecord {
                    topic: self.alerts_topic.clone(),
                    key: alert.tenant.as_str().as_bytes().to_vec(),
                    payload: decode::encode(&alert, self.alerts_format),
                    headers: vec![
                        ("chainwatch.alert.id", alert.id.to_string().into_bytes()),
                        (
                            decode::FORMAT_HEADER,
                            self.alerts_format.as_str().as_bytes().to_vec(),
                        ),
                    ],
                }
            })
            .collect()
    }
}
