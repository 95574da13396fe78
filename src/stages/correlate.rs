//! The correlate stage: normalized events in, findings out to `chainwatch.alerts`, keyed by
//! tenant.

use std::sync::Arc;

use chainwatch_correlate::{Engine, EngineConfig};
use chainwatch_kafka::{InMessage, OutRecord, Transform};
use chainwatch_model::Event;
use chainwatch_sink::render;

use super::dead_letter;
use crate::reload::Loaded;

/// The correlate core.
pub struct CorrelateCore {
    engine: Engine,
    rules: tokio::sync::watch::Receiver<Arc<Loaded>>,
    alerts_topic: String,
    dead_letter_topic: String,
}

impl CorrelateCore {
    /// A core over the rules `rules` holds now, taking each reload as it comes.
    pub fn new(
        mut rules: tokio::sync::watch::Receiver<Arc<Loaded>>,
        config: EngineConfig,
        alerts_topic: &str,
        dead_letter_topic: &str,
    ) -> Self {
        let loaded = Arc::clone(&rules.borrow_and_update());
        let mut engine = Engine::new(Arc::clone(&loaded.rules), config);
        engine.set_policies(Arc::clone(&loaded.policies));
        Self {
            engine,
            rules,
            alerts_topic: alerts_topic.to_owned(),
            dead_letter_topic: dead_letter_topic.to_owned(),
        }
    }
}

impl Transform for CorrelateCore {
    fn process(&mut self, msg: &InMessage<'_>) -> Vec<OutRecord> {
        if self.rules.has_changed().unwrap_or(false) {
            let loaded = Arc::clone(&self.rules.borrow_and_update());
            let kept = self.engine.reload(Arc::clone(&loaded.rules));
            self.engine.set_policies(Arc::clone(&loaded.policies));
            tracing::info!(
                stage = "correlate",
                kept,
                "new rules in effect; partial chains of unchanged playbooks kept"
            );
        }
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
                    payload: render::json_line(&alert).into_bytes(),
                    headers: vec![("chainwatch.alert.id", alert.id.to_string().into_bytes())],
                }
            })
            .collect()
    }
}
