//! The correlate stage: normalized events in, findings out to `chainwatch.alerts`, keyed by
//! tenant, in the configured form (`[topics] alerts_format`), named in the `chainwatch.format`
//! header. Hosts that gain an inferred role go to the roles topic (compacted, keyed
//! `tenant/host`), as part of the same message's effect.

use std::sync::Arc;

use chainwatch_config::service::FindingFormat;
use chainwatch_correlate::{Engine, EngineConfig, EngineStats, HostRoles, RuleSet};
use chainwatch_kafka::{InMessage, OutRecord, Transform};
use chainwatch_model::Event;
use chainwatch_sink::decode;

use super::dead_letter;
use super::ingest::ARRIVAL_HEADER;
use crate::telemetry::Metrics;
use crate::telemetry::events::{
    AlertRaised, CorrelatorState, DeadLettered, HostRoleChanged, HostRolesCounted, LookbackState,
};

/// The correlate core.
pub struct CorrelateCore {
    engine: Engine,
    rules: tokio::sync::watch::Receiver<Arc<RuleSet>>,
    alerts_topic: String,
    alerts_format: FindingFormat,
    dead_letter_topic: String,
    metrics: Arc<Metrics>,
    /// The engine's totals at the last report, to count differences.
    reported: EngineStats,
    /// Where host role records go (`None`: nowhere, the topic does not exist).
    roles_topic: Option<String>,
}

impl CorrelateCore {
    /// A core over the rules `rules` holds now, taking each reload as it comes.
    pub fn new(
        mut rules: tokio::sync::watch::Receiver<Arc<RuleSet>>,
        config: EngineConfig,
        alerts_topic: &str,
        alerts_format: FindingFormat,
        dead_letter_topic: &str,
    ) -> Self {
        let engine = Engine::new(Arc::clone(&rules.borrow_and_update()), config);
        Self {
            engine,
            rules,
            alerts_topic: alerts_topic.to_owned(),
            alerts_format,
            dead_letter_topic: dead_letter_topic.to_owned(),
            metrics: Metrics::detached(),
            reported: EngineStats::default(),
            roles_topic: None,
        }
    }

    /// Writes host role records to `topic` (without it they are only counted as dropped).
    pub fn set_roles_topic(&mut self, topic: Option<String>) {
        self.roles_topic = topic;
    }

    /// Merges host roles read back from the roles topic at start-up.
    pub fn restore_roles(&mut self, records: Vec<HostRoles>) {
        self.engine.restore_roles(records);
    }

    /// Reports to `metrics` (instead of a registry nothing serves).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn report_state(&mut self) {
        let stats = self.engine.stats();
        CorrelatorState {
            stats: &stats,
            previous: &self.reported,
            partial_chains: self.engine.partial_chains(),
        }
        .emit(&self.metrics);
        LookbackState {
            held: self.engine.lookback().len(),
            evicted: stats.lookback_evicted,
            previous: self.reported.lookback_evicted,
        }
        .emit(&self.metrics);
        if let Some(counts) = self.engine.role_counts_if_changed() {
            HostRolesCounted { counts: &counts }.emit(&self.metrics);
        }
        self.reported = stats;
    }
}

impl Transform for CorrelateCore {
    fn process(&mut self, msg: &InMessage<'_>) -> Vec<OutRecord> {
        if self.rules.has_changed().unwrap_or(false) {
            let kept = self
                .engine
                .reload(Arc::clone(&self.rules.borrow_and_update()));
            tracing::info!(
                stage = "correlate",
                kept,
                "new rules in effect; partial chains of unchanged playbooks kept"
            );
        }
        let event: Event = match serde_json::from_slice(msg.payload.unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => {
                DeadLettered {
                    stage: "correlate",
                    reason: "malformed_event",
                    msg,
                    record: None,
                    error: &format!("not an event: {e}"),
                }
                .emit(&self.metrics);
                return vec![dead_letter::record(
                    &self.dead_letter_topic,
                    "correlate",
                    msg,
                    "malformed_event",
                    &e.to_string(),
                )];
            }
        };
        let arrival_ms = msg
            .headers
            .get(ARRIVAL_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
        let alerts = self.engine.observe(&event);
        let now = std::time::SystemTime::now();
        self.report_state();
        let roles: Vec<OutRecord> = self
            .engine
            .take_role_changes()
            .into_iter()
            .filter_map(|host| {
                HostRoleChanged {
                    host: &host,
                    written: self.roles_topic.is_some(),
                }
                .emit(&self.metrics);
                let topic = self.roles_topic.clone()?;
                Some(OutRecord {
                    topic,
                    key: host.key().into_bytes(),
                    payload: serde_json::to_vec(&host).ok()?,
                    headers: Vec::new(),
                })
            })
            .collect();
        alerts
            .into_iter()
            .map(|alert| {
                AlertRaised {
                    alert: &alert,
                    event_time: event.time,
                    arrival_ms,
                    now,
                }
                .emit(&self.metrics);
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
            .chain(roles)
            .collect()
    }
}
